"""The first start's background training: trains on the platform's own catalogue, registers the model,
re-embeds every image with it through the real worker, and only then serves it."""
import pytest
from django.core.management import call_command

from ml.training.trainer import TrainConfig
from recommender.models import Descriptor, Item, Snapshot, TrainingJob
from recommender.services import training, versions
from recommender.services.training import refresh_training_job
from tests.conftest import copy_looks, wait_until

LOOKS = (0, 5, 6, 10, 15, 20, 22, 25, 149, 288, 30, 35)
TINY = TrainConfig(epochs=2, P=4, K=2, views=1, patience=1, descriptor_dim=64)


@pytest.fixture
def catalogue(sample_dir, tmp_path, transactional_db, active_version, celery_worker_process):
    call_command("import_looks", str(copy_looks(sample_dir, LOOKS, tmp_path / "looks")), verbosity=0)
    wait_until(lambda: not Descriptor.objects.exclude(status=Descriptor.Status.READY).exists(),
               timeout=180, message="the catalogue is embedded")


def test_initial_training_then_switch(catalogue, active_version):
    assert training.needs_initial_training()
    job = TrainingJob.objects.create()

    version = training.train_catalogue_model(job, config=TINY)

    assert version.dim == 64 and not version.is_active, "serving continues with the untrained model meanwhile"
    assert versions.active_version() == active_version
    assert not training.needs_initial_training(), "no second training while one is re-embedding"
    wait_until(lambda: refresh_training_job(TrainingJob.objects.get(pk=job.pk)).state == TrainingJob.State.DONE,
               timeout=300, message="the trained model is re-embedded and switched to")
    assert versions.active_version() == version
    images = Snapshot.objects.count() + Item.objects.count()
    assert Descriptor.objects.filter(model_version=version, status=Descriptor.Status.READY).count() == images


def test_no_training_without_a_catalogue(transactional_db, active_version):
    assert not training.needs_initial_training()
    call_command("ensure_trained_model", verbosity=0)
    assert not TrainingJob.objects.exists()
