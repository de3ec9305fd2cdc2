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
    "DIRECTIONS",
    "ITEM_GALLERY_DIRECTIONS",
    "METRIC_NAMES",
    "MAX_RANKED",
    "Query",
    "Task",
    "build_tasks",
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
#: All directions, in the order tasks and reports list them.
DIRECTIONS = (SNAPSHOT_TO_ITEMS, ITEM_TO_SNAPSHOTS, SNAPSHOT_TO_UNSEEN_ITEMS)
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
    #: {direction: {"mAP@100": float, "hit@6": float, "recall@6": float, "queries": int}}
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


def evaluate(
    dataset: LookDataset,
    test_look_ids: Iterable[int],
    ranker: Ranker,
    k: int = MAX_RANKED,
) -> EvaluationResult:
    """Run ``ranker`` on the three tasks of this split and score it.

    ``k`` (1..100) is how many entries the ranker is asked for and the rankings file
    keeps; mAP is always cut at 100.  The recorded rankings are the cleaned lists that
    were scored (gallery names, no repeats, at most ``k``), so re-scoring them gives the
    same metrics.
    """
    if not 1 <= k <= MAX_RANKED:
        raise ValueError(f"k must be in 1..{MAX_RANKED}, got {k}")
    tasks = build_tasks(dataset, test_look_ids)
    metrics: dict[str, dict] = {}
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
        metrics[task.direction] = score_task(task, cleaned)
        rankings.extend(
            {"query": q.name, "direction": task.direction, "ranked": r}
            for q, r in zip(task.queries, cleaned)
        )
    return EvaluationResult(metrics=metrics, rankings=rankings, tasks=tasks)
