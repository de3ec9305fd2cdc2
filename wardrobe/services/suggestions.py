"""Passive outfit suggestions: catalogue looks that the user's own items fit, and what completes them.

`recompute(user)` (run by the Celery task `wardrobe.tasks.recompute_suggestions` whenever the user's wardrobe
or likes change) works on the active version's descriptors:

1. Candidates: the looks whose snapshots are nearest (pgvector) to each of the user's ready items — overall and
   within each style, so a style filter still finds looks — and to the snapshots of the looks the user liked.
   Liked looks themselves are not suggested again.
2. Fit: with numpy, sim[i, look] = the best cosine similarity of item i to the look's snapshots. Item i fits a
   look when the look is among its FIT_LOOKS best candidates; a look's best item always fits it.
3. Score = the sum of the fitting items' similarities (looks that fit several items rank higher)
   + LIKE_WEIGHT x the best similarity of the look's snapshots to the liked looks' snapshots.
4. Complete with (`outfit`): from the look's expert-linked items and the catalogue items nearest (pgvector) to
   its snapshot, an outfit that spans categories: at most PER_CATEGORY items of a category, none of a category
   the look's fitting wardrobe items already cover (unless nothing else is there), listed top to bottom
   (OUTFIT_ORDER). Expert-linked items are preferred, then the closest.
5. A reason naming the fitting items by colour and category: "fits your black shoes and navy and cream top"
   (the colour words stored with each upload, from the garment's own pixels: ml.tagging.colour).

`get_suggestions(user, style, category)` reads them back (a queryset, for the page's and the API's pagination),
filtered by the look's style and by the category of the items that complete it.
"""
from dataclasses import dataclass, field

import numpy as np
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Prefetch

from recommender.models import Descriptor, Item, LookItem, ModelVersion, Snapshot, Style
from recommender.services.search import nearest
from recommender.services.versions import active_version
from wardrobe.models import LikedLook, SuggestedItem, Suggestion, WardrobeItem
from wardrobe.services.wardrobe import get_preferences

READY = Descriptor.Status.READY

SNAPSHOT_NEIGHBOURS = 40  # snapshots fetched per wardrobe item (and per liked snapshot)
STYLE_NEIGHBOURS = 6  # ... and per wardrobe item within each style
FIT_LOOKS = 10  # an item fits the looks among its FIT_LOOKS best candidates
LIKE_WEIGHT = 0.5
TOP_OVERALL = 30  # suggestions kept: the best TOP_OVERALL, plus the best TOP_PER_STYLE of each style
TOP_PER_STYLE = 6
NEAREST_ITEMS = 40  # catalogue items fetched per suggested look (a pool of several categories)
COMPLETE_WITH = 8  # catalogue items kept per suggestion
PER_CATEGORY = 2  # ... at most this many of one category
# How an outfit card reads, top to bottom; a category not named here comes after these (by name), none last.
OUTFIT_ORDER = ("outerwear", "top", "dress", "bottom", "shoes", "bag", "hat", "accessory")
# A fitting item of the key's category also stands in for these (a dress is a top and a bottom).
ALSO_COVERS = {"dress": ("top", "bottom")}


@dataclass
class Plan:
    look_id: int
    snapshot_id: int
    score: float
    your_items: list[int]  # wardrobe item ids, best fitting first
    complete_with: list[tuple[int, float, bool]] = field(default_factory=list)  # (item id, similarity, linked)
    liked_similarity: float = 0.0
    reason: str = ""


@dataclass(frozen=True)
class Candidate:
    """A catalogue item that could complete a look."""

    item_id: int
    category: str | None  # its category's name
    score: float  # cosine similarity to the look's snapshot
    linked: bool  # an expert linked it to the look


def outfit_position(category: str | None) -> tuple[int, str]:
    """Where a category's items stand on an outfit card (OUTFIT_ORDER; others after, uncategorised last)."""
    if category in OUTFIT_ORDER:
        return OUTFIT_ORDER.index(category), ""
    return (len(OUTFIT_ORDER), category) if category else (len(OUTFIT_ORDER) + 1, "")


def covered_categories(categories) -> set[str]:
    """The categories an outfit needs no more of, given the categories of the user's fitting items."""
    covered = {name for name in categories if name}
    for name in list(covered):
        covered.update(ALSO_COVERS.get(name, ()))
    if {"top", "bottom"} <= covered:
        covered.add("dress")
    return covered


def outfit(
    candidates, covered=(), limit: int = COMPLETE_WITH, per_category: int = PER_CATEGORY
) -> list[Candidate]:
    """The items that complete a look, as an outfit: the one rule behind every "complete it with".

    * Preference: expert-linked items first, then by similarity (then id, for a stable answer).
    * No item of a `covered` category (the ones the user's fitting items already are), unless no candidate of
      another category exists; then the covered ones are used under the same caps.
    * At most `per_category` of one category (uncategorised items count as one category): first the best
      item of every category, then the second best of each, in preference order, until `limit`.
    * Listed top to bottom (`outfit_position`), preferred first within a category.
    """
    ranked = sorted(candidates, key=lambda c: (not c.linked, -c.score, c.item_id))
    covered = set(covered)
    allowed = [c for c in ranked if c.category not in covered] or ranked
    by_category: dict[str | None, list[Candidate]] = {}
    for candidate in allowed:
        by_category.setdefault(candidate.category, []).append(candidate)
    chosen: list[Candidate] = []
    for round_ in range(per_category):
        for group in by_category.values():  # in the order of each category's best candidate
            if len(chosen) < limit and len(group) > round_:
                chosen.append(group[round_])
    rank = {c.item_id: i for i, c in enumerate(ranked)}
    return sorted(chosen, key=lambda c: (outfit_position(c.category), rank[c.item_id]))


def _normalised(matrix: np.ndarray) -> np.ndarray:
    return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)


def _vectors(rows) -> tuple[list, np.ndarray]:
    rows = list(rows)
    if not rows:
        return [], np.zeros((0, 0), dtype=np.float32)
    keys = [row[:-1] if len(row) > 2 else row[0] for row in rows]
    return keys, _normalised(np.stack([np.asarray(row[-1], dtype=np.float32) for row in rows]))


def compute(user, version: ModelVersion | None = None) -> list[Plan]:
    """The user's suggestions, best first (not stored)."""
    version = version or active_version()
    ready = Descriptor.objects.filter(model_version=version, status=READY)
    items = {item.id: item for item in WardrobeItem.objects.filter(owner=user).select_related("category")}
    item_ids, item_matrix = _vectors(
        ready.filter(wardrobe_item__owner=user).order_by("wardrobe_item_id").values_list("wardrobe_item_id", "embedding")
    )
    liked = set(LikedLook.objects.filter(user=user).values_list("look_id", flat=True))
    _, liked_matrix = _vectors(
        ready.filter(snapshot__look_id__in=liked).order_by("snapshot_id").values_list("snapshot_id", "embedding")
    )
    if not item_ids and not len(liked_matrix):
        return []

    # 1. candidate looks, through their snapshots
    candidate_snapshots: set[int] = set()
    styles = list(Style.objects.filter(looks__isnull=False).distinct().values_list("id", flat=True))
    for vector in item_matrix:
        candidate_snapshots.update(m.id for m in nearest(vector, "snapshot", k=SNAPSHOT_NEIGHBOURS, version=version))
        for style_id in styles:
            candidate_snapshots.update(
                m.id
                for m in nearest(
                    vector, "snapshot", k=STYLE_NEIGHBOURS, version=version, snapshot__look__style_id=style_id
                )
            )
    for vector in liked_matrix:
        candidate_snapshots.update(m.id for m in nearest(vector, "snapshot", k=SNAPSHOT_NEIGHBOURS, version=version))
    looks = set(Snapshot.objects.filter(id__in=candidate_snapshots).values_list("look_id", flat=True)) - liked
    if not looks:
        return []
    snapshot_keys, snapshot_matrix = _vectors(
        ready.filter(snapshot__look_id__in=looks)
        .order_by("snapshot_id")
        .values_list("snapshot_id", "snapshot__look_id", "embedding")
    )
    look_ids = sorted({look_id for _, look_id in snapshot_keys})
    column = {look_id: j for j, look_id in enumerate(look_ids)}
    snapshot_look = np.array([column[look_id] for _, look_id in snapshot_keys])

    # 2. fit: best similarity of each item to each look's snapshots, and the snapshot that gives it
    n_items, n_looks = len(item_ids), len(look_ids)
    per_snapshot = item_matrix @ snapshot_matrix.T if n_items else np.zeros((0, len(snapshot_keys)))
    fit_sim = np.full((n_items, n_looks), -np.inf, dtype=np.float32)
    for j in range(n_looks):
        columns = snapshot_look == j
        if n_items:
            fit_sim[:, j] = per_snapshot[:, columns].max(axis=1)
    if n_items:
        cut = min(FIT_LOOKS, n_looks)
        thresholds = -np.sort(-fit_sim, axis=1)[:, cut - 1]
        fits = fit_sim >= thresholds[:, None]
        fits[fit_sim.argmax(axis=0), np.arange(n_looks)] = True
    else:
        fits = np.zeros((0, n_looks), dtype=bool)

    # 3. scores, with the pull of liked looks
    liked_sim = np.zeros(n_looks, dtype=np.float32)
    liked_per_snapshot = None
    if len(liked_matrix):
        liked_per_snapshot = (snapshot_matrix @ liked_matrix.T).max(axis=1)
        for j in range(n_looks):
            liked_sim[j] = liked_per_snapshot[snapshot_look == j].max()
    scores = np.where(fits, fit_sim, 0).sum(axis=0) + LIKE_WEIGHT * liked_sim

    plans = []
    for j, look_id in enumerate(look_ids):
        columns = np.flatnonzero(snapshot_look == j)
        if n_items:  # the look's snapshot closest to its fitting items
            closeness = per_snapshot[fits[:, j]][:, columns].sum(axis=0)
        else:
            closeness = liked_per_snapshot[columns]
        best = columns[int(np.argmax(closeness))]
        fitting = [i for i in np.argsort(-fit_sim[:, j], kind="stable") if fits[i, j]] if n_items else []
        plans.append(
            Plan(
                look_id=look_id,
                snapshot_id=snapshot_keys[best][0],
                score=float(scores[j]),
                your_items=[item_ids[i] for i in fitting],
                liked_similarity=float(liked_sim[j]),
            )
        )
    plans.sort(key=lambda p: (-p.score, p.look_id))
    plans = _keep(plans)

    # 4. what completes each look, 5. why
    snapshot_vectors = {snapshot_keys[i][0]: snapshot_matrix[i] for i in range(len(snapshot_keys))}
    _complete(plans, snapshot_vectors, items, version)
    liked_cut = np.median([p.liked_similarity for p in plans]) if liked and plans else None
    for plan in plans:
        plan.reason = _reason(plan, items, liked_cut)
    return plans


def _keep(plans: list[Plan]) -> list[Plan]:
    """The best TOP_OVERALL plans plus the best TOP_PER_STYLE of each style, in score order."""
    style_of = dict(
        Snapshot.objects.filter(id__in=[p.snapshot_id for p in plans]).values_list("id", "look__style_id")
    )
    kept, per_style = [], {}
    for rank, plan in enumerate(plans):
        style = style_of.get(plan.snapshot_id)
        per_style[style] = per_style.get(style, 0) + 1
        if rank < TOP_OVERALL or (style is not None and per_style[style] <= TOP_PER_STYLE):
            kept.append(plan)
    return kept


def _complete(plans: list[Plan], snapshot_vectors: dict, items: dict, version: ModelVersion) -> None:
    """Fills each plan's complete_with: `outfit` over its look's linked items and the items nearest to its
    snapshot, the categories of its fitting wardrobe items covered."""
    look_ids = [p.look_id for p in plans]
    linked: dict[int, list[int]] = {}
    for look_id, item_id in LookItem.objects.filter(look_id__in=look_ids).values_list("look_id", "item_id"):
        linked.setdefault(look_id, []).append(item_id)
    linked_ids, linked_matrix = _vectors(
        Descriptor.objects.filter(
            model_version=version, status=READY, item_id__in={i for ids in linked.values() for i in ids}
        ).values_list("item_id", "embedding")
    )
    linked_row = {item_id: row for row, item_id in enumerate(linked_ids)}
    pools = []
    for plan in plans:
        query = snapshot_vectors[plan.snapshot_id]
        pool = {}
        for item_id in linked.get(plan.look_id, []):
            if item_id in linked_row:
                pool[item_id] = (float(linked_matrix[linked_row[item_id]] @ query), True)
        for match in nearest(query, "item", k=NEAREST_ITEMS, version=version):
            pool.setdefault(match.id, (match.score, False))
        pools.append(pool)
    category_of = dict(
        Item.objects.filter(id__in={i for pool in pools for i in pool}).values_list("id", "category__name")
    )
    for plan, pool in zip(plans, pools):
        covered = covered_categories(items[i].category.name for i in plan.your_items if items[i].category_id)
        candidates = [
            Candidate(item_id, category_of.get(item_id), score, is_linked)
            for item_id, (score, is_linked) in pool.items()
        ]
        plan.complete_with = [(c.item_id, c.score, c.linked) for c in outfit(candidates, covered)]


def describe(item: WardrobeItem) -> str:
    """"black shoes": the item's colour and category, as far as they are known."""
    words = [item.colour] if item.colour else []
    words.append(item.category.name if item.category_id else "item")
    return " ".join(words)


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _reason(plan: Plan, items: dict, liked_cut) -> str:
    parts = []
    if plan.your_items:
        names = [describe(items[i]) for i in plan.your_items[:3]]
        more = len(plan.your_items) - 3
        if more > 0:
            names.append(f"{more} more of your items")
        parts.append("fits your " + _join(names))
    if liked_cut is not None and plan.liked_similarity >= liked_cut:
        parts.append("close to looks you liked")
    text = "; ".join(parts) or "suggested for you"
    return text[0].upper() + text[1:]


@transaction.atomic
def store(user, plans: list[Plan]) -> list[Suggestion]:
    """Replaces the user's stored suggestions with `plans`."""
    Suggestion.objects.filter(user=user).delete()
    suggestions = Suggestion.objects.bulk_create(
        [
            Suggestion(user=user, look_id=p.look_id, snapshot_id=p.snapshot_id, score=p.score, reason=p.reason)
            for p in plans
        ]
    )
    Suggestion.your_items.through.objects.bulk_create(
        [
            Suggestion.your_items.through(suggestion_id=s.id, wardrobeitem_id=item_id)
            for s, p in zip(suggestions, plans)
            for item_id in p.your_items
        ]
    )
    SuggestedItem.objects.bulk_create(
        [
            SuggestedItem(suggestion=s, item_id=item_id, position=position, score=score, linked=linked)
            for s, p in zip(suggestions, plans)
            for position, (item_id, score, linked) in enumerate(p.complete_with)
        ]
    )
    return suggestions


def recompute(user_id: int) -> int:
    """Recomputes and stores one user's suggestions (idempotent); returns how many. Concurrent runs for the
    same user are serialised by a row lock on the user."""
    User = get_user_model()
    with transaction.atomic():
        user = User.objects.select_for_update().filter(pk=user_id).first()
        if user is None:  # deleted meanwhile
            return 0
        try:
            version = active_version()
        except ModelVersion.DoesNotExist:
            return 0
        plans = compute(user, version)
        store(user, plans)
        return len(plans)


def get_suggestions(user, style: str | None = None, category: str | None = None):
    """The user's stored suggestions, best first (a lazy queryset: paginate it), filtered by the look's style and
    by the category of the items that complete it.

    None means "use the user's saved preference" (no filter when they saved none); "" means no filter.
    """
    if style is None or category is None:
        preferences = get_preferences(user)
        if style is None:
            style = preferences.style.name if preferences.style_id else ""
        if category is None:
            category = preferences.category.name if preferences.category_id else ""
    suggestions = Suggestion.objects.filter(user=user)
    if style:
        suggestions = suggestions.filter(look__style__name=style)
    if category:
        suggestions = suggestions.filter(
            id__in=SuggestedItem.objects.filter(item__category__name=category).values("suggestion_id")
        )
    return (
        suggestions.select_related("look", "look__style", "snapshot")
        .prefetch_related(
            Prefetch("your_items", queryset=WardrobeItem.objects.select_related("category", "style")),
            Prefetch("suggested_items", queryset=SuggestedItem.objects.select_related("item", "item__category")),
        )
        .order_by("-score", "id")
    )
