"""The reconciler: brings the queue in line with the database, and advances the jobs.

The database holds the state of all background work; the broker only carries messages. `reconcile()` is
idempotent and cheap when there is nothing to do, and runs
* every few seconds in `manage.py reconcile --every N` (a service of `make run`; it needs no worker and no beat,
  so work that arrived while Redis was down is queued soon after Redis answers again),
* as the periodic task `recommender.tasks.reconcile` (Celery beat, for deployments that run only workers),
* once when a worker starts, and when a re-embedding starts.
Only one runs at a time (a Postgres advisory lock); the others return at once.

What it does, in order:
1. jobs: a re-embedding whose descriptors are all done switches the active version (or fails); a training
   job follows its re-embedding; a training job whose task could not be queued (or was lost) is sent again,
   and one whose worker died mid-training (its heartbeat stopped) is queued again for a bounded number of
   tries (services.training.recover_stalled_jobs).
2. failed descriptors of the versions in use are retried, a bounded number of times (MAX_ATTEMPTS tries in all).
3. pending descriptors never sent (the broker was down, or a re-embedding waits for room) are sent, the bulk
   queue filled up to MAX_QUEUED_BATCHES only, so a re-embedding of 1M images never puts 1M ids in Redis.
4. pending descriptors sent long ago whose queue is empty (the message was lost with Redis, or with a worker
   killed outright) are sent again. Rows that are still on their way (their queue is not empty) are never sent
   twice: that is what kept a long re-embedding from flooding its queue with copies.
5. tagging sent long ago and never finished (its task lost with Redis, or with a worker killed on it) is sent
   again while its queue is empty, a bounded number of times (resend_lost_tagging).
6. the item IVFFlat index of each version in use is retrained when its ready rows have grown by a quarter since it
   was trained (services.versions.maintain_item_index; a version being re-embedded has no vector indexes
   until it completes, when they are built on all its rows before the switch). This needs
   no broker, so it runs even while Redis is down; it runs last, because a retraining at 100k items takes a
   minute (REINDEX CONCURRENTLY: searches and writes go on meanwhile).
"""
import logging
from datetime import timedelta

import redis
from django.conf import settings
from django.db import connection
from django.utils import timezone

from fashionsite.queueing import BULK_QUEUE, INTERACTIVE_QUEUE, TRAINING_QUEUE, send_now
from recommender.models import Descriptor, ReembedJob, TrainingJob
from recommender.services.embedding import BATCH_SIZE, MAX_ATTEMPTS, interactive_rows, send_batches
from recommender.services.reembedding import finish_if_complete, versions_receiving_new_images
from recommender.services.tagging import BATCH_SIZE as TAGGING_BATCH, queue_tagging
from recommender.services.training import recover_stalled_jobs, refresh_training_job
from recommender.services.versions import maintain_item_index

logger = logging.getLogger(__name__)

LOCK_KEY = 0x6661_7368  # pg advisory lock: one reconciler at a time
MAX_QUEUED_BATCHES = 100  # bulk queue depth the reconciler fills up to (12,800 images: minutes of work)
MAX_SENT_PER_RUN = 100  # batches per queue per run: a run stays short; the next one goes on
STALE_AFTER = timedelta(minutes=2)  # a sent row not done by then, with its queue empty, was lost
RETRY_FAILED_AFTER = timedelta(minutes=2)
TRAINING_STALE_AFTER = timedelta(minutes=10)
TRAIN_TASK = "recommender.tasks.train_catalogue_model"


def queue_lengths() -> dict[str, int] | None:
    """Messages waiting in each queue; None when the broker does not answer."""
    try:
        client = redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=2, socket_connect_timeout=2)
        pipe = client.pipeline()
        for queue in (BULK_QUEUE, INTERACTIVE_QUEUE, TRAINING_QUEUE):
            pipe.llen(queue)
        return dict(zip((BULK_QUEUE, INTERACTIVE_QUEUE, TRAINING_QUEUE), pipe.execute()))
    except redis.RedisError:
        return None


def reconcile() -> dict:
    """One pass (see the module's docstring). Returns what it did."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [LOCK_KEY])
        if not cursor.fetchone()[0]:
            return {"skipped": "another reconciler is running"}
    try:
        report = {"jobs": advance_jobs()}
        lengths = queue_lengths()
        report["broker"] = "ok" if lengths is not None else "down"
        if lengths is not None:  # otherwise nothing can be sent; the rows wait in the database
            report["retried_failed"] = retry_failed()
            report["sent"] = send_unsent(lengths)
            report["resent_stale"] = resend_stale(lengths)
            report["training_sent"] = send_training_jobs(lengths)
            report["tagging"] = resend_lost_tagging(lengths)
        report["indexes"] = maintain_indexes()
        return report
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [LOCK_KEY])


def advance_jobs() -> dict:
    states = {}
    for job_id in ReembedJob.objects.filter(state=ReembedJob.State.RUNNING).values_list("id", flat=True):
        states[f"reembed {job_id}"] = finish_if_complete(job_id).state
    for job in TrainingJob.objects.filter(state=TrainingJob.State.REEMBEDDING):
        states[f"training {job.id}"] = refresh_training_job(job).state
    for job_id, state in recover_stalled_jobs().items():  # their worker died; sent below when queued again
        states[f"training {job_id}"] = state
    return states


def maintain_indexes() -> list:
    """Retrains the item index of each version in use that has outgrown it. (A re-embedded version's indexes
    are built on all its rows when it completes: services.reembedding.finish_if_complete.)"""
    done = []
    for version in versions_receiving_new_images():
        try:
            rebuilt = maintain_item_index(version)
        except Exception:  # e.g. a lock that did not come in time: the next pass tries again
            logger.exception("could not retrain the item index of %s", version)
            continue
        if rebuilt:
            done.append(rebuilt)
    return done


def retry_failed() -> int:
    """Failed rows of the versions in use that have tries left go back to pending (sent by `send_unsent`)."""
    return Descriptor.objects.filter(
        status=Descriptor.Status.FAILED, attempts__lt=MAX_ATTEMPTS,
        model_version__in=versions_receiving_new_images(),
        updated__lt=timezone.now() - RETRY_FAILED_AFTER,
    ).update(status=Descriptor.Status.PENDING, queued_at=None, updated=timezone.now())


def _send(rows, queue: str, batches: int) -> int:
    """Sends up to `batches` batches of the rows' ids (oldest first); returns the number of rows sent."""
    if batches <= 0:
        return 0
    ids = list(rows.order_by("id").values_list("id", flat=True)[: batches * BATCH_SIZE])
    chunks = [ids[i : i + BATCH_SIZE] for i in range(0, len(ids), BATCH_SIZE)]
    sent = send_batches(chunks, queue)
    return sum(len(chunk) for chunk in chunks[:sent])


def _unfinished(queue: str):
    rows = Descriptor.objects.filter(status=Descriptor.Status.PENDING)
    return rows.filter(interactive_rows()) if queue == INTERACTIVE_QUEUE else rows.exclude(interactive_rows())


def send_unsent(lengths: dict[str, int]) -> dict:
    room = {
        INTERACTIVE_QUEUE: MAX_SENT_PER_RUN,
        BULK_QUEUE: min(MAX_SENT_PER_RUN, MAX_QUEUED_BATCHES - lengths[BULK_QUEUE]),
    }
    return {queue: _send(_unfinished(queue).filter(queued_at__isnull=True), queue, room[queue]) for queue in room}


def resend_stale(lengths: dict[str, int]) -> dict:
    sent = {}
    for queue in (INTERACTIVE_QUEUE, BULK_QUEUE):
        if lengths[queue] == 0:  # anything still waiting in the queue is on its way: never sent twice
            stale = _unfinished(queue).filter(queued_at__lt=timezone.now() - STALE_AFTER)
            sent[queue] = _send(stale, queue, MAX_SENT_PER_RUN)
            if sent[queue]:
                logger.warning("re-sent %d %s descriptors whose messages were lost", sent[queue], queue)
    return sent


def resend_lost_tagging(lengths: dict[str, int]) -> dict:
    """Tagging sent long ago and not finished (the task was lost with Redis, or its worker died on it) is sent
    again while its queue is empty (a waiting task is on its way); after MAX_ATTEMPTS sends the image is
    given up and left for `manage.py tag_categories` (logged), so an image that kills the tagger cannot loop."""
    stale = Descriptor.objects.filter(tagging_sent_at__lt=timezone.now() - STALE_AFTER)
    given_up = stale.filter(tagging_attempts__gte=MAX_ATTEMPTS).update(tagging_sent_at=None)
    if given_up:
        logger.warning("gave up tagging %d images after %d tries", given_up, MAX_ATTEMPTS)
    sent = {}
    for queue in (INTERACTIVE_QUEUE, BULK_QUEUE):
        if lengths[queue] == 0:
            rows = stale.filter(interactive_rows()) if queue == INTERACTIVE_QUEUE else stale.exclude(
                interactive_rows())
            rows = rows.select_related("item", "wardrobe_item", "snapshot", "model_version").order_by("id")
            sent[queue] = queue_tagging(list(rows[:TAGGING_BATCH]))
            if sent[queue]:
                logger.warning("re-sent the tagging of %d images whose task was lost", sent[queue])
    return {"given_up": given_up, **sent}


def send_training_jobs(lengths: dict[str, int]) -> int:
    """Queued training jobs never sent, or sent long ago with nothing in the training queue (lost)."""
    jobs = TrainingJob.objects.filter(state=TrainingJob.State.QUEUED)
    lost = jobs.filter(queued_at__lt=timezone.now() - TRAINING_STALE_AFTER) if lengths[TRAINING_QUEUE] == 0 else []
    sent = 0
    for job in [*jobs.filter(queued_at__isnull=True), *lost]:
        if send_now(TRAIN_TASK, (job.id,)):
            TrainingJob.objects.filter(pk=job.pk).update(queued_at=timezone.now())
            sent += 1
    return sent
