"""Celery tasks of the wardrobe: they take ids and are idempotent."""
from celery import shared_task

from recommender.tasks import TRANSIENT_ERRORS


@shared_task(acks_late=True, autoretry_for=TRANSIENT_ERRORS, retry_backoff=True, max_retries=5)
def recompute_suggestions(user_id):
    """Recomputes and stores one user's outfit suggestions; returns how many there are."""
    from wardrobe.services.suggestions import recompute

    return recompute(user_id)
