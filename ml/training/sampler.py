"""P x K look-balanced batch sampler for the look/item link graph (numpy only).

``image_looks`` maps every image id (snapshot or catalogue item) to the set of
looks it belongs to (a snapshot: its own look; an item: every look linking it).

Per epoch the looks are shuffled and cut into ``ceil(n_looks / P)`` groups of P;
the last group is topped up with looks drawn uniformly from the other looks, so
every batch has exactly ``P * K`` images and every look has the same chance of
appearing per epoch. For each look, K of its images are drawn without replacement
if it has at least K; otherwise all of its images are used and the remainder is
drawn with replacement (oversampling). The label of an image is the index of the
look it was drawn for (:attr:`LookBalancedSampler.look_ids` gives index -> look id),
and ``positive_mask[i, j]`` is True iff images i and j share ANY look (not only the
drawn ones), diagonal included.

Determinism: ``epoch(e)`` uses ``numpy.random.default_rng((seed, e))``, so the
same seed and epoch index give the same batches; ``epoch()`` without an index uses
an internal counter starting at 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Hashable, Iterable, Iterator, List, Mapping

import numpy as np

__all__ = ["SampledBatch", "LookBalancedSampler"]


@dataclass
class SampledBatch:
    image_ids: list            # length B = P*K, image ids (may repeat when oversampling)
    labels: np.ndarray         # (B,) int32 look index the image was drawn for
    positive_mask: np.ndarray  # (B, B) bool, images share at least one look
    look_ids: list             # length P, the look ids of this batch (label order)


def _sorted(keys) -> list:
    keys = list(keys)
    try:
        return sorted(keys)
    except TypeError:
        return sorted(keys, key=repr)


class LookBalancedSampler:
    def __init__(self, image_looks: Mapping[Hashable, Iterable[Hashable]], P: int, K: int, seed: int = 0):
        if P < 1 or K < 1:
            raise ValueError("P and K must be >= 1")
        self.P = int(P)
        self.K = int(K)
        self.seed = int(seed)
        self.image_ids: List[Hashable] = [i for i in _sorted(image_looks) if image_looks[i]]
        looks_of_image = {i: set(image_looks[i]) for i in self.image_ids}
        self.look_ids: List[Hashable] = _sorted({l for ls in looks_of_image.values() for l in ls})
        if not self.look_ids:
            raise ValueError("no look has any image")
        if self.P > len(self.look_ids):
            raise ValueError(f"P={P} is larger than the number of looks ({len(self.look_ids)})")
        self.look_index = {l: k for k, l in enumerate(self.look_ids)}
        self.image_index = {i: k for k, i in enumerate(self.image_ids)}
        # look index -> array of image indices
        members: List[list] = [[] for _ in self.look_ids]
        for ii, img in enumerate(self.image_ids):
            for l in looks_of_image[img]:
                members[self.look_index[l]].append(ii)
        self._members = [np.asarray(m, dtype=np.int64) for m in members]
        # image index -> sorted look indices (for the positive mask)
        self._image_look_idx = [np.asarray(sorted(self.look_index[l] for l in looks_of_image[i]), dtype=np.int64)
                                for i in self.image_ids]
        self._epoch_counter = 0

    @property
    def num_looks(self) -> int:
        return len(self.look_ids)

    @property
    def batch_size(self) -> int:
        return self.P * self.K

    def __len__(self) -> int:
        return math.ceil(self.num_looks / self.P)

    def __iter__(self) -> Iterator[SampledBatch]:
        return self.epoch()

    def positive_mask(self, image_indices: np.ndarray) -> np.ndarray:
        """(B, B) bool: images (given as indices into :attr:`image_ids`) share a look."""
        rows = np.repeat(np.arange(len(image_indices)), [len(self._image_look_idx[i]) for i in image_indices])
        cols = np.concatenate([self._image_look_idx[i] for i in image_indices])
        uniq, cols = np.unique(cols, return_inverse=True)
        incidence = np.zeros((len(image_indices), len(uniq)), dtype=np.float32)
        incidence[rows, cols] = 1.0
        return (incidence @ incidence.T) > 0

    def _draw_images(self, rng: np.random.Generator, look: int) -> np.ndarray:
        members = self._members[look]
        if len(members) >= self.K:
            return rng.choice(members, size=self.K, replace=False)
        extra = rng.choice(members, size=self.K - len(members), replace=True)
        return rng.permutation(np.concatenate([members, extra]))

    def epoch(self, epoch_index: int | None = None) -> Iterator[SampledBatch]:
        """Yield ``len(self)`` batches of ``P * K`` images for one epoch."""
        if epoch_index is None:
            epoch_index = self._epoch_counter
            self._epoch_counter += 1
        rng = np.random.default_rng((self.seed, int(epoch_index)))
        order = rng.permutation(self.num_looks)
        for start in range(0, self.num_looks, self.P):
            group = order[start:start + self.P]
            if len(group) < self.P:
                others = np.setdiff1d(np.arange(self.num_looks), group)
                fill = rng.choice(others, size=self.P - len(group), replace=False)
                group = np.concatenate([group, fill])
            image_idx = np.concatenate([self._draw_images(rng, int(l)) for l in group])
            labels = np.repeat(group, self.K).astype(np.int32)
            yield SampledBatch(
                image_ids=[self.image_ids[i] for i in image_idx],
                labels=labels,
                positive_mask=self.positive_mask(image_idx),
                look_ids=[self.look_ids[l] for l in group],
            )
