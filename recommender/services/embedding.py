"""Turning images into descriptors: creating pending descriptor rows, queueing them, and (in the worker)
computing them in batches with the version's embedder.

The database is the queue's source of truth. A descriptor is `pending` until a worker stores its vector
(`ready`) or gives it up (`failed`, with the error). `queued_at` says when it was last sent to the workers
(None: never sent, e.g. the broker was down), `attempts` how many times a worker started on it. Sending is
cheap to repeat (the task skips rows already ready), but the reconciler (recommender.services.reconcile) only
re-sends what is not on its way, so a long re-embedding never floods the queue with copies.

Images are read through Django's storage API (`storage.open(name)`, never a local path), so STORAGES may point
at S3-compatible storage and workers may run on other hosts than the web.
"""
import logging
from collections.abc import Iterable

import numpy as np
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from fashionsite.queueing import BULK_QUEUE, send_now
from recommender.embedders import get_embedder
from recommender.models import Descriptor, ModelVersion
from recommender.signals import descriptors_ready

logger = logging.getLogger(__name__)

BATCH_SIZE = 32  # images per task message (the model runs them in smaller forward batches)
# A worker starts on an image at most this many times: an image whose task kills its worker (or fails) again
# and again is then marked failed instead of blocking its queue.
MAX_ATTEMPTS = 3
EMBED_TASK = "recommender.tasks.embed_descriptors"


def create_pending_descriptors(version: ModelVersion, **image) -> Descriptor:
    """The descriptor row of one image (snapshot=, item= or wardrobe_item=) under `version`, pending if new."""
    descriptor, _ = Descriptor.objects.get_or_create(model_version=version, **image)
    return descriptor


def queue_embedding(descriptor_ids: Iterable[int], queue: str = BULK_QUEUE) -> int:
    """Sends the ids to the workers in batches once the current transaction commits, and records when each
    batch was sent. Returns the number of batches to send.

    If the broker is down the rows stay pending with `queued_at` unset; the reconciler sends them later.
    """
    ids = sorted(set(descriptor_ids))
    batches = [ids[i : i + BATCH_SIZE] for i in range(0, len(ids), BATCH_SIZE)]

    def send():
        send_batches(batches, queue)

    transaction.on_commit(send)
    return len(batches)


def send_batches(batches: list[list[int]], queue: str) -> int:
    """Sends batches of ids now and marks them queued; stops at the first failure (the broker is down).
    Returns how many batches were sent."""
    sent = 0
    for batch in batches:
        if not send_now(EMBED_TASK, (batch,), queue=queue):
            break
        Descriptor.objects.filter(id__in=batch).exclude(status=Descriptor.Status.READY).update(
            queued_at=timezone.now()
        )
        sent += 1
    return sent


def interactive_rows() -> Q:
    """Descriptors a user is waiting for: their own uploads under the active version."""
    return Q(wardrobe_item__isnull=False, model_version__is_active=True)


# ------------------------------------------------------------------------------------------------ the worker


def compute_descriptors(descriptor_ids) -> dict:
    """Embeds the given descriptors that are not ready yet; idempotent. Returns counts by outcome.

    Unreadable images are marked failed with the error; anything else (database, model) raises so the task is
    retried. Images a worker already started on (it died, or they failed before) are embedded one at a time,
    each counting its own attempt, so that an image which kills the worker takes no other image with it.
    """
    descriptors = list(
        Descriptor.objects.filter(id__in=descriptor_ids)
        .exclude(status=Descriptor.Status.READY)
        .select_related("model_version", "snapshot", "item", "wardrobe_item")
        .order_by("id")
    )
    outcome = {"ready": 0, "failed": 0}
    by_version: dict[int, list[Descriptor]] = {}
    for descriptor in descriptors:
        by_version.setdefault(descriptor.model_version_id, []).append(descriptor)
    for group in by_version.values():
        retried = [d for d in group if d.attempts > 0]
        fresh = [d for d in group if d.attempts == 0]
        for part in [[d] for d in retried] + ([fresh] if fresh else []):
            for key, count in _embed_group(part).items():
                outcome[key] += count
    return outcome


def _embed_group(group: list[Descriptor]) -> dict:
    outcome = {"ready": 0, "failed": 0}
    given_up = [d for d in group if d.attempts >= MAX_ATTEMPTS]
    if given_up:
        for descriptor in given_up:
            reason = descriptor.error or "the worker embedding it died (or its task failed) each time"
            Descriptor.objects.filter(pk=descriptor.pk).exclude(status=Descriptor.Status.READY).update(
                status=Descriptor.Status.FAILED, updated=timezone.now(),
                error=f"gave up after {descriptor.attempts} tries: {reason}"[:2000],
            )
        outcome["failed"] += len(given_up)
        group = [d for d in group if d.attempts < MAX_ATTEMPTS]
    if not group:
        return outcome
    # counted (and committed) before the work, so that a worker killed by an image still counts the try
    Descriptor.objects.filter(id__in=[d.id for d in group]).update(attempts=F("attempts") + 1)
    for descriptor in group:
        descriptor.attempts += 1

    embedder = get_embedder(group[0].model_version)
    by_name = {}
    for descriptor in group:
        field = descriptor.image_owner.image
        by_name[field.name] = (descriptor, field.storage)
    # Decoding runs in embed_files' thread while the model runs: in forward-sized steps, so that the next step's
    # images are decoded during this step's forward pass (one step of 32 would leave nothing to overlap).
    ok_names, vectors, errors = embedder.embed_files(
        list(by_name), batch_size=embedder.model_batch_size,
        open_file=lambda name: by_name[name][1].open(name, "rb"),
    )
    now = timezone.now()
    ready = []
    for name, vector in zip(ok_names, vectors):
        descriptor = by_name[name][0]
        descriptor.embedding, descriptor.status, descriptor.error, descriptor.updated = (
            vector, Descriptor.Status.READY, "", now)
        ready.append(descriptor)
    store_vectors(ready, now)
    for name, message in errors.items():
        descriptor = by_name[name][0]
        descriptor.status, descriptor.error = Descriptor.Status.FAILED, message
        Descriptor.objects.filter(pk=descriptor.pk).update(status=descriptor.status, error=message, updated=now)
    outcome["ready"] += len(ready)
    outcome["failed"] += len(errors)
    if ready:
        descriptors_ready.send(sender=Descriptor, descriptors=ready)
    return outcome


_vector_type = None


def store_vectors(descriptors: list[Descriptor], now) -> None:
    """Stores the vectors of ready descriptors in one transaction, one pipelined round trip, each vector in
    pgvector's binary format. (Django's bulk_update writes a CASE expression with every vector as text: 30 %
    of the worker's time per image for 1280-d vectors on the 2 cores, bench/embedding_throughput.py.)"""
    global _vector_type
    if not descriptors:
        return
    from pgvector.psycopg.vector import register_vector_info
    from psycopg.types import TypeInfo

    with transaction.atomic():
        connection.ensure_connection()
        raw = connection.connection
        if _vector_type is None:
            _vector_type = TypeInfo.fetch(raw, "vector")
        with raw.cursor() as cursor:
            register_vector_info(cursor, _vector_type)  # on this cursor only: nothing else in the process changes
            cursor.executemany(
                f"UPDATE {Descriptor._meta.db_table} SET embedding = %b, status = %s, error = '', updated = %s "
                "WHERE id = %s",
                [(np.asarray(d.embedding, np.float32), Descriptor.Status.READY.value, now, d.id) for d in descriptors],
            )


def mark_failed(descriptor_ids, error: str) -> None:
    Descriptor.objects.filter(id__in=descriptor_ids).exclude(status=Descriptor.Status.READY).update(
        status=Descriptor.Status.FAILED, error=error, updated=timezone.now()
    )
