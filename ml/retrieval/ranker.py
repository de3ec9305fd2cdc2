"""A :class:`ml.evaluation.protocols.Ranker` built on :func:`ml.retrieval.scoring.score_matrix`.

    ranker = ScoringRanker(vectors, dataset, known_look_ids, settings)
    result = evaluate(dataset, test_look_ids, ranker)

``vectors`` maps file names (snapshots, item representative files) to
L2-normalised descriptors.  Only the links of ``known_look_ids`` are ever used
(look transfer), and a known snapshot that is itself a query or in the gallery
of the task is dropped, so a test look's links cannot leak even when the caller
passes a wrong known set.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from ml.evaluation.dataset import LookDataset
from ml.evaluation.protocols import ITEM_GALLERY_DIRECTIONS, ITEM_TO_SNAPSHOTS, MAX_RANKED, Ranker, Task

from .scoring import DomainMeans, ScoringSettings, item_query_scores, normalise, ranked_indices, score_matrix

__all__ = ["ScoringRanker"]


class ScoringRanker(Ranker):
    def __init__(self, vectors: Mapping[str, np.ndarray], dataset: LookDataset,
                 known_look_ids: Iterable[int], settings: ScoringSettings | None = None, hub_reference=None,
                 domain_means: DomainMeans | None = None):
        """``hub_reference`` ``(R, D)``: the items item queries' hubness is measured against
        (``settings.item_hub_weight``); a trained model stores its own (the items of its training looks,
        :func:`ml.training.export.export_model_dir`), and by default they are the known looks' items.
        ``domain_means``: the kinds' means queries are moved by (``settings.snapshot_centring`` /
        ``item_centring``); a trained model stores its own, by default those of the known looks."""
        self.vectors = vectors
        self.dataset = dataset
        self.known_look_ids = sorted(set(known_look_ids) & set(dataset.looks))
        self.settings = settings or ScoringSettings()
        # snapshot name -> its look (which photos form one post: not a link, the platform knows it too)
        self._look_of_snapshot = {name: look_id for look_id, look in dataset.looks.items()
                                  for name in look.snapshots}
        # known snapshot name -> item representative names linked by its look
        self._known_snapshot_items: dict[str, set[str]] = {}
        self.item_popularity: dict[str, int] = {}  # item name -> known looks linking it
        for look_id in self.known_look_ids:
            look = dataset.looks[look_id]
            linked = {dataset.item_name(key) for key in look.items}
            for item in linked:
                self.item_popularity[item] = self.item_popularity.get(item, 0) + 1
            for snap in look.snapshots:
                self._known_snapshot_items[snap] = linked
        if hub_reference is None and self.settings.item_hub_weight > 0:
            names = [n for n in self.item_popularity if n in self.vectors]
            hub_reference = self._matrix(sorted(names, key=self._item_order)) if names else None
        self.hub_reference = normalise(hub_reference) if hub_reference is not None else None
        centring = {self.settings.snapshot_centring, self.settings.item_centring} - {"off"}
        if domain_means is None and centring:
            snaps = [s for s in self._known_snapshot_items if s in self.vectors]
            items = sorted((n for n in self.item_popularity if n in self.vectors), key=self._item_order)
            if snaps and items:
                domain_means = DomainMeans.of(self._matrix(snaps), self._matrix(items))
        self.domain_means = domain_means

    def _matrix(self, names: Sequence[str]) -> np.ndarray:
        missing = [n for n in names if n not in self.vectors]
        if missing:
            raise KeyError(f"no vector for {len(missing)} file(s): {', '.join(missing[:5])}")
        if not names:
            return np.zeros((0, 1), np.float32)
        return normalise(np.stack([np.asarray(self.vectors[n], np.float32).ravel() for n in names]))

    def _known(self, exclude: set[str]) -> list[str]:
        """Known snapshots for look transfer; ``exclude`` names never become entries."""
        return [s for s in self._known_snapshot_items if s not in exclude and s in self.vectors]

    def _links(self, known: list[str], targets: Sequence[str]) -> np.ndarray:
        col = {name: j for j, name in enumerate(targets)}
        links = np.zeros((len(known), len(targets)), np.float32)
        for i, snap in enumerate(known):
            for item in self._known_snapshot_items[snap]:
                j = col.get(item)
                if j is not None:
                    links[i, j] = 1.0
        return links

    def scores(self, task: Task) -> np.ndarray:
        """The ``(queries, gallery)`` score matrix of a task."""
        s = self.settings
        qnames = [q.name for q in task.queries]
        q = self._matrix(qnames)
        g = self._matrix(task.gallery)
        # queries (and, for item -> snapshots, the gallery snapshots) are test material: never known
        exclude = set(qnames) | (set(task.gallery) if task.direction == ITEM_TO_SNAPSHOTS else set())
        known = self._known(exclude)
        kvecs = self._matrix(known) if known else None
        if task.direction == ITEM_TO_SNAPSHOTS:
            ref = self._matrix(self._catalogue_items()) if s.csls_k > 0 else None
            links = self._links(known, qnames) if kvecs is not None else None
            return item_query_scores(q, g, [self._look_of_snapshot[name] for name in task.gallery], s,
                                     known_snapshot_vecs=kvecs, query_links=links, gallery_reference=ref,
                                     hub_reference=self.hub_reference, domain_means=self.domain_means)
        pop = np.array([self.item_popularity.get(n, 0) for n in task.gallery], np.float32)
        if kvecs is None:
            return score_matrix(q, g, s, item_popularity=pop, domain_means=self.domain_means)
        return score_matrix(q, g, s, known_snapshot_vecs=kvecs,
                            known_links=self._links(known, task.gallery), item_popularity=pop,
                            gallery_reference=kvecs, domain_means=self.domain_means)

    def _item_order(self, name: str) -> int:
        """Position of an item in the data set's order (looks by id, files by k), for a stable reference."""
        if not hasattr(self, "_order"):
            self._order = {self.dataset.item_name(k): i for i, k in enumerate(self.dataset.items)}
        return self._order.get(name, len(self._order))

    def _catalogue_items(self) -> list[str]:
        """Every item of the data set (the indexed catalogue): the hubness reference of snapshots."""
        return [n for n in (self.dataset.item_name(k) for k in self.dataset.items) if n in self.vectors]

    def rank(self, task: Task, k: int = MAX_RANKED) -> list[list[str]]:
        if not task.queries:
            return []
        if not task.gallery or k <= 0:
            return [[] for _ in task.queries]
        # variety among the first results applies where the gallery holds items (what people are shown)
        items = self._matrix(task.gallery) if task.direction in ITEM_GALLERY_DIRECTIONS else None
        order = ranked_indices(self.scores(task), self.settings, items)[:, :k]
        return [[task.gallery[j] for j in row] for row in order.tolist()]
