"""Turning images into descriptors: creating pending descriptor rows, queueing them, and (in the worker)
computing them in batches with the version's embedder."""
import logging
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from recommender.embedders import get_embedder
from recommender.models import Descriptor, ModelVersion
from recommender.signals import descriptors_ready

logger = logging.getLogger(__name__)

BATCH_SIZE = 32


def create_pending_descriptors(version: ModelVersion, **image) -> Descriptor:
    """The descriptor row of one image (snapshot=, item= or wardrobe_item=) under `version`, pending if new."""
    descriptor, _ = Descriptor.objects.get_or_create(model_version=version, **image)
    return descriptor


def queue_embedding(descriptor_ids) -> int:
    """Sends the ids to the workers in batches, once the current transaction commits. Returns batches sent.

    If Redis is down the ids stay pending in the database and `embed_pending` picks them up later.
    """
    from recommender.tasks import embed_descriptors

    ids = sorted(set(descriptor_ids))
    batches = [ids[i : i + BATCH_SIZE] for i in range(0, len(ids), BATCH_SIZE)]

    def send():
        for batch in batches:
            try:
                embed_descriptors.delay(batch)
            except Exception as error:  # broker unreachable: the rows stay pending
                logger.warning("could not queue %d descriptors (%s); embed_pending will retry", len(batch), error)
                return

    transaction.on_commit(send)
    return len(batches)


def requeue_pending(stale_after: timedelta | None = None) -> int:
    """Re-queues failed descriptors and pending ones (only those untouched for `stale_after`, if given)."""
    pending = Descriptor.objects.filter(status=Descriptor.Status.PENDING)
    if stale_after is not None:
        pending = pending.filter(updated__lt=timezone.now() - stale_after)
    failed = Descriptor.objects.filter(status=Descriptor.Status.FAILED)
    ids = list(pending.values_list("id", flat=True)) + list(failed.values_list("id", flat=True))
    failed.update(status=Descriptor.Status.PENDING, error="")
    queue_embedding(ids)
    return len(ids)


def compute_descriptors(descriptor_ids) -> dict:
    """Embeds the given descriptors that are not ready yet; idempotent. Returns counts by outcome.

    Unreadable images are marked failed with the error; anything else (database, model) raises so the task
    is retried.
    """
    descriptors = list(
        Descriptor.objects.filter(id__in=descriptor_ids)
        .exclude(status=Descriptor.Status.READY)
        .select_related("model_version", "snapshot", "item", "wardrobe_item")
    )
    outcome = {"ready": 0, "failed": 0}
    by_version: dict[int, list[Descriptor]] = {}
    for descriptor in descriptors:
        by_version.setdefault(descriptor.model_version_id, []).append(descriptor)

    for group in by_version.values():
        embedder = get_embedder(group[0].model_version)
        by_path = {descriptor.image_owner.image.path: descriptor for descriptor in group}
        ok_paths, vectors, errors = embedder.embed_files(list(by_path), batch_size=BATCH_SIZE)
        ready = []
        for path, vector in zip(ok_paths, vectors):
            descriptor = by_path[path]
            descriptor.embedding, descriptor.status, descriptor.error = vector, Descriptor.Status.READY, ""
            ready.append(descriptor)
        failed = []
        for path, message in errors.items():
            descriptor = by_path[path]
            descriptor.status, descriptor.error = Descriptor.Status.FAILED, message
            failed.append(descriptor)
        now = timezone.now()  # bulk_update skips auto_now
        for descriptor in ready + failed:
            descriptor.updated = now
        Descriptor.objects.bulk_update(ready + failed, ["embedding", "status", "error", "updated"])
        outcome["ready"] += len(ready)
        if ready:
            descriptors_ready.send(sender=Descriptor, descriptors=ready)
        outcome["failed"] += len(failed)
    return outcome


def mark_failed(descriptor_ids, error: str) -> None:
    Descriptor.objects.filter(id__in=descriptor_ids).exclude(status=Descriptor.Status.READY).update(
        status=Descriptor.Status.FAILED, error=error
    )
