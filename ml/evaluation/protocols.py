"""Evaluation protocols of docs/EVALUATION.md, a ranker interface, and ``evaluate``.

Directions (the ``direction`` field of the rankings file):

- ``snapshot_to_items`` (protocol A): queries are the snapshots of the test looks that
  have items; the gallery is every distinct item of the data set; relevant: the items
  linked to the query's look.
- ``item_to_snapshots`` (protocol A): queries are the distinct items linked to at least
  one test look; the gallery is the snapshots of the test looks; relevant: the
  snapshots of the test looks that link the item.
- ``snapshot_to_unseen_items`` (protocol B): as ``snapshot_to_items``, but gallery and
  relevant sets keep only items that no known look links; queries left with no
  relevant item are dropped.

Scored from the ``item_to_snapshots`` lists, with no ranking of their own (:data:`DERIVED_DIRECTIONS`):

- ``item_to_looks`` (protocol A, what the product shows): the item -> snapshots list collapsed
  to looks (a look takes the rank of its first photo; its later photos are skipped); gallery:
  the test looks, named by their id (``"23"``); relevant: the test looks linking the item.
- ``unseen_item_to_snapshots`` / ``unseen_item_to_looks`` (protocol B): the same two, for the
  item queries whose item no known look links (a new product).

Known looks are the looks of the data set that are not test looks.  Items are named by
their representative file name (:meth:`LookDataset.item_name`).  Orders are
deterministic: snapshots by look id then k; items in the data set's order of first
appearance (looks by id, then files by k).

Plug in better scoring by subclassing :class:`Ranker`; the protocol code does not change.

Pure Python + numpy: nothing here imports Django.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .dataset import LookDataset
from .metrics import average_precision_at_k, clean_ranking, hit_at_k, recall_at_k

__all__ = [
    "SNAPSHOT_TO_ITEMS",
    "ITEM_TO_SNAPSHOTS",
    "SNAPSHOT_TO_UNSEEN_ITEMS",
    "ITEM_TO_LOOKS",
    "UNSEEN_ITEM_TO_SNAPSHOTS",
    "UNSEEN_ITEM_TO_LOOKS",
    "DIRECTIONS",
    "DERIVED_DIRECTIONS",
    "SCORED_DIRECTIONS",
    "ITEM_GALLERY_DIRECTIONS",
    "METRIC_NAMES",
    "MAX_RANKED",
    "Query",
    "Task",
    "build_tasks",
    "build_derived_tasks",
    "derived_ranking",
    "score_tasks",
    "Ranker",
    "CosineRanker",
    "EvaluationResult",
    "canonical_ranking",
    "canonical_query",
    "score_task",
    "evaluate",
    "check_test_looks",
]

SNAPSHOT_TO_ITEMS = "snapshot_to_items"
ITEM_TO_SNAPSHOTS = "item_to_snapshots"
SNAPSHOT_TO_UNSEEN_ITEMS = "snapshot_to_unseen_items"
ITEM_TO_LOOKS = "item_to_looks"
UNSEEN_ITEM_TO_SNAPSHOTS = "unseen_item_to_snapshots"
UNSEEN_ITEM_TO_LOOKS = "unseen_item_to_looks"
#: The ranked directions (what a ranker ranks and the rankings file holds), in task order.
DIRECTIONS = (SNAPSHOT_TO_ITEMS, ITEM_TO_SNAPSHOTS, SNAPSHOT_TO_UNSEEN_ITEMS)
#: Directions scored from another direction's lists: derived direction -> (source direction, collapse to looks).
DERIVED_DIRECTIONS = {
    ITEM_TO_LOOKS: (ITEM_TO_SNAPSHOTS, True),
    UNSEEN_ITEM_TO_SNAPSHOTS: (ITEM_TO_SNAPSHOTS, False),
    UNSEEN_ITEM_TO_LOOKS: (ITEM_TO_SNAPSHOTS, True),
}
#: Every direction that gets metrics, in the order reports list them (snapshot queries, then item queries).
SCORED_DIRECTIONS = (SNAPSHOT_TO_ITEMS, SNAPSHOT_TO_UNSEEN_ITEMS, ITEM_TO_SNAPSHOTS, ITEM_TO_LOOKS,
                     UNSEEN_ITEM_TO_SNAPSHOTS, UNSEEN_ITEM_TO_LOOKS)
#: Directions whose gallery holds items (ranked entries may name any file of an item).
ITEM_GALLERY_DIRECTIONS = frozenset({SNAPSHOT_TO_ITEMS, SNAPSHOT_TO_UNSEEN_ITEMS})
METRIC_NAMES = ("mAP@100", "hit@6", "recall@6")
#: The rankings file holds at most this many entries per query; mAP is cut here.
MAX_RANKED = 100


@dataclass(frozen=True)
class Query:
    name: str
    relevant: frozenset[str]


@dataclass
class Task:
    direction: str
    queries: list[Query]
    gallery: list[str]


# --------------------------------------------------------------------------- tasks
def check_test_looks(dataset: LookDataset, test_look_ids: Iterable[int]) -> set[int]:
    """The test look ids as a set; ValueError if empty or naming looks not in the data set."""
    test = set(test_look_ids)
    if not test:
        raise ValueError("no test looks given")
    unknown = sorted(test - set(dataset.looks))
    if unknown:
        raise ValueError("test look ids not in the data set: " + ", ".join(map(str, unknown)))
    return test


def build_tasks(dataset: LookDataset, test_look_ids: Iterable[int]) -> list[Task]:
    """The three tasks (in :data:`DIRECTIONS` order) for this split."""
    test = check_test_looks(dataset, test_look_ids)
    test_looks = [look for look in dataset.looks.values() if look.id in test]  # by id
    known_looks = [look for look in dataset.looks.values() if look.id not in test]
    name = dataset.item_name

    # Protocol A, snapshot to items.
    s2i_queries = [
        Query(snap, frozenset(name(key) for key in look.items))
        for look in test_looks
        if look.items
        for snap in look.snapshots
    ]
    s2i = Task(SNAPSHOT_TO_ITEMS, s2i_queries, [name(key) for key in dataset.items])

    # Protocol A, item to snapshots.
    snaps_of_item: dict[str, list[str]] = {}
    for look in test_looks:
        for key in look.items:
            snaps_of_item.setdefault(key, []).extend(look.snapshots)
    i2s_queries = [
        Query(name(key), frozenset(snaps_of_item[key]))
        for key in dataset.items  # data set order of first appearance
        if key in snaps_of_item
    ]
    i2s = Task(ITEM_TO_SNAPSHOTS, i2s_queries, dataset.snapshot_names(test))

    # Protocol B, snapshot to unseen items.
    known_items = {key for look in known_looks for key in look.items}
    unseen = [key for key in dataset.items if key not in known_items]
    unseen_names = {name(key) for key in unseen}
    b_queries = []
    for q in s2i_queries:
        rel = q.relevant & unseen_names
        if rel:
            b_queries.append(Query(q.name, frozenset(rel)))
    b = Task(SNAPSHOT_TO_UNSEEN_ITEMS, b_queries, [name(key) for key in unseen])

    return [s2i, i2s, b]


def look_name(look_id: int) -> str:
    """How a look is named in look-level lists: its id as text."""
    return str(look_id)


def build_derived_tasks(dataset: LookDataset, test_look_ids: Iterable[int], tasks: Sequence[Task] | None = None
                        ) -> list[Task]:
    """The tasks of :data:`DERIVED_DIRECTIONS` (in that order), built from the ranked tasks of this split.

    ``item_to_looks``: the item -> snapshots queries, relevant = the test looks that link the item, gallery =
    the test looks (:func:`look_name`, by id).  The unseen variants keep the queries whose item no known look
    links (an item is named by its representative file, as in ``item_to_snapshots``)."""
    test = check_test_looks(dataset, test_look_ids)
    tasks = {t.direction: t for t in (tasks if tasks is not None else build_tasks(dataset, test))}
    i2s = tasks[ITEM_TO_SNAPSHOTS]
    look_of = {name: look.id for look in dataset.looks.values() for name in look.snapshots}
    known_items = {dataset.item_name(key) for look in dataset.looks.values() if look.id not in test
                   for key in look.items}
    to_looks = [Query(q.name, frozenset(look_name(look_of[s]) for s in q.relevant)) for q in i2s.queries]
    looks_gallery = [look_name(i) for i in dataset.looks if i in test]
    unseen = [i for i, q in enumerate(i2s.queries) if q.name not in known_items]
    return [
        Task(ITEM_TO_LOOKS, to_looks, looks_gallery),
        Task(UNSEEN_ITEM_TO_SNAPSHOTS, [i2s.queries[i] for i in unseen], list(i2s.gallery)),
        Task(UNSEEN_ITEM_TO_LOOKS, [to_looks[i] for i in unseen], looks_gallery),
    ]


def derived_ranking(dataset: LookDataset, ranked_snapshots: Iterable[str]) -> list[str]:
    """A snapshot list collapsed to looks: each look at the rank of its first photo, later photos skipped;
    entries that are no snapshot of the data set are skipped."""
    look_of = {name: look.id for look in dataset.looks.values() for name in look.snapshots}
    out: list[str] = []
    seen: set[int] = set()
    for name in ranked_snapshots:
        look = look_of.get(name)
        if look is not None and look not in seen:
            seen.add(look)
            out.append(look_name(look))
    return out


# ------------------------------------------------------------------------- rankers
class Ranker:
    """Scores a task: one ranked list of gallery names per query (in ``task.queries``
    order), best first, at most ``k`` entries.  Subclass and override :meth:`rank`."""

    def rank(self, task: Task, k: int = MAX_RANKED) -> list[list[str]]:
        raise NotImplementedError


class CosineRanker(Ranker):
    """Cosine similarity of per-file descriptors, one matrix product per task.

    ``vectors`` maps a file name to its L2-normalised descriptor; for an item, the
    vector of its representative file.  Vectors are re-normalised defensively (a zero
    vector stays zero).  Ties are broken by gallery order (stable sort).
    """

    def __init__(self, vectors: Mapping[str, np.ndarray]):
        self.vectors = vectors

    def _matrix(self, names: Sequence[str]) -> np.ndarray:
        missing = [n for n in names if n not in self.vectors]
        if missing:
            shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
            raise KeyError(f"no vector for {len(missing)} file(s): {shown}")
        m = np.stack([np.asarray(self.vectors[n], dtype=np.float64).ravel() for n in names])
        norms = np.linalg.norm(m, axis=1, keepdims=True)
        return m / np.where(norms > 0, norms, 1.0)

    def rank(self, task: Task, k: int = MAX_RANKED) -> list[list[str]]:
        if not task.queries:
            return []
        if not task.gallery or k <= 0:
            return [[] for _ in task.queries]
        q = self._matrix([query.name for query in task.queries])
        g = self._matrix(task.gallery)
        scores = q @ g.T  # (queries, gallery)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        gallery = task.gallery
        return [[gallery[j] for j in row] for row in order.tolist()]


# ---------------------------------------------------------------------- evaluation
@dataclass
class EvaluationResult:
    #: {direction: {"mAP@100": float, "hit@6": float, "recall@6": float, "queries": int}}, for every
    #: direction of SCORED_DIRECTIONS
    #: (metric values are None for a direction with no query)
    metrics: dict[str, dict[str, float | int | None]]
    #: [{"query", "direction", "ranked"}], the rankings-file records that were scored
    rankings: list[dict] = field(default_factory=list)
    tasks: list[Task] = field(default_factory=list)


def canonical_query(dataset: LookDataset, direction: str, name: str) -> str:
    """An item query named by any of its files -> the representative name."""
    return dataset.canonical_item_name(name) if direction == ITEM_TO_SNAPSHOTS else name


def canonical_ranking(dataset: LookDataset, direction: str, ranked: Iterable[str]) -> list[str]:
    """Item entries named by any of their files -> the representative name."""
    if direction in ITEM_GALLERY_DIRECTIONS:
        return [dataset.canonical_item_name(n) for n in ranked]
    return list(ranked)


def score_task(task: Task, ranked_lists: Sequence[Sequence[str]]) -> dict[str, float | int | None]:
    """Mean metrics over the task's queries; ``ranked_lists[i]`` ranks ``task.queries[i]``
    (entries already canonical, i.e. gallery names)."""
    if len(ranked_lists) != len(task.queries):
        raise ValueError(
            f"{task.direction}: {len(ranked_lists)} ranked lists for {len(task.queries)} queries"
        )
    n = len(task.queries)
    if n == 0:
        return {"mAP@100": None, "hit@6": None, "recall@6": None, "queries": 0}
    gallery = set(task.gallery)
    ap = hit = rec = 0.0
    for query, ranked in zip(task.queries, ranked_lists):
        ap += average_precision_at_k(ranked, query.relevant, k=100, gallery=gallery)
        hit += hit_at_k(ranked, query.relevant, k=6, gallery=gallery)
        rec += recall_at_k(ranked, query.relevant, k=6, gallery=gallery)
    return {"mAP@100": ap / n, "hit@6": hit / n, "recall@6": rec / n, "queries": n}


def score_tasks(dataset: LookDataset, test_look_ids: Iterable[int], tasks: Sequence[Task],
                ranked: Mapping[str, Sequence[Sequence[str]]]) -> dict[str, dict]:
    """Metrics of every direction of :data:`SCORED_DIRECTIONS` (in that order) from the cleaned lists of the
    ranked tasks: ``ranked[direction][i]`` ranks ``task.queries[i]``.  The derived directions are scored from
    their source direction's lists (item queries: the same list, collapsed to looks where they rank looks)."""
    by_direction = {t.direction: t for t in tasks}
    metrics = {t.direction: score_task(t, ranked[t.direction]) for t in tasks}
    for task in build_derived_tasks(dataset, test_look_ids, tasks):
        source, collapse = DERIVED_DIRECTIONS[task.direction]
        lists = dict(zip((q.name for q in by_direction[source].queries), ranked[source]))
        rows = [lists[q.name] for q in task.queries]
        if collapse:
            rows = [derived_ranking(dataset, r) for r in rows]
        metrics[task.direction] = score_task(task, rows)
    return {d: metrics[d] for d in SCORED_DIRECTIONS if d in metrics}


def evaluate(
    dataset: LookDataset,
    test_look_ids: Iterable[int],
    ranker: Ranker,
    k: int = MAX_RANKED,
) -> EvaluationResult:
    """Run ``ranker`` on the three ranked tasks of this split and score them, with the directions derived
    from their lists (:func:`score_tasks`).

    ``k`` (1..100) is how many entries the ranker is asked for and the rankings file
    keeps; mAP is always cut at 100.  The recorded rankings are the cleaned lists that
    were scored (gallery names, no repeats, at most ``k``), so re-scoring them gives the
    same metrics.
    """
    if not 1 <= k <= MAX_RANKED:
        raise ValueError(f"k must be in 1..{MAX_RANKED}, got {k}")
    tasks = build_tasks(dataset, test_look_ids)
    cleaned_by_direction: dict[str, list[list[str]]] = {}
    rankings: list[dict] = []
    for task in tasks:
        raw = ranker.rank(task, k)
        if len(raw) != len(task.queries):
            raise ValueError(
                f"{type(ranker).__name__} returned {len(raw)} lists for "
                f"{len(task.queries)} {task.direction} queries"
            )
        gallery = set(task.gallery)
        cleaned = [
            clean_ranking(canonical_ranking(dataset, task.direction, r), gallery, k) for r in raw
        ]
        cleaned_by_direction[task.direction] = cleaned
        rankings.extend(
            {"query": q.name, "direction": task.direction, "ranked": r}
            for q, r in zip(task.queries, cleaned)
        )
    metrics = score_tasks(dataset, test_look_ids, tasks, cleaned_by_direction)
    return EvaluationResult(metrics=metrics, rankings=rankings, tasks=tasks)
