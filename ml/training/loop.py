"""The training loop of one CGD head (frozen ImageNet backbone, cached feature maps).

    result = train(dataset, train_look_ids, out_dir, cache_dir, config,
                   val_look_ids=inner_val, known_look_ids=train_look_ids)

* class = look; a snapshot carries its own look, an item every TRAINING look that
  links it (the sampler's positive mask);
* the backbone is frozen: its feature maps come from :class:`FeatureCache`
  (``views`` augmentation views per image, one drawn at random per step);
  with ``fine_tune_last_stage`` the cache holds the input of the backbone's last
  stage instead, and that stage (last MBConv block + 1x1 head conv, ImageNet
  weights) is trained with the head at ``last_stage_learning_rate``;
* custom ``tf.function`` train step over the head and the loss's own variables;
* validation after each epoch on ``val_look_ids`` with the evaluation protocol
  code (snapshot -> items mAP@100, plain cosine); early stopping on it
  (``patience``) and the best epoch's weights kept;
* checkpoint every epoch in ``out_dir/checkpoint`` (``resume=True`` continues);
* writes ``history.json``, ``training_curve.png`` and ``head.weights.npz``.

No Django imports here.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from ml.evaluation.dataset import LookDataset
from ml.evaluation.pipeline import images_to_embed
from ml.retrieval.scoring import ScoringSettings

from .checkpoints import CHECKPOINT, load_state, load_weights, save_state, save_weights
from .config import TrainConfig, TrainResult
from .curves import plot_history
from .selection import evaluate_vectors
from .splits import subset_dataset, training_images

__all__ = ["train"]


def _load_features(dataset, names, cache_dir, config, progress):
    from .feature_cache import FeatureCache

    stage = "last_stage_input" if config.fine_tune_last_stage else "top"
    cache = FeatureCache(Path(cache_dir), config.backbone, stage=stage, input_size=config.input_size or None)
    paths = [str(dataset.root / n) for n in names]
    maps, errors = cache.features(paths, views=range(config.views), progress=progress)
    for p, msg in errors.items():
        print(f"skipped {Path(p).name}: {msg}", file=sys.stderr)
    return maps, {Path(p).name: m for p, m in errors.items()}, cache



def train(dataset: LookDataset, train_look_ids, out_dir, cache_dir, config: TrainConfig,
          val_look_ids=None, known_look_ids=None, resume: bool = False, progress: bool = True,
          fixed_epochs: bool = False, log=print) -> TrainResult:
    """Train the CGD head on ``train_look_ids`` (see the module docstring).

    ``val_look_ids``: held-out looks for per-epoch validation / early stopping
    (their links are never trained on; look transfer at validation uses
    ``known_look_ids``, default the training looks).  ``fixed_epochs``: run
    exactly ``config.epochs`` epochs (no validation needed).  ``out_dir`` gets
    ``checkpoint/``, ``history.json``, ``training_curve.png``, ``head.weights.npz``.
    """
    import tensorflow as tf

    from ml.cgd import build_cgd_head
    from ml.losses import LossBatch, build_loss

    from .sampler import LookBalancedSampler

    t0 = time.time()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    train_look_ids = sorted(set(train_look_ids))
    val_look_ids = sorted(set(val_look_ids or []))
    if set(train_look_ids) & set(val_look_ids):
        raise ValueError("training and validation looks overlap")
    known_look_ids = sorted(set(known_look_ids if known_look_ids is not None else train_look_ids))

    np.random.seed(config.seed)
    tf.random.set_seed(config.seed)
    import keras

    keras.utils.set_random_seed(config.seed)

    image_looks = training_images(dataset, train_look_ids)
    snapshot_names = set(dataset.snapshot_names(train_look_ids))
    eval_ds = subset_dataset(dataset, train_look_ids + val_look_ids) if val_look_ids else None
    eval_names = images_to_embed(eval_ds) if eval_ds is not None else []
    names = sorted(set(image_looks) | set(eval_names))
    maps, bad, _ = _load_features(dataset, names, cache_dir, config, progress)
    # again: computing missing feature maps builds the backbone, which draws from the global generators, so
    # without this a cold cache would initialise the head differently from a warm one (same recipe, same data)
    keras.utils.set_random_seed(config.seed)
    image_looks = {n: ls for n, ls in image_looks.items() if n not in bad}

    # feature tensor (n_images, views, h, w, c) float16 in memory
    index = {n: i for i, n in enumerate(n for n in names if n not in bad)}
    some = next(iter(maps.values()))
    feats = np.zeros((len(index), config.views) + some.shape, np.float16)
    for (p, v), m in maps.items():
        feats[index[Path(p).name], v] = m
    del maps

    sampler = LookBalancedSampler(image_looks, config.P, config.K, seed=config.seed)
    num_classes = sampler.num_looks
    last_stage = _imagenet_last_stage(config, cache_dir) if config.fine_tune_last_stage else None
    head_input_shape = tuple(last_stage.output.shape[1:]) if last_stage is not None else some.shape
    head = build_cgd_head(head_input_shape, num_classes, config.descriptor_dim,
                          branches=tuple(config.branches))
    loss = build_loss(config.loss, num_classes, config.descriptor_dim, **dict(config.loss_options))
    # (optimizer, its variables): the new head and loss; the pretrained last stage at its own rate
    groups = [(keras.optimizers.Adam(learning_rate=config.learning_rate),
               head.trainable_variables + loss.trainable_variables)]
    if last_stage is not None:
        groups.append((keras.optimizers.Adam(learning_rate=config.last_stage_learning_rate),
                       last_stage.trainable_variables))
    for optimizer, group_vars in groups:
        optimizer.build(group_vars)
    variables = [v for _, group_vars in groups for v in group_vars]
    trained_models = [head] + ([last_stage] if last_stage is not None else [])
    model_weights = [w for m in trained_models for w in m.weights]
    state_vars = model_weights + list(loss.variables) + [v for opt, _ in groups for v in opt.variables]

    def forward(x, training):
        x = tf.cast(x, tf.float32)  # the cache is float16; casting in the graph is faster than in numpy
        if last_stage is not None:
            x = last_stage(x, training=training)
        return head(x, training=training)

    @tf.function(reduce_retracing=True)
    def train_step(x, labels, mask, is_snapshot):
        with tf.GradientTape() as tape:
            value = loss(LossBatch.from_outputs(forward(x, True), labels, mask, is_snapshot))
        grads = tape.gradient(value, variables)
        start = 0
        for optimizer, group_vars in groups:
            pairs = [(g, v) for g, v in zip(grads[start:start + len(group_vars)], group_vars) if g is not None]
            optimizer.apply_gradients(pairs)
            start += len(group_vars)
        return value

    @tf.function(reduce_retracing=True)
    def describe(x):
        return forward(x, False)["descriptor"]

    def descriptors(names_):
        out = []
        step = 64 if last_stage is not None else 256
        for s in range(0, len(names_), step):
            x = feats[[index[n] for n in names_[s:s + step]], 0]
            out.append(describe(tf.constant(x)).numpy())
        return np.concatenate(out) if out else np.zeros((0, config.descriptor_dim), np.float32)

    def validate():
        ok = [n for n in eval_names if n in index]
        vecs = dict(zip(ok, descriptors(ok)))
        zero = np.zeros(config.descriptor_dim, np.float32)
        vecs = {n: vecs.get(n, zero) for n in eval_names}
        m = evaluate_vectors(eval_ds, vecs, val_look_ids, known_look_ids, ScoringSettings())
        return m, vecs

    ckpt = out_dir / CHECKPOINT
    history: list = []
    start_epoch = 0
    best = {"epoch": -1, "val_map": -1.0}
    best_weights = None
    if resume and (ckpt / "state.json").is_file():
        extra = load_state(ckpt, state_vars)
        history = extra["history"]
        start_epoch = extra["epoch"] + 1
        best = extra["best"]
        if (ckpt / "best.npz").is_file():
            best_weights = load_weights(ckpt / "best.npz")
        log(f"resumed from {ckpt} after epoch {extra['epoch'] + 1}")
    elif resume:
        log(f"no checkpoint in {ckpt}; starting from scratch")

    do_val = bool(val_look_ids) and not fixed_epochs
    bad_epochs = 0 if not history else (history[-1]["epoch"] - best["epoch"])
    epochs_run = start_epoch
    for epoch in range(start_epoch, config.epochs):
        if do_val and bad_epochs >= config.patience:
            break
        rng = np.random.default_rng((config.seed, 7, epoch))
        batches = list(sampler.epoch(epoch))
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(batches), desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch",
                       leave=False)
        losses = []
        for b in batches:
            idx = np.array([index[n] for n in b.image_ids])
            view = rng.integers(0, config.views, size=len(idx))
            x = feats[idx, view]
            is_snapshot = np.array([n in snapshot_names for n in b.image_ids])
            value = train_step(tf.constant(x), tf.constant(b.labels), tf.constant(b.positive_mask),
                               tf.constant(is_snapshot))
            losses.append(float(value))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(losses):.3f}")
        if bar is not None:
            bar.close()
        rec = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "val_map": None}
        if do_val or (val_look_ids and epoch == config.epochs - 1):
            m, _ = validate()
            rec["val_map"] = m["snapshot_to_items"]["mAP@100"]
            rec["val"] = m
        history.append(rec)
        epochs_run = epoch + 1
        msg = f"epoch {epoch + 1}: loss {rec['loss']:.4f}"
        if rec["val_map"] is not None:
            msg += f", val snapshot->items mAP@100 {rec['val_map']:.4f}"
        if do_val:
            if rec["val_map"] > best["val_map"] + 1e-6:
                best = {"epoch": epoch + 1, "val_map": rec["val_map"]}
                best_weights = [np.asarray(w.numpy()) for w in model_weights]
                save_weights(ckpt / "best.npz", best_weights)
                bad_epochs = 0
            else:
                bad_epochs += 1
        log(msg)
        save_state(ckpt, state_vars, {"epoch": epoch, "history": history, "best": best,
                                       "config": config.to_dict()})
        (out_dir / "history.json").write_text(json.dumps(history, indent=1))
        plot_history(history, out_dir / "training_curve.png")

    if do_val and best_weights is not None:
        for w, a in zip(model_weights, best_weights):
            w.assign(a)
        best_epoch = best["epoch"]
    else:
        best_epoch = epochs_run
    val_metrics = None
    if val_look_ids:
        m, _ = validate()
        val_metrics = m
    save_weights(out_dir / "head.weights.npz", [w.numpy() for w in head.weights])
    if last_stage is not None:
        save_weights(out_dir / "last_stage.weights.npz", [w.numpy() for w in last_stage.weights])
    (out_dir / "history.json").write_text(json.dumps(history, indent=1))
    plot_history(history, out_dir / "training_curve.png")
    return TrainResult(out_dir, history, best_epoch, epochs_run, val_metrics, time.time() - t0, head=head,
                       last_stage=last_stage, feature_shape=some.shape, vectors_fn=descriptors, index=index,
                       skipped=dict(bad), config=config)


def _imagenet_last_stage(config: TrainConfig, cache_dir):
    """The backbone's last stage with its ImageNet weights (the starting point of fine-tuning)."""
    from ml.backbones.efficientnet_lite import split_last_stage
    from ml.backbones.imagenet import load_folded_imagenet_efficientnet_lite

    folded = load_folded_imagenet_efficientnet_lite(config.backbone, Path(cache_dir).parent)
    _, last_stage = split_last_stage(folded, config.backbone)
    return last_stage

