"""Vector queries over the active version's descriptors, in Postgres (pgvector, cosine distance).

Each query uses the cast expression and filters of the version's partial HNSW index (services.versions), so
the index serves it once the catalogue is large enough for the planner to prefer it.
"""
from dataclasses import dataclass

import numpy as np
from django.db.models.functions import Cast
from pgvector.django import CosineDistance, VectorField

from recommender.models import Descriptor, Item, Look, ModelVersion, Snapshot
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


@dataclass(frozen=True)
class LookResult:
    look: "Look"
    snapshot: "Snapshot"  # the look's snapshot closest to the query
    score: float


def embed_query(image) -> np.ndarray:
    """The active version's descriptor of a query image (a normalised RGB PIL image), in this process."""
    from ml.images import to_input_array
    from recommender.embedders import get_embedder

    version = active_version()
    embedder = get_embedder(version)
    return embedder.embed_batch(to_input_array(image, embedder.input_size)[None])[0]


def search_items(image, k: int = 6, category: str | None = None) -> list[ItemResult]:
    """Snapshot -> items: the k catalogue items that go with the snapshot, optionally of one category."""
    filters = {"item__category__name": category} if category else {}
    matches = nearest(embed_query(image), "item", k=k, **filters)
    items = Item.objects.select_related("category").in_bulk([m.id for m in matches])
    return [ItemResult(item=items[m.id], score=m.score) for m in matches]


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
