"""CPU of one vector query, split between this process and its Postgres backend (issue 10 needs the database's
share of a search cut), by k, on the catalogue of a data directory (default var/bench-scale).

    flock /work/notes/measure.lock .venv/bin/python bench/nearest_cpu.py [--data-dir DIR] [--repeats 30]

For each query shape the platform runs (recognise_item's near-duplicate k = 1, the results k = 6, the
snapshot -> items candidates k = 100, the look search's snapshots k = 100): wall ms, CPU ms of this process
and CPU ms of the Postgres backend serving it (from /proc, the backend's pid from pg_backend_pid()), per
query, p50 of the wall time and means of CPU. Each is measured twice: as `nearest` sends it (the query vector
a binary parameter on a server-binding cursor) and the same SQL with pgvector's text form on Django's cursor.
Queries: sample snapshot descriptors of the active version. The load average is printed beside the figures.
"""
import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT / "var" / "bench-scale")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    os.environ["FASHIONSITE_DATA_DIR"] = str(args.data_dir.resolve())
    os.environ["DJANGO_SETTINGS_MODULE"] = "fashionsite.settings"
    from fashionsite import launcher

    services = launcher.Services()
    try:
        launcher.ensure_postgres(services)
        import django

        django.setup()
        run(args)
    finally:
        from django.db import connections

        connections.close_all()
        services.stop()


def run(args) -> None:
    import numpy as np
    import psutil
    from django.db import connection, transaction

    from recommender.models import Descriptor
    from recommender.services import search
    from recommender.services.versions import active_version

    version = active_version()
    items = Descriptor.objects.filter(model_version=version, status="ready", item__isnull=False).count()
    snaps = list(Descriptor.objects.filter(model_version=version, status="ready", snapshot__isnull=False)
                 .order_by("id").values_list(search.VectorBytes("embedding"), flat=True))
    queries = [search.decode_vector(b) for b in snaps[:: max(1, len(snaps) // args.repeats)][: args.repeats]]
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = psutil.Process(cursor.fetchone()[0])
    me = psutil.Process()

    def cpu(process):
        t = process.cpu_times()
        return t.user + t.system

    def text_form(query, kind, k, **options):  # the same SQL, the vector printed into it (Django's cursor)
        with transaction.atomic():
            search.set_index_scan(k, version, options.get("near_duplicate", False))
            return list(search.nearest_queryset(query, kind, k, version, with_vectors=options.get("with_vectors", False)))

    shapes = [("item k=1 near-duplicate", "item", 1, {"with_vectors": True, "near_duplicate": True}),
              ("item k=6", "item", 6, {}),
              ("item k=100 (candidates)", "item", 100, {"with_vectors": True}),
              ("snapshot k=100 (look search)", "snapshot", 100, {"with_vectors": True})]
    print(f"version {version.name} ({version.dim}-d), {items:,} items, item index {version.item_index_lists} lists "
          f"trained on {version.item_index_rows:,}; load {os.getloadavg()[0]:.1f}", flush=True)
    print("| query | form | wall p50 ms | this process CPU ms | Postgres backend CPU ms | load |")
    print("| --- | --- | --- | --- | --- | --- |")
    for label, kind, k, options in shapes:
        for form, call in (("binary (nearest)", lambda q: search.nearest(q, kind, k=k, version=version, **options)),
                           ("text form", lambda q: text_form(q, kind, k, **options))):
            call(queries[0])  # warm
            walls, mine, theirs = [], 0.0, 0.0
            for q in queries:
                c0, b0, t0 = cpu(me), cpu(backend), time.perf_counter()
                call(q)
                walls.append((time.perf_counter() - t0) * 1000)
                mine += cpu(me) - c0
                theirs += cpu(backend) - b0
            n = len(queries)
            print(f"| {label} | {form} | {np.percentile(walls, 50):.1f} | {1000 * mine / n:.1f} | "
                  f"{1000 * theirs / n:.1f} | {os.getloadavg()[0]:.1f} |", flush=True)


if __name__ == "__main__":
    main()
