"""Fit for the public: wardrobe photos private to their owner, uploads stored upright without EXIF/GPS,
throttles that a forged X-Forwarded-For cannot dodge, failed sign-ins limited per account, Django's password
validators on both registration paths, and image decoding bounded (RSS measured)."""
import io
import os
import threading
import time

import psutil
import pytest
from django.conf import settings
from django.test import Client, override_settings
from PIL import Image
from rest_framework.test import APIClient

from tests.api.conftest import image_bytes, upload
from wardrobe.models import WardrobeItem

pytestmark = pytest.mark.django_db


# ------------------------------------------------------------------------------------------------ media


def _signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_a_wardrobe_photo_is_served_to_its_owner_only(make_user, active_version):
    from wardrobe.services import add_wardrobe_items

    owner, _ = make_user()
    other, _ = make_user()
    [item] = add_wardrobe_items(owner, [upload("mine.jpg", image_bytes())])
    url = item.image.url
    assert url.startswith("/media/wardrobe/")

    mine = _signed_in(owner).get(url)
    assert mine.status_code == 200 and mine["Content-Type"] == "image/jpeg"
    assert mine["Cache-Control"].startswith("private")
    assert b"".join(mine.streaming_content)[:3] == b"\xff\xd8\xff"
    assert _signed_in(other).get(url).status_code == 404
    assert Client().get(url).status_code == 404
    # what another user or an anonymous visitor sees is the same as for a file that does not exist
    assert Client().get("/media/wardrobe/" + "0" * 64 + ".jpg").status_code == 404
    assert _signed_in(owner).get("/media/wardrobe/../catalogue/x.jpg").status_code == 404


def test_a_front_proxy_can_send_the_wardrobe_photo(make_user, active_version):
    from wardrobe.services import add_wardrobe_items

    owner, _ = make_user()
    [item] = add_wardrobe_items(owner, [upload("mine.jpg", image_bytes())])
    with override_settings(MEDIA_ACCEL_REDIRECT_PREFIX="/protected-media/"):
        response = _signed_in(owner).get(item.image.url)
        assert Client().get(item.image.url).status_code == 404
    assert response.status_code == 200 and response["X-Accel-Redirect"] == f"/protected-media/{item.image.name}"
    assert response.content == b""


def test_catalogue_photos_are_public_with_cache_headers(active_version):
    from django.core.files.base import ContentFile

    from recommender.models import Item

    item = Item(sha256="0" * 64)
    item.image.save("public.jpg", ContentFile(image_bytes()), save=True)
    response = Client().get(item.image.url)
    assert response.status_code == 200 and response["Content-Type"] == "image/jpeg"
    assert response["Cache-Control"] == "public, max-age=86400" and response["Last-Modified"]
    again = Client().get(item.image.url, HTTP_IF_MODIFIED_SINCE=response["Last-Modified"])
    assert again.status_code == 304


def jpeg_with_gps_and_orientation() -> bytes:
    """120 wide x 60 high as stored, EXIF orientation 6 (shown 60 x 120), GPS coordinates, a camera model."""
    image = Image.new("RGB", (120, 60), (200, 30, 30))
    image.paste((0, 0, 255), (0, 0, 60, 8))  # a blue band along the top-left of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation
    exif[0x0110] = "HomeCam 3000"  # camera model
    gps = exif.get_ifd(0x8825)
    gps.update({1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)})
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif.tobytes(), quality=95)
    data = buffer.getvalue()
    assert Image.open(io.BytesIO(data)).getexif().get_ifd(0x8825), "the test file carries GPS"
    return data


def test_uploads_are_stored_upright_without_exif_or_gps(make_user, active_version):
    _, client = make_user()
    data = jpeg_with_gps_and_orientation()
    response = client.post("/api/wardrobe/items/", {"image": upload("home.jpg", data)}, format="multipart")
    assert response.status_code == 202, response.content
    stored = WardrobeItem.objects.get(pk=response.json()["id"]).image
    raw = stored.open("rb").read()
    assert b"Exif" not in raw and b"HomeCam" not in raw
    with Image.open(io.BytesIO(raw)) as kept:
        assert kept.size == (60, 120)  # the orientation is applied to the pixels
        assert not kept.getexif() and not kept.getexif().get_ifd(0x8825)
        assert kept.getexif().get(0x0112) is None
        right, left = kept.convert("RGB").getpixel((57, 30)), kept.convert("RGB").getpixel((2, 30))
        assert right[2] > 180 and right[0] < 80 and left[0] > 150, (right, left)  # the band turned with it


# ------------------------------------------------------------------------------------------------ throttles


def _rates(**rates):
    merged = {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], **rates}
    return override_settings(REST_FRAMEWORK={**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": merged})


def test_a_forged_x_forwarded_for_does_not_dodge_the_throttle(active_version):
    with _rates(search_anon="3/minute"):
        client = APIClient()
        codes = [
            client.post(
                "/api/search/items/", {"image": upload("e.jpg", b"")}, format="multipart",
                HTTP_X_FORWARDED_FOR=f"10.0.{n}.1",
            ).status_code
            for n in range(5)
        ]
    assert codes == [400, 400, 400, 429, 429]


def test_behind_a_trusted_proxy_the_forwarded_address_counts(active_version):
    drf = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    drf["DEFAULT_THROTTLE_RATES"] = {**drf["DEFAULT_THROTTLE_RATES"], "search_anon": "2/minute"}
    with override_settings(REST_FRAMEWORK=drf):
        client = APIClient()
        post = lambda address: client.post(  # noqa: E731
            "/api/search/items/", {"image": upload("e.jpg", b"")}, format="multipart", HTTP_X_FORWARDED_FOR=address
        ).status_code
        assert [post("10.0.0.1") for _ in range(3)] == [400, 400, 429]
        assert post("10.0.0.2") == 400  # another client behind the same proxy has its own allowance


def test_the_pages_json_search_is_throttled_with_the_api(active_version):
    with _rates(search_anon="3/minute"):
        client = Client()
        codes = []
        for endpoint in ("/api/search/items/", "/search/items/?format=json", "/search/looks/?format=json",
                         "/search/items/?format=json"):
            response = client.post(endpoint, {"image": upload("e.jpg", b"")})
            codes.append(response.status_code)
    assert codes == [400, 400, 400, 429]
    assert response["Retry-After"] and response.json()["code"] == "throttled"


def test_failed_sign_ins_are_limited_per_account(make_user):
    user, _ = make_user(username="target")
    with override_settings(FAILED_LOGINS_PER_ACCOUNT=5, FAILED_LOGINS_PER_ADDRESS=1000):
        codes = []
        for attempt in range(8):
            client = APIClient(REMOTE_ADDR=f"10.1.0.{attempt}")  # a new address each time: the account counts
            codes.append(client.post("/api/auth/token/", {"username": "target", "password": "wrong"}).status_code)
        assert codes == [400] * 5 + [429] * 3
        # even the right password is refused for this account until the window ends, on the page too
        right = APIClient(REMOTE_ADDR="10.2.0.1").post("/api/auth/token/", {"username": "target",
                                                                             "password": "pass-word-123"})
        assert right.status_code == 429 and right["Retry-After"]
        page = Client(REMOTE_ADDR="10.2.0.2").post("/accounts/login/", {"username": "TARGET", "password": "x"})
        assert page.status_code == 429 and b"Too many requests" in page.content
        # another account is not affected
        make_user(username="bystander")
        other = APIClient(REMOTE_ADDR="10.2.0.3").post("/api/auth/token/", {"username": "bystander",
                                                                             "password": "pass-word-123"})
        assert other.status_code == 200


def test_failed_sign_ins_are_limited_per_address(make_user):
    make_user(username="someone")
    with override_settings(FAILED_LOGINS_PER_ACCOUNT=1000, FAILED_LOGINS_PER_ADDRESS=4):
        client = Client(REMOTE_ADDR="10.3.0.1")
        codes = [client.post("/accounts/login/", {"username": f"guess{n}", "password": "x"}).status_code
                 for n in range(6)]
    assert codes == [200] * 4 + [429] * 2  # the login page answers a failed attempt with the form again


def test_registration_is_throttled_per_address():
    with _rates(register="2/hour"):
        codes = [
            APIClient().post("/api/auth/register/", {"username": f"new{n}", "password": "long-enough-1"}).status_code
            for n in range(2)
        ]
        codes.append(Client().post("/accounts/register/", {"username": "new3", "password1": "long-enough-1",
                                                             "password2": "long-enough-1"}).status_code)
    assert codes == [201, 201, 429]


# ------------------------------------------------------------------------------------------------ passwords


@pytest.mark.parametrize(
    "password,problem",
    [("short1", "too short"), ("password123", "too common"), ("8472619305", "entirely numeric"),
     ("alexandra-k", "too similar")],
)
def test_both_registration_paths_apply_djangos_password_validators(password, problem):
    api = APIClient().post("/api/auth/register/", {"username": "alexandra-k", "password": password})
    assert api.status_code == 400 and problem in " ".join(api.json()["errors"]["password"])
    page = Client().post("/accounts/register/", {"username": "alexandra-k", "password1": password,
                                                  "password2": password})
    assert page.status_code == 400 and problem in page.content.decode().replace("\u2019", "'")
    from django.contrib.auth import get_user_model

    assert not get_user_model().objects.filter(username="alexandra-k").exists()


# ------------------------------------------------------------------------------------------------ decoding


def big_png(width: int, height: int) -> bytes:
    """A real PNG of width x height (one colour, so the file is small and the pixels are many)."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 120, 200)).save(buffer, "PNG", compress_level=9)
    return buffer.getvalue()


class PeakRSS:
    """The process's resident memory, sampled every 5 ms in a thread: its peak over the block, minus the start."""

    def __enter__(self):
        self.process = psutil.Process(os.getpid())
        self.start = self.peak = self.process.memory_info().rss
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.005)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)
        self.growth = self.peak - self.start


def test_twenty_40_megapixel_pngs_are_a_400_and_memory_stays_bounded(make_user, active_version):
    _, client = make_user()
    png = big_png(8000, 5000)  # 40.0 megapixels: at the limit of one image; twenty are 800 together
    assert len(png) < 1_000_000
    files = [upload(f"huge{n}.png", png, "image/png") for n in range(20)]
    with PeakRSS() as memory:
        response = client.post("/api/wardrobe/items/", {"image": files}, format="multipart")
    print(f"20 PNGs of 40 MP: HTTP {response.status_code}, process grew by {memory.growth / 2**20:.0f} MiB")
    assert response.status_code == 400 and "megapixels" in response.json()["detail"]
    assert memory.growth < 500 * 2**20
    assert WardrobeItem.objects.count() == 0


def test_an_image_over_the_pixel_limit_is_refused_from_its_header(active_version):
    png = big_png(8000, 6000)  # 48 megapixels, a real file
    with PeakRSS() as memory:
        response = APIClient().post("/api/search/items/", {"image": upload("big.png", png, "image/png")},
                                    format="multipart")
    print(f"one PNG of 48 MP: HTTP {response.status_code}, process grew by {memory.growth / 2**20:.0f} MiB")
    assert response.status_code == 400 and "48.0 megapixels" in response.json()["detail"]
    assert memory.growth < 100 * 2**20  # 48 MP decoded would be 144 MB: it never was


def test_the_format_is_checked_from_the_first_bytes():
    from recommender.services.uploads import UploadError, read_header

    gif = image_bytes(fmt="GIF")
    with pytest.raises(UploadError, match="a GIF image"):
        read_header(io.BytesIO(gif), name="renamed.jpg")  # the name says JPEG; the bytes say GIF
    with pytest.raises(UploadError, match="corrupt JPEG header"):
        read_header(io.BytesIO(b"\xff\xd8\xff" + b"\x00" * 100), name="fake.jpg")


def test_throttle_counters_live_in_redis_shared_by_every_web_process(active_version):
    import redis

    location = settings.CACHES["default"]["LOCATION"]
    assert settings.CACHES["default"]["BACKEND"] == "fashionsite.cache.ResilientRedisCache"
    assert location != settings.REDIS_URL  # its own database: clearing the cache never touches the task queue
    with _rates(search_anon="3/minute"):
        APIClient().post("/api/search/items/", {"image": upload("e.jpg", b"")}, format="multipart")
    keys = redis.Redis.from_url(location).keys("*throttle_search_anon*")
    assert keys, "another process (a second gunicorn worker, a restarted one) reads the same counter"


def test_with_the_cache_down_requests_are_still_answered(active_version):
    dead = {"default": {**settings.CACHES["default"], "LOCATION": "redis://127.0.0.1:1/1"}}
    with override_settings(CACHES=dead):
        start = time.monotonic()
        codes = [APIClient().post("/api/search/items/", {"image": upload("e.jpg", b"")}, format="multipart")
                 .status_code for _ in range(5)]
        elapsed = time.monotonic() - start
    assert codes == [400] * 5  # the empty file's 400, not a 500 from the throttle's cache
    assert elapsed < 5, "after the first timeout the cache is not tried again for a while"


def test_more_than_twenty_files_in_one_upload_is_a_400(make_user, active_version):
    _, client = make_user()
    files = [upload(f"p{n}.jpg", image_bytes(size=(8, 8))) for n in range(21)]
    response = client.post("/api/wardrobe/items/", {"image": files}, format="multipart")
    assert response.status_code == 400 and response["Content-Type"] == "application/json"
    assert response.json()["code"] == "bad_request" and WardrobeItem.objects.count() == 0
