"""Which looks and images a training run sees: subsets, the inner split, the training images and their
looks, and the fingerprint of the training data written into the model card."""

from __future__ import annotations

import hashlib

import numpy as np

from ml.evaluation.dataset import Look, LookDataset

from .config import INNER_SPLIT_FRACTION, inner_validation_size

__all__ = ["subset_dataset", "inner_split", "training_images", "data_fingerprint"]


def subset_dataset(dataset: LookDataset, look_ids) -> LookDataset:
    """The data set restricted to ``look_ids`` (items no kept look links are dropped)."""
    keep = set(look_ids)
    looks = {i: Look(i, list(l.snapshots), list(l.items)) for i, l in dataset.looks.items() if i in keep}
    used = {k for l in looks.values() for k in l.items}
    items = {k: list(v) for k, v in dataset.items.items() if k in used}
    return LookDataset(root=dataset.root, looks=looks, items=items)


def inner_split(look_ids, fraction: float = INNER_SPLIT_FRACTION, seed: int = 0) -> tuple[list[int], list[int]]:
    """(inner train, inner validation): a fixed-seed ``fraction`` of the looks held out."""
    ids = sorted(look_ids)
    rng = np.random.default_rng(seed)
    val = sorted(int(x) for x in rng.choice(ids, size=inner_validation_size(len(ids), fraction), replace=False))
    vs = set(val)
    return [i for i in ids if i not in vs], val


def training_images(dataset: LookDataset, look_ids) -> dict[str, set[int]]:
    """File name -> training looks it belongs to (snapshots: own look; items: every
    training look linking them, named by the representative file)."""
    out: dict[str, set[int]] = {}
    for i in sorted(set(look_ids)):
        look = dataset.looks[i]
        for s in look.snapshots:
            out.setdefault(s, set()).add(i)
        for key in look.items:
            out.setdefault(dataset.item_name(key), set()).add(i)
    return out


def data_fingerprint(dataset: LookDataset, look_ids) -> str:
    """SHA-256 of the training data: sorted look ids with their snapshot hashes and item keys."""
    h = hashlib.sha256()
    for i in sorted(set(look_ids)):
        look = dataset.looks[i]
        snaps = sorted(hashlib.sha256((dataset.root / s).read_bytes()).hexdigest() for s in look.snapshots)
        h.update(f"{i}:{','.join(snaps)}|{','.join(sorted(look.items))}\n".encode())
    return h.hexdigest()
