"""Registration, tokens, the boundaries between users and staff, the schema and the offline docs."""
import pytest
from django.contrib.staticfiles import finders
from rest_framework.test import APIClient

from recommender.models import ModelVersion, ReembedJob
from tests.api.conftest import image_bytes, upload
from wardrobe.models import WardrobeItem
from wardrobe.services import add_wardrobe_items, like_look

pytestmark = pytest.mark.django_db


def test_register_then_token_then_use_it():
    client = APIClient()
    response = client.post("/api/auth/register/", {"username": "ana", "password": "long-enough-1"}, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["username"] == "ana"

    response = client.post("/api/auth/token/", {"username": "ana", "password": "long-enough-1"}, format="json")
    assert response.status_code == 200
    token = response.json()["token"]
    assert len(token) == 40

    assert client.get("/api/wardrobe/items/").status_code == 401
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    response = client.get("/api/wardrobe/items/")
    assert response.status_code == 200 and response.json() == {"results": []}


def test_register_rejects_a_taken_name_and_a_short_password():
    client = APIClient()
    assert client.post("/api/auth/register/", {"username": "bo", "password": "long-enough-1"}).status_code == 201
    taken = client.post("/api/auth/register/", {"username": "BO", "password": "long-enough-2"})
    assert taken.status_code == 400 and "already exists" in str(taken.json()["errors"]["username"])
    short = client.post("/api/auth/register/", {"username": "cy", "password": "short"})
    assert short.status_code == 400 and "password" in short.json()["errors"]


def test_token_needs_the_right_password():
    APIClient().post("/api/auth/register/", {"username": "di", "password": "long-enough-1"})
    response = APIClient().post("/api/auth/token/", {"username": "di", "password": "wrong-password"})
    assert response.status_code == 400
    assert "token" not in response.json()


def test_session_authentication_works_too(make_user):
    user, _ = make_user()
    client = APIClient()
    client.force_login(user)  # a Django session cookie, as the web pages have
    assert client.get("/api/wardrobe/items/").status_code == 200


@pytest.mark.parametrize(
    "method,url",
    [
        ("get", "/api/wardrobe/items/"),
        ("post", "/api/wardrobe/items/"),
        ("get", "/api/wardrobe/items/1/"),
        ("delete", "/api/wardrobe/items/1/"),
        ("get", "/api/wardrobe/liked-looks/"),
        ("post", "/api/wardrobe/liked-looks/"),
        ("delete", "/api/wardrobe/liked-looks/1/"),
        ("get", "/api/suggestions/"),
        ("post", "/api/admin/reembed/"),
        ("get", "/api/admin/jobs/1/"),
    ],
)
def test_anonymous_users_are_refused(method, url):
    response = getattr(APIClient(), method)(url)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Token")


def test_another_users_wardrobe_item_is_a_404(make_user, active_version, taxonomy):
    owner, owner_client = make_user()
    _, intruder = make_user()
    [item] = add_wardrobe_items(owner, [upload("mine.jpg", image_bytes())], category="top")
    url = f"/api/wardrobe/items/{item.id}/"

    assert owner_client.get(url).status_code == 200
    assert intruder.get(url).status_code == 404
    assert intruder.patch(url, {"category": "shoes"}, format="json").status_code == 404
    assert intruder.delete(url).status_code == 404
    assert WardrobeItem.objects.filter(pk=item.id, category__name="top").exists()
    assert intruder.get("/api/wardrobe/items/").json() == {"results": []}
    assert intruder.get("/api/wardrobe/items/999999/").status_code == 404

    assert owner_client.delete(url).status_code == 204
    assert not WardrobeItem.objects.filter(pk=item.id).exists()
    assert owner_client.get(url).status_code == 404


def test_likes_are_private(make_user, active_version):
    from recommender.models import Look

    look = Look.objects.create(key="l1")
    owner, owner_client = make_user()
    _, other = make_user()
    like_look(owner, look.id)
    assert [r["look_id"] for r in owner_client.get("/api/wardrobe/liked-looks/").json()["results"]] == [look.id]
    assert other.get("/api/wardrobe/liked-looks/").json() == {"results": []}
    # another user's unlike does not touch the owner's like
    assert other.delete(f"/api/wardrobe/liked-looks/{look.id}/").status_code == 204
    assert owner.liked_looks.filter(look=look).exists()


def test_admin_endpoints_are_for_staff_only(make_user, active_version):
    _, user = make_user()
    staff_user, staff = make_user(staff=True)
    job = ReembedJob.objects.create(model_version=active_version, state=ReembedJob.State.DONE, total=3, done=3)

    assert user.post("/api/admin/reembed/", {"model_version": active_version.name}, format="json").status_code == 403
    assert user.get(f"/api/admin/jobs/{job.id}/").status_code == 403
    assert ReembedJob.objects.count() == 1

    response = staff.get(f"/api/admin/jobs/{job.id}/")
    assert response.status_code == 200
    assert {k: response.json()[k] for k in ("state", "done", "total")} == {"state": "done", "done": 3, "total": 3}
    assert staff.get("/api/admin/jobs/999999/").status_code == 404
    unknown = staff.post("/api/admin/reembed/", {"model_version": "no-such-model"}, format="json")
    assert unknown.status_code == 400 and "no-such-model" in str(unknown.json())
    assert ModelVersion.objects.filter(is_active=True).get() == active_version


def test_schema_lists_every_endpoint():
    response = APIClient().get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    for path in (
        "/api/auth/register/", "/api/auth/token/", "/api/search/items/", "/api/search/looks/",
        "/api/wardrobe/items/", "/api/wardrobe/items/{item_id}/", "/api/wardrobe/liked-looks/",
        "/api/wardrobe/liked-looks/{look_id}/", "/api/suggestions/", "/api/admin/reembed/",
        "/api/admin/jobs/{job_id}/",
    ):
        assert path in paths, path


def test_docs_are_served_from_local_static_files():
    response = APIClient().get("/api/docs/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "swagger-ui" in page.lower()
    assert "cdn.jsdelivr.net" not in page and "unpkg.com" not in page
    assert "drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in page
    # the files the page loads exist in the installed sidecar package (no network needed)
    for name in ("swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "swagger-ui.css"):
        assert finders.find(f"drf_spectacular_sidecar/swagger-ui-dist/{name}"), name


def test_schema_validates_without_warnings(tmp_path):
    from django.core.management import call_command

    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yml"))
    assert "/api/suggestions/" in (tmp_path / "schema.yml").read_text()
