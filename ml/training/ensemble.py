"""Ensembles: several heads trained independently (own seeds, own early stopping), their descriptors joined."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from ml.evaluation.dataset import LookDataset

from .config import TrainConfig, TrainResult
from .loop import train

__all__ = ["member_config", "train_ensemble", "ensemble_vectors", "join_descriptors", "with_test_time_flip"]


def join_descriptors(parts) -> np.ndarray:
    """The ensemble's descriptors from its members' ``(n, d_k)`` descriptors: the L2-normalised
    concatenation (the cosine of two joined descriptors is the mean of the members' cosines)."""
    from ml.retrieval.scoring import normalise

    return normalise(np.concatenate([np.asarray(p, np.float32) for p in parts], axis=1))


def member_config(config: TrainConfig, member: int, epochs: int | None = None) -> TrainConfig:
    """The config of ensemble member ``member``: its own seed (initialisation and batch order) and its own
    backbone (``config.member_backbones``), run at the ensemble's input side."""
    changes = {"seed": config.seed + member}
    if config.member_backbone(member) != config.backbone:
        changes.update(backbone=config.member_backbone(member), input_size=config.model_input_size)
    changes["member_backbones"] = ()  # a member is one head: its backbone is ``backbone``
    if epochs is not None:
        changes["epochs"] = epochs
    return replace(config, **changes)


def train_ensemble(dataset: LookDataset, train_look_ids, out_dir, cache_dir, config: TrainConfig,
                   epochs_per_member=None, log=print, **train_kwargs) -> list[TrainResult]:
    """``config.ensemble`` independent :func:`train` runs (member k: seed ``config.seed + k``) in
    ``out_dir/member<k>``; ``epochs_per_member[k]`` overrides member k's epochs."""
    results = []
    n = max(1, config.ensemble)
    for k in range(n):
        epochs = epochs_per_member[k] if epochs_per_member is not None else None
        member_log = log
        if n > 1:
            log(f"ensemble member {k + 1}/{n} (seed {config.seed + k})")

            def member_log(message, k=k):  # progress lines say whose they are (/healthz shows the last one)
                log(f"member {k + 1}/{n}: {message}")
        results.append(train(dataset, train_look_ids, Path(out_dir) / f"member{k}", cache_dir,
                             member_config(config, k, epochs), log=member_log, **train_kwargs))
    return results


def ensemble_vectors(members: list[TrainResult], names) -> dict[str, np.ndarray]:
    """File name -> the ensemble's descriptor: the L2-normalised concatenation of the members'
    descriptors (cosine = mean of the members' cosines); images a member skipped get zeros."""
    names = list(names)
    ok = [n for n in names if all(n in m.index for m in members)]
    joined = join_descriptors([m.vectors_fn(ok) for m in members])
    vecs = dict(zip(ok, joined))
    zero = np.zeros(joined.shape[1], np.float32)
    return {n: vecs.get(n, zero) for n in names}



def with_test_time_flip(vectors: dict, members: list[TrainResult], dataset: LookDataset, cache_dir,
                        config: TrainConfig) -> dict[str, np.ndarray]:
    """``vectors`` (:func:`ensemble_vectors`) as a model exported with ``config.test_time_flip`` describes
    the images: the L2-normalised mean of each image's and its mirror image's ensemble descriptors.  The
    mirror images' backbone outputs come from the feature cache (view :data:`FLIP_VIEW`) of each member's
    backbone, as the plain images' do; an image a cache cannot read keeps its plain descriptor."""
    import tensorflow as tf

    from ml.retrieval.scoring import normalise

    from .feature_cache import FLIP_VIEW, FeatureCache

    names = [n for n, v in vectors.items() if np.any(v)]
    if not names:
        return dict(vectors)
    stage = "last_stage_input" if config.fine_tune_last_stage else "top"
    flipped = {}  # (backbone, side) -> image name -> its mirror image's feature map
    for member in members:
        member_config = member.config or config
        key = (member_config.backbone, member_config.input_size or None)
        if key not in flipped:
            maps, _ = FeatureCache(Path(cache_dir), key[0], stage=stage, input_size=key[1]).features(
                [Path(dataset.root) / n for n in names], views=(FLIP_VIEW,))
            flipped[key] = {Path(p).name: m for (p, _), m in maps.items()}
    order = [n for n in names if all(n in maps for maps in flipped.values())]
    parts = []
    for member in members:
        member_config = member.config or config
        member_maps = flipped[(member_config.backbone, member_config.input_size or None)]
        out = []
        for start in range(0, len(order), 64):
            x = tf.constant(np.stack([member_maps[n] for n in order[start:start + 64]]).astype(np.float32))
            if member.last_stage is not None:
                x = member.last_stage(x, training=False)
            out.append(np.asarray(member.head(x, training=False)["descriptor"]))
        parts.append(np.concatenate(out) if out else np.zeros((0, 1), np.float32))
    mirror = dict(zip(order, join_descriptors(parts))) if order else {}
    return {n: normalise((v + mirror[n])[None])[0] if n in mirror else v for n, v in vectors.items()}
