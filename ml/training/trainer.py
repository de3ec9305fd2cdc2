"""Training the CGD head on looks (frozen ImageNet backbone, cached feature maps).

    config = TrainConfig(backbone="lite2", epochs=30, P=16, K=4)
    result = train(dataset, train_look_ids, out_dir, cache_dir, config,
                   val_look_ids=inner_val, known_look_ids=train_look_ids)

* class = look; a snapshot carries its own look, an item every TRAINING look that
  links it (the sampler's positive mask);
* the backbone is frozen: its feature maps come from :class:`FeatureCache`
  (``views`` augmentation views per image, one drawn at random per step);
* custom ``tf.function`` train step over the head and the loss's own variables;
* validation after each epoch on ``val_look_ids`` with the evaluation protocol
  code (snapshot -> items mAP@100, plain cosine); early stopping on it
  (``patience``) and the best epoch's weights kept;
* checkpoint every epoch in ``out_dir/checkpoint`` (``resume=True`` continues);
* writes ``history.json``, ``training_curve.png`` and the MODEL_DIR
  (:func:`export_model_dir`: ``model.keras`` image -> descriptor, ``card.json``).

:func:`train_with_selection` is the default recipe of ``manage.py train_cgd``:
choose the number of epochs and the post-processing settings on an inner split
(a fifth of the training looks, fixed seed), then train on all training looks.

No Django imports here.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ml.evaluation.dataset import Look, LookDataset
from ml.retrieval.scoring import ScoringSettings

__all__ = ["TrainConfig", "TrainResult", "train", "train_with_selection", "subset_dataset",
           "inner_split", "training_images", "select_postprocessing", "data_fingerprint",
           "export_model_dir", "evaluate_vectors"]

CHECKPOINT = "checkpoint"


@dataclass
class TrainConfig:
    backbone: str = "lite2"     # chosen on the inner split over lite0 (docs/RESULTS.md)
    epochs: int = 30
    P: int = 16
    K: int = 4
    learning_rate: float = 1e-3
    descriptor_dim: int = 512
    loss: str = "arcface+classification"
    loss_options: dict = field(default_factory=dict)
    branches: tuple = ("spoc", "gem")
    seed: int = 0
    patience: int = 6
    views: int = 1              # 1 view measured no worse than 3 on the inner split, and cheaper
    fine_tune_last_stage: bool = False

    @property
    def batch_size(self) -> int:
        return self.P * self.K

    def to_dict(self) -> dict:
        d = asdict(self)
        d["branches"] = list(self.branches)
        return d


@dataclass
class TrainResult:
    out_dir: Path
    history: list
    best_epoch: int
    epochs_trained: int
    val_metrics: dict | None
    seconds: float


# ------------------------------------------------------------------------- data
def subset_dataset(dataset: LookDataset, look_ids) -> LookDataset:
    """The data set restricted to ``look_ids`` (items no kept look links are dropped)."""
    keep = set(look_ids)
    looks = {i: Look(i, list(l.snapshots), list(l.items)) for i, l in dataset.looks.items() if i in keep}
    used = {k for l in looks.values() for k in l.items}
    items = {k: list(v) for k, v in dataset.items.items() if k in used}
    return LookDataset(root=dataset.root, looks=looks, items=items)


def inner_split(look_ids, fraction: float = 0.2, seed: int = 0) -> tuple[list[int], list[int]]:
    """(inner train, inner validation): a fixed-seed ``fraction`` of the looks held out."""
    ids = sorted(look_ids)
    rng = np.random.default_rng(seed)
    n_val = max(1, int(round(len(ids) * fraction)))
    val = sorted(int(x) for x in rng.choice(ids, size=n_val, replace=False))
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


# ------------------------------------------------------------------- evaluation
def evaluate_vectors(dataset: LookDataset, vectors: dict, test_look_ids, known_look_ids,
                     settings: ScoringSettings | None = None):
    from ml.evaluation.protocols import evaluate
    from ml.retrieval.ranker import ScoringRanker

    ranker = ScoringRanker(vectors, dataset, known_look_ids, settings or ScoringSettings())
    return evaluate(dataset, test_look_ids, ranker).metrics


MIN_GAIN = 1.03  # a setting is adopted only if it beats the current best by 3 % (small split: noise)


def select_postprocessing(dataset: LookDataset, vectors: dict, val_look_ids, known_look_ids,
                          log=print) -> tuple[ScoringSettings, dict]:
    """Coordinate search of the post-processing settings on a validation split:
    look transfer and QE/DBA by snapshot->items mAP@100, the item->snapshots
    transfer weight by item->snapshots mAP@100.  Returns (settings, metrics)."""
    s2i, i2s = "snapshot_to_items", "item_to_snapshots"
    cache: dict = {}

    def score(st: ScoringSettings):
        key = json.dumps(st.to_dict(), sort_keys=True)
        if key not in cache:
            cache[key] = evaluate_vectors(dataset, vectors, val_look_ids, known_look_ids, st)
        return cache[key]

    best = ScoringSettings()
    base = score(best)[s2i]["mAP@100"]
    best_val = base

    def consider(**changes):
        nonlocal best, best_val
        st = ScoringSettings(**{**best.to_dict(), **changes})
        v = score(st)[s2i]["mAP@100"]
        if v > best_val * MIN_GAIN + 1e-9:
            best, best_val = st, v

    for w in (0.3, 0.5, 0.7, 0.85):
        for top_k in (5, 10, 20, 50):
            for reduce in ("max", "weighted"):
                consider(lt_weight=w, lt_top_k=top_k, lt_reduce=reduce)
    for ck in (5, 10, 20):
        for cw in (0.25, 0.5, 1.0):
            consider(csls_k=ck, csls_weight=cw)
    for pw in (0.05, 0.1, 0.2, 0.3, 0.5):
        consider(pop_weight=pw)
    for w in (0.3, 0.5, 0.7, 0.85):  # re-balance look transfer with the prior on
        consider(lt_weight=w)
    for qe_k, qe_alpha in ((1, 0.0), (2, 0.0), (3, 3.0), (5, 3.0)):
        consider(qe=True, qe_k=qe_k, qe_alpha=qe_alpha)
    for dba_k in (1, 2, 3):
        consider(dba=True, dba_k=dba_k)
    best_i2s = score(best)[i2s]["mAP@100"]
    # i2s-only knobs would change s2i too; CSLS is shared, so it is tried for i2s only when
    # s2i did not pick it, and kept only if s2i does not lose
    if best.csls_k == 0:
        for ck in (5, 10, 20):
            for cw in (0.25, 0.5, 1.0):
                st = ScoringSettings(**{**best.to_dict(), "csls_k": ck, "csls_weight": cw})
                m = score(st)
                if m[i2s]["mAP@100"] > best_i2s * MIN_GAIN + 1e-9 and m[s2i]["mAP@100"] >= best_val - 1e-9:
                    best, best_i2s = st, m[i2s]["mAP@100"]
    for w in (0.3, 0.5, 0.7, 0.85):
        for top_k in (5, 10, 20, 50, 0):
            st = ScoringSettings(**{**best.to_dict(), "item_transfer_weight": w, "item_transfer_top_k": top_k})
            v = score(st)[i2s]["mAP@100"]
            if v > best_i2s * MIN_GAIN + 1e-9:
                best, best_i2s = st, v
    log(f"post-processing chosen: {best.to_dict()} (s2i mAP {base:.4f} -> {best_val:.4f}, "
        f"i2s mAP {best_i2s:.4f})")
    return best, score(best)


# ------------------------------------------------------------------- training
def _load_features(dataset, names, cache_dir, config, progress):
    from .feature_cache import FeatureCache

    cache = FeatureCache(Path(cache_dir), config.backbone)
    paths = [str(dataset.root / n) for n in names]
    maps, errors = cache.features(paths, views=range(config.views), progress=progress)
    for p, msg in errors.items():
        print(f"skipped {Path(p).name}: {msg}", file=sys.stderr)
    return maps, {Path(p).name: m for p, m in errors.items()}, cache


def _all_eval_names(dataset: LookDataset) -> list[str]:
    return dataset.snapshot_names() + [dataset.item_name(k) for k in dataset.items]


def _save_state(path: Path, variables, extra: dict) -> None:
    path.mkdir(parents=True, exist_ok=True)
    tmp = path / "state.tmp.npz"
    np.savez(tmp, *[np.asarray(v.numpy()) for v in variables])
    os.replace(tmp, path / "state.npz")
    (path / "state.tmp.json").write_text(json.dumps(extra, indent=1))
    os.replace(path / "state.tmp.json", path / "state.json")


def _load_state(path: Path, variables) -> dict:
    with np.load(path / "state.npz") as data:
        arrays = [data[f"arr_{i}"] for i in range(len(data.files))]
    if len(arrays) != len(variables):
        raise ValueError(f"checkpoint {path} does not match the model ({len(arrays)} vs {len(variables)} variables)")
    for v, a in zip(variables, arrays):
        if tuple(v.shape) != a.shape:
            raise ValueError(f"checkpoint {path}: variable shape {a.shape} != {tuple(v.shape)}")
        v.assign(a)
    return json.loads((path / "state.json").read_text())


def plot_history(history: list, target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        return
    ep = [h["epoch"] for h in history]
    fig, ax1 = plt.subplots(figsize=(7, 4))
    ax1.plot(ep, [h["loss"] for h in history], "b-", label="training loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss", color="b")
    vals = [(h["epoch"], h["val_map"]) for h in history if h.get("val_map") is not None]
    if vals:
        ax2 = ax1.twinx()
        ax2.plot([e for e, _ in vals], [v for _, v in vals], "g-o", ms=3, label="val mAP@100 (snapshot→items)")
        ax2.set_ylabel("validation mAP@100", color="g")
    ax1.set_title("CGD head training")
    fig.tight_layout()
    fig.savefig(target, dpi=100)
    plt.close(fig)


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

    if config.fine_tune_last_stage:
        raise NotImplementedError("fine_tune_last_stage is not implemented in this version "
                                  "(frozen-backbone training only)")
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
    eval_ds = subset_dataset(dataset, train_look_ids + val_look_ids) if val_look_ids else None
    eval_names = _all_eval_names(eval_ds) if eval_ds is not None else []
    names = sorted(set(image_looks) | set(eval_names))
    maps, bad, _ = _load_features(dataset, names, cache_dir, config, progress)
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
    head = build_cgd_head(some.shape, num_classes, config.descriptor_dim, branches=tuple(config.branches))
    loss = build_loss(config.loss, num_classes, config.descriptor_dim, **dict(config.loss_options))
    optimizer = keras.optimizers.Adam(learning_rate=config.learning_rate)
    variables = head.trainable_variables + loss.trainable_variables
    optimizer.build(variables)
    state_vars = list(head.weights) + list(loss.variables) + list(optimizer.variables)

    @tf.function(reduce_retracing=True)
    def train_step(x, labels, mask):
        with tf.GradientTape() as tape:
            out = head(x, training=True)
            value = loss(LossBatch.from_outputs(out, labels, mask))
        grads = tape.gradient(value, variables)
        pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
        optimizer.apply_gradients(pairs)
        return value

    @tf.function(reduce_retracing=True)
    def describe(x):
        return head(x, training=False)["descriptor"]

    def descriptors(names_):
        out = []
        for s in range(0, len(names_), 256):
            x = feats[[index[n] for n in names_[s:s + 256]], 0].astype(np.float32)
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
        extra = _load_state(ckpt, state_vars)
        history = extra["history"]
        start_epoch = extra["epoch"] + 1
        best = extra["best"]
        if (ckpt / "best.npz").is_file():
            with np.load(ckpt / "best.npz") as data:
                best_weights = [data[f"arr_{i}"] for i in range(len(data.files))]
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
            x = feats[idx, view].astype(np.float32)
            value = train_step(tf.constant(x), tf.constant(b.labels), tf.constant(b.positive_mask))
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
                best_weights = [np.asarray(w.numpy()) for w in head.weights]
                np.savez(ckpt / "best.npz" if ckpt.is_dir() else _mk(ckpt) / "best.npz", *best_weights)
                bad_epochs = 0
            else:
                bad_epochs += 1
        log(msg)
        _save_state(ckpt, state_vars, {"epoch": epoch, "history": history, "best": best,
                                       "config": config.to_dict()})
        (out_dir / "history.json").write_text(json.dumps(history, indent=1))
        plot_history(history, out_dir / "training_curve.png")

    if do_val and best_weights is not None:
        for w, a in zip(head.weights, best_weights):
            w.assign(a)
        best_epoch = best["epoch"]
    else:
        best_epoch = epochs_run
    val_metrics = None
    if val_look_ids:
        m, _ = validate()
        val_metrics = m
    np.savez(out_dir / "head.weights.npz", *[np.asarray(w.numpy()) for w in head.weights])
    (out_dir / "history.json").write_text(json.dumps(history, indent=1))
    plot_history(history, out_dir / "training_curve.png")
    result = TrainResult(out_dir, history, best_epoch, epochs_run, val_metrics, time.time() - t0)
    result.head = head  # type: ignore[attr-defined]
    result.feature_shape = some.shape  # type: ignore[attr-defined]
    result.vectors_fn = descriptors  # type: ignore[attr-defined]
    result.index = index  # type: ignore[attr-defined]
    result.skipped = dict(bad)  # type: ignore[attr-defined]
    return result


def _mk(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


# ----------------------------------------------------------------------- export
def export_model_dir(head, config: TrainConfig, model_dir, cache_dir, card_extra: dict) -> Path:
    """``cache_dir``: where the ImageNet weights are cached (the parent of the feature cache).

    Write MODEL_DIR: ``model.keras`` (image -> unit-norm descriptor; folded-BN
    ImageNet backbone + the trained head) and ``card.json``."""
    import keras

    from ml.backbones.efficientnet_lite import VARIANTS, fold_batchnorm
    from ml.backbones.imagenet import feature_model, load_imagenet_efficientnet_lite
    from ml.cgd import build_descriptor_model

    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    base = load_imagenet_efficientnet_lite(config.backbone, Path(cache_dir))
    backbone = feature_model(fold_batchnorm(base, config.backbone))
    size = VARIANTS[config.backbone].input_size
    image = keras.Input((size, size, 3), name="image")
    desc_head = build_descriptor_model(head)
    descriptor = desc_head(backbone(image))
    model = keras.Model(image, descriptor, name=f"cgd_{config.backbone}")
    tmp = model_dir / "model.tmp.keras"
    model.save(tmp)
    os.replace(tmp, model_dir / "model.keras")
    card = {
        "format": "fashionsite-cgd/1",
        "backbone": config.backbone,
        "input_size": size,
        "descriptor_dim": config.descriptor_dim,
        "loss": config.loss,
        "loss_options": config.loss_options,
        "branches": list(config.branches),
        "train_config": config.to_dict(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    card.update(card_extra)
    (model_dir / "card.tmp.json").write_text(json.dumps(card, indent=1))
    os.replace(model_dir / "card.tmp.json", model_dir / "card.json")
    return model_dir


def train_with_selection(dataset: LookDataset, out_dir, cache_dir, config: TrainConfig,
                         test_look_ids=(), val_look_ids=None, resume: bool = False,
                         progress: bool = True, select_settings: bool = True, log=print) -> dict:
    """The recipe of ``manage.py train_cgd``; returns the card.

    * ``test_look_ids``: excluded from everything (training, validation, known links).
    * with ``val_look_ids``: train on the rest, early-stop on them, choose the
      post-processing on them, export that model.
    * without: inner split (a fifth of the non-test looks, seed ``config.seed``):
      phase 1 trains with early stopping on the inner validation looks and chooses
      the post-processing there; phase 2 trains on all non-test looks for the best
      epoch count of phase 1 and is exported.
    """
    t0 = time.time()
    out_dir = Path(out_dir)
    work = out_dir / "work"
    test = set(test_look_ids)
    pool = sorted(set(dataset.looks) - test)
    if not pool:
        raise ValueError("no training looks left after excluding the test looks")
    if val_look_ids:
        val = sorted(set(val_look_ids) - test)
        tr = [i for i in pool if i not in set(val)]
        res = train(dataset, tr, work / "val", cache_dir, config, val_look_ids=val,
                    known_look_ids=tr, resume=resume, progress=progress, log=log)
        final, epochs, selection = res, res.best_epoch, "validation looks (--val-looks)"
        train_ids, sel_val, sel_known = tr, val, tr
    else:
        tr, val = inner_split(pool, 0.2, config.seed)
        res = train(dataset, tr, work / "inner", cache_dir, config, val_look_ids=val,
                    known_look_ids=tr, resume=resume, progress=progress, log=log)
        epochs = max(1, res.best_epoch)
        selection = "inner split (1/5 of the training looks, seed %d)" % config.seed
        train_ids, sel_val, sel_known = pool, val, tr
    settings, sel_metrics = ScoringSettings(), None
    if select_settings:
        ev = subset_dataset(dataset, sorted(set(sel_known) | set(sel_val)))
        names = _all_eval_names(ev)
        ok = [n for n in names if n in res.index]
        vecs = dict(zip(ok, res.vectors_fn(ok)))
        zero = np.zeros(config.descriptor_dim, np.float32)
        vecs = {n: vecs.get(n, zero) for n in names}
        settings, sel_metrics = select_postprocessing(ev, vecs, sel_val, sel_known, log=log)
    if not val_look_ids:
        final_cfg = TrainConfig(**{**config.to_dict(), "epochs": epochs, "branches": tuple(config.branches)})
        final = train(dataset, pool, work / "final", cache_dir, final_cfg, resume=resume,
                      progress=progress, fixed_epochs=True, log=log)
    shutil.copyfile(final.out_dir / "history.json", _mk(out_dir) / "history.json")
    curve_src = res.out_dir / "training_curve.png"
    if curve_src.is_file():
        shutil.copyfile(curve_src, out_dir / "training_curve.png")
    card = export_model_dir(final.head, config, out_dir, Path(cache_dir).parent, {
        "postprocessing": settings.to_dict(),
        "training_data_sha256": data_fingerprint(dataset, train_ids),
        "training_looks": len(train_ids),
        "excluded_test_looks": sorted(test),
        "selection": selection,
        "epochs_trained": final.epochs_trained,
        "selected_epochs": epochs,
        "validation_metrics": res.val_metrics,
        "validation_metrics_postprocessed": sel_metrics,
        "train_seconds": round(time.time() - t0, 1),
        "skipped_images": [f"{n}: {m}" for n, m in sorted({**res.skipped, **final.skipped}.items())],
    })
    return json.loads((card / "card.json").read_text())
