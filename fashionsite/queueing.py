"""The one way the platform's services queue background work: `enqueue(task name, args)`.

Services name tasks by their Celery name and never import the tasks modules (tasks import services, not the
other way round). The message is sent once the current transaction commits, so a worker never looks for rows
that are not there yet. If the broker is down the error is logged and nothing else happens: the work's state is
in the database (a pending descriptor, a queued training job), and the reconciler
(recommender.services.reconcile) sends it when the broker is back.

The queues (each consumed by its own worker process in `make run`, see fashionsite.launcher):
    celery       bulk embedding: catalogue imports, re-embedding the database
    interactive  a user is waiting: uploads, their tagging, outfit suggestions, and the reconciler's short task
    training     the first start's background training
"""
import logging
from collections.abc import Callable

from django.db import transaction

logger = logging.getLogger(__name__)

BULK_QUEUE = "celery"
INTERACTIVE_QUEUE = "interactive"
TRAINING_QUEUE = "training"
QUEUES = (BULK_QUEUE, INTERACTIVE_QUEUE, TRAINING_QUEUE)

# Where each task goes unless the caller names a queue (settings.CELERY_TASK_ROUTES is built from it).
TASK_QUEUES = {
    "recommender.tasks.embed_descriptors": BULK_QUEUE,
    "recommender.tasks.tag_images": BULK_QUEUE,
    "recommender.tasks.reconcile": INTERACTIVE_QUEUE,
    "recommender.tasks.train_catalogue_model": TRAINING_QUEUE,
    "wardrobe.tasks.recompute_suggestions": INTERACTIVE_QUEUE,
}


def send_now(task_name: str, args=(), queue: str | None = None, countdown: float | None = None) -> bool:
    """Sends one task message now; False (and a log line) when the broker cannot be reached."""
    from fashionsite.celery import app

    try:
        app.send_task(
            task_name, args=list(args), queue=queue or TASK_QUEUES.get(task_name), countdown=countdown,
            ignore_result=True,  # nobody waits on these; and no result-backend round trip when Redis is down
        )
        return True
    except Exception as error:  # noqa: BLE001 - the broker is down or unreachable: the state stays in the database
        logger.warning("could not queue %s%s (%s: %s); its work waits in the database", task_name,
                       tuple(args)[:3], type(error).__name__, error)
        return False


def enqueue(task_name: str, args=(), queue: str | None = None, countdown: float | None = None,
            on_sent: Callable[[], None] | None = None, coalesce: str | None = None) -> None:
    """Queues `task_name(*args)` once the current transaction commits (at once outside a transaction).
    `on_sent` runs after a successful send (e.g. to record when the rows were queued).

    `coalesce`: a key naming the work (e.g. "suggestions:42"). While a task with that key waits in the queue,
    another is not sent: the one waiting will see every change made before it starts (its task calls
    `started(key)` first). Ten uploads in a row thus cost one recomputation, not ten in a queue."""

    def send():
        if coalesce is not None and not _claim(coalesce):
            return  # one is already waiting
        if send_now(task_name, args, queue=queue, countdown=countdown):
            if on_sent is not None:
                on_sent()
        elif coalesce is not None:
            started(coalesce)

    transaction.on_commit(send)


COALESCE_TTL = 600  # seconds: a claim outlives a lost message only this long


def _redis():
    import redis
    from django.conf import settings

    return redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=1, socket_connect_timeout=1)


def _claim(key: str) -> bool:
    try:
        return bool(_redis().set(f"fashionsite:queued:{key}", 1, nx=True, ex=COALESCE_TTL))
    except Exception:  # noqa: BLE001 - the broker is down: the send fails and says so
        return True


def started(key: str) -> None:
    """Called by a coalesced task as it starts: changes from now on queue another run."""
    try:
        _redis().delete(f"fashionsite:queued:{key}")
    except Exception:  # noqa: BLE001
        pass
