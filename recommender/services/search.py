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
    from recommender.embedders import get_embedder

    card = getattr(get_embedder(version), "card", None) or {}
    return ScoringSettings.from_dict(card.get("postprocessing"))


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


def search_looks(image, k: int = 6, style: str | None = None) -> list[LookResult]:
    """Item -> looks: the k looks (each through its closest snapshot) that suit the item, optionally of a style."""
    filters = {"snapshot__look__style__name": style} if style else {}
    vector = embed_query(image)
    results, seen = [], set()
    fetch = k * 3
    while True:
        matches = nearest(vector, "snapshot", k=fetch, **filters)
        snapshots = Snapshot.objects.select_related("look", "look__style").in_bulk([m.id for m in matches])
        results, seen = [], set()
        for match in matches:
            snapshot = snapshots[match.id]
            if snapshot.look_id not in seen:
                seen.add(snapshot.look_id)
                results.append(LookResult(look=snapshot.look, snapshot=snapshot, score=match.score))
        if len(results) >= k or len(matches) < fetch:
            return results[:k]
        fetch *= 2
