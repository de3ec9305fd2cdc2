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
import os
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from django.db import connection, connections, transaction
from django.db.models import F, Q
from django.utils import timezone

from fashionsite.queueing import BULK_QUEUE, send_now
from recommender.embedders import get_embedder
from recommender.models import Descriptor, ModelVersion
from recommender.services.binary_cursor import binary_cursor
from recommender.signals import descriptors_ready

logger = logging.getLogger(__name__)

BATCH_SIZE = 128  # images per task message (the model runs them in forward steps of 8: decode, forward and write
# overlap inside a task, so what does not overlap is paid once per task: its queries, the first step's decode,
# the last write, the writer's connection; 128 rather than 64 halves that share, docs/RESULTS.md issue 9 point 5)

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
        .defer("embedding")  # a re-embedded row's old vector: never read here, 1,280 floats to parse
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
    # stored file name -> its descriptors: rows whose images share a file (one photo listed twice) are decoded
    # and embedded once, and each of them gets the vector (or the file's error)
    by_name: dict[str, list[Descriptor]] = {}
    storages = {}
    for descriptor in group:
        field = descriptor.image_owner.image
        by_name.setdefault(field.name, []).append(descriptor)
        storages[field.name] = field.storage
    now = timezone.now()
    ready, errors = [], {}
    # Three things overlap: the embedder's thread reads the next forward-sized step from storage (and decodes it
    # too unless this process shares the cores with others, Embedder.decode_in_thread) while the model runs on
    # this one, and the vectors of the step before are written to the database meanwhile (DescriptorWriter).
    with DescriptorWriter(now) as writer:
        for names, vectors, step_errors in embedder.iter_embedded(
            list(by_name), batch_size=embedder.model_batch_size,
            open_file=lambda name: storages[name].open(name, "rb"),
        ):
            step = []
            for name, vector in zip(names, vectors):
                for descriptor in by_name[name]:
                    descriptor.embedding, descriptor.status, descriptor.error, descriptor.updated = (
                        vector, Descriptor.Status.READY, "", now)
                    step.append(descriptor)
            writer.store(step)
            ready.extend(step)
            errors.update(step_errors)
    for name, message in errors.items():
        failed = by_name[name]
        for descriptor in failed:
            descriptor.status, descriptor.error = Descriptor.Status.FAILED, message
        Descriptor.objects.filter(pk__in=[d.pk for d in failed]).update(
            status=Descriptor.Status.FAILED, error=message, updated=now)
    outcome["ready"] += len(ready)
    outcome["failed"] += sum(len(by_name[name]) for name in errors)
    if ready:
        descriptors_ready.send(sender=Descriptor, descriptors=ready)
    return outcome



class DescriptorWriter:
    """Stores ready descriptors (`store_vectors`) in a thread of its own, with its own database connection, while
    the caller goes on (the model runs on the next images): on 2 cores, Postgres inserting each vector into the
    version's HNSW index costs about as much as decoding the image. Writes run in order; leaving the block waits
    for them and raises the first write's error (the task is then retried: rows already stored are skipped).

    The thread and its connection outlive the block: one per process, started on first use, so a task pays
    neither a thread's start nor a new connection (a Postgres backend's start-up) each time. Entering the block
    gives that connection the checks Django gives a request's (`close_if_unusable_or_obsolete`: CONN_MAX_AGE,
    and a connection left unusable by an error is dropped); after a failed write it is closed, so the next block
    connects afresh. `close_writer_thread` ends both (the worker process's shutdown; tests).

    Inside a transaction the writes stay in the caller's thread: another connection would not see its rows."""

    def __init__(self, now):
        self.now = now
        self.pool = None if connection.in_atomic_block else _writer_thread()
        self.writes = []

    def store(self, descriptors: list[Descriptor]) -> None:
        if not descriptors:
            return
        if self.pool is None:
            store_vectors(descriptors, self.now)
        else:
            self.writes.append(self.pool.submit(store_vectors, list(descriptors), self.now))

    def __enter__(self):
        if self.pool is not None:
            self.pool.submit(_check_writer_connection)  # runs before the block's writes, in the writer thread
        return self

    def __exit__(self, exc_type, exc, traceback):
        if self.pool is None:
            return False
        failed = False
        for write in self.writes:
            error = write.exception()  # waits for it
            if error is None:
                continue
            failed = True
            if exc_type is not None:  # the caller's own error is the one raised
                logger.warning("a descriptor write failed too: %s", error)
        if failed:
            self.pool.submit(connections.close_all).result()  # in the writer thread: its own connection
            if exc_type is None:
                next(w for w in self.writes if w.exception() is not None).result()  # raises the first error
        return False


def _check_writer_connection() -> None:
    connection.close_if_unusable_or_obsolete()  # `connection` here: the writer thread's own


_writer = {"pool": None, "pid": None}
_writer_lock = threading.Lock()


def _writer_thread() -> ThreadPoolExecutor:
    """The process's descriptor writer thread (DescriptorWriter), started on first use. A process forked from
    one that had it starts its own (a forked copy of an executor has no thread behind it)."""
    with _writer_lock:
        if _writer["pool"] is None or _writer["pid"] != os.getpid():
            _writer["pool"], _writer["pid"] = ThreadPoolExecutor(1, thread_name_prefix="db-writer"), os.getpid()
        return _writer["pool"]


def close_writer_thread() -> None:
    """Closes the writer thread's database connection and ends the thread (the next write starts them again)."""
    with _writer_lock:
        pool = _writer["pool"] if _writer["pid"] == os.getpid() else None
        _writer["pool"] = _writer["pid"] = None
    if pool is not None:
        pool.submit(connections.close_all).result()
        pool.shutdown()


def store_vectors(descriptors: list[Descriptor], now) -> None:
    """Stores the vectors of ready descriptors in one transaction and one pipelined round trip, each vector sent
    as a bound parameter in pgvector's binary format (5 KiB for 1280-d, nothing to print or parse).

    It takes a server-binding psycopg cursor: Django's own cursors bind on the client (they merge every
    parameter into the SQL text), which would turn each vector into 1,280 printed floats whatever the
    placeholder; Django's bulk_update does the same inside a CASE expression. Both cost more CPU per image than
    decoding it (bench/embedding_throughput.py)."""
    if not descriptors:
        return
    with transaction.atomic(), binary_cursor() as cursor:
        cursor.executemany(
            f"UPDATE {Descriptor._meta.db_table} SET embedding = %b, status = %s, error = '', updated = %s "
            "WHERE id = %s",
            [(np.asarray(d.embedding, np.float32), Descriptor.Status.READY.value, now, d.id) for d in descriptors],
        )


def mark_failed(descriptor_ids, error: str) -> None:
    Descriptor.objects.filter(id__in=descriptor_ids).exclude(status=Descriptor.Status.READY).update(
        status=Descriptor.Status.FAILED, error=error, updated=timezone.now()
    )
