"""The staff-only re-embedding API: the real worker re-embeds the catalogue and the wardrobes with another
model version, the job shows progress, and the version switches only when complete."""
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
