"""recall@k and latency of `nearest` by search.PROBES_SHARE, on the catalogue bench/catalogue_scale.py grew.

    flock /work/notes/measure.lock .venv/bin/python bench/probes_share.py 0.1 0.2 0.3

Starts the data directory's Postgres if it is not running (and stops it at the end). Queries: 20 of the
sample's snapshot descriptors (snapshots are not in the item index); reference: exact
cosine search by numpy over every ready item descriptor of the active version (read once, ~600 MB at 100k).
"""
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("FASHIONSITE_DATA_DIR", str(ROOT / "var" / "bench-scale"))
os.environ["DJANGO_SETTINGS_MODULE"] = "fashionsite.settings"
sys.path.insert(0, str(ROOT))
from fashionsite import launcher  # noqa: E402

services = launcher.Services()
launcher.ensure_postgres(services)  # the catalogue's own server, at this process's priority (stopped at exit)
import atexit  # noqa: E402


@atexit.register
def stop() -> None:
    from django.db import connections

    connections.close_all()
    services.stop()


import django  # noqa: E402

django.setup()
import numpy as np  # noqa: E402

from recommender.models import Descriptor
from recommender.services import search
from recommender.services.versions import active_version
v = active_version()
print("version", v.name, v.item_index_lists, v.item_index_rows, flush=True)
rows = list(Descriptor.objects.filter(model_version=v, status="ready", item__isnull=False).values_list("item_id", search.VectorBytes("embedding")))
ids = np.array([r[0] for r in rows]); X = np.stack([search.decode_vector(r[1]) for r in rows]); del rows
snaps = list(Descriptor.objects.filter(model_version=v, status="ready", snapshot__isnull=False).order_by("id").values_list(search.VectorBytes("embedding"), flat=True))
Q = np.stack([search.decode_vector(b) for b in snaps[::max(1, len(snaps)//20)][:20]])
print("items", len(ids), "queries", len(Q), os.getloadavg(), flush=True)
for share in [float(s) for s in sys.argv[1:]]:
    search.PROBES_SHARE = share
    for k in (6, 100, 500):
        rec, ts = [], []
        for q in Q:
            t = time.perf_counter(); m = search.nearest(q, "item", k=k, version=v); ts.append((time.perf_counter() - t) * 1000)
            exact = ids[np.argsort(1 - X @ q)[:k]]
            rec.append(len(set(x.id for x in m) & set(exact.tolist())) / k)
        print(f"share {share} probes {search.probes_for(k, v)} k={k}: recall {np.mean(rec):.3f} min {np.min(rec):.2f} p50 {np.percentile(ts,50):.0f} ms", os.getloadavg()[0], flush=True)
