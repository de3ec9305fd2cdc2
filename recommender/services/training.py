"""Training a CGD model on the platform's own catalogue (the first start's background job).

The catalogue is exported as a folder of links in the original layout, so the training is exactly
`manage.py train_cgd` (ml.training.train_with_selection) on what the platform holds; the trained model
is then registered and the whole database re-embedded with it (recommender.services.reembedding), and until
that finishes the platform keeps serving the version it had.

A worker that dies mid-training (killed, out of memory) must not leave the job "running" for ever, nor start
it again for ever: each try counts (`attempts`), a running job keeps a heartbeat, and the reconciler queues a
job whose heartbeat stopped again while it has tries left, else marks it failed (`recover_stalled_jobs`).
"""
import os
import shutil
import tempfile
import threading
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from recommender.models import Look, ModelVersion, TrainingJob
from recommender.services.reembedding import start_reembedding
from recommender.services.versions import register_version

MIN_LOOKS_TO_TRAIN = 10
MAX_TRAINING_ATTEMPTS = 3  # tries in all; each one a worker died in counts
HEARTBEAT_EVERY = 30  # seconds between heartbeats of a running job
HEARTBEAT_STALE_AFTER = timedelta(minutes=5)  # a running job silent this long has lost its worker


def trained_versions():
    return ModelVersion.objects.exclude(spec__startswith="untrained-")


def needs_initial_training() -> bool:
    """No trained model registered, none being trained, and a catalogue worth training on."""
    busy = TrainingJob.objects.filter(
        state__in=[TrainingJob.State.QUEUED, TrainingJob.State.RUNNING, TrainingJob.State.REEMBEDDING]
    )
    return not trained_versions().exists() and not busy.exists() and Look.objects.count() >= MIN_LOOKS_TO_TRAIN


def export_catalogue(target: Path) -> Path:
    """Links every look's snapshots and items into `target` as {look id}_{k}_part/reco files."""
    target.mkdir(parents=True, exist_ok=True)
    for look in Look.objects.prefetch_related("snapshots", "items").iterator(chunk_size=500):
        for k, snapshot in enumerate(look.snapshots.all()):
            _export_image(snapshot.image, target / f"{look.pk}_{k}_part{Path(snapshot.image.name).suffix}")
        for k, item in enumerate(look.items.all()):
            _export_image(item.image, target / f"{look.pk}_{k}_reco{Path(item.image.name).suffix}")
    return target


def _export_image(field, link: Path) -> None:
    """A link to the stored file where the storage is a local folder, else a copy read through the storage."""
    try:
        os.symlink(field.storage.path(field.name), link)
    except NotImplementedError:  # e.g. S3: no local path
        with field.storage.open(field.name, "rb") as source, open(link, "wb") as copy:
            shutil.copyfileobj(source, copy)


def train_catalogue_model(job: TrainingJob, config=None) -> ModelVersion | None:
    """Trains on the catalogue, registers the model and starts re-embedding with it. Updates `job` throughout.

    None when there is nothing to do: the job is done, another worker is training it, or it ran out of tries."""
    from ml.evaluation.dataset import LookDataset
    from ml.training import TrainConfig, train_with_selection

    def log(line: str):
        TrainingJob.objects.filter(pk=job.pk).update(message=str(line)[:2000])

    job = claim(job.pk)
    if job is None:
        return None
    work = Path(tempfile.mkdtemp(prefix="train-", dir=settings.DATA_DIR))
    try:
        with heartbeat(job.pk):
            dataset = LookDataset.from_folder(export_catalogue(work / "catalogue"))
            model_dir = Path(settings.MODEL_CACHE_DIR) / "versions" / f"cgd-catalogue-job{job.pk}"
            card = train_with_selection(
                dataset, model_dir, Path(settings.MODEL_CACHE_DIR) / "features", config or TrainConfig(),
                progress=False, log=log,
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    version = register_version(model_dir.name, str(model_dir), card.descriptor_dim)
    job.model_version, job.state = version, TrainingJob.State.REEMBEDDING
    job.message = f"trained ({card.epochs_trained} epochs); re-embedding the database"
    job.save(update_fields=["model_version", "state", "message"])
    start_reembedding(version)
    return version


def claim(job_id: int) -> TrainingJob | None:
    """Starts a try of the job in this worker: running, one more attempt, a fresh heartbeat. None when the job
    is finished, alive in another worker (a redelivered message), or out of tries (then it is marked failed)."""
    with transaction.atomic():
        job = TrainingJob.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.state not in (TrainingJob.State.QUEUED, TrainingJob.State.RUNNING):
            return None
        if job.state == TrainingJob.State.RUNNING and not _stalled(job):
            return None
        if job.attempts >= MAX_TRAINING_ATTEMPTS:
            _give_up(job)
            return None
        job.state, job.attempts, job.heartbeat = TrainingJob.State.RUNNING, job.attempts + 1, timezone.now()
        job.message = "exporting the catalogue"
        job.save(update_fields=["state", "attempts", "heartbeat", "message"])
        return job


def _stalled(job: TrainingJob) -> bool:
    return job.heartbeat is None or job.heartbeat < timezone.now() - HEARTBEAT_STALE_AFTER


def _give_up(job: TrainingJob) -> None:
    job.state, job.finished = TrainingJob.State.FAILED, timezone.now()
    job.message = f"stopped after {job.attempts} tries: the training worker died during each one"
    job.save(update_fields=["state", "finished", "message"])


@contextmanager
def heartbeat(job_id: int):
    """Refreshes the job's heartbeat every HEARTBEAT_EVERY seconds from a thread while the block runs."""
    stop = threading.Event()

    def beat():
        try:
            while not stop.wait(HEARTBEAT_EVERY):
                TrainingJob.objects.filter(pk=job_id, state=TrainingJob.State.RUNNING).update(
                    heartbeat=timezone.now())
        finally:
            connection.close()  # the thread's own connection

    thread = threading.Thread(target=beat, name=f"training-heartbeat-{job_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def recover_stalled_jobs() -> dict[int, str]:
    """Running jobs whose heartbeat stopped (their worker died): queued again (sent by the reconciler) while
    they have tries left, else failed. Returns {job id: new state}."""
    recovered = {}
    stale = TrainingJob.objects.filter(state=TrainingJob.State.RUNNING).exclude(
        heartbeat__gte=timezone.now() - HEARTBEAT_STALE_AFTER)
    for job in stale:
        if job.attempts >= MAX_TRAINING_ATTEMPTS:
            _give_up(job)
        else:
            job.state, job.queued_at = TrainingJob.State.QUEUED, None
            job.message = f"the training worker stopped during try {job.attempts} of {MAX_TRAINING_ATTEMPTS}; queued again"
            job.save(update_fields=["state", "queued_at", "message"])
        recovered[job.pk] = job.state
    return recovered


def refresh_training_job(job: TrainingJob) -> TrainingJob:
    """A job re-embedding is done when its version is active (or failed when its re-embedding failed)."""
    if job.state == TrainingJob.State.REEMBEDDING and job.model_version is not None:
        last = job.model_version.reembed_jobs.first()
        if job.model_version.is_active:
            job.state, job.finished, job.message = TrainingJob.State.DONE, timezone.now(), "serving the trained model"
            job.save(update_fields=["state", "finished", "message"])
        elif last is not None and last.state == last.State.FAILED:
            job.state, job.finished, job.message = TrainingJob.State.FAILED, timezone.now(), last.error
            job.save(update_fields=["state", "finished", "message"])
    return job
