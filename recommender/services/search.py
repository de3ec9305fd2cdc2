"""Vector queries over the active version's descriptors, in Postgres (pgvector, cosine distance).

Each query uses the cast expression and filters of the version's partial HNSW index (services.versions), so
the index serves it once the catalogue is large enough for the planner to prefer it.
"""
import threading
from dataclasses import dataclass

import numpy as np
from django.db.models import Count
from django.db.models.functions import Cast
from pgvector.django import CosineDistance, VectorField

from recommender.models import Descriptor, Item, Look, LookItem, ModelVersion, Snapshot
from recommender.services.versions import active_version


@dataclass(frozen=True)
class Match:
    id: int  # the id of the Item, Snapshot or WardrobeItem
    distance: float  # cosine distance, 1 - cosine similarity

    @property
    def score(self) -> float:
        return 1.0 - self.distance


def nearest(vector, kind: str, k: int = 6, version: ModelVersion | None = None, **filters) -> list[Match]:
    """The k images of one kind ("item", "snapshot", "wardrobe_item") nearest to `vector`, closest first.

    `filters` are extra Django lookups on Descriptor (e.g. item__category__name="shoes"), pushed into the same
    SQL query so a filtered search still returns k results when the catalogue has them.
    """
    version = version or active_version()
    vector = np.asarray(vector, dtype=np.float32)
    if vector.shape != (version.dim,):
        raise ValueError(f"query vector has shape {vector.shape}, model version {version.name} needs ({version.dim},)")
    rows = (
        Descriptor.objects.filter(
            model_version=version, status=Descriptor.Status.READY, **{f"{kind}__isnull": False}, **filters
        )
        .annotate(distance=CosineDistance(Cast("embedding", VectorField(dimensions=version.dim)), vector))
        .order_by("distance")
        .values_list(f"{kind}_id", "distance")[:k]
    )
    return [Match(id=image_id, distance=float(distance)) for image_id, distance in rows]


def descriptor_of(kind: str, image_id: int, version: ModelVersion | None = None) -> np.ndarray | None:
    """The ready descriptor of one image under the version (active by default), or None."""
    version = version or active_version()
    row = Descriptor.objects.filter(
        model_version=version, status=Descriptor.Status.READY, **{f"{kind}_id": image_id}
    ).values_list("embedding", flat=True).first()
    return None if row is None else np.asarray(row, dtype=np.float32)


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


def embed_query(image) -> np.ndarray:
    """The active version's descriptor of a query image (a normalised RGB PIL image), in this process."""
    from ml.images import to_input_array
    from recommender.embedders import get_embedder

    version = active_version()
    embedder = get_embedder(version)
    return embedder.embed_batch(to_input_array(image, embedder.input_size)[None])[0]


def scoring_settings(version: ModelVersion):
    """The post-processing a version was chosen with (its model card); plain cosine for untrained backbones."""
    from ml.retrieval.scoring import ScoringSettings
    from recommender.embedders import model_card

    card = model_card(version)
    return card.postprocessing if card is not None else ScoringSettings()


class _DescriptorCache:
    """This process's copy of the ready descriptors of each version, so that re-scoring candidates does not
    re-read and re-parse hundreds of vectors per request. On every use it reads the rows updated since it last
    looked (one indexed query when nothing changed), and any requested row it still lacks."""

    KINDS = ("snapshot", "item", "wardrobe_item")

    def __init__(self):
        self._lock = threading.Lock()
        self._vectors: dict[int, dict[tuple[str, int], np.ndarray]] = {}
        self._seen_until: dict[int, object] = {}

    def vectors(self, kind: str, ids, version: ModelVersion) -> np.ndarray:
        with self._lock:
            ready = Descriptor.objects.filter(model_version=version, status=Descriptor.Status.READY)
            since = self._seen_until.get(version.id)
            self._store(version, ready if since is None else ready.filter(updated__gt=since))
            known = self._vectors[version.id]
            missing = [image_id for image_id in ids if (kind, image_id) not in known]
            if missing:  # e.g. written in the same microsecond as the last row seen
                self._store(version, ready.filter(**{f"{kind}_id__in": missing}))
            return np.stack([known[(kind, image_id)] for image_id in ids])

    def _store(self, version: ModelVersion, rows) -> None:
        store = self._vectors.setdefault(version.id, {})
        since = self._seen_until.get(version.id)
        for row in rows.values(*(f"{kind}_id" for kind in self.KINDS), "embedding", "updated").iterator():
            for kind in self.KINDS:
                if row[f"{kind}_id"] is not None:
                    store[(kind, row[f"{kind}_id"])] = np.asarray(row["embedding"], dtype=np.float32)
            if since is None or row["updated"] > since:
                since = row["updated"]
        if since is not None:
            self._seen_until[version.id] = since


_descriptor_cache = _DescriptorCache()


def _vectors(kind: str, ids, version: ModelVersion) -> np.ndarray:
    return _descriptor_cache.vectors(kind, ids, version)


def search_items(image, k: int = 6, category: str | None = None) -> list[ItemResult]:
    """Snapshot -> items: the k catalogue items that go with the snapshot, optionally of one category.

    pgvector finds the candidates (the category filter is in its WHERE clause): the items nearest the query,
    and, when the version uses look transfer, the items that experts linked to the looks of the snapshots
    nearest the query. The candidates are then scored by ml.retrieval.scoring.score_matrix and ordered by
    ml.retrieval.scoring.ranked_indices (variety among the first results), the same functions evaluate_cgd
    measures, with the version's post-processing settings.
    """
    from ml.retrieval.scoring import ranked_indices, score_matrix

    version = active_version()
    settings = scoring_settings(version)
    query = embed_query(image)
    item_filter = {"category__name": category} if category else {}
    candidates = [m.id for m in nearest(query, "item", k=max(100, 10 * k), version=version,
                                        **{f"item__{f}": v for f, v in item_filter.items()})]
    known_vectors = links = None
    if settings.lt_weight > 0:
        neighbours = [m.id for m in nearest(query, "snapshot", k=settings.lt_top_k, version=version)]
        look_of = dict(Snapshot.objects.filter(id__in=neighbours).values_list("id", "look_id"))
        linked = LookItem.objects.filter(look_id__in=look_of.values(), **{f"item__{f}": v for f, v in item_filter.items()})
        items_of_look: dict[int, set[int]] = {}
        for look_id, item_id in linked.values_list("look_id", "item_id"):
            items_of_look.setdefault(look_id, set()).add(item_id)
        candidates += sorted(set().union(*items_of_look.values(), set()) - set(candidates))
        if neighbours and candidates:
            known_vectors = _vectors("snapshot", neighbours, version)
            column = {item_id: j for j, item_id in enumerate(candidates)}
            links = np.zeros((len(neighbours), len(candidates)), np.float32)
            for i, snapshot_id in enumerate(neighbours):
                for item_id in items_of_look.get(look_of[snapshot_id], ()):
                    links[i, column[item_id]] = 1.0
    if not candidates:
        return []
    popularity = dict(
        LookItem.objects.filter(item_id__in=candidates).values_list("item_id").annotate(n=Count("look_id"))
    )
    candidate_vectors = _vectors("item", candidates, version)
    scores = score_matrix(
        query[None], candidate_vectors, settings,
        known_snapshot_vecs=known_vectors, known_links=links,
        item_popularity=np.array([popularity.get(i, 0) for i in candidates], np.float32),
    )
    best = ranked_indices(scores, settings, candidate_vectors)[0][:k]
    scores = scores[0]
    items = Item.objects.select_related("category").in_bulk([candidates[i] for i in best])
    return [ItemResult(item=items[candidates[i]], score=float(scores[i])) for i in best]


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
    nearest_item = nearest(query, "item", k=1, version=version)
    if not nearest_item:
        return None
    found = near_duplicate(query, _vectors("item", [nearest_item[0].id], version), settings)
    if found is None:
        return None
    return Recognition(item=Item.objects.get(pk=nearest_item[0].id), match="near-duplicate", similarity=found[1])


def search_looks(image, k: int = 6, style: str | None = None, sha256: str | None = None) -> LookSearch:
    """Item -> looks: the k looks (each through its best snapshot) that suit the item, optionally of a style.

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
    query = embed_query(image)
    recognised = recognise_item(query, sha256, version)
    known_ids: list[int] = []
    known_vectors = query_links = None
    if recognised is not None:
        known_ids = list(Snapshot.objects.filter(
            look__items=recognised.item, descriptors__model_version=version,
            descriptors__status=Descriptor.Status.READY,
        ).order_by("id").values_list("id", flat=True).distinct())
        if known_ids:
            known_vectors = _vectors("snapshot", known_ids, version)
            query_links = np.ones((len(known_ids), 1), np.float32)
    expanded = expanded_item_queries(query[None], settings, known_vectors, query_links)[0]
    filters = {"snapshot__look__style__name": style} if style else {}
    fetch = max(100, 10 * k)
    while True:
        candidates = [m.id for m in nearest(expanded, "snapshot", k=fetch, version=version, **filters)]
        if not candidates:
            return LookSearch(results=[], recognised=recognised)
        snapshots = Snapshot.objects.select_related("look", "look__style").in_bulk(candidates)
        looks = [snapshots[i].look_id for i in candidates]
        scores = item_query_scores(query[None], _vectors("snapshot", candidates, version), looks, settings,
                                   known_snapshot_vecs=known_vectors, query_links=query_links)[0]
        ranked = ranked_looks(scores[None], looks)[0]
        if len(ranked) >= k or len(candidates) < fetch:
            results = [LookResult(look=snapshots[candidates[j]].look, snapshot=snapshots[candidates[j]],
                                  score=float(scores[j])) for _, j in ranked[:k]]
            return LookSearch(results=results, recognised=recognised)
        fetch *= 2
