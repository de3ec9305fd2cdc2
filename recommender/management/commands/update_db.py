import hashlib
import shutil
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from ml.embedding import load_embedder
from recommender.models import ReembedJob
from recommender.services.reconcile import reconcile
from recommender.services.reembedding import ReembeddingInProgress, refresh_progress, start_reembedding
from recommender.services.versions import register_version

RECONCILE_EVERY = 5  # seconds: while it waits, this command also feeds the queue (no beat or reconciler needed)


def install_model(model_dir: Path) -> tuple[str, str, int]:
    """Checks that the model loads, copies it under the data directory; returns (name, spec, dim)."""
    if not model_dir.is_dir():
        raise CommandError(f"no such model directory: {model_dir}")
    try:
        embedder = load_embedder(str(model_dir), settings.MODEL_CACHE_DIR)
    except Exception as error:
        raise CommandError(f"{model_dir} is not a loadable model: {error}")
    digest = hashlib.sha256()
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        digest.update(path.read_bytes())
    name = f"{model_dir.name}-{digest.hexdigest()[:8]}"
    installed = Path(settings.MODEL_CACHE_DIR) / "versions" / name
    if not installed.exists():
        shutil.copytree(model_dir, installed)
    return name, str(installed), embedder.dim


class Command(BaseCommand):
    help = (
        "Registers a model as a new version and re-embeds every catalogue and wardrobe image with it through the "
        "Celery workers; the active version switches only when every image has its new descriptor."
    )

    def add_arguments(self, parser):
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument("--model", type=Path, help="a trained model directory (train_cgd --out)")
        which.add_argument("--untrained", choices=["lite0", "lite2"], help="an untrained ImageNet backbone")
        parser.add_argument("--no-wait", action="store_true", help="start the job and return")
        parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for the workers")

    def handle(self, model=None, untrained=None, no_wait=False, timeout=3600, **options):
        if model is not None:
            name, spec, dim = install_model(model)
        else:
            name = spec = f"untrained-{untrained}"
            dim = load_embedder(spec, settings.MODEL_CACHE_DIR).dim
        version = register_version(name, spec, dim)
        if version.is_active:
            self.stdout.write(f"{name} is already the active version")
            return
        try:
            job = start_reembedding(version)
        except ReembeddingInProgress as error:
            raise CommandError(str(error))
        self.stdout.write(f"re-embedding {job.total} images with {name} (job {job.id})")
        if no_wait:
            return
        deadline = time.monotonic() + timeout
        last_reconcile = 0.0
        with tqdm(total=job.total, desc="re-embedding", unit="img", disable=options["verbosity"] == 0) as bar:
            while job.state == ReembedJob.State.RUNNING:
                if time.monotonic() > deadline:
                    raise CommandError(f"job {job.id} still running after {timeout:.0f}s; are workers running?")
                time.sleep(1)
                if time.monotonic() - last_reconcile >= RECONCILE_EVERY:
                    reconcile()  # tops up the bulk queue, finishes the job when done (idempotent, locked)
                    last_reconcile = time.monotonic()
                job.refresh_from_db()
                if job.state == ReembedJob.State.RUNNING:
                    refresh_progress(job)  # two counts on an index: cheap at 100k images
                bar.total = job.total
                bar.update(job.done + job.failed - bar.n)
        if job.state == ReembedJob.State.FAILED:
            raise CommandError(job.error)
        self.stdout.write(f"{name} is now the active version ({job.done} images)")
