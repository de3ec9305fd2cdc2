"""Vector queries over the active version's descriptors, in Postgres (pgvector, cosine distance).

Each query uses the cast expression and filters of the version's partial indexes (services.versions: IVFFlat
for items, HNSW for snapshots and wardrobe items), so the index serves it once the catalogue is large enough
for the planner to prefer it. Both index scans apply filters (category, style, status) after the scan, and
an HNSW scan returns at most `hnsw.ef_search` rows, so `nearest` sets ef_search from k and IVFFlat's probes
from the item index's lists, turns on pgvector's iterative scans for the one query (SET LOCAL in its own
transaction), and falls back to an exact scan when the index still comes back short (a very selective filter).

Vectors are never copied into the process wholesale: a query that needs its candidates' vectors gets them
back with the candidates (`nearest(..., with_vectors=True)`), and `_vectors` reads any others by id.
"""
import functools
import math
from dataclasses import dataclass, field

import numpy as np
from django.db import connection, transaction
from django.db.models import BinaryField, Count, Func
from django.db.models.functions import Cast
from pgvector.django import CosineDistance, HalfVectorField, VectorField

from recommender.models import Category, Descriptor, Item, Look, LookItem, ModelVersion, Snapshot
from recommender.services.binary_cursor import VectorParameter, binary_cursor
from recommender.services.versions import IVFFLAT_KINDS, active_version, index_type

# hnsw.ef_search per query: the size of the scan's candidate list. EF_SEARCH_PER_K x k, at least EF_SEARCH_MIN
# and at most pgvector's maximum; chosen by measurement (bench/catalogue_scale.py, docs/RESULTS.md issue 9):
# recall@k >= 0.95 against exact search at 100k items for every k the platform asks.
EF_SEARCH_MIN = 64
EF_SEARCH_PER_K = 2
EF_SEARCH_MAX = 1000
# Iterative index scans (pgvector 0.8) keep scanning until k rows pass the filters, up to this many tuples;
# relaxed order (results re-sorted here) has better recall than strict order at the same ef_search.
ITERATIVE_SCAN = "relaxed_order"
MAX_SCAN_TUPLES = 40000
# ivfflat.probes per query: the lists of the item index a scan reads. PROBES_SHARE of them, and at least
# enough lists to hold PROBES_MIN_ROWS rows and PROBES_PER_K x k rows (a small catalogue is read whole: exact).
# Measured (docs/RESULTS.md "Issue 9: recall at 100k", "Issue 9: session 10" and "Issue 9: session 11"): at
# 100k items of the recipe on the halfvec index, 20 sample snapshots, recall@6/100/500 at 10 % of the
# lists: 0.983/0.993/0.981 freshly trained (316 lists), 0.983/0.979/0.960 on an index trained on 80k rows
# (282 lists: the stalest that retraining at +25 %, versions.RETRAIN_GROWTH, lets serve), 0.958/0.974/0.953
# on one trained on 66.7k (the former +50 % rule: too little margin). 15 % cost the k = 100 candidates query
# of every snapshot -> items search half as much again (48 lists read instead of 32).
PROBES_SHARE = 0.10
PROBES_MIN_ROWS = 4000
PROBES_PER_K = 3
# A filtered query's iterative IVFFlat scan probes more lists until k rows pass, up to this many times probes.
MAX_PROBES_FACTOR = 8
# A query that only asks whether its nearest item is a near-duplicate (recognise_item: cosine >= 0.98) reads
# this many lists: a near-duplicate lies in (or next to) the query's nearest list, so it needs no k = 100
# budget (RESULTS, "Issue 9: session 10": found in every test at 100k items).
NEAR_DUPLICATE_PROBES = 4
# The item index stores halfvec: it ranks by a rounded distance, and `nearest` re-scores its rows with the
# full-precision column. It asks the index for this many rows beyond k, so that rows whose order the rounding
# changed at the k-th place are still among those re-scored.
HALFVEC_MARGIN = 0.1


def ef_search_for(k: int) -> int:
    return int(min(EF_SEARCH_MAX, max(EF_SEARCH_MIN, EF_SEARCH_PER_K * k)))


def probes_for(k: int, version: ModelVersion, near_duplicate: bool = False) -> int:
    """ivfflat.probes for k rows from the version's item index; every list while it is untrained (its centres
    are random until the reconciler trains it on the version's first rows)."""
    from recommender.services.versions import RETRAIN_MIN_ROWS

    lists, rows = version.item_index_lists, version.item_index_rows
    if rows < RETRAIN_MIN_ROWS:
        return lists
    if near_duplicate:
        return min(lists, NEAR_DUPLICATE_PROBES)
    per_list = rows / lists  # as trained; a grown index holds more per list, so this errs on the safe side
    for_rows = math.ceil(max(PROBES_MIN_ROWS, PROBES_PER_K * k) / per_list)
    return int(min(lists, max(math.ceil(PROBES_SHARE * lists), for_rows)))


@dataclass(frozen=True)
class Match:
    id: int  # the id of the Item, Snapshot or WardrobeItem
    distance: float  # cosine distance, 1 - cosine similarity
    vector: np.ndarray | None = field(default=None, compare=False, repr=False)  # with nearest(with_vectors=True)

    @property
    def score(self) -> float:
        return 1.0 - self.distance


class VectorBytes(Func):
    """pgvector's binary form of a vector (vector_send): a quarter of the text form's bytes, decoded by numpy."""

    function = "vector_send"
    output_field = BinaryField()


def decode_vector(data) -> np.ndarray:
    """A vector_send value -> float32 array (int16 dim, int16 unused, then big-endian float4s)."""
    data = bytes(data)
    dim = int.from_bytes(data[:2], "big")
    return np.frombuffer(data, dtype=">f4", count=dim, offset=4).astype(np.float32)


def decode_vectors(values, dim: int) -> np.ndarray:
    """vector_send values of one size -> (n, dim) float32, decoded as one array (decode_vector's numbers; one
    numpy call for the few hundred rows a search reads instead of three a row)."""
    if not values:
        return np.zeros((0, dim), np.float32)
    rows = np.frombuffer(b"".join(values), dtype=np.uint8).reshape(len(values), -1)
    if rows.shape[1] != 4 + 4 * dim:
        raise ValueError(f"vector_send values of {rows.shape[1]} bytes, expected {4 + 4 * dim} (dimension {dim})")
    return rows[:, 4:].copy().view(">f4").astype(np.float32)


def _set_local(**settings) -> None:
    """SET LOCAL for the current transaction (set_config(..., true) takes the values as parameters)."""
    with connection.cursor() as cursor:
        sql = ", ".join("set_config(%s, %s, true)" for _ in settings)
        cursor.execute(f"SELECT {sql}", [v for pair in settings.items() for v in (pair[0], str(pair[1]))])


def _current(name: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting(%s)", [name])
        return cursor.fetchone()[0]


class QueryVector(Func):
    """The query vector cast to the type and size of the index (`%s::vector(d)`, then `::halfvec(d)` for a
    halfvec index). With `binary`, it is one VectorParameter (sent in binary form by `binary_cursor`);
    otherwise pgvector's text form, which any cursor can run (EXPLAIN, printing the query)."""

    output_field = VectorField()

    def __init__(self, vector, dim: int, type_name: str = "vector", binary: bool = False):
        self.vector, self.dim, self.type_name, self.binary = vector, int(dim), type_name, binary
        super().__init__()
        self._constructor_args = ((id(self),), {})  # Django hashes the arguments; an array has no hash

    def as_sql(self, compiler, connection, **extra):
        value = VectorParameter(self.vector) if self.binary else "[" + ",".join(map(repr, self.vector.tolist())) + "]"
        cast = f"::vector({self.dim})" + (f"::{self.type_name}({self.dim})" if self.type_name != "vector" else "")
        return f"(%s{cast})", [value]


def nearest_queryset(vector, kind: str, k: int, version: ModelVersion, with_vectors: bool = False,
                     binary: bool = False, **filters):
    """The SQL of `nearest` (without its settings): rows of (image id, distance[, vector_send bytes]), ordered
    by the index's distance (halfvec for items: rounded); `distance` is always the full-precision one."""
    vector = np.asarray(vector, dtype=np.float32)
    if vector.shape != (version.dim,):
        raise ValueError(f"query vector has shape {vector.shape}, model version {version.name} needs ({version.dim},)")
    columns = [f"{kind}_id", "distance"] + (["vector_bytes"] if with_vectors else [])
    exact = CosineDistance(Cast("embedding", VectorField(dimensions=version.dim)),
                           QueryVector(vector, version.dim, binary=binary))
    queryset = Descriptor.objects.filter(
        model_version=version, status=Descriptor.Status.READY, **{f"{kind}__isnull": False}, **filters
    ).annotate(distance=exact)
    if index_type(kind) == "vector":
        order = "distance"  # the expression of the version's partial index (services.versions.vector_index_sql)
    else:
        index_field = HalfVectorField(dimensions=version.dim)
        queryset = queryset.annotate(index_distance=CosineDistance(
            Cast("embedding", index_field), QueryVector(vector, version.dim, index_type(kind), binary=binary)))
        order = "index_distance"
    return (
        queryset.annotate(**({"vector_bytes": VectorBytes("embedding")} if with_vectors else {}))
        .order_by(order)
        .values_list(*columns)[:k]
    )


# The SQL of nearest_queryset for one shape of query (kind, rows, version, columns, filters), compiled once:
# building and compiling the ORM query cost ~1.3 ms of CPU a vector query, as much as running it (RESULTS,
# "Issue 10: load, session 12"). Bounded: the shapes are the few (k, filter) pairs the platform asks.
NEAREST_SQL_CACHE = 256


@functools.lru_cache(maxsize=NEAREST_SQL_CACHE)
def _nearest_sql(kind: str, k: int, version_id: int, dim: int, with_vectors: bool, filters: tuple) -> tuple:
    """(sql, params) of nearest_queryset(binary=True) with a placeholder query vector; `_bind` puts the real
    one in. Keyed by the version's id and size only: nothing else of the version enters the SQL."""
    version = ModelVersion(id=version_id, dim=dim)
    queryset = nearest_queryset(np.zeros(dim, np.float32), kind, k, version, with_vectors, binary=True,
                                **dict(filters))
    sql, params = queryset.query.sql_with_params()
    return sql, tuple(params)


def _bind(params: tuple, vector) -> list:
    """The cached statement's parameters with `vector` (VectorParameter) in place of the placeholder."""
    query = VectorParameter(vector)
    return [query if isinstance(value, VectorParameter) else value for value in params]


def _fetch_sql(sql: str, params) -> list[tuple]:
    """`_fetch` of a compiled statement."""
    with binary_cursor() as cursor:
        cursor.execute(sql, params, binary=True)
        return cursor.fetchall()


def _fetch(queryset) -> list[tuple]:
    """Runs a queryset whose vector parameters are VectorParameters (nearest_queryset(binary=True)) on a
    server-binding cursor: the query vector goes in binary, and the rows come back in binary (a `vector_send`
    value as its bytes; in text, a 6 KB descriptor is 12 KB of hex that the client decodes again: ~10 ms of
    CPU a search for the few hundred vectors a snapshot -> items search reads, RESULTS "Issue 10: load,
    session 11"). Numbers are the same either way (float8 goes both ways exactly)."""
    sql, params = queryset.query.sql_with_params()
    with binary_cursor() as cursor:
        cursor.execute(sql, params, binary=True)
        return cursor.fetchall()


def set_index_scan(k: int, version: ModelVersion, near_duplicate: bool = False, index_order: bool = False) -> None:
    """The index settings (HNSW and IVFFlat) for one query of k rows under `version`, for the rest of the
    current transaction (SET LOCAL); one statement. `index_order` (an unfiltered item query) keeps the planner
    off plans that sort every row: the halfvec item index answers at any size, read whole while the
    catalogue is small (exact on halfvec, then re-scored), where a plan that reads every heap row and sorts
    it cost 19.5 ms of Postgres CPU for k = 100 at 1,050 items against 1–2 ms (RESULTS, session 10)."""
    probes = probes_for(k, version, near_duplicate)
    _set_local(**{"hnsw.ef_search": ef_search_for(k), "hnsw.iterative_scan": ITERATIVE_SCAN,
                  "hnsw.max_scan_tuples": MAX_SCAN_TUPLES, "ivfflat.probes": probes,
                  "ivfflat.iterative_scan": ITERATIVE_SCAN, "ivfflat.max_probes": MAX_PROBES_FACTOR * probes,
                  **({"enable_sort": "off"} if index_order else {})})


def nearest(vector, kind: str, k: int = 6, version: ModelVersion | None = None, *, with_vectors: bool = False,
            near_duplicate: bool = False, **filters) -> list[Match]:
    """The k images of one kind ("item", "snapshot", "wardrobe_item") nearest to `vector`, closest first.

    `filters` are extra Django lookups on Descriptor (e.g. item__category__name="shoes"), pushed into the same
    SQL query; the result has k rows whenever k ready images match, at any catalogue size. With
    `with_vectors`, each Match carries the image's descriptor, read in the same query. `near_duplicate`: the
    caller only needs the nearest rows when they are near-duplicates of the query (cosine >= 0.98), which a
    few of the item index's lists hold (NEAR_DUPLICATE_PROBES).
    """
    version = version or active_version()
    # A filtered IVFFlat scan stops probing lists as soon as its LIMIT rows pass the filters, which leaves the
    # last rows as rough as the lists it happened to read: asking it for PROBES_PER_K x k rows gives a filtered
    # query the same margin an unfiltered one gets from its probes (RESULTS: recall with a category filter).
    over_fetch = bool(filters) and kind in IVFFLAT_KINDS
    if over_fetch:
        fetch = PROBES_PER_K * k
    elif index_type(kind) == "halfvec":
        fetch = k + math.ceil(HALFVEC_MARGIN * k)
    else:
        fetch = k
    vector = np.asarray(vector, dtype=np.float32)
    if vector.shape != (version.dim,):
        raise ValueError(f"query vector has shape {vector.shape}, model version {version.name} needs ({version.dim},)")
    if k <= 0:
        return []
    shape = (kind, fetch, version.id, version.dim, with_vectors and not over_fetch, tuple(sorted(filters.items())))
    try:
        sql, params = _nearest_sql(*shape)
    except TypeError:  # a filter value that cannot be a cache key (a list for __in): compiled for this call
        sql, params = _nearest_sql.__wrapped__(*shape)
    params = _bind(params, vector)
    with transaction.atomic():
        set_index_scan(k, version, near_duplicate, index_order=kind in IVFFLAT_KINDS and not filters)
        rows = _fetch_sql(sql, params)
        if len(rows) < k:
            # Fewer matching rows than k, or the index scan gave up (max_scan_tuples, max_probes) on a
            # selective filter: an exact scan (no index scan; bitmap scans still serve the filters; an IVFFlat
            # scan that the planner takes anyway reads every list) returns every match.
            before = _current("enable_indexscan")
            _set_local(enable_indexscan="off", enable_sort="on", **{"ivfflat.probes": version.item_index_lists})
            rows = _fetch_sql(sql, params)
            _set_local(enable_indexscan=before)
        rows.sort(key=lambda row: row[1])  # by the exact distance: the scan's order is relaxed, or rounded
        rows = rows[:k]
        if with_vectors and over_fetch:  # the k rows' vectors only, not the over-fetched ones'
            vectors = list(_vectors(kind, [row[0] for row in rows], version)) if rows else []
            rows = [(row[0], row[1], vector) for row, vector in zip(rows, vectors)]
        elif with_vectors:
            vectors = decode_vectors([row[2] for row in rows], version.dim)
            rows = [(row[0], row[1], vector) for row, vector in zip(rows, vectors)]
        # read only: rolling the block back takes its SET LOCALs with it (inside a caller's transaction too)
        transaction.set_rollback(True)
    return [Match(id=row[0], distance=float(row[1]), vector=row[2] if with_vectors else None) for row in rows]


def descriptor_of(kind: str, image_id: int, version: ModelVersion | None = None) -> np.ndarray | None:
    """The ready descriptor of one image under the version (active by default), or None."""
    version = version or active_version()
    row = Descriptor.objects.filter(
        model_version=version, status=Descriptor.Status.READY, **{f"{kind}_id": image_id}
    ).values_list(VectorBytes("embedding"), flat=True).first()
    return None if row is None else decode_vector(row)


def _ready_vectors(kind: str, ids, version: ModelVersion) -> dict[int, np.ndarray]:
    """{image id: ready descriptor under the version} for those of the given images (one kind) that have one:
    one query on the (version, image) unique index, rows in binary (`_fetch`), nothing kept in the process.

    The ids go as one array parameter (`= ANY(%s)`): the ORM's `__in` printed one placeholder per id and
    prepared each one, 7 ms of CPU for the ~300 linked items of a snapshot -> items search against ~1.5
    (RESULTS, "Issue 10: load, session 12")."""
    ids = [int(image_id) for image_id in ids]
    if not ids:
        return {}
    column = Descriptor._meta.get_field(kind).column  # "item_id", "snapshot_id", "wardrobe_item_id"
    sql = (f"SELECT {column}, vector_send(embedding) FROM {Descriptor._meta.db_table} "
           f"WHERE model_version_id = %s AND status = %s AND {column} = ANY(%s)")
    with binary_cursor() as cursor:
        cursor.execute(sql, [version.id, Descriptor.Status.READY.value, ids], binary=True)
        rows = cursor.fetchall()
    vectors = decode_vectors([row[1] for row in rows], version.dim)
    return {row[0]: vector for row, vector in zip(rows, vectors)}


def _vectors(kind: str, ids, version: ModelVersion) -> np.ndarray:
    """The ready descriptors of the given images (one kind), stacked in the order of `ids`. KeyError names any
    image without one."""
    ids = list(ids)
    if not ids:
        return np.zeros((0, version.dim), np.float32)
    found = _ready_vectors(kind, ids, version)
    missing = [image_id for image_id in ids if image_id not in found]
    if missing:
        raise KeyError(f"no ready {kind} descriptor under {version.name} for ids {missing[:10]}")
    return np.stack([found[image_id] for image_id in ids])


@dataclass(frozen=True)
class ItemResult:
    item: "Item"
    score: float

    def as_dict(self, url) -> dict:
        """The result as the API (and the search page's JSON variant) answers it; `url(image_field)` -> URL."""
        category = self.item.category.name if self.item.category_id else None
        return {"item_id": self.item.id, "image_url": url(self.item.image), "score": self.score, "category": category}


@dataclass(frozen=True)
class LookResult:
    look: "Look"
    snapshot: "Snapshot"  # the look's snapshot closest to the query
    score: float

    def as_dict(self, url) -> dict:
        """The result as the API (and the search page's JSON variant) answers it; `url(image_field)` -> URL."""
        style = self.look.style.name if self.look.style_id else None
        return {"look_id": self.look.id, "snapshot_url": url(self.snapshot.image), "score": self.score, "style": style}


def embed_query(query, version: ModelVersion | None = None) -> np.ndarray:
    """The version's (active by default) descriptor of a query image, in this process.

    `query` is what the views pass, an upload's `QueryImage` (services.uploads): its bytes are decoded once, at
    the model's input size, by the function that reads the catalogue's images for embedding, so the query's
    descriptor is the one the same file gets in the catalogue. An already decoded RGB PIL image (benchmarks
    that decode their files once) is resized by `ml.images.to_input_array`."""
    from ml.images import to_input_array
    from recommender.embedders import get_embedder

    version = version or active_version()
    embedder = get_embedder(version)
    size = embedder.input_size
    model_input = query.model_input(size) if hasattr(query, "model_input") else to_input_array(query, size)
    # concurrent requests of this process may share forward passes (Embedder.embed_one, FASHIONSITE_QUERY_BATCH)
    return embedder.embed_one(model_input)


def scoring_settings(version: ModelVersion):
    """The post-processing a version was chosen with (its model card); plain cosine for untrained backbones."""
    from ml.retrieval.scoring import ScoringSettings
    from recommender.embedders import model_card

    card = model_card(version)
    return card.postprocessing if card is not None else ScoringSettings()


def hub_reference(version: ModelVersion):
    """The version's reference items (item queries' hubness, ml.retrieval.scoring.softmax_hubness): a fixed
    array shipped with the model and loaded with it, None for an untrained backbone or an older model."""
    from recommender.embedders import get_embedder

    return getattr(get_embedder(version), "hub_reference", None)


def domain_means(version: ModelVersion):
    """The version's kinds' means (ml.retrieval.scoring.DomainMeans: queries are moved by them when its
    post-processing centres queries), shipped with the model; None for an untrained backbone or an older model."""
    from recommender.embedders import get_embedder

    return getattr(get_embedder(version), "domain_means", None)


def candidate_count(k: int) -> int:
    """How many nearest items snapshot -> items re-scores for k results."""
    return max(100, 10 * k)


def search_items(image, k: int = 6, category: str | None = None) -> list[ItemResult]:
    """Snapshot -> items: the k catalogue items that go with the snapshot (`image`: a query as embed_query takes
    it), optionally of one category.

    pgvector finds the candidates (the category filter is in its WHERE clause): the items nearest the query,
    and, when the version uses look transfer, the items that experts linked to the looks of the snapshots
    nearest the query (the query as score_matrix moves it: snapshot_queries, so that the fetch is exact for a
    centred query too). The candidates are then scored by ml.retrieval.scoring.score_matrix and ordered by
    ml.retrieval.scoring.ranked_indices (variety among the first results), the same functions evaluate_cgd
    measures, with the version's post-processing settings.

    Five queries a search besides the active version (each vector query also sets its scan settings): the two
    vector queries, the neighbours' linked items and the vectors of those not yet among the candidates
    (_linked_items, two), and the rows of the k results; and the candidates' popularity when the version's
    prior uses it (pop_weight > 0).
    """
    from ml.retrieval.scoring import ranked_indices, score_matrix, snapshot_queries

    version = active_version()
    settings = scoring_settings(version)
    query = embed_query(image, version)
    means = domain_means(version)
    moved = snapshot_queries(query[None], settings, means)[0]  # what score_matrix scores with
    item_filter = {"item__category__name": category} if category else {}
    item_matches = nearest(moved, "item", k=candidate_count(k), version=version, with_vectors=True, **item_filter)
    candidates = [m.id for m in item_matches]
    candidate_vectors = [m.vector for m in item_matches]
    known_vectors = links = None
    if settings.lt_weight > 0:
        neighbour_matches = nearest(moved, "snapshot", k=settings.lt_top_k, version=version, with_vectors=True)
        neighbours = [m.id for m in neighbour_matches]
        items_of_snapshot, linked_vectors = _linked_items(neighbours, candidates, version, category)
        # linked items that are not among the nearest, if they have a ready descriptor
        linked_ids = sorted(linked_vectors)
        candidates += linked_ids
        candidate_vectors += [linked_vectors[item_id] for item_id in linked_ids]
        if neighbours and candidates:
            known_vectors = np.stack([m.vector for m in neighbour_matches])
            column = {item_id: j for j, item_id in enumerate(candidates)}
            links = np.zeros((len(neighbours), len(candidates)), np.float32)
            for i, snapshot_id in enumerate(neighbours):
                for item_id in items_of_snapshot.get(snapshot_id, ()):
                    if item_id in column:
                        links[i, column[item_id]] = 1.0
    if not candidates:
        return []
    popularity = None
    if settings.pop_weight > 0:  # a card with the prior off (pop_weight 0) needs no query for what it would ignore
        counts = _popularity(candidates)
        popularity = np.array([counts.get(i, 0) for i in candidates], np.float32)
    candidate_vectors = np.stack(candidate_vectors)
    scores = score_matrix(
        query[None], candidate_vectors, settings,
        known_snapshot_vecs=known_vectors, known_links=links, item_popularity=popularity, domain_means=means,
    )
    best = ranked_indices(scores, settings, candidate_vectors)[0][:k]
    scores = scores[0]
    # model instances for the k results only (building one per candidate costs more than this second query)
    items = Item.objects.select_related("category").in_bulk([candidates[i] for i in best])
    return [ItemResult(item=items[candidates[i]], score=float(scores[i])) for i in best]


def _linked_items(snapshot_ids, candidates, version: ModelVersion, category: str | None = None):
    """The items experts linked to the looks of the given snapshots (of `category` only, when given):
    ({snapshot id: {item id}}, {item id: descriptor}) where the descriptors are those of linked items not among
    `candidates` that have a ready descriptor under the version.

    Two queries: the links (small rows), then each such item's descriptor once, in binary (`_ready_vectors`).
    One query that carried a descriptor on every link row read each vector as often as it is linked (578 link
    rows for 191 new items at lt_top_k = 50 on the sample), in hex: that cost more than both queries. The
    snapshot ids go as one array parameter (as in `_ready_vectors`)."""
    if not snapshot_ids:
        return {}, {}
    sql = (f"SELECT s.id, li.item_id FROM {LookItem._meta.db_table} li "
           f"JOIN {Snapshot._meta.db_table} s ON s.look_id = li.look_id")
    params = [[int(snapshot_id) for snapshot_id in snapshot_ids]]
    if category:
        sql += (f" JOIN {Item._meta.db_table} i ON i.id = li.item_id"
                f" JOIN {Category._meta.db_table} c ON c.id = i.category_id")
    sql += " WHERE s.id = ANY(%s)"
    if category:
        sql += " AND c.name = %s"
        params.append(category)
    items_of_snapshot: dict[int, set[int]] = {}
    for snapshot_id, item_id in _fetch_sql(sql, params):
        items_of_snapshot.setdefault(snapshot_id, set()).add(item_id)
    known = set(candidates)
    new_ids = sorted({item_id for ids in items_of_snapshot.values() for item_id in ids} - known)
    return items_of_snapshot, _ready_vectors("item", new_ids, version)


def _look_of(snapshot_ids) -> dict[int, int]:
    """{snapshot id: its look's id} for the given snapshots (one array parameter, as in `_ready_vectors`)."""
    return dict(_fetch_sql(f"SELECT id, look_id FROM {Snapshot._meta.db_table} WHERE id = ANY(%s)",
                           [[int(snapshot_id) for snapshot_id in snapshot_ids]]))


def _popularity(item_ids) -> dict[int, int]:
    """How many looks link each of the given items (items no look links are left out)."""
    return dict(LookItem.objects.filter(item_id__in=item_ids).values_list("item_id").annotate(n=Count("look_id")))


@dataclass(frozen=True)
class Recognition:
    """An upload recognised as a catalogue product: it borrows that product's expert links."""

    item: "Item"
    match: str  # "identical" (the same bytes, SHA-256) or "near-duplicate" (cosine at the card's threshold)
    similarity: float

    def as_dict(self, url) -> dict:
        return {"item_id": self.item.id, "image_url": url(self.item.image), "match": self.match,
                "similarity": self.similarity}


@dataclass(frozen=True)
class LookSearch:
    results: list  # [LookResult], best first
    recognised: Recognition | None = None  # the catalogue product the upload is, if it is one


def recognise_item(query, sha256: str | None, version: ModelVersion) -> Recognition | None:
    """The catalogue item an upload is: the same bytes, else its nearest item when that is a near-duplicate
    (cosine at least the card's `recognition.near_duplicate_cosine`, ml.retrieval.recognition)."""
    from ml.retrieval.recognition import RecognitionSettings, near_duplicate
    from recommender.embedders import model_card

    if sha256:
        item = Item.objects.filter(sha256=sha256).first()
        if item is not None:
            return Recognition(item=item, match="identical", similarity=1.0)
    card = model_card(version)
    # the threshold is measured per trained model; an untrained backbone recognises identical bytes only
    settings = card.recognition if card is not None else RecognitionSettings(near_duplicate_cosine=0.0)
    if settings.near_duplicate_cosine <= 0:
        return None
    nearest_item = nearest(query, "item", k=1, version=version, with_vectors=True, near_duplicate=True)
    if not nearest_item:
        return None
    found = near_duplicate(query, nearest_item[0].vector[None], settings)
    if found is None:
        return None
    return Recognition(item=Item.objects.get(pk=nearest_item[0].id), match="near-duplicate", similarity=found[1])


def search_looks(image, k: int = 6, style: str | None = None, sha256: str | None = None) -> LookSearch:
    """Item -> looks: the k looks (each through its best snapshot) that suit the item (`image`: a query as
    embed_query takes it), optionally of a style.

    Scored by ml.retrieval.scoring.item_query_scores and ordered by ranked_looks, the functions evaluate_cgd
    measures for item -> looks, with the version's post-processing. An upload recognised as a catalogue product
    (`sha256` of its bytes, or a near-duplicate) is that product: the street photos of the looks linking it
    expand the query (link query expansion), as they do for the evaluation's item queries. pgvector finds the
    candidates: the snapshots nearest the expanded query (the style filter in its WHERE clause), more until k
    looks are found. Item transfer's neighbourhoods are the product's own street photos here (the evaluation
    takes them among all known snapshots; the default recipe has item transfer off).
    """
    from ml.retrieval.scoring import expanded_item_queries, item_query_scores, ranked_looks

    version = active_version()
    settings = scoring_settings(version)
    query = embed_query(image, version)
    recognised = recognise_item(query, sha256, version)
    known_vectors = query_links = None
    if recognised is not None:
        # the street photos of the looks that link the product (ready under the version), in snapshot order
        known = list(Descriptor.objects.filter(
            model_version=version, status=Descriptor.Status.READY, snapshot__look__items=recognised.item,
        ).order_by("snapshot_id").values_list(VectorBytes("embedding"), flat=True))
        if known:
            known_vectors = decode_vectors(known, version.dim)
            query_links = np.ones((len(known), 1), np.float32)
    means = domain_means(version)
    expanded = expanded_item_queries(query[None], settings, known_vectors, query_links, means)[0]
    reference = hub_reference(version)
    filters = {"snapshot__look__style__name": style} if style else {}
    fetch = max(100, 10 * k)
    while True:
        matches = nearest(expanded, "snapshot", k=fetch, version=version, with_vectors=True, **filters)
        if not matches:
            return LookSearch(results=[], recognised=recognised)
        candidates = [m.id for m in matches]
        look_of = _look_of(candidates)
        looks = [look_of[i] for i in candidates]
        scores = item_query_scores(query[None], np.stack([m.vector for m in matches]), looks, settings,
                                   known_snapshot_vecs=known_vectors, query_links=query_links,
                                   hub_reference=reference, domain_means=means)[0]
        ranked = ranked_looks(scores[None], looks)[0]
        if len(ranked) >= k or len(candidates) < fetch:
            # model instances for the k results only (one per candidate costs more than this second query)
            shown = [candidates[j] for _, j in ranked[:k]]
            snapshots = Snapshot.objects.select_related("look", "look__style").in_bulk(shown)
            results = [LookResult(look=snapshots[candidates[j]].look, snapshot=snapshots[candidates[j]],
                                  score=float(scores[j])) for _, j in ranked[:k]]
            return LookSearch(results=results, recognised=recognised)
        fetch *= 2
