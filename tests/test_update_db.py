"""update_db: a new model version becomes active only when every image has its descriptor under it, and a
failed re-embedding leaves the old version active. Real worker, real models (untrained Lite0 -> Lite2)."""
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from recommender.models import Descriptor, Item, ReembedJob, Snapshot
from recommender.services.reembedding import finish_if_complete, start_reembedding
from recommender.services import versions
from tests.conftest import copy_looks, wait_until


@pytest.fixture
def embedded_looks(sample_dir, tmp_path, transactional_db, active_version, celery_worker_process):
    folder = copy_looks(sample_dir, (149, 288), tmp_path / "looks")
    call_command("import_looks", str(folder), verbosity=0)
    wait_until(
        lambda: not Descriptor.objects.exclude(status=Descriptor.Status.READY).exists(),
        timeout=120, message="the first version embeds the catalogue",
    )
    return folder


def images():
    return Snapshot.objects.count() + Item.objects.count()


def test_version_switches_only_after_every_descriptor_exists(embedded_looks, active_version):
    lite2 = versions.register_version("untrained-lite2", "untrained-lite2", 1280)
    assert not lite2.is_active, "registering does not switch"

    job = start_reembedding(lite2)
    assert job.total == images()
    # written without vector indexes (no index inserts), while the active version keeps its own
    assert versions.missing_vector_indexes(lite2.id) == list(versions.IMAGE_COLUMNS)
    assert versions.missing_vector_indexes(active_version.id) == []
    # The worker has barely started (it still has to load Lite2): the job cannot be complete.
    job = finish_if_complete(job.id)
    assert job.state == ReembedJob.State.RUNNING and job.done < job.total
    assert versions.active_version() == active_version

    wait_until(lambda: ReembedJob.objects.get(pk=job.pk).state != ReembedJob.State.RUNNING,
               timeout=300, message="the re-embedding job finishes")
    job.refresh_from_db()
    assert job.state == ReembedJob.State.DONE
    assert versions.active_version() == lite2
    ready = Descriptor.objects.filter(model_version=lite2, status=Descriptor.Status.READY)
    assert ready.count() == images()
    # its indexes were built on every row before the switch, the item index trained on all the items
    assert versions.missing_vector_indexes(lite2.id) == []
    lite2.refresh_from_db()
    assert (lite2.item_index_rows, lite2.item_index_lists) == (Item.objects.count(),
                                                               versions.ivfflat_lists(Item.objects.count()))
    # the old version's descriptors are kept, so switching back needs no work
    assert Descriptor.objects.filter(model_version=active_version, status=Descriptor.Status.READY).count() == images()


def test_failed_reembedding_leaves_the_old_version_active(embedded_looks, active_version, sample_dir, tmp_path):
    call_command("update_db", untrained="lite2", timeout=300, verbosity=0)
    assert versions.active_version().name == "untrained-lite2"

    # a new look arrives under Lite2; then its item file gets corrupted on disk
    folder = copy_looks(sample_dir, (0,), tmp_path / "more")
    call_command("import_looks", str(folder), verbosity=0)
    wait_until(lambda: not Descriptor.objects.exclude(status=Descriptor.Status.READY).exists(),
               timeout=120, message="the new look is embedded")
    broken = Item.objects.filter(looks__key="0").exclude(descriptors__model_version=active_version).first()
    with open(broken.image.path, "wb") as handle:
        handle.write(b"not an image any more")

    with pytest.raises(CommandError, match="failed, the active version is unchanged"):
        call_command("update_db", untrained="lite0", timeout=300, verbosity=0)
    assert versions.active_version().name == "untrained-lite2"
