"""Vector search at a size where the HNSW index serves the queries: k rows with and without filters, recall
against exact (numpy) search.

A synthetic catalogue of its own model version (4,000 items, 1,500 snapshots, 96-d clustered vectors, written
in bulk) is big enough for pgvector's limits to bite: one HNSW scan returns at most `hnsw.ef_search` rows
(40 by default) and filters are applied after it. The tests turn sequential scans and sorts off in their
transaction so the planner takes the index path even at this size, check with EXPLAIN that it did, and then ask
`nearest` for more rows than one default scan returns, and for rare categories and styles.
"""
import numpy as np
import pytest
from django.db import connection

from recommender.models import Category, Descriptor, Item, Look, Snapshot, Style
from recommender.services import search
from recommender.services.versions import IMAGE_COLUMNS, index_name, register_version

DIM = 96
N_ITEMS, N_SNAPSHOTS = 4000, 1500
CATEGORIES = {"scale-common": 0.70, "scale-usual": 0.28, "scale-rare": 0.02}  # rare: ~80 items, few of them near any query
STYLES = {"scale-casual": 0.8, "scale-formal": 0.17, "scale-punk": 0.03}
NOT_READY_SHARE = 0.1  # rows with a (stale) vector that are not ready: the status filter must drop them


def unit(matrix):
    return matrix / np.linalg.norm(matrix, axis=-1, keepdims=True)


def clustered(rng, n: int, centres: np.ndarray) -> np.ndarray:
    """Unit vectors around random cluster centres, as descriptors of similar garments are."""
    return unit(centres[rng.integers(len(centres), size=n)] + 0.35 * rng.standard_normal((n, DIM)) / np.sqrt(DIM))


@pytest.fixture(scope="module")
def scale_catalogue(django_db_setup, django_db_blocker):
    """Built once for the module and committed (5,500 HNSW inserts take a while), removed afterwards."""
    with django_db_blocker.unblock():
        built = _build()
        yield built
        version = built["version"]
        Item.objects.filter(sha256__startswith="scale-test-item-").delete()
        Look.objects.filter(key__startswith="scale-").delete()
        with connection.cursor() as cursor:
            for kind in IMAGE_COLUMNS:
                cursor.execute(f"DROP INDEX IF EXISTS {index_name(version.id, kind)}")
        Category.objects.filter(name__in=CATEGORIES).delete()
        Style.objects.filter(name__in=STYLES).delete()
        version.delete()


@pytest.fixture
def catalogue(scale_catalogue, db):
    with connection.cursor() as cursor:
        # the index path for the rest of the test: no exact plan (scan everything, then sort) unless forced
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_sort = off")
    return scale_catalogue


def _build():
    rng = np.random.default_rng(9)
    version = register_version("scale-test", "untrained-lite0", DIM)
    centres = unit(rng.standard_normal((60, DIM)))
    categories = {name: Category.objects.get_or_create(name=name)[0] for name in CATEGORIES}
    styles = {name: Style.objects.get_or_create(name=name)[0] for name in STYLES}

    item_category = rng.choice(list(CATEGORIES), size=N_ITEMS, p=list(CATEGORIES.values()))
    items = Item.objects.bulk_create(
        Item(image=f"catalogue/items/scale-{i}.jpg", sha256=f"scale-test-item-{i}", category=categories[c])
        for i, c in enumerate(item_category)
    )
    look_style = rng.choice(list(STYLES), size=N_SNAPSHOTS // 3, p=list(STYLES.values()))
    looks = Look.objects.bulk_create(Look(key=f"scale-{j}", style=styles[s]) for j, s in enumerate(look_style))
    snapshots = Snapshot.objects.bulk_create(
        Snapshot(look=looks[j // 3], image=f"catalogue/snapshots/scale-{j}.jpg", sha256=f"scale-{j}")
        for j in range(N_SNAPSHOTS)
    )

    def described(kind, owners, vectors):
        ready = rng.random(len(owners)) >= NOT_READY_SHARE
        Descriptor.objects.bulk_create(
            (
                Descriptor(model_version=version, embedding=vector, **{kind: owner},
                           status=Descriptor.Status.READY if ok else Descriptor.Status.FAILED)
                for owner, vector, ok in zip(owners, vectors, ready)
            ),
            batch_size=1000,
        )
        return ready

    item_vectors, snapshot_vectors = clustered(rng, N_ITEMS, centres), clustered(rng, N_SNAPSHOTS, centres)
    item_ready = described("item", items, item_vectors)
    snapshot_ready = described("snapshot", snapshots, snapshot_vectors)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE recommender_descriptor")
    return {
        "version": version,
        "queries": clustered(rng, 12, centres),
        "item": (np.array([i.id for i in items]), item_vectors, item_ready,
                 {"category": np.array(item_category)}),
        "snapshot": (np.array([s.id for s in snapshots]), snapshot_vectors, snapshot_ready,
                     {"style": np.array([look_style[j // 3] for j in range(N_SNAPSHOTS)])}),
    }


def exact(catalogue, kind, query, k, **labels):
    """Ids of the k ready rows nearest the query (cosine), by numpy, among rows with the given labels."""
    ids, vectors, ready, label_columns = catalogue[kind]
    keep = ready.copy()
    for label, value in labels.items():
        keep &= label_columns[label] == value
    distances = 1.0 - vectors[keep] @ query
    return ids[keep][np.argsort(distances, kind="stable")[:k]], int(keep.sum())


FILTERS = {"category": "item__category__name", "style": "snapshot__look__style__name"}


def check(catalogue, kind, k, min_recall=0.95, **labels):
    """Every query: k rows (or every match), only ready ones, closest first, recall@k against numpy."""
    version = catalogue["version"]
    filters = {FILTERS[label]: value for label, value in labels.items()}
    recalls = []
    for query in catalogue["queries"]:
        expected, matching = exact(catalogue, kind, query, k, **labels)
        matches = search.nearest(query, kind, k=k, version=version, with_vectors=True, **filters)
        assert len(matches) == min(k, matching), f"{kind} k={k} {labels}: {len(matches)} rows of {matching}"
        distances = [m.distance for m in matches]
        assert distances == sorted(distances)
        ids = [m.id for m in matches]
        assert len(set(ids)) == len(ids)
        ready_ids = set(catalogue[kind][0][catalogue[kind][2]])
        assert set(ids) <= ready_ids, "a row that is not ready came back"
        for m in matches[:3]:  # the vectors that come back with the rows are the stored ones
            row = list(catalogue[kind][0]).index(m.id)
            np.testing.assert_allclose(m.vector, catalogue[kind][1][row], atol=1e-6)
        recalls.append(len(set(ids) & set(expected)) / len(expected))
    assert np.mean(recalls) >= min_recall, f"{kind} k={k} {labels}: recall {np.mean(recalls):.3f}"
    return matching


def plan(catalogue, kind, k, **filters) -> str:
    search.set_index_scan(k)
    return search.nearest_queryset(catalogue["queries"][0], kind, k, catalogue["version"], **filters).explain()


def test_the_hnsw_index_serves_the_queries(catalogue):
    version = catalogue["version"]
    assert index_name(version.id, "item") in plan(catalogue, "item", 100)
    assert index_name(version.id, "item") in plan(catalogue, "item", 6, item__category__name="scale-usual")
    assert index_name(version.id, "snapshot") in plan(catalogue, "snapshot", 50)


@pytest.mark.parametrize("k", [6, 100, 500])
def test_k_rows_and_recall_without_filters(catalogue, k):
    check(catalogue, "item", k)


def test_k_rows_and_recall_with_filters(catalogue):
    check(catalogue, "item", 100, category="scale-usual")
    assert check(catalogue, "item", 6, category="scale-rare") > 6  # a few dozen of 4,000: far past one default scan
    check(catalogue, "item", 500, category="scale-rare")  # fewer than k match: all of them
    check(catalogue, "snapshot", 50)
    check(catalogue, "snapshot", 6, style="scale-punk")
    check(catalogue, "snapshot", 50, style="scale-formal")


def test_settings_do_not_leak_out_of_the_query(catalogue):
    """The exact fallback turns index scans off only for its own query."""
    search.nearest(catalogue["queries"][0], "item", k=500, version=catalogue["version"], item__category__name="scale-rare")
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('enable_indexscan')")
        assert cursor.fetchone()[0] == "on"


def test_vectors_reads_by_id_in_order(catalogue):
    ids, vectors, ready, _ = catalogue["item"]
    chosen = [int(i) for i in ids[ready][[5, 0, 17]]]
    rows = [list(ids).index(i) for i in chosen]
    np.testing.assert_allclose(search._vectors("item", chosen, catalogue["version"]), vectors[rows], atol=1e-6)
    not_ready = int(ids[~ready][0])
    with pytest.raises(KeyError, match=str(not_ready)):
        search._vectors("item", [chosen[0], not_ready], catalogue["version"])


def test_exact_fallback_when_the_index_comes_back_short(catalogue, monkeypatch):
    """Without an iterative scan (or when one stops at hnsw.max_scan_tuples) a selective filter leaves the
    index scan short of k rows; nearest must then answer with the exact k nearest matches."""
    monkeypatch.setattr(search, "ITERATIVE_SCAN", "off")
    query, version = catalogue["queries"][1], catalogue["version"]
    search.set_index_scan(6)
    queryset = search.nearest_queryset(query, "item", 6, version, item__category__name="scale-rare")
    assert index_name(version.id, "item") in queryset.explain()
    assert len(list(queryset)) < 6  # the index alone: ef_search rows, then the filter
    check(catalogue, "item", 6, min_recall=1.0, category="scale-rare")
