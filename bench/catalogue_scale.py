"""The catalogue at the size of a shop: vector search right, fast and lean at 10k and 100k items (issue 9).

    .venv/bin/python bench/catalogue_scale.py --model /work/models/cgd-dev [--sizes 10000,100000]
        [--data-dir var/bench-scale] [--port 8100] [--redis-url redis://127.0.0.1:6391/0]
        [--compare-at 100000] [--lists 100,316] [--from-sample] [--queries 20] [--requests 40]

Everything happens in its own data directory (Postgres, media, models), with its own Redis, one Celery worker
and the production web server that it starts and stops (gunicorn with fashionsite/gunicorn.conf.py, as
`make run` starts it: 1 worker x 4 threads by default, no --preload; FASHIONSITE_WEB_WORKERS / _THREADS
change it there and here alike):

1. set-up (first run only): registers the trained model (`update_db --model`, empty catalogue, so it becomes
   active at once) and imports the sample catalogue with its labels (`import_looks --manifest`); the worker
   embeds the 1,468 images with the trained model. No first-start training is queued.
2. measures at the sample's size (1,050 items), then grows the catalogue to each of --sizes with synthetic
   items: a real item's descriptor under the active version plus Gaussian noise (--noise: its norm relative
   to the unit descriptor), re-normalised, in a random category, pointing at the real item's image; rows go
   straight into Item and Descriptor (binary COPY), with the platform running and its item index in place,
   as the issue grows it (with --from-sample, each size grows from the sample again, the index trained on the
   sample: the issue's 1k -> 100k). Right after the growth, on the stale index: the first HTTP searches and
   recall@k. Then the platform's reconciler (`manage.py reconcile --every 10`, as `make run` runs it)
   retrains the index by itself; the bench times how long until the retrained index serves, and searches
   over HTTP meanwhile (reads go on). At --compare-at sizes, IVFFlat indexes with each of --lists are built
   (build time, size) and their recall and latency measured per ivfflat.probes, before the platform's own
   index is rebuilt.
3. at each size: recall@k of `nearest` against exact numpy cosine search for every k the platform asks
   (6; the snapshot -> items candidates, 100 for k=6 and 500 for k=50; the look-transfer snapshots), the
   fewest rows over the queries with a category / style filter (status: only ready rows count), the query
   plan (EXPLAIN), latency p50 / p95 in this process (`nearest`, `search_items`, `search_looks`) and over
   HTTP (the REST API, sequential), the first HTTP query after the growth (the servers were warm before it),
   the resident memory of the web and Celery worker processes, and the model's own single-image
   forward-pass time in this process, in the same run, as the limit the latencies sit beside.

Queries are street snapshots and item photos the model has never seen in that form: mirrored sample images.
The machine is shared: the load average is printed beside every figure; keep --sizes bounded (100k at most).
Run it under `nice -n 19`: the bench takes /work/notes/measure.lock (when that folder exists) and raises its
own processes (this one, Postgres, Redis, the worker, gunicorn, the reconciler) to normal priority only for
the timed parts, and puts them back to nice 19 for the growth.
"""
import contextlib
import fcntl
import argparse
import io
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SAMPLE_DIR = ROOT.parent / "shared" / "data" / "musinsa" / "dev"
MANIFEST = ROOT / "data" / "labels" / "musinsa_manifest.csv"
MEASURE_LOCK = Path("/work/notes/measure.lock")  # shared machine: one measurement at a time
PROBES = [4, 8, 10, 16, 20, 32]  # ivfflat.probes compared at --compare-at sizes


def log(message: str) -> None:
    print(f"[scale] {message}", flush=True)


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.1f}/{five:.1f}"


def percentile(values, q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q * 100))


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return (time.perf_counter() - start) * 1000.0, result


def p50_p95(values) -> str:
    return f"{percentile(values, 0.5):.1f} / {percentile(values, 0.95):.1f}"


# ------------------------------------------------------------------------------------------------ set-up


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="trained model directory to register (update_db --model); "
                        "without it the active version is measured as it is")
    parser.add_argument("--sizes", default="10000,100000", help="catalogue sizes in items (default %(default)s)")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "var" / "bench-scale")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6391/0")
    parser.add_argument("--compare-at", default="100000", help="sizes at which IVFFlat settings are compared")
    parser.add_argument("--queries", type=int, default=20, help="query images for recall and in-process timing")
    parser.add_argument("--requests", type=int, default=40, help="HTTP requests per endpoint per size")
    parser.add_argument("--noise", type=float, default=0.8, help="noise norm relative to the descriptor")
    parser.add_argument("--lists", default="100,316,1000", help="IVFFlat lists compared (default %(default)s)")
    parser.add_argument("--from-sample", action="store_true",
                        help="each size grows from the sample, the index trained on the sample (the issue's growth)")
    parser.add_argument("--skip-first", action="store_true",
                        help="no measurement before the first growth (e.g. when the catalogue is already grown)")
    parser.add_argument("--halfvec", action="store_true", help="also compare halfvec IVFFlat indexes")
    parser.add_argument("--no-lock", action="store_true", help="a trial run: do not wait for the measurement lock")
    parser.add_argument("--setup-only", action="store_true", help="stop after the set-up (model and sample embedded)")
    args = parser.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",") if s]
    args.compare_at = {int(s) for s in args.compare_at.split(",") if s}
    args.lists = [int(n) for n in args.lists.split(",") if n]
    if max(args.sizes, default=0) > 100_000:  # the machine is shared; 1M is on paper (docs/SCALING.md)
        parser.error("--sizes: 100000 at most on this machine")
    return args


def environment(args) -> None:
    args.data_dir.mkdir(parents=True, exist_ok=True)
    os.environ["FASHIONSITE_DATA_DIR"] = str(args.data_dir.resolve())
    os.environ["REDIS_URL"] = args.redis_url
    os.environ["DJANGO_SETTINGS_MODULE"] = "fashionsite.settings"
    os.environ["FASHIONSITE_SEARCH_ANON_RATE"] = "1000000/minute"  # the bench measures latency, not throttling
    os.environ["FASHIONSITE_SEARCH_RATE"] = "1000000/minute"


def set_up_catalogue(args, launcher) -> None:
    from recommender.models import Descriptor, Item
    from recommender.services.versions import active_version

    if args.model and active_version().spec.startswith("untrained-"):
        log(f"registering {args.model} (empty catalogue: it becomes active at once)")
        launcher.manage("update_db", "--model", str(args.model), "-v", "0")
    if not Item.objects.exists():
        log("importing the sample catalogue with its labels")
        launcher.manage("import_looks", str(SAMPLE_DIR), "--manifest", str(MANIFEST), "-v", "0")
    version = active_version()
    pending = Descriptor.objects.filter(model_version=version, status=Descriptor.Status.PENDING)
    start = time.monotonic()
    while (left := pending.count()) > 0:
        if time.monotonic() - start > 1800:
            raise SystemExit(f"{left} descriptors still pending after 30 minutes; see the worker log")
        log(f"waiting for the worker: {left} images to embed with {version.name}")
        time.sleep(10)


def start_web(args, services, log_file):
    """The platform's production server as `make run` starts it (launcher.web_command: gunicorn with
    fashionsite/gunicorn.conf.py, the model loaded after the fork), on --port."""
    from fashionsite import launcher

    process = services.spawn("web", launcher.web_command(), stdout=log_file, stderr=subprocess.STDOUT,
                             env=dict(os.environ, PORT=str(args.port), FASHIONSITE_WARM_MODEL="1"))
    import requests

    for _ in range(1200):  # loading the model at nice 19 on a loaded machine takes minutes
        try:
            if requests.get(f"http://127.0.0.1:{args.port}/healthz", timeout=5).status_code in (200, 503):
                return process
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise SystemExit("gunicorn did not answer in 10 minutes")


def web_config() -> str:
    """The web server's processes and threads, as fashionsite/gunicorn.conf.py sets them in this environment."""
    import runpy

    conf = runpy.run_path(str(ROOT / "fashionsite" / "gunicorn.conf.py"))
    return f"gunicorn {conf['workers']} worker(s) x {conf['threads']} threads"


def mirrored_queries(folder: Path, n: int, suffix: str, target: Path) -> list[Path]:
    """n sample images of one kind, mirrored (never seen in that form), spread over the whole sample."""
    from PIL import Image, ImageOps

    target.mkdir(parents=True, exist_ok=True)
    files = sorted(p for p in folder.iterdir() if p.name.endswith(suffix))
    chosen = files[:: max(1, len(files) // n)][:n]
    out = []
    for path in chosen:
        mirrored = target / f"mirrored-{path.name}"
        if not mirrored.exists():
            ImageOps.mirror(Image.open(path).convert("RGB")).save(mirrored, quality=92)
        out.append(mirrored)
    return out


# ------------------------------------------------------------------------------------------------ growth


def raw_connection():
    """A psycopg connection of its own (binary COPY with pgvector's types, without touching Django's)."""
    import psycopg
    from django.db import connection
    from pgvector.psycopg import register_vector

    params = connection.settings_dict
    conn = psycopg.connect(
        dbname=params["NAME"], user=params["USER"], host=params["OPTIONS"].get("host") or params["HOST"] or None,
        port=params["PORT"] or None, password=params["PASSWORD"] or None, autocommit=True,
    )
    register_vector(conn)
    return conn


def grow(state, target: int, noise: float, rng) -> float:
    """Adds synthetic items up to `target`; returns the seconds the load took."""
    from recommender.models import Category

    version, conn = state["version"], state["conn"]
    base_vectors, base_images = state["base_vectors"], state["base_images"]
    categories = list(Category.objects.values_list("id", flat=True))
    n = target - len(state["ids"])
    if n <= 0:
        return 0.0
    start = time.perf_counter()
    with conn.cursor() as cur:
        cur.execute("SELECT coalesce(max(id), 0) FROM recommender_item")
        first_id = cur.fetchone()[0] + 1
    chunk = 10_000
    new_ids, new_vectors = [], []
    for offset in range(0, n, chunk):
        m = min(chunk, n - offset)
        ids = np.arange(first_id + offset, first_id + offset + m)
        source = rng.integers(len(base_vectors), size=m)
        vectors = base_vectors[source] + noise * rng.standard_normal((m, version.dim)).astype(np.float32) / np.sqrt(version.dim)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        cats = rng.choice(categories, size=m)
        with conn.transaction(), conn.cursor() as cur:
            with cur.copy("COPY recommender_item (id, image, sha256, original_name, category_id, category_source) "
                          "FROM STDIN") as copy:
                for item_id, s, c in zip(ids, source, cats):
                    copy.write_row((int(item_id), base_images[s], f"synthetic-{item_id:054d}", "synthetic", int(c),
                                    "hand"))
            with cur.copy(
                "COPY recommender_descriptor (model_version_id, item_id, status, error, embedding, updated, attempts) "
                "FROM STDIN WITH (FORMAT BINARY)"
            ) as copy:
                copy.set_types(["int8", "int8", "varchar", "text", "vector", "timestamptz", "int2"])
                now = datetime.now(timezone.utc)
                for item_id, vector in zip(ids, vectors):
                    copy.write_row((version.id, int(item_id), "ready", "", vector, now, 1))
        new_ids.append(ids)
        new_vectors.append(vectors)
        log(f"  grew {offset + m:,}/{n:,} items ({load()})")
    with conn.cursor() as cur:
        cur.execute("SELECT setval(pg_get_serial_sequence('recommender_item', 'id'), (SELECT max(id) FROM recommender_item))")
        cur.execute("ANALYZE recommender_item")
        cur.execute("ANALYZE recommender_descriptor")
    state["ids"] = np.concatenate([state["ids"], *new_ids])
    state["vectors"] = np.concatenate([state["vectors"], *new_vectors])
    return time.perf_counter() - start


def build_index(conn, version, lists: int, memory: str = "1GB", halfvec: bool = False) -> tuple[float, int]:
    """Builds the item IVFFlat index with `lists` under the platform's name (its SQL, or a halfvec variant),
    in place of the platform's; returns (seconds, bytes). The platform's index is rebuilt afterwards."""
    from recommender.services.versions import index_name, vector_index_sql

    name = index_name(version.id, "item")
    sql = vector_index_sql(version.id, version.dim, "item", lists=lists)
    if halfvec:
        sql = sql.replace(f"embedding::vector({version.dim})) vector_cosine_ops",
                          f"embedding::halfvec({version.dim})) halfvec_cosine_ops")
    with conn.cursor() as cur:
        cur.execute(f"DROP INDEX IF EXISTS {name}")
        cur.execute(f"SET maintenance_work_mem = '{memory}'")
        start = time.perf_counter()
        cur.execute(sql)
        seconds = time.perf_counter() - start
        cur.execute("SELECT pg_relation_size(%s::regclass)", [name])
        size = cur.fetchone()[0]
        cur.execute("RESET maintenance_work_mem")
    return seconds, size


def reset_to_sample(state) -> float:
    """Removes the synthetic items and retrains the item index on the sample (the platform's own retraining):
    the state the issue grows from. Returns the seconds it took."""
    from django.db import connection

    from recommender.models import Item
    from recommender.services.versions import maintain_item_index

    start = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM recommender_descriptor WHERE item_id IN "
                       "(SELECT id FROM recommender_item WHERE sha256 LIKE 'synthetic-%%')")
    Item.objects.filter(sha256__startswith="synthetic-").delete()  # and what refers to them (suggestions)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE recommender_descriptor")
    maintain_item_index(state["version"], force=True)
    base = len(state["base_vectors"])
    state["ids"], state["vectors"] = state["ids"][:base], state["vectors"][:base]
    return time.perf_counter() - start


def bench_processes(args) -> list:
    """This process and what it started, and the Postgres server of its data directory (with their children)."""
    import psutil

    me = psutil.Process()
    found = {p.pid: p for p in [me, *me.children(recursive=True)]}
    marker = str((args.data_dir / "postgres").resolve())
    for p in psutil.process_iter(["cmdline"]):
        if any(marker in part for part in (p.info["cmdline"] or [])):
            for q in [p, *p.children(recursive=True)]:
                found[q.pid] = q
    return list(found.values())


def renice(args, niceness: int) -> None:
    """Every thread of the bench's processes (Linux niceness is per thread; TensorFlow's pools inherit it)."""
    import psutil

    for process in bench_processes(args):
        try:
            for thread in process.threads():
                os.setpriority(os.PRIO_PROCESS, thread.id, niceness)
        except (psutil.Error, OSError):
            pass


@contextlib.contextmanager
def measurement_lock(args, what: str):
    """The shared machine's measurement lock (one measurement at a time), when /work/notes exists."""
    lock = MEASURE_LOCK.open("a") if MEASURE_LOCK.parent.is_dir() and not args.no_lock else None
    if lock:
        log(f"waiting for {MEASURE_LOCK} ({what})")
        fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        yield
    finally:
        if lock:
            fcntl.flock(lock, fcntl.LOCK_UN)
            lock.close()


@contextlib.contextmanager
def measuring(args, what: str, locked: bool = False):
    """A timed part: the measurement lock held (already, when `locked`), the bench's processes at normal
    priority."""
    with contextlib.nullcontext() if locked else measurement_lock(args, what):
        renice(args, 0)
        log(f"measuring: {what} ({load()})")
        try:
            yield
        finally:
            renice(args, 19)


# ------------------------------------------------------------------------------------------------ measuring


def exact_ids(state, query: np.ndarray, k: int, mask=None) -> np.ndarray:
    vectors, ids = state["vectors"], state["ids"]
    distances = 1.0 - vectors @ query
    if mask is not None:
        distances = np.where(mask, distances, np.inf)
        k = min(k, int(mask.sum()))
    top = np.argpartition(distances, k - 1)[:k] if k < len(distances) else np.arange(len(distances))
    return ids[top[np.argsort(distances[top])]]


def recall(found, expected) -> float:
    return len(set(found) & set(int(i) for i in expected)) / max(1, len(expected))


def item_categories(state) -> np.ndarray:
    from recommender.models import Item

    category_of = dict(Item.objects.values_list("id", "category__name"))
    return np.array([category_of.get(int(i)) for i in state["ids"]], dtype=object)


def plan_summary(queryset, table: str = "recommender_descriptor") -> str:
    """How the planner reads `table` for the query: the HNSW index, another index, or a scan."""
    text = queryset.explain()
    for line in text.splitlines():
        line = line.strip().removeprefix("->").strip()
        if f" {table}" in line and "Scan" in line:
            return line.split("  (")[0].replace("recommender_", "")
    return text.splitlines()[0]


def measure_search(state, label: str, queries: np.ndarray, rows: list) -> dict:
    """recall@k, filtered row counts, plans and in-process latency of `nearest`."""
    from django.db import transaction

    from recommender.services import search

    version = state["version"]
    categories = item_categories(state)
    out = {"size": label}
    for k, value in recall_of_nearest(state, queries).items():
        out[f"item@{k}"] = value
    # category filters: the rarest and the commonest category among the items
    names, freq = np.unique(categories[categories != None], return_counts=True)  # noqa: E711
    filtered = {}
    for name in (names[np.argmin(freq)], names[np.argmax(freq)]):
        mask = categories == name
        for k in (6, 100):
            recalls, counts = [], []
            for q in queries:
                matches = search.nearest(q, "item", k=k, version=version, item__category__name=name)
                counts.append(len(matches))
                recalls.append(recall([m.id for m in matches], exact_ids(state, q, k, mask)))
            filtered[f"{name} ({int(mask.sum()):,})@{k}"] = (float(np.mean(recalls)), min(counts))
    out["filtered"] = filtered
    # snapshots (not grown): the look-transfer neighbours and a style filter
    snap_counts = {}
    for k, style in ((50, None), (6, state["rare_style"])):
        filters = {"snapshot__look__style__name": style} if style else {}
        snap_counts[f"snapshot{'/' + style if style else ''}@{k}"] = min(
            len(search.nearest(q, "snapshot", k=k, version=version, **filters)) for q in queries)
    out["snapshots"] = snap_counts
    plans = []
    with transaction.atomic():
        search.set_index_scan(100, version)
        queryset = search.nearest_queryset(queries[0], "item", 100, version)
        out["plan item@100"] = plan_summary(queryset)
        plans.append(f"-- nearest item k=100\n{queryset.explain()}")
    with transaction.atomic():
        search.set_index_scan(6, version)
        queryset = search.nearest_queryset(queries[0], "item", 18, version,
                                           item__category__name=names[np.argmin(freq)])
        out["plan item@6 category"] = plan_summary(queryset)
        plans.append(f"-- nearest item k=6, category {names[np.argmin(freq)]} (over-fetch 18)\n{queryset.explain()}")
    (state["plans_dir"] / f"plans-nearest-{label.replace(',', '')}.txt").write_text("\n\n".join(plans))
    out["hot queries"] = explain_hot_queries(state, queries, state["plans_dir"] / f"plans-{label.replace(',', '')}.txt")
    rows.append(out)
    return out


def explain_hot_queries(state, queries, path: Path) -> dict:
    """The plans of the queries every search runs besides the vector scan, and of the exact fallback with a
    category filter: each should read an index on the columns it filters on. Full plans go to `path`."""
    from django.db import connection, transaction

    from recommender.models import Descriptor, Item, LookItem
    from recommender.services import search

    version, some = state["version"], [int(i) for i in state["ids"][-50:]]
    category = Item.objects.filter(id=some[0]).values_list("category__name", flat=True).first()
    ready = Descriptor.objects.filter(model_version=version, status=Descriptor.Status.READY)
    plans = {
        "vectors by id": ready.filter(item_id__in=some).values_list("item_id", search.VectorBytes("embedding")),
        "links of looks": LookItem.objects.filter(look_id__in=[1, 2, 3]).values_list("look_id", "item_id"),
        "popularity of items": LookItem.objects.filter(item_id__in=some).values_list("item_id"),
        "items of a category": Item.objects.filter(category__name=category).values_list("id"),
    }
    out, texts = {}, []
    for name, queryset in plans.items():
        texts.append(f"-- {name}\n{queryset.explain()}")
        out[name] = plan_summary(queryset, table=queryset.model._meta.db_table)
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL enable_indexscan = off")  # nearest's exact fallback
        queryset = search.nearest_queryset(queries[0], "item", 6, version, item__category__name=category)
        texts.append(f"-- exact fallback, category {category}\n{queryset.explain()}")
        out["exact fallback + category"] = plan_summary(queryset)
    path.write_text("\n\n".join(texts))
    return out


def halfvec_queryset(version, query: np.ndarray, k: int):
    """nearest's query on a halfvec index (half the bytes per dimension): the same filters, the halfvec cast."""
    from django.db.models.expressions import RawSQL

    from recommender.models import Descriptor

    text = "[" + ",".join(f"{x:.7g}" for x in query) + "]"
    return (
        Descriptor.objects.filter(model_version=version, status=Descriptor.Status.READY, item__isnull=False)
        .annotate(distance=RawSQL(
            f"(embedding::halfvec({version.dim})) <=> (%s::halfvec({version.dim}))", [text]))
        .order_by("distance").values_list("item_id", "distance")[:k]
    )


def probe_curve(state, queries, values, ks=(6, 100, 500), halfvec: bool = False) -> dict:
    """recall@k and p50 ms of the item index itself (other plans off) at fixed ivfflat.probes, iterative scan
    on: to choose the platform's probes rule and lists."""
    from django.db import transaction

    from recommender.services import search

    curve = {}
    for probes in values:
        for k in ks:
            recalls, times = [], []
            for q in queries:
                with transaction.atomic():
                    search._set_local(**{"ivfflat.probes": probes, "ivfflat.iterative_scan": search.ITERATIVE_SCAN,
                                         "enable_seqscan": "off", "enable_sort": "off"})  # the index itself
                    queryset = (halfvec_queryset(state["version"], q, k) if halfvec
                                else search.nearest_queryset(q, "item", k, state["version"]))
                    ms, found = timed(lambda: [row[0] for row in queryset])
                times.append(ms)
                recalls.append(recall(found, exact_ids(state, q, k)))
            curve[(probes, k)] = (float(np.mean(recalls)), percentile(times, 0.5))
    return curve


def recall_of_nearest(state, queries, ks=(6, 100, 500)) -> dict:
    """recall@k, fewest rows and in-process p50 / p95 ms of the platform's `nearest`, per k."""
    from recommender.services import search

    out = {}
    for k in ks:
        recalls, counts, times = [], [], []
        for q in queries:
            ms, matches = timed(search.nearest, q, "item", k=k, version=state["version"], with_vectors=(k >= 100))
            times.append(ms)
            counts.append(len(matches))
            recalls.append(recall([m.id for m in matches], exact_ids(state, q, k)))
        out[k] = (float(np.mean(recalls)), min(counts), p50_p95(times))
    return out


def wait_for_retraining(args, state, client, snapshot_files, grown_at: float, limit_s: float = 900) -> dict:
    """Searches over HTTP (sequential) until the reconciler has retrained the item index on the grown rows;
    returns the seconds from the end of the growth until the retrained index served, and the latencies."""
    from recommender.models import ModelVersion

    from recommender.services.versions import item_index_is_stale

    rows = len(state["ids"])
    latencies, errors, i = [], 0, 0
    while True:
        # retrained, or trained meanwhile on enough of the rows (the reconciler may retrain during the growth)
        if not item_index_is_stale(ModelVersion.objects.get(pk=state["version"].pk), rows):
            break
        if time.monotonic() - grown_at > limit_s:
            raise SystemExit(f"the item index was not retrained {limit_s:.0f} s after the growth")
        ms, response = client.search("items", snapshot_files[i % len(snapshot_files)], 6)
        i += 1
        errors += response.status_code != 200 or len(response.json().get("results", [])) != 6
        latencies.append(ms)
    state["version"].refresh_from_db()
    seconds = time.monotonic() - grown_at
    during = f"{p50_p95(latencies)} (max {max(latencies):.0f}; {len(latencies)} requests)" if latencies else "-"
    return {"seconds": seconds, "http during": during, "bad answers": errors,
            "lists": state["version"].item_index_lists, "trained on": state["version"].item_index_rows}


def measure_pipeline(state, snapshot_files, item_files) -> dict:
    """search_items / search_looks in this process, and the model's forward pass on one image."""
    from ml.images import load_rgb
    from recommender.services import search

    images = [load_rgb(io.BytesIO(p.read_bytes()), name=p.name) for p in snapshot_files]
    item_images = [load_rgb(io.BytesIO(p.read_bytes()), name=p.name) for p in item_files]
    forward = [timed(search.embed_query, image)[0] for image in images]
    items = [timed(search.search_items, image, 6)[0] for image in images]
    looks = [timed(search.search_looks, image, 6)[0] for image in item_images]
    counts = (min(len(search.search_items(images[0], 6)), len(search.search_items(images[0], 50))),
              len(search.search_looks(item_images[0], 6).results))
    return {"forward": p50_p95(forward), "search_items": p50_p95(items), "search_looks": p50_p95(looks),
            "results": counts}


def measure_http(args, client, snapshot_files, item_files, n: int) -> dict:
    out = {}
    for endpoint, files in (("items", snapshot_files), ("looks", item_files)):
        latencies, short = [], 0
        for i in range(n):
            path = files[i % len(files)]
            ms, response = client.search(endpoint, path, 6)
            response.raise_for_status()
            short += len(response.json().get("results", [])) != 6
            latencies.append(ms)
        out[endpoint] = f"{p50_p95(latencies)}" + (f" ({short} short)" if short else "")
    return out


def rss_mb(process) -> dict:
    import psutil

    parent = psutil.Process(process.pid)
    children = parent.children(recursive=True)
    return {p.pid: p.memory_info().rss / 2**20 for p in children}


# ------------------------------------------------------------------------------------------------ main


def main() -> int:
    args = parse_args()
    environment(args)
    from fashionsite import launcher

    services = launcher.Services()
    logs = args.data_dir / "logs"
    logs.mkdir(exist_ok=True)
    try:
        launcher.ensure_postgres(services)
        launcher.ensure_redis(services, persistent=False)
        launcher.manage("migrate", "--no-input", "-v", "0")
        import django

        django.setup()
        worker = services.spawn("worker", launcher.worker_command(concurrency=1, beat=False, queue="celery,interactive"),
                                stdout=(logs / "worker.log").open("a"), stderr=subprocess.STDOUT)
        set_up_catalogue(args, launcher)
        if args.setup_only:
            return 0
        return run(args, services, worker, logs)
    finally:
        if "django" in sys.modules and sys.modules["django"].apps.apps.ready:
            from django.db import connections

            connections.close_all()  # so that the embedded Postgres this bench started can stop
        services.stop()


def run(args, services, worker, logs) -> int:
    sys.path.insert(0, str(ROOT / "bench"))
    from search_latency import Client

    from django.contrib.auth import get_user_model
    from django.core.files.uploadedfile import SimpleUploadedFile

    from recommender.models import Descriptor, Look, Style
    from recommender.services import search
    from recommender.services.versions import INDEX_BUILD_MEMORY, active_version, maintain_item_index
    from wardrobe.models import WardrobeItem
    from wardrobe.services.wardrobe import add_wardrobe_items
    from wardrobe.tasks import recompute_suggestions

    rng = np.random.default_rng(9)
    version = active_version()
    log(f"active version {version.name} ({version.dim}-d); {load()}")
    rows = Descriptor.objects.filter(model_version=version, status=Descriptor.Status.READY, item__isnull=False)
    base = list(rows.exclude(item__sha256__startswith="synthetic-").order_by("item_id")
                .values_list("item_id", search.VectorBytes("embedding"), "item__image"))
    grown = list(rows.filter(item__sha256__startswith="synthetic-").order_by("item_id")
                 .values_list("item_id", search.VectorBytes("embedding")))  # from an earlier run
    state = {
        "version": version, "conn": raw_connection(),
        "ids": np.array([r[0] for r in base + grown]),
        "vectors": np.stack([search.decode_vector(r[1]) for r in base + grown]),
        "base_vectors": np.stack([search.decode_vector(r[1]) for r in base]), "base_images": [r[2] for r in base],
        "plans_dir": logs,
        "rare_style": min(Style.objects.all(), key=lambda s: Look.objects.filter(style=s).count()).name,
    }
    del grown
    query_dir = args.data_dir / "queries"
    snapshot_files = mirrored_queries(SAMPLE_DIR, args.queries, "_part.jpg", query_dir)
    item_files = mirrored_queries(SAMPLE_DIR, args.queries, "_reco.jpg", query_dir)
    from ml.images import load_rgb

    queries = np.stack([search.embed_query(load_rgb(io.BytesIO(p.read_bytes()), name=p.name)) for p in snapshot_files])

    # a user with three wardrobe items, so that the worker runs suggestions (nearest per item and style)
    user, _ = get_user_model().objects.get_or_create(username="bench-scale")
    if not WardrobeItem.objects.filter(owner=user).exists():
        files = sorted(SAMPLE_DIR.glob("*_reco.jpg"))[:3]
        add_wardrobe_items(user, [SimpleUploadedFile(p.name, p.read_bytes(), "image/jpeg") for p in files])
        time.sleep(5)

    if args.from_sample and len(state["ids"]) > len(base):
        log(f"back to the sample: {reset_to_sample(state):.0f} s")
    # the platform's reconciler, as `make run` runs it: it retrains the item index after each growth
    services.spawn("reconciler", [sys.executable, "manage.py", "reconcile", "--every", "10"],
                   stdout=(logs / "reconciler.log").open("a"), stderr=subprocess.STDOUT)
    web = start_web(args, services, (logs / "web.log").open("a"))
    log(f"web: {web_config()}")
    client = Client(f"http://127.0.0.1:{args.port}", "api", None)
    measure_http(args, client, snapshot_files, item_files, 6)  # warm the web (every worker, with several)

    results, builds, firsts, memory, pipelines, https, stale, retrain = [], [], {}, {}, {}, {}, {}, {}

    def measure(label: str):
        with measuring(args, f"{label} items"):
            measure_search(state, label, queries, results)
            pipelines[label] = measure_pipeline(state, snapshot_files[:10], item_files[:10])
            https[label] = measure_http(args, client, snapshot_files, item_files, args.requests)
            ms, _ = timed(lambda: recompute_suggestions.delay(user.id).get(timeout=600))
            memory[label] = {"web": rss_mb(web), "worker": rss_mb(worker), "suggestions_ms": ms, "load": load()}
        log(f"  {results[-1]}\n  {pipelines[label]}\n  http {https[label]}\n  memory {memory[label]}")

    renice(args, 19)
    if not args.skip_first:
        measure(f"{len(state['ids']):,}")
    for size in args.sizes:
        if args.from_sample and len(state["ids"]) > len(base):
            log(f"back to the sample: {reset_to_sample(state):.0f} s")
        version.refresh_from_db()
        trained_on = version.item_index_rows
        log(f"growing to {size:,} items, the index trained on {trained_on:,} ({load()})")
        # The lock is taken before the growth (which runs at nice 19), so that the stale index is measured
        # right after it, before the reconciler retrains it, however long another measurement holds the lock.
        lock = measurement_lock(args, f"growing to {size:,} items")
        lock.__enter__()
        load_seconds = grow(state, size, args.noise, rng)
        label = f"{len(state['ids']):,}"
        # Right after the growth: the stale index serves (the reconciler has not retrained it yet).
        with measuring(args, f"{label} items right after the growth, then until the index is retrained", True):
            grown_at = time.monotonic()
            firsts[label] = [timed(client.search, "items", snapshot_files[i], 6)[0] for i in range(2)]
            stale[label] = {"trained on": trained_on, "load s": load_seconds,
                            **recall_of_nearest(state, queries[:10]), "load": load()}
            version.refresh_from_db()  # a retraining that finished while the stale index was measured
            stale[label]["trained on"] = f"{trained_on:,}" + (
                "" if version.item_index_rows == trained_on else f" (retrained meanwhile: {version.item_index_rows:,})")
            log(f"  first HTTP searches {firsts[label]}; stale index {stale[label]}")
            retrain[label] = wait_for_retraining(args, state, client, snapshot_files, grown_at)
            retrain[label]["load"] = load()
            log(f"  retrained: {retrain[label]}")
        lock.__exit__(None, None, None)
        measure(label)
        if size in args.compare_at:
            variants = [(lists, False) for lists in args.lists] + ([(args.lists[0], True)] if args.halfvec else [])
            for lists, halfvec in variants:
                seconds, size_bytes = build_index(state["conn"], version, lists, INDEX_BUILD_MEMORY, halfvec)
                with measuring(args, f"{label} items, lists {lists}{' halfvec' if halfvec else ''}"):
                    curve = probe_curve(state, queries[:10], [p for p in PROBES if p <= lists], halfvec=halfvec)
                builds.append((label, f"lists={lists}{' halfvec' if halfvec else ''}", seconds, size_bytes,
                               curve, load()))
                log(f"  {builds[-1]}")
            with state["conn"].cursor() as cur:  # a REINDEX would keep the last variant's definition
                cur.execute(f"DROP INDEX IF EXISTS descriptor_v{version.id}_item_ivfflat")
            start = time.perf_counter()
            maintain_item_index(version, force=True)  # the platform's index back, as the reconciler builds it
            seconds = time.perf_counter() - start
            with state["conn"].cursor() as cur:
                cur.execute("SELECT pg_relation_size(%s::regclass)", [f"descriptor_v{version.id}_item_ivfflat"])
                builds.append((label, f"platform (REINDEX CONCURRENTLY, lists={version.item_index_lists})",
                               seconds, cur.fetchone()[0], {}, load()))

    print_tables(results, builds, firsts, memory, pipelines, https, stale, retrain)
    state["conn"].close()
    return 0


def print_tables(results, builds, firsts, memory, pipelines, https, stale, retrain) -> None:
    print("\n## recall@k of nearest against exact search (mean over queries), fewest rows, in-process p50/p95 ms")
    print("| items | item@6 | item@100 | item@500 | plan k=100 | plan k=6 + category |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in results:
        cells = [f"{r[f'item@{k}'][0]:.3f} ({r[f'item@{k}'][1]} rows; {r[f'item@{k}'][2]} ms)" for k in (6, 100, 500)]
        print(f"| {r['size']} | {' | '.join(cells)} | {r['plan item@100']} | {r['plan item@6 category']} |")
    print("\n## right after the growth (stale index), and until the reconciler's retrained index serves")
    print("| items | trained on | load s | first HTTP searches ms | stale item@6 | stale item@100 | stale item@500 "
          "| retrained after s | HTTP during p50 / p95 | bad answers | lists | load |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for label, st in stale.items():
        cells = [f"{st[k][0]:.3f} ({st[k][1]} rows; {st[k][2]} ms)" for k in (6, 100, 500)]
        rt = retrain[label]
        first = ", ".join(f"{v:.0f}" for v in firsts[label])
        print(f"| {label} | {st['trained on']} | {st['load s']:.0f} | {first} | {' | '.join(cells)} | "
              f"{rt['seconds']:.0f} | {rt['http during']} | {rt['bad answers']} | {rt['lists']} | {rt['load']} |")
    print("\n## filtered: recall@k (fewest rows over the queries)")
    for r in results:
        cells = "; ".join(f"{name}: {rec:.3f} ({rows})" for name, (rec, rows) in r["filtered"].items())
        print(f"- {r['size']}: {cells}; {r['snapshots']}")
    print("\n## plans of the other hot queries (the table each filters)")
    for r in results:
        print(f"- {r['size']}: " + "; ".join(f"{name}: {plan}" for name, plan in r["hot queries"].items()))
    print(f"\n## latency p50 / p95 ms (in process: the model's forward pass, search_items, search_looks; HTTP, "
          f"sequential, {web_config()})")
    print("| items | forward pass (1 image) | search_items | search_looks | HTTP snapshot->items | HTTP item->looks |")
    print("| --- | --- | --- | --- | --- | --- |")
    for label in pipelines:
        p, h = pipelines[label], https[label]
        print(f"| {label} | {p['forward']} | {p['search_items']} | {p['search_looks']} | {h['items']} | {h['looks']} |")
    print("\n## memory (RSS MB per process), suggestions in the worker")
    for label, m in memory.items():
        web = ", ".join(f"{v:.0f}" for v in m["web"].values())
        worker = ", ".join(f"{v:.0f}" for v in m["worker"].values())
        print(f"- {label}: web {web}; worker {worker}; suggestions {m['suggestions_ms']:.0f} ms; {m['load']}")
    print("\n## IVFFlat item index builds: seconds, size; recall@k / p50 ms of the index alone by ivfflat.probes")
    print("| items | setting | build s | size MB | recall@k (p50 ms) by probes | load |")
    print("| --- | --- | --- | --- | --- | --- |")
    for label, setting, seconds, size, curve, machine in builds:
        c = "; ".join(f"p{p} k{k}: {r:.3f} ({ms:.0f})" for (p, k), (r, ms) in curve.items())
        print(f"| {label} | {setting} | {seconds:.1f} | {size / 2**20:.0f} | {c or '-'} | {machine} |")


if __name__ == "__main__":
    sys.exit(main())
