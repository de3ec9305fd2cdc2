"""What /healthz reports: whether the database and Redis answer, live workers, the active model, the catalogue."""
import redis
from django.conf import settings
from django.db import connection
from django.db.models import Count, Q

from recommender.models import Descriptor, Item, Look, ModelVersion, ReembedJob, Snapshot, TrainingJob
from recommender.services.reembedding import refresh_progress
from recommender.services.training import refresh_training_job


def _database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return "ok"
    except Exception as error:
        return f"error: {error}"


def _redis() -> str:
    try:
        redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1).ping()
        return "ok"
    except Exception as error:
        return f"error: {error}"


def _workers() -> int:
    from fashionsite.celery import app

    try:
        return len(app.control.inspect(timeout=0.5).ping() or {})
    except Exception:
        return 0


def _model() -> dict:
    version = ModelVersion.objects.filter(is_active=True).first()
    return {
        "active": version.name if version else None,
        "dim": version.dim if version else None,
        "versions": list(ModelVersion.objects.values_list("name", flat=True)),
    }


def _jobs() -> dict:
    training = TrainingJob.objects.first()
    reembed = ReembedJob.objects.first()
    if training is not None:
        training = refresh_training_job(training)
    if reembed is not None and reembed.state == ReembedJob.State.RUNNING:
        reembed = refresh_progress(reembed)
    return {
        "training": training and {"id": training.id, "state": training.state, "message": training.message},
        "reembedding": reembed and {
            "id": reembed.id, "version": reembed.model_version.name, "state": reembed.state,
            "done": reembed.done, "total": reembed.total,
        },
    }


def _catalogue() -> dict:
    counts = Descriptor.objects.for_active_version().aggregate(
        embedded=Count("id", filter=Q(status=Descriptor.Status.READY)),
        pending=Count("id", filter=Q(status=Descriptor.Status.PENDING)),
        failed=Count("id", filter=Q(status=Descriptor.Status.FAILED)),
    )
    return {
        "looks": Look.objects.count(),
        "snapshots": Snapshot.objects.count(),
        "items": Item.objects.count(),
        **counts,
    }


def health_report() -> tuple[dict, bool]:
    """The report, and whether the platform is healthy (database and Redis answer)."""
    report = {"database": _database(), "redis": _redis()}
    healthy = report["database"] == "ok" and report["redis"] == "ok"
    report["workers"] = _workers() if report["redis"] == "ok" else 0
    if report["database"] == "ok":
        report["model"] = _model()
        report["catalogue"] = _catalogue()
        report["jobs"] = _jobs()
    return report, healthy
