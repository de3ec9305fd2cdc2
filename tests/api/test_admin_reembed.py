"""The staff-only re-embedding API: the real worker re-embeds the catalogue and the wardrobes with another
model version, the job shows progress, and the version switches only when complete."""
import pytest

from recommender.models import Descriptor, Item, ModelVersion, Snapshot
from recommender.services.versions import register_version
from tests.api.conftest import image_bytes, import_and_embed, upload
from tests.conftest import wait_until
from wardrobe.models import WardrobeItem

LOOKS = (0, 3)


def test_staff_reembeds_and_the_new_version_takes_over(
    sample_dir, tmp_path, transactional_db, active_version, taxonomy, celery_worker_process, make_user
):
    import_and_embed(sample_dir, tmp_path, LOOKS)
    user, client = make_user()
    assert client.post("/api/wardrobe/items/", {"image": upload("mine.jpg", image_bytes())}).status_code == 202
    _, staff = make_user(staff=True)
    # the same network under another name: a version the worker can embed with, not yet active
    copy = register_version(name="lite0-copy", spec=active_version.spec, dim=active_version.dim)
    assert not copy.is_active

    assert client.post("/api/admin/reembed/", {"model_version": copy.name}, format="json").status_code == 403
    response = staff.post("/api/admin/reembed/", {"model_version": copy.name}, format="json")
    assert response.status_code == 202, response.content
    job_id = response.json()["job_id"]
    images = Snapshot.objects.count() + Item.objects.count() + WardrobeItem.objects.count()

    progress = staff.get(f"/api/admin/jobs/{job_id}/").json()
    assert progress["total"] == images and 0 <= progress["done"] <= images
    done = wait_until(
        lambda: (lambda r: r if r["state"] != "running" else None)(staff.get(f"/api/admin/jobs/{job_id}/").json()),
        timeout=300, message="the re-embedding job finishes",
    )
    assert done["state"] == "done" and done["done"] == done["total"] == images
    assert ModelVersion.objects.get(is_active=True) == copy
    assert Descriptor.objects.filter(model_version=copy, status="ready").count() == images
    # the wardrobe item is ready under the new active version
    assert {r["status"] for r in client.get("/api/wardrobe/items/").json()["results"]} == {"ready"}


def test_a_second_reembedding_is_refused_while_one_runs(db, active_version, make_user, client):
    """No worker here (and the test's transaction never commits, so nothing is sent): the first job stays
    running, and a second request, for the same version or another, gets 409 naming the running job; so does
    the admin action."""
    from django.contrib.auth import get_user_model

    from recommender.models import ReembedJob

    copy = register_version(name="lite0-copy", spec=active_version.spec, dim=active_version.dim)
    other = register_version(name="lite0-other", spec=active_version.spec, dim=active_version.dim)
    _, staff = make_user(staff=True)
    for unknown in ("³", "no-such-version"):  # "³": a digit to str.isdigit(), not a number to int()
        response = staff.post("/api/admin/reembed/", {"model_version": unknown}, format="json")
        assert response.status_code == 400 and "model_version" in response.json()["errors"], response.content
    first = staff.post("/api/admin/reembed/", {"model_version": copy.name}, format="json")
    assert first.status_code == 202, first.content
    job_id = first.json()["job_id"]

    for version in (copy, other):
        response = staff.post("/api/admin/reembed/", {"model_version": version.name}, format="json")
        assert response.status_code == 409, response.content
        assert f"re-embedding job {job_id}" in response.content.decode()
    assert list(ReembedJob.objects.values_list("id", "state")) == [(job_id, "running")]

    admin = get_user_model().objects.create_superuser("boss", password="pass-word-123")
    client.force_login(admin)
    response = client.post("/admin/recommender/modelversion/", {"action": "reembed", "_selected_action": [other.pk]},
                           follow=True)
    assert response.status_code == 200
    assert f"Not started: re-embedding job {job_id}" in response.content.decode()
    assert ReembedJob.objects.count() == 1


def test_the_active_version_cannot_be_deleted(db, active_version):
    from django.db import transaction
    from django.db.models import ProtectedError

    from recommender.services.versions import activate

    other = register_version(name="lite0-other", spec=active_version.spec, dim=active_version.dim)
    with pytest.raises(ProtectedError), transaction.atomic():
        active_version.delete()
    with pytest.raises(ProtectedError), transaction.atomic():
        ModelVersion.objects.all().delete()
    assert ModelVersion.objects.filter(is_active=True).get() == active_version
    activate(other)
    active_version.refresh_from_db()
    active_version.delete()  # no longer active: deleting it is fine
    assert ModelVersion.objects.get(is_active=True) == other
