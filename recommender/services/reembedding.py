"""Re-embedding the whole database (catalogue and wardrobes) with a model version, then switching to it.

The switch happens only when every image has a ready descriptor under the new version; while the job runs,
queries keep using the old active version, and a job that ends with failed images leaves the old one active.
"""
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, Q
from django.utils import timezone

from fashionsite.queueing import enqueue
from recommender.models import Descriptor, Item, ModelVersion, ReembedJob, Snapshot
from recommender.services.versions import activate, drop_vector_indexes, ensure_vector_indexes
from wardrobe.models import WardrobeItem

IMAGE_MODELS = {"snapshot": Snapshot, "item": Item, "wardrobe_item": WardrobeItem}


class ReembeddingInProgress(Exception):
    """A re-embedding is already running: two at once would race to switch the active version."""

    def __init__(self, job: ReembedJob):
        self.job = job
        super().__init__(
            f"re-embedding job {job.id} with {job.model_version.name} is still running "
            f"({job.done}/{job.total} done); start another when it has finished"
        )


def versions_receiving_new_images() -> list[ModelVersion]:
    """The active version plus any version being re-embedded, so images added meanwhile are not missed."""
    return list(
        ModelVersion.objects.filter(
            Q(is_active=True) | Q(reembed_jobs__state=ReembedJob.State.RUNNING)
        ).distinct()
    )


def describe_missing_images(version: ModelVersion) -> int:
    """Creates a pending descriptor under `version` for every image that has none (one INSERT ... SELECT per
    kind of image, in the database: nothing held in memory at 1M images); returns how many."""
    created = 0
    table = Descriptor._meta.db_table
    with connection.cursor() as cursor:
        for kind, model in IMAGE_MODELS.items():
            column = f"{kind}_id"
            cursor.execute(
                f"INSERT INTO {table} (model_version_id, {column}, status, error, updated, attempts) "
                f"SELECT %s, image.id, %s, '', now(), 0 FROM {model._meta.db_table} image "
                f"WHERE NOT EXISTS (SELECT 1 FROM {table} d WHERE d.model_version_id = %s AND d.{column} = image.id) "
                f"ORDER BY image.id ON CONFLICT DO NOTHING",  # ids in the images' order: sent oldest first
                [version.id, Descriptor.Status.PENDING, version.id],
            )
            created += cursor.rowcount
    return created


def running_job() -> ReembedJob | None:
    return ReembedJob.objects.filter(state=ReembedJob.State.RUNNING).select_related("model_version").first()


def start_reembedding(version: ModelVersion, retried: bool = False) -> ReembedJob:
    """Creates the missing descriptors of `version` for every image and a running job; the reconciler sends
    them to the workers (the bulk queue filled a bounded amount at a time) and switches the version when all
    are ready. Raises ReembeddingInProgress when a re-embedding is already running."""
    try:
        with transaction.atomic():
            job = ReembedJob.objects.create(model_version=version)  # one running job at most (a constraint)
            describe_missing_images(version)
            Descriptor.objects.filter(model_version=version).exclude(status=Descriptor.Status.READY).update(
                status=Descriptor.Status.PENDING, queued_at=None, attempts=0, error=""
            )
            refresh_progress(job)
            enqueue("recommender.tasks.reconcile")
    except IntegrityError:
        running = running_job()
        if running is None:
            if retried:  # not the one-running-job constraint: a real error, not a race
                raise
            return start_reembedding(version, retried=True)  # it finished meanwhile: try once more
        raise ReembeddingInProgress(running)
    version.refresh_from_db(fields=["is_active"])
    if not version.is_active:
        # written without index inserts (a third of the pipeline's CPU besides the model), indexed once when
        # complete (finish_if_complete); the active version keeps its indexes and serves meanwhile
        drop_vector_indexes(version)
    return job


def refresh_progress(job: ReembedJob) -> ReembedJob:
    counts = Descriptor.objects.filter(model_version=job.model_version).aggregate(
        # Count("status"): the (version, status) index alone answers (no read of the 6 KB rows)
        total=Count("status"),
        done=Count("status", filter=Q(status=Descriptor.Status.READY)),
        failed=Count("status", filter=Q(status=Descriptor.Status.FAILED)),
    )
    for field, value in counts.items():
        setattr(job, field, value)
    job.save(update_fields=["total", "done", "failed"])
    return job


def finish_jobs_of(version_ids) -> None:
    """Called by the worker after a batch: finishes the running job of these versions at once when no image
    is left pending (the reconciler would do it on its next pass)."""
    for job in ReembedJob.objects.filter(state=ReembedJob.State.RUNNING, model_version_id__in=version_ids):
        if not Descriptor.objects.filter(model_version_id=job.model_version_id,
                                         status=Descriptor.Status.PENDING).exists():
            finish_if_complete(job.id)


def finish_if_complete(job_id: int) -> ReembedJob:
    """Switches the active version when every image is embedded, fails the job when nothing is left to try.
    Before the switch, the version's vector indexes are built on its rows (outside a transaction:
    CONCURRENTLY, so searches and writes go on; the switch then finds them).

    Idempotent; returns the job (still RUNNING when work remains)."""
    job = ReembedJob.objects.select_related("model_version").get(pk=job_id)
    if job.state == ReembedJob.State.RUNNING:
        version = job.model_version
        unfinished = Descriptor.objects.filter(model_version=version).exclude(status=Descriptor.Status.READY)
        if not unfinished.exists() and Descriptor.objects.filter(model_version=version).count() >= sum(
                model.objects.count() for model in IMAGE_MODELS.values()):
            ensure_vector_indexes(version)
    return _finish_if_complete(job_id)


@transaction.atomic
def _finish_if_complete(job_id: int) -> ReembedJob:
    job = ReembedJob.objects.select_for_update().get(pk=job_id)
    if job.state != ReembedJob.State.RUNNING:
        return job
    refresh_progress(job)
    images = sum(model.objects.count() for model in IMAGE_MODELS.values())
    if job.done == job.total == images:
        activate(job.model_version)
        job.state, job.finished = ReembedJob.State.DONE, timezone.now()
    elif job.done + job.failed == job.total and job.total >= images:
        errors = Descriptor.objects.filter(
            model_version=job.model_version, status=Descriptor.Status.FAILED
        ).values_list("error", flat=True)[:5]
        job.state, job.finished = ReembedJob.State.FAILED, timezone.now()
        job.error = f"{job.failed} images failed, the active version is unchanged: " + "; ".join(errors)
    elif job.total < images:  # images arrived before the job could describe them (the reconciler sends them)
        describe_missing_images(job.model_version)
    job.save()
    return job
