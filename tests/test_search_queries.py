"""The search service's own queries, against what the ORM (or numpy) says they must return: `nearest` with its
SQL compiled once per query shape (the query vector bound per call), the descriptors of linked items read by
one array parameter, the links of look transfer and the snapshots' looks (docs/RESULTS.md, "Issue 10: load,
session 12"). A small catalogue of its own (its own 16-d model version, written in bulk) in the test's
transaction."""
import numpy as np
import pytest

from recommender.models import Category, Descriptor, Item, Look, LookItem, Snapshot, Style
from recommender.services import search
from recommender.services.embedding import MAX_ATTEMPTS
from recommender.services.versions import register_version

DIM = 16


def unit(matrix):
    return (matrix / np.linalg.norm(matrix, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture
def small_catalogue(db):
    rng = np.random.default_rng(12)
    version = register_version("search-queries-test", "untrained-lite0", DIM)
    categories = [Category.objects.get_or_create(name=name)[0] for name in ("sq-shoes", "sq-top", "sq-bag")]
    style = Style.objects.get_or_create(name="sq-casual")[0]
    items = Item.objects.bulk_create(
        Item(image=f"catalogue/items/sq-{i}.jpg", sha256=f"sq-item-{i}", category=categories[i % 3]) for i in range(60)
    )
    looks = Look.objects.bulk_create(Look(key=f"sq-{j}", style=style) for j in range(10))
    snapshots = Snapshot.objects.bulk_create(
        Snapshot(look=looks[j // 2], image=f"catalogue/snapshots/sq-{j}.jpg", sha256=f"sq-snap-{j}") for j in range(20)
    )
    LookItem.objects.bulk_create(
        LookItem(look=look, item=items[i]) for look in looks for i in rng.choice(len(items), 5, replace=False)
    )
    item_vectors, snapshot_vectors = unit(rng.standard_normal((60, DIM))), unit(rng.standard_normal((20, DIM)))
    item_ready = np.arange(60) % 7 != 3  # some items failed for good: never returned, never read
    Descriptor.objects.bulk_create(
        Descriptor(model_version=version, item=item, embedding=vector,
                   **({"status": Descriptor.Status.READY} if ok else
                      {"status": Descriptor.Status.FAILED, "attempts": MAX_ATTEMPTS}))
        for item, vector, ok in zip(items, item_vectors, item_ready)
    )
    Descriptor.objects.bulk_create(
        Descriptor(model_version=version, snapshot=snapshot, embedding=vector, status=Descriptor.Status.READY)
        for snapshot, vector in zip(snapshots, snapshot_vectors)
    )
    return {"version": version, "items": items, "item_vectors": item_vectors, "item_ready": item_ready,
            "snapshots": snapshots, "snapshot_vectors": snapshot_vectors, "rng": rng}


def test_decode_vectors_reads_what_decode_vector_reads():
    rows = [np.random.default_rng(i).standard_normal(DIM).astype(np.float32) for i in range(5)]
    values = [np.array([DIM, 0], ">u2").tobytes() + row.astype(">f4").tobytes() for row in rows]
    decoded = search.decode_vectors(values, DIM)
    assert decoded.dtype == np.float32 and decoded.shape == (5, DIM)
    np.testing.assert_array_equal(decoded, np.stack([search.decode_vector(value) for value in values]))
    np.testing.assert_array_equal(decoded, np.stack(rows))
    assert search.decode_vectors([], DIM).shape == (0, DIM)
    with pytest.raises(ValueError, match="dimension 8"):
        search.decode_vectors(values, 8)


def test_nearest_binds_each_query_into_its_compiled_sql(small_catalogue):
    """One compiled statement per shape, reused: every query gets its own exact nearest rows, with filters."""
    version, ids = small_catalogue["version"], np.array([item.id for item in small_catalogue["items"]])
    vectors, ready = small_catalogue["item_vectors"], small_catalogue["item_ready"]
    shoes = np.array([item.category.name == "sq-shoes" for item in small_catalogue["items"]])
    search._nearest_sql.cache_clear()
    queries = unit(small_catalogue["rng"].standard_normal((4, DIM)))
    for query in queries:
        for k, keep, filters in ((6, ready, {}), (20, ready, {}), (4, ready & shoes, {"item__category__name": "sq-shoes"})):
            matches = search.nearest(query, "item", k=k, version=version, with_vectors=True, **filters)
            distances = 1.0 - vectors[keep] @ query
            expected = ids[keep][np.argsort(distances, kind="stable")[:k]]
            assert [m.id for m in matches] == list(expected)
            np.testing.assert_allclose([m.distance for m in matches], np.sort(distances)[:k], atol=1e-5)
            for m in matches:
                np.testing.assert_array_equal(m.vector, vectors[list(ids).index(m.id)])
    info = search._nearest_sql.cache_info()
    assert info.misses == 3 and info.hits == 3 * (len(queries) - 1)


def test_ready_vectors_reads_ready_rows_by_id(small_catalogue):
    version, items = small_catalogue["version"], small_catalogue["items"]
    wanted = [items[i].id for i in (0, 3, 10, 17, 58)]  # 3, 10, 17: failed rows (i % 7 == 3)
    found = search._ready_vectors("item", wanted, version)
    assert sorted(found) == [items[0].id, items[58].id]
    np.testing.assert_array_equal(found[items[58].id], small_catalogue["item_vectors"][58])
    assert search._ready_vectors("item", [], version) == {}
    snapshots = search._ready_vectors("snapshot", [s.id for s in small_catalogue["snapshots"][:3]], version)
    np.testing.assert_array_equal(snapshots[small_catalogue["snapshots"][2].id], small_catalogue["snapshot_vectors"][2])


@pytest.mark.parametrize("category", [None, "sq-top"])
def test_linked_items_and_looks_match_the_orm(small_catalogue, category):
    version, snapshots = small_catalogue["version"], small_catalogue["snapshots"]
    chosen = [s.id for s in snapshots[::3]]
    candidates = [item.id for item in small_catalogue["items"][:20]]
    links, vectors = search._linked_items(chosen, candidates, version, category)
    rows = LookItem.objects.filter(look__snapshots__id__in=chosen,
                                   **({"item__category__name": category} if category else {}))
    expected: dict[int, set[int]] = {}
    for snapshot_id, item_id in rows.values_list("look__snapshots__id", "item_id"):
        expected.setdefault(snapshot_id, set()).add(item_id)
    assert links == expected and links
    new = {item_id for ids in expected.values() for item_id in ids} - set(candidates)
    ready = {item.id for item, ok in zip(small_catalogue["items"], small_catalogue["item_ready"]) if ok}
    assert set(vectors) == new & ready
    assert search._look_of(chosen) == dict(Snapshot.objects.filter(id__in=chosen).values_list("id", "look_id"))
