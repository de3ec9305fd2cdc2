"""Embedding throughput of the whole pipeline (JPEG file -> stored descriptor) and the worker's peak memory.

    .venv/bin/python bench/embedding_throughput.py [--limit N]

Runs on its own data directory (var/bench) and Redis port, so it never touches the platform's data:
imports the sample catalogue with no worker running (the tasks wait in Redis), then starts one real Celery
worker and times it until every descriptor is stored. Prints images/s and the worker's peak resident memory
(main process plus its pool children, sampled every 0.2 s).
"""
import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("FASHIONSITE_DATA_DIR", str(ROOT / "var" / "bench"))
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6391/0")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fashionsite.settings")
# automatic tagging is a second pass after embedding (recommender.services.tagging): not part of this figure
os.environ["FASHIONSITE_AUTO_TAGGING"] = "0"

import psutil  # noqa: E402

from fashionsite import launcher  # noqa: E402
from fashionsite.paths import sample_catalogue_dir  # noqa: E402


def tree_rss(process: psutil.Process) -> int:
    total = 0
    for p in [process, *process.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=0, help="import only the first N files (0: all)")
    args = parser.parse_args()

    services = launcher.Services()
    try:
        launcher.ensure_postgres(services)
        launcher.ensure_redis(services, persistent=False)
        launcher.manage("migrate", "--no-input", "-v", "0")

        import django

        django.setup()
        from fashionsite.celery import app
        from recommender.models import Descriptor, Item, Look
        from recommender.services.catalogue import entries_from_folder, import_entries
        from recommender.services.versions import DEFAULT_VERSION, register_version

        app.control.purge()
        Look.objects.all().delete()
        Item.objects.all().delete()
        Descriptor.objects.all().delete()
        register_version(**DEFAULT_VERSION)
        entries = entries_from_folder(sample_catalogue_dir())
        entries = entries[: args.limit] if args.limit else entries
        report = import_entries(entries, progress=True)
        total = Descriptor.objects.count()
        print(report.summary(), f"-> {total} images to embed", flush=True)

        worker = psutil.Process(services.spawn(
            "worker", launcher.worker_command(concurrency=1, beat=False),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ).pid)
        started = time.monotonic()
        peak, first_ready_at, ready = 0, None, 0
        while ready < total:
            time.sleep(0.2)
            peak = max(peak, tree_rss(worker))
            ready = Descriptor.objects.exclude(status=Descriptor.Status.PENDING).count()
            if ready and first_ready_at is None:
                first_ready_at = (time.monotonic(), ready)
            if time.monotonic() - started > 1800:
                raise SystemExit(f"timed out with {ready}/{total} descriptors done")
        finished = time.monotonic()
        failed = Descriptor.objects.filter(status=Descriptor.Status.FAILED).count()
        steady_time = finished - first_ready_at[0]
        steady_images = total - first_ready_at[1]
        print(f"images embedded and stored: {total} ({failed} failed)")
        print(f"wall time from worker start (includes model load): {finished - started:.1f} s "
              f"-> {total / (finished - started):.1f} images/s")
        print(f"steady-state throughput (first batch stored -> last): {steady_images / steady_time:.1f} images/s")
        print(f"worker peak memory (RSS, main + pool): {peak / 2**20:.0f} MiB")
    finally:
        services.stop()


if __name__ == "__main__":
    main()
