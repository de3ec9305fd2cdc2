"""Celery tasks of the wardrobe: they take ids and are idempotent."""
from celery import shared_task

from recommender.tasks import TRANSIENT_ERRORS


# reject_on_worker_lost=False: dropped, not redelivered forever, if its worker dies (the next change recomputes)
@shared_task(acks_late=True, reject_on_worker_lost=False, autoretry_for=TRANSIENT_ERRORS, retry_backoff=True,
             max_retries=5)
def recompute_suggestions(user_id):
    """Recomputes and stores one user's outfit suggestions; returns how many there are."""
    from fashionsite.queueing import started
    from wardrobe.services.suggestions import recompute

    started(f"suggestions:{user_id}")  # changes from now on queue another run; earlier ones are seen by this one
    return recompute(user_id)
