"""Re-embedding the whole database (catalogue and wardrobes) with a model version, then switching to it.

The switch happens only when every image has a ready descriptor under the new version; while the job runs,
queries keep using the old active version, and a job that ends with failed images leaves the old one active.
"""
from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone

from recommender.models import Descriptor, Item, ModelVersion, ReembedJob, Snapshot
from recommender.services.embedding import queue_embedding
from recommender.services.versions import activate
from wardrobe.models import WardrobeItem

IMAGE_MODELS = {"snapshot": Snapshot, "item": Item, "wardrobe_item": WardrobeItem}


def versions_receiving_new_images() -> list[ModelVersion]:
    """The active version plus any version being re-embedded, so images added meanwhile are not missed."""
    return list(
        ModelVersion.objects.filter(
            Q(is_active=True) | Q(reembed_jobs__state=ReembedJob.State.RUNNING)
        ).distinct()
    )


def describe_missing_images(version: ModelVersion) -> list[Descriptor]:
    """Creates a pending descriptor under `version` for every image that has none; returns them."""
    created = []
    for kind, model in IMAGE_MODELS.items():
        described = Descriptor.objects.filter(model_version=version, **{f"{kind}__isnull": False})
        missing = model.objects.exclude(id__in=described.values(f"{kind}_id")).values_list("id", flat=True)
        created += Descriptor.objects.bulk_create(
            [Descriptor(model_version=version, **{f"{kind}_id": image_id}) for image_id in missing]
        )
    return created


@transaction.atomic
def start_reembedding(version: ModelVersion) -> ReembedJob:
    """Creates the missing descriptors of `version` for every image, queues all not ready, returns the job."""
    job = ReembedJob.objects.create(model_version=version)
    describe_missing_images(version)
    not_ready = Descriptor.objects.filter(model_version=version).exclude(status=Descriptor.Status.READY)
    not_ready.filter(status=Descriptor.Status.FAILED).update(status=Descriptor.Status.PENDING, error="")
    queue_embedding(not_ready.values_list("id", flat=True))
    refresh_progress(job)
    from recommender.tasks import check_reembedding

    transaction.on_commit(lambda: check_reembedding.apply_async((job.id,), countdown=1))
    return job


def refresh_progress(job: ReembedJob) -> ReembedJob:
    counts = Descriptor.objects.filter(model_version=job.model_version).aggregate(
        total=Count("id"),
        done=Count("id", filter=Q(status=Descriptor.Status.READY)),
        failed=Count("id", filter=Q(status=Descriptor.Status.FAILED)),
    )
    for field, value in counts.items():
        setattr(job, field, value)
    job.save(update_fields=["total", "done", "failed"])
    return job


@transaction.atomic
def finish_if_complete(job_id: int) -> ReembedJob:
    """Switches the active version when every image is embedded, fails the job when nothing is left to try.

    Idempotent; returns the job (still RUNNING when work remains)."""
    job = ReembedJob.objects.select_for_update().get(pk=job_id)
    if job.state != ReembedJob.State.RUNNING:
        return job
    refresh_progress(job)
    images = sum(model.objects.count() for model in IMAGE_MODELS.values())
    if job.done == job.total == images:
        activate(job.model_version)
        job.state, job.finished = ReembedJob.State.DONE, timezone.now()
    elif job.done + job.failed == job.total:
        errors = Descriptor.objects.filter(
            model_version=job.model_version, status=Descriptor.Status.FAILED
        ).values_list("error", flat=True)[:5]
        job.state, job.finished = ReembedJob.State.FAILED, timezone.now()
        job.error = f"{job.failed} images failed, the active version is unchanged: " + "; ".join(errors)
    elif job.total < images:  # images arrived before the job could describe them
        queue_embedding(d.id for d in describe_missing_images(job.model_version))
    job.save()
    return job
