"""What /healthz reports: whether the database and Redis answer, live workers, the active model, the catalogue.

It only reads: jobs advance in the reconciler (recommender.services.reconcile), never as a side effect of a
health check. It answers 503 naming what is down (e.g. Redis) while search and pages keep working.
"""
import redis
from django.conf import settings
from django.db import connection
from django.db.models import Count

from recommender.models import Descriptor, Item, Look, ModelVersion, ReembedJob, Snapshot, TrainingJob


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
    reembed = ReembedJob.objects.select_related("model_version").first()
    return {
        "training": training and {"id": training.id, "state": training.state, "message": training.message},
        "reembedding": reembed and {
            "id": reembed.id, "version": reembed.model_version.name, "state": reembed.state,
            "done": reembed.done, "total": reembed.total,
        },
    }


def _catalogue() -> dict:
    # by the active version's id, not a join on is_active: a known id lets Postgres count from the
    # (version, status) index alone instead of reading every descriptor row
    version_id = ModelVersion.objects.filter(is_active=True).values_list("id", flat=True).first()
    by_status = dict(Descriptor.objects.filter(model_version_id=version_id).order_by().values_list("status")
                     .annotate(n=Count("status")))
    counts = {"embedded": by_status.get(Descriptor.Status.READY, 0),
              "pending": by_status.get(Descriptor.Status.PENDING, 0),
              "failed": by_status.get(Descriptor.Status.FAILED, 0)}
    return {
        "looks": Look.objects.count(),
        "snapshots": Snapshot.objects.count(),
        "items": Item.objects.count(),
        **counts,
    }


def health_report() -> tuple[dict, bool]:
    """The report, and whether the platform is healthy (database and Redis answer)."""
    report = {"database": _database(), "redis": _redis()}
    report["down"] = [name for name in ("database", "redis") if report[name] != "ok"]
    healthy = not report["down"]
    report["workers"] = _workers() if report["redis"] == "ok" else 0
    if report["database"] == "ok":
        report["model"] = _model()
        report["catalogue"] = _catalogue()
        report["jobs"] = _jobs()
    return report, healthy
