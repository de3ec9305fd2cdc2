"""Celery tasks. They take ids, are idempotent (a redelivered task finds its work done) and keep their state in
the database, so a worker that dies mid-task leaves work that is picked up again. Services never import this
module: they queue tasks by name through fashionsite.queueing.enqueue."""
from celery import shared_task
from celery.signals import worker_init, worker_process_init, worker_process_shutdown, worker_ready
from django.db import InterfaceError, OperationalError

from recommender.services import embedding

TRANSIENT_ERRORS = (OperationalError, InterfaceError, ConnectionError, TimeoutError)


@shared_task(
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=TRANSIENT_ERRORS,
    retry_backoff=True,
    max_retries=5,
)
def embed_descriptors(self, descriptor_ids):
    """Embeds a batch of descriptors; once the retries are used up, marks them failed with the error.

    A pool process killed mid-batch (reject_on_worker_lost) sends the batch back to its queue; each image counts
    its tries (recommender.services.embedding.MAX_ATTEMPTS), so one that kills its worker every time ends failed
    instead of blocking the queue."""
    from recommender.models import Descriptor
    from recommender.services.reembedding import finish_jobs_of

    try:
        outcome = embedding.compute_descriptors(descriptor_ids)
    except TRANSIENT_ERRORS:
        raise
    except Exception as error:
        if self.request.retries >= self.max_retries:
            embedding.mark_failed(descriptor_ids, f"{type(error).__name__}: {error}")
            return {"failed": len(descriptor_ids)}
        raise self.retry(exc=error, countdown=2 ** self.request.retries)
    finish_jobs_of(set(Descriptor.objects.filter(id__in=descriptor_ids).values_list("model_version_id", flat=True)))
    return outcome


@shared_task(acks_late=True, autoretry_for=TRANSIENT_ERRORS, retry_backoff=True, max_retries=3)
def reconcile():
    """Brings the queue in line with the database and advances the jobs (recommender.services.reconcile)."""
    from recommender.services.reconcile import reconcile as run

    return run()


_pool_processes = 1  # this worker's pool size: set in its main process, before the pool forks (worker_init)


@worker_init.connect
def remember_pool_size(sender=None, **_):
    """The main worker process learns its pool size before it forks the pool processes, which inherit it."""
    global _pool_processes
    concurrency = getattr(sender, "concurrency", None)
    _pool_processes = concurrency if isinstance(concurrency, int) and concurrency > 0 else 1


@worker_process_init.connect
def load_active_model(**_):
    """Sizes TensorFlow's thread pools, then loads (and warms up) the active model in each worker process after
    the fork, not per task. Intra-op threads: settings.WORKER_TF_INTRA_OP_THREADS, or with 0 the cores shared
    among the pool's processes (ml.embedding.intra_op_threads_for: the bulk worker's one process per core get
    one thread each, a worker of one process gets every core)."""
    from django.conf import settings

    from ml.cores import intra_op_threads_for
    from ml.embedding import set_tf_threads
    from recommender.embedders import get_embedder
    from recommender.services.versions import active_version

    intra_op = settings.WORKER_TF_INTRA_OP_THREADS or intra_op_threads_for(_pool_processes)
    set_tf_threads(intra_op, settings.WORKER_TF_INTER_OP_THREADS)

    try:
        get_embedder(active_version())
    except Exception:  # the database may not be migrated yet; the first task loads it then
        pass


@worker_process_shutdown.connect
def close_descriptor_writer(**_):
    """The pool process's descriptor writer thread keeps its database connection between tasks
    (recommender.services.embedding.DescriptorWriter): closed here, when the process ends."""
    embedding.close_writer_thread()


@worker_ready.connect
def reconcile_on_start(**_):
    """A worker that (re)starts sends what was left unsent or lost while it (or Redis) was down."""
    from fashionsite.queueing import send_now

    send_now("recommender.tasks.reconcile")


@shared_task(bind=True, acks_late=True)
def train_catalogue_model(self, job_id):
    """The first start's background training (on the "training" queue, its own worker process). A worker that
    dies during it costs one of the job's tries; the reconciler queues it again (services.training)."""
    from django.utils import timezone

    from recommender.models import Descriptor, TrainingJob
    from recommender.services import training

    job = TrainingJob.objects.filter(pk=job_id).first()
    if job is None or job.state not in (TrainingJob.State.QUEUED, TrainingJob.State.RUNNING):
        return job and job.state  # done already (or deleted): a redelivered task does nothing
    if Descriptor.objects.for_active_version().filter(status=Descriptor.Status.PENDING).exists():
        # let the catalogue finish embedding first: both share the 2 cores (the job is on its way: not lost)
        TrainingJob.objects.filter(pk=job_id).update(queued_at=timezone.now())
        raise self.retry(countdown=30, max_retries=None)
    try:
        version = training.train_catalogue_model(job)  # None: alive in another worker, or out of tries
    except Exception as error:
        job.refresh_from_db()
        job.state, job.message = TrainingJob.State.FAILED, f"{type(error).__name__}: {error}"
        job.save(update_fields=["state", "message"])
        raise
    job.refresh_from_db()
    return job.state if version is None else TrainingJob.State.REEMBEDDING


# reject_on_worker_lost=False: a tagging task whose worker dies is dropped, not redelivered forever (an image
# that crashed the tagger would otherwise loop); `manage.py tag_categories` tags whatever was left
@shared_task(acks_late=True, reject_on_worker_lost=False, autoretry_for=TRANSIENT_ERRORS, retry_backoff=True,
             max_retries=5)
def tag_images(item_ids=(), wardrobe_item_ids=(), look_ids=()):
    """Automatic category (items, uploads) and style (looks, uploads) for images that have none; idempotent,
    never overwrites a category or style already set. The classifier is loaded once per worker process."""
    from recommender.services.tagging import tag_images as run

    return run(item_ids, wardrobe_item_ids, look_ids)
