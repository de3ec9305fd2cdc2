"""Model versions: which embedding model is active, and the vector indexes each version gets.

Descriptor sizes differ between versions (1280 for the untrained Lite0, 512 for a trained CGD model), so the
descriptor column is an untyped `vector` and every version gets partial indexes (cosine) on a cast to its own
size, one per kind of image. Queries must use the same cast expression and filters to hit them
(recommender.services.search does).

Items get an IVFFlat index, snapshots and wardrobe items HNSW (docs/RESULTS.md, issue 9, "recall at 100k"):
an HNSW graph built over a catalogue of near-duplicate groups (a product photographed many times, or the
issue's synthetic catalogue: each real item plus ~95 noisy copies) splits into islands that no ef_search
reaches (recall 0.3 at 100k), while IVFFlat's recall depends only on how many of its lists a query probes.
IVFFlat's lists are k-means centres trained on the rows present at build time, so the platform keeps the
item index trained: `maintain_item_index` (run by the reconciler) rebuilds it, without stopping reads or
writes, whenever the version's ready items have grown by a quarter since the last training (a bulk load, rows
written straight into the tables). Snapshots (street photos, thousands) and wardrobe items (searched per owner)
stay on HNSW, which needs no training and fills as rows arrive.

The item index stores `halfvec` (2 bytes a dimension): a query reads half the pages per list for the same
recall (RESULTS, "Issue 9: session 10"); `nearest` re-scores what the index finds with the full-precision
column, so the distances it returns are exact.

A version being re-embedded (not active yet) has no vector indexes while its rows are written: each insert
into an HNSW graph cost ~3 ms of Postgres CPU a row, 0.4 ms without (RESULTS, "embedding throughput").
`ensure_vector_indexes` builds them once, on every row, when the re-embedding completes and before the
version becomes active (services.reembedding); the active version keeps its indexes throughout.
"""
import logging
import math
import time

from django.db import connection, transaction

from recommender.models import ModelVersion

logger = logging.getLogger(__name__)

DEFAULT_VERSION = {"name": "untrained-lite0", "spec": "untrained-lite0", "dim": 1280}

# kind of image -> the Descriptor column that points at it
IMAGE_COLUMNS = {"snapshot": "snapshot_id", "item": "item_id", "wardrobe": "wardrobe_item_id"}
IVFFLAT_KINDS = {"item"}  # the others get HNSW

# HNSW build parameters, chosen by measurement at 10k and 100k items of 1536-d descriptors
# (bench/catalogue_scale.py; docs/RESULTS.md, issue 9): recall, build time and index size per setting.
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 64
# Memory for building an index over existing rows: the HNSW graph, or IVFFlat's k-means sample (50 rows per
# list: 316 lists of 1536-d vectors take 100 MB, 1,000 lists 300 MB).
INDEX_BUILD_MEMORY = "1GB"

# IVFFlat lists: sqrt(rows), at least MIN_LISTS. Measured at 100k items of 1536-d (RESULTS, "Issue 9: recall
# at 100k"): 316 lists at 32 probes gave recall@6/100/500 1.000/0.995/0.984 in 32-36 ms a query, where
# pgvector's rows / 1000 (100 lists) needed 32 probes for the same recall at 154-184 ms (each list 3x larger).
# MIN_LISTS keeps the index trained on the sample useful after a large direct load (the stale index).
MIN_LISTS = 32
# The reconciler retrains once the ready rows reach this multiple of the rows the lists were trained on
# (and at least RETRAIN_MIN_ROWS, so that an empty new version's index is trained once its first rows exist).
# 1.25: an index never serves more than 1.25x its training rows, so its lists stay >= 0.89 sqrt(rows) and
# hold at most 1.25x the rows a fresh index's would. Measured at 100k items (RESULTS, "Issue 9: session 11"):
# at 10 % of the lists (search.PROBES_SHARE) an index trained on 80k rows kept recall@6/100/500 at
# 0.983/0.979/0.960, one trained on 66.7k (the former +50 % rule) 0.958/0.974/0.953, and doubling (225 lists
# on 51k) 0.93 (RESULTS, "Issue 9: recall at 100k"). Each retrain reads every row: over a catalogue's life
# 1 + 1/1.25 + ... = 5x the final size (3x at +50 %); at 100k one retrain took 13-17 s of nice-19 CPU.
RETRAIN_GROWTH = 1.25
RETRAIN_MIN_ROWS = 200
INDEX_LOCK_TIMEOUT = "5s"  # the brief locks of ALTER INDEX / REINDEX's swap wait no longer behind long queries


def ivfflat_lists(rows: int) -> int:
    return max(MIN_LISTS, int(math.sqrt(rows)))


def index_name(version_id: int, kind: str) -> str:
    method = "ivfflat" if kind in IVFFLAT_KINDS else "hnsw"
    return f"descriptor_v{version_id}_{kind}_{method}"


def index_type(kind: str) -> str:
    """The pgvector type a kind's index stores (and its queries cast to): halfvec for items, vector for the
    others (HNSW over thousands of snapshots, and wardrobes searched per owner, gain little from halving)."""
    return "halfvec" if kind in IVFFLAT_KINDS else "vector"


def vector_index_sql(version_id: int, dim: int, kind: str, name: str | None = None, m: int = HNSW_M,
                     ef_construction: int = HNSW_EF_CONSTRUCTION, lists: int = MIN_LISTS,
                     concurrently: bool = False) -> str:
    """CREATE INDEX for one version's partial index on one kind of image (cosine, on a cast to its size)."""
    cast = f"(embedding::{index_type(kind)}({int(dim)})) {index_type(kind)}_cosine_ops"
    options = (f"ivfflat ({cast}) WITH (lists = {int(lists)})" if kind in IVFFLAT_KINDS else
               f"hnsw ({cast}) WITH (m = {int(m)}, ef_construction = {int(ef_construction)})")
    return (
        f"CREATE INDEX {'CONCURRENTLY ' if concurrently else ''}IF NOT EXISTS "
        f"{name or index_name(version_id, kind)} ON recommender_descriptor USING {options} "
        f"WHERE model_version_id = {int(version_id)} AND {IMAGE_COLUMNS[kind]} IS NOT NULL"
    )


def _ready_rows(execute_fetch, version_id: int, kind: str) -> int:
    return execute_fetch(
        f"SELECT count(*) FROM recommender_descriptor WHERE model_version_id = %s AND {IMAGE_COLUMNS[kind]} "
        "IS NOT NULL AND status = 'ready'", [version_id])


def create_vector_indexes(version_id: int, dim: int, schema_editor=None) -> tuple[int, int]:
    """Partial indexes for one version; safe to call again. Takes plain values so migrations can use it.
    The item index is trained on the version's ready items now (none for a new version: the reconciler
    retrains it once they exist). Returns (lists, rows trained on), for ModelVersion.item_index_*."""
    with connection.cursor() as cursor:
        def fetch(sql, params):
            cursor.execute(sql, params)
            return cursor.fetchone()[0]

        execute = schema_editor.execute if schema_editor else cursor.execute
        rows = _ready_rows(fetch, version_id, "item")
        with transaction.atomic():
            execute(f"SET LOCAL maintenance_work_mem = '{INDEX_BUILD_MEMORY}'")
            for kind in IMAGE_COLUMNS:
                execute(vector_index_sql(version_id, dim, kind, lists=ivfflat_lists(rows)))
    return ivfflat_lists(rows), rows


def missing_vector_indexes(version_id: int) -> list[str]:
    """The kinds of image whose index the version lacks (a version being re-embedded has none)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT relname FROM pg_class WHERE relname = ANY(%s)",
                       [[index_name(version_id, kind) for kind in IMAGE_COLUMNS]])
        present = {row[0] for row in cursor.fetchall()}
    return [kind for kind in IMAGE_COLUMNS if index_name(version_id, kind) not in present]


def drop_vector_indexes(version: ModelVersion) -> None:
    """Drops the version's vector indexes while it is re-embedded (not active): its rows are then written
    without index inserts, and `ensure_vector_indexes` builds the indexes once on all of them. CONCURRENTLY
    outside a transaction (searches of the active version never wait), plainly inside one."""
    if version.is_active:
        raise ValueError(f"{version} is the active version: its indexes serve every search")
    concurrently = "" if connection.in_atomic_block else "CONCURRENTLY"
    with connection.cursor() as cursor:
        for kind in IMAGE_COLUMNS:
            cursor.execute(f"DROP INDEX {concurrently} IF EXISTS {index_name(version.id, kind)}")


def ensure_vector_indexes(version: ModelVersion) -> dict | None:
    """Builds the version's missing vector indexes on its rows as they are now (the item index trained on its
    ready items), CONCURRENTLY outside a transaction (reads and writes go on), plainly inside one (writes
    wait). Returns what it built, or None when nothing was missing."""
    missing = missing_vector_indexes(version.id)
    if not missing:
        return None
    concurrently = not connection.in_atomic_block
    start = time.perf_counter()
    with connection.cursor() as cursor:
        def fetch(sql, params):
            cursor.execute(sql, params)
            return cursor.fetchone()[0]

        rows = _ready_rows(fetch, version.id, "item")
        cursor.execute(f"SET maintenance_work_mem = '{INDEX_BUILD_MEMORY}'")
        try:
            for kind in missing:
                name = index_name(version.id, kind)
                if concurrently:  # an interrupted CREATE INDEX CONCURRENTLY leaves an invalid index behind
                    cursor.execute("SELECT 1 FROM pg_index WHERE indexrelid = to_regclass(%s) AND NOT indisvalid",
                                   [name])
                    if cursor.fetchone():
                        cursor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
                cursor.execute(vector_index_sql(version.id, version.dim, kind, lists=ivfflat_lists(rows),
                                                concurrently=concurrently))
        finally:
            cursor.execute("RESET maintenance_work_mem")
    if "item" in missing:
        ModelVersion.objects.filter(pk=version.pk).update(item_index_lists=ivfflat_lists(rows), item_index_rows=rows)
        version.item_index_lists, version.item_index_rows = ivfflat_lists(rows), rows
    report = {"version": version.name, "built": missing, "item rows": rows,
              "seconds": round(time.perf_counter() - start, 1)}
    logger.info("built the vector indexes %(built)s of %(version)s (%(item rows)d items) in %(seconds)s s", report)
    return report


def item_index_is_stale(version: ModelVersion, rows: int) -> bool:
    return rows >= max(RETRAIN_MIN_ROWS, RETRAIN_GROWTH * version.item_index_rows) and rows > version.item_index_rows


def maintain_item_index(version: ModelVersion, force: bool = False) -> dict | None:
    """Retrains the version's item IVFFlat index when its ready rows have outgrown the lists (or `force`):
    ALTER INDEX sets the new number of lists, REINDEX ... CONCURRENTLY builds the new index beside the old one
    (reads and writes go on: the old index serves, and is kept up to date, until the swap) and swaps them.
    Inside a transaction (which CONCURRENTLY cannot run in) it is a plain REINDEX, which blocks writes.
    Returns what it did, or None when the index is trained."""
    with connection.cursor() as cursor:
        def fetch(sql, params):
            cursor.execute(sql, params)
            return cursor.fetchone()[0]

        rows = _ready_rows(fetch, version.id, "item")
        version.refresh_from_db(fields=["item_index_lists", "item_index_rows", "is_active"])
        if not force and not item_index_is_stale(version, rows):
            return None
        name, lists = index_name(version.id, "item"), ivfflat_lists(rows)
        cursor.execute("SELECT to_regclass(%s)", [name])
        if cursor.fetchone()[0] is None and not version.is_active:
            return None  # being re-embedded: built on every row when that completes (ensure_vector_indexes)
        concurrently = "" if connection.in_atomic_block else "CONCURRENTLY"
        start = time.perf_counter()
        # queries set their probes from item_index_lists: while both indexes exist, the larger number of lists
        # (more probes than the old index needs is slower, never less right)
        ModelVersion.objects.filter(pk=version.pk).update(item_index_lists=max(lists, version.item_index_lists))
        # a REINDEX CONCURRENTLY that was interrupted leaves an invalid copy behind: drop it first
        cursor.execute("SELECT relname FROM pg_class WHERE relname LIKE %s", [f"{name}_ccnew%"])
        for (leftover,) in cursor.fetchall():
            cursor.execute(f"DROP INDEX {concurrently} IF EXISTS {leftover}")
        cursor.execute(f"SET lock_timeout = '{INDEX_LOCK_TIMEOUT}'")
        cursor.execute(f"SET maintenance_work_mem = '{INDEX_BUILD_MEMORY}'")
        try:
            cursor.execute("SELECT to_regclass(%s)", [name])
            if cursor.fetchone()[0] is None:  # dropped behind the platform's back: build it again
                cursor.execute(vector_index_sql(version.id, version.dim, "item", lists=lists,
                                                concurrently=bool(concurrently)))
            else:
                cursor.execute(f"ALTER INDEX {name} SET (lists = {lists})")
                cursor.execute(f"REINDEX INDEX {concurrently} {name}")
        finally:
            cursor.execute("RESET lock_timeout")
            cursor.execute("RESET maintenance_work_mem")
        ModelVersion.objects.filter(pk=version.pk).update(item_index_lists=lists, item_index_rows=rows)
        version.item_index_lists, version.item_index_rows = lists, rows
    report = {"index": name, "rows": rows, "lists": lists, "seconds": round(time.perf_counter() - start, 1)}
    logger.info("retrained %(index)s on %(rows)d rows (%(lists)d lists) in %(seconds)s s", report)
    return report


def active_version() -> ModelVersion:
    version = ModelVersion.objects.filter(is_active=True).first()
    if version is None:
        version = _recover_active_version()
    if version is None:
        raise ModelVersion.DoesNotExist("no active model version; run `python manage.py migrate`")
    return version


def _recover_active_version() -> ModelVersion | None:
    """The active version vanished (deleted behind the platform's back): the newest version that describes
    every catalogue image takes over, so search keeps working."""
    from django.db.models import Count, Q

    from recommender.models import Descriptor, Item, Snapshot

    images = Snapshot.objects.count() + Item.objects.count()
    ready = Q(descriptors__status=Descriptor.Status.READY) & Q(descriptors__wardrobe_item__isnull=True)
    for version in ModelVersion.objects.annotate(ready=Count("descriptors", filter=ready)).order_by("-id"):
        if version.ready >= images:
            activate(version)
            return version
    return None


def protect_active_version(sender, instance, **kwargs):
    """pre_delete receiver: the active version serves every search and cannot be deleted (activate another
    one first); deleting any other version only drops its descriptors (and a job re-embedding with it)."""
    from django.db.models import ProtectedError

    if instance.is_active:
        raise ProtectedError(f"{instance} is the active model version; activate another one first", {instance})


def register_version(name: str, spec: str, dim: int) -> ModelVersion:
    """Registers a model version (inactive unless it is the first) with its indexes; returns it if it exists."""
    version, created = ModelVersion.objects.get_or_create(name=name, defaults={"spec": spec, "dim": dim})
    if created:
        lists, rows = create_vector_indexes(version.id, version.dim)
        ModelVersion.objects.filter(pk=version.pk).update(item_index_lists=lists, item_index_rows=rows)
        version.item_index_lists, version.item_index_rows = lists, rows
        if not ModelVersion.objects.filter(is_active=True).exists():
            activate(version)
    return version


@transaction.atomic
def activate(version: ModelVersion) -> None:
    """Makes `version` the one every search uses; builds any vector index it lacks first (a re-embedding
    builds them before, without blocking writes: services.reembedding.finish_if_complete)."""
    from recommender.signals import active_version_changed

    ensure_vector_indexes(version)

    ModelVersion.objects.filter(is_active=True).exclude(pk=version.pk).update(is_active=False)
    ModelVersion.objects.filter(pk=version.pk).update(is_active=True)
    version.is_active = True
    transaction.on_commit(lambda: active_version_changed.send(sender=ModelVersion, version=version))
