"""Bad uploads are refused with a 400 naming the problem and nothing stored; awkward but valid images are
accepted, normalised and stored under generated names; search is throttled for anonymous users."""
import hashlib
import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings
from django.test import override_settings
from PIL import Image
from rest_framework.test import APIClient

from recommender.models import Descriptor
from tests.api.conftest import image_bytes, upload
from wardrobe.models import WardrobeItem

pytestmark = pytest.mark.django_db


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (a decompression bomb), with a tiny body."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def noise_jpeg_over(limit: int) -> bytes:
    """A real JPEG just over `limit` bytes (noise compresses badly)."""
    rng = np.random.default_rng(0)
    side = 1800
    while True:
        data = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(data, "JPEG", quality=100)
        if data.tell() > limit:
            return data.getvalue()
        side += 400


def stored_wardrobe_files() -> set[str]:
    folder = Path(settings.MEDIA_ROOT) / "wardrobe"
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


BAD_UPLOADS = {
    "over 10 MB": (lambda: noise_jpeg_over(10 * 1024 * 1024), "big.jpg", ["10 MB"]),
    "GIF": (lambda: image_bytes(fmt="GIF"), "anim.gif", ["GIF", "JPEG, PNG or WebP"]),
    "truncated JPEG": (lambda: image_bytes(size=(400, 300))[:1500], "cut.jpg", ["truncated"]),
    "over 40 MP": (lambda: png_claiming(8000, 6000), "bomb.png", ["too large", "48.0 megapixels"]),
    "empty": (lambda: b"", "empty.jpg", ["empty"]),
    "not an image": (lambda: b"just some text, not pixels" * 10, "notes.jpg", ["not an image"]),
}


@pytest.mark.parametrize("kind", list(BAD_UPLOADS))
def test_bad_wardrobe_upload_is_a_400_naming_the_problem_and_stores_nothing(kind, make_user, active_version):
    make, name, words = BAD_UPLOADS[kind]
    data = make()
    _, client = make_user()
    files_before = stored_wardrobe_files()

    response = client.post("/api/wardrobe/items/", {"image": upload(name, data)}, format="multipart")

    assert response.status_code == 400, response.content
    detail = response.json()["detail"]
    assert isinstance(detail, str) and name in detail
    for word in words:
        assert word in detail, (word, detail)
    assert WardrobeItem.objects.count() == 0
    assert Descriptor.objects.count() == 0
    assert stored_wardrobe_files() == files_before


def test_one_bad_file_among_several_stores_none_of_them(make_user, active_version):
    _, client = make_user()
    files_before = stored_wardrobe_files()
    response = client.post(
        "/api/wardrobe/items/",
        {"image": [upload("good.jpg", image_bytes()), upload("bad.gif", image_bytes(fmt="GIF"))]},
        format="multipart",
    )
    assert response.status_code == 400
    assert "bad.gif" in response.json()["detail"] and "good.jpg" not in response.json()["detail"]
    assert WardrobeItem.objects.count() == 0 and stored_wardrobe_files() == files_before


@pytest.mark.parametrize("kind", ["over 10 MB", "GIF", "truncated JPEG", "over 40 MP", "empty"])
@pytest.mark.parametrize("endpoint", ["/api/search/items/", "/api/search/looks/"])
def test_bad_search_upload_is_a_400_naming_the_problem(kind, endpoint, active_version):
    make, name, words = BAD_UPLOADS[kind]
    response = APIClient().post(endpoint, {"image": upload(name, make())}, format="multipart")
    assert response.status_code == 400
    assert name in response.json()["detail"] and words[0] in response.json()["detail"]


def test_unknown_category_or_style_is_a_400(make_user, active_version, taxonomy):
    _, client = make_user()
    response = client.post(
        "/api/wardrobe/items/", {"image": upload("a.jpg", image_bytes()), "category": "spacesuit"}, format="multipart"
    )
    assert response.status_code == 400 and "spacesuit" in str(response.json())
    response = client.post(
        "/api/wardrobe/items/", {"image": upload("a.jpg", image_bytes()), "style": "baroque"}, format="multipart"
    )
    assert response.status_code == 400 and "baroque" in str(response.json())
    assert WardrobeItem.objects.count() == 0


def test_missing_image_and_bad_k_are_400s(make_user, active_version):
    _, client = make_user()
    assert client.post("/api/wardrobe/items/", {}, format="multipart").status_code == 400
    for k in (0, 51, "many"):
        response = APIClient().post(
            "/api/search/items/", {"image": upload("a.jpg", image_bytes()), "k": k}, format="multipart"
        )
        assert response.status_code == 400 and "k" in response.json()["errors"], k


def cmyk_jpeg():
    return image_bytes(mode="CMYK")


def sixteen_bit_png():
    array = (np.linspace(0, 65535, 64 * 48).reshape(48, 64)).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    image = Image.open(io.BytesIO(buffer.getvalue()))
    assert image.mode.startswith("I")
    return buffer.getvalue()


def palette_png():
    return image_bytes(mode="P", fmt="PNG")


def rgba_webp():
    image = Image.new("RGBA", (64, 48), (10, 200, 10, 120))
    buffer = io.BytesIO()
    image.save(buffer, "WEBP")
    return buffer.getvalue()


def exif_rotated_jpeg():
    """Stored 120 wide x 60 high, with EXIF orientation 6 (display rotated 90 degrees: 60 x 120)."""
    image = Image.new("RGB", (120, 60), (30, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif.tobytes())
    return buffer.getvalue()


ACCEPTED = {
    "CMYK JPEG": (cmyk_jpeg, "cmyk.jpg", ".jpg"),
    "16-bit PNG": (sixteen_bit_png, "deep.png", ".png"),
    "palette PNG": (palette_png, "palette.png", ".png"),
    "RGBA WebP": (rgba_webp, "alpha.webp", ".webp"),
    "EXIF-rotated JPEG": (exif_rotated_jpeg, "rotated.jpg", ".jpg"),
}


@pytest.mark.parametrize("kind", list(ACCEPTED))
def test_awkward_valid_images_are_accepted_under_generated_names(kind, make_user, active_version):
    make, name, extension = ACCEPTED[kind]
    data = make()
    user, client = make_user()

    response = client.post("/api/wardrobe/items/", {"image": upload(f"../../{name}", data)}, format="multipart")

    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] == "pending"
    item = WardrobeItem.objects.get(pk=body["id"], owner=user)
    stored = Path(item.image.path)
    assert stored.name.startswith(hashlib.sha256(data).hexdigest()) and stored.suffix == extension
    assert name.split(".")[0] not in stored.name
    assert stored.parent == Path(settings.MEDIA_ROOT) / "wardrobe"
    # the stored copy: the upload's pixels, upright, without any metadata
    with Image.open(stored) as kept, Image.open(io.BytesIO(data)) as sent:
        assert not kept.getexif() and "exif" not in kept.info
        upright = (sent.height, sent.width) if sent.getexif().get(0x0112, 1) in (5, 6, 7, 8) else sent.size
        assert kept.size == upright and kept.mode == "RGB"
    assert Descriptor.objects.get(wardrobe_item=item, model_version=active_version).status == "pending"
    detail = client.get(f"/api/wardrobe/items/{item.id}/").json()
    assert detail["id"] == item.id and detail["status"] == "pending" and detail["image_url"].endswith(stored.name)


def test_exif_rotation_is_applied_before_anything_reads_the_pixels():
    from recommender.services.uploads import check_upload

    checked = check_upload(io.BytesIO(exif_rotated_jpeg()), name="rotated.jpg")
    assert checked.image.size == (60, 120) and checked.image.mode == "RGB"


def test_several_images_in_one_upload(make_user, active_version, taxonomy):
    _, client = make_user()
    response = client.post(
        "/api/wardrobe/items/",
        {"image": [upload("a.jpg", image_bytes()), upload("b.png", image_bytes(fmt="PNG", colour=(20, 20, 200)))],
         "category": "shoes", "style": "formal/classic"},
        format="multipart",
    )
    assert response.status_code == 202
    body = response.json()
    assert isinstance(body, list) and [r["status"] for r in body] == ["pending", "pending"]
    listed = client.get("/api/wardrobe/items/").json()["results"]
    assert {r["id"] for r in listed} == {r["id"] for r in body}
    assert {(r["category"], r["style"]) for r in listed} == {("shoes", "formal/classic")}
    assert {r["colour"] for r in listed} == {"red", "blue"}


def test_anonymous_search_is_throttled(active_version):
    rates = {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "search_anon": "3/minute"}
    with override_settings(REST_FRAMEWORK={**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}):
        client = APIClient()
        codes = [
            client.post("/api/search/items/", {"image": upload("e.jpg", b"")}, format="multipart").status_code
            for _ in range(5)
        ]
    assert codes == [400, 400, 400, 429, 429]
