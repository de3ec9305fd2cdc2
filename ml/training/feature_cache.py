"""Backbone feature maps computed once per image and view, cached on disk (numpy + Keras, no Django).

Frozen-backbone training of the CGD head runs on the last feature map of the
ImageNet EfficientNet-Lite (``top_activation``, ``(h, w, 1280)``).  Computing it
is the expensive part, so each map is computed once and stored as float16::

    cache_dir/<variant>-<size>/v<view>/<sha256[:2]>/<sha256>.npy
    cache_dir/<variant>-<size>-last_stage_input/v<view>/...   (stage="last_stage_input")

keyed by the SHA-256 of the image file's bytes, the backbone variant, the input
size and the augmentation view.  View 0 is the plain image (exactly the
embedder's preprocessing); views 1, 2, ... are deterministic augmentations
(horizontal flip, random resized crop, colour jitter) seeded by the view id and
the image hash, so a frozen-backbone run still sees augmented images and two
runs see the same ones.

    cache = FeatureCache(cache_dir, "lite0")
    maps, errors = cache.features(paths, views=(0, 1, 2), progress=True)
    # maps[(path, view)] -> (7, 7, 1280) float16 array; errors[path] -> message

``stage="last_stage_input"`` caches the input of the backbone's last stage instead
(:func:`ml.backbones.efficientnet_lite.split_last_stage`), for training that
fine-tunes the last stage on top of the frozen trunk.

Bad images are reported by name in ``errors`` and skipped.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from PIL import Image, ImageEnhance

from ml.files import atomic_target

from ml.images import ImageError, load_rgb, preprocess_array

__all__ = ["FeatureCache", "augment", "file_sha256", "STAGES", "FLIP_VIEW"]

#: The plain image mirrored left to right (no crop, no jitter): what flip test-time augmentation describes.
FLIP_VIEW = -1

#: What a cache holds: the final feature map, or the input of the last backbone stage.
STAGES = ("top", "last_stage_input")


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def augment(img: Image.Image, view: int, key: str, size: int) -> np.ndarray:
    """The model input (size, size, 3) float32 of ``img`` for augmentation ``view``.

    View 0: the whole image resized (as :func:`ml.images.to_input_array`).
    View :data:`FLIP_VIEW` (-1): the same, mirrored left to right.
    View v > 0: seeded by ``(v, key)``: horizontal flip (always for odd views,
    at random for even ones), random resized crop (area 60-100 %, aspect 3/4-4/3
    of the image's), brightness / contrast / saturation jitter of +-20 %.
    """
    if img.mode != "RGB":
        img = img.convert("RGB")
    if view == 0:
        return preprocess_array(np.asarray(img.resize((size, size), Image.BILINEAR)))
    if view == FLIP_VIEW:  # the mirror image, preprocessed as view 0 (flip at test time)
        return preprocess_array(np.asarray(img.transpose(Image.FLIP_LEFT_RIGHT).resize((size, size), Image.BILINEAR)))
    rng = np.random.default_rng((int(view), int(key[:12], 16)))
    if view % 2 == 1 or rng.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    w, h = img.size
    area = rng.uniform(0.6, 1.0) * w * h
    ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    cw = int(round(min(w, np.sqrt(area * ratio))))
    ch = int(round(min(h, np.sqrt(area / ratio))))
    x0 = int(rng.integers(0, w - cw + 1))
    y0 = int(rng.integers(0, h - ch + 1))
    img = img.crop((x0, y0, x0 + cw, y0 + ch)).resize((size, size), Image.BILINEAR)
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        img = enhancer(img).enhance(float(rng.uniform(0.8, 1.2)))
    return preprocess_array(np.asarray(img))


class FeatureCache:
    """Disk cache of backbone feature maps for one backbone variant."""

    def __init__(self, cache_dir, variant: str = "lite0", weights_dir=None, stage: str = "top",
                 input_size: int | None = None):
        """``input_size``: the side the images are resized to (default: the variant's own, as the platform
        embeds them; another side, for experiments such as bench/item_query_ideas.py's `itemsize`, keeps its
        maps in a folder of its own)."""
        from ml.backbones.efficientnet_lite import VARIANTS

        if variant not in VARIANTS:
            raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}")
        if stage not in STAGES:
            raise ValueError(f"unknown feature stage {stage!r}; expected one of {STAGES}")
        self.variant = variant
        self.stage = stage
        self.input_size = int(input_size) if input_size else VARIANTS[variant].input_size
        suffix = "" if stage == "top" else f"-{stage}"
        self.root = Path(cache_dir) / f"{variant}-{self.input_size}{suffix}"
        # ImageNet weights cache (the platform's models dir: the parent of features/)
        self.weights_dir = Path(weights_dir) if weights_dir is not None else Path(cache_dir).parent
        self._model = None
        self.computed = 0  # feature maps computed (not read from disk) by this object

    # ----------------------------------------------------------------- keys
    def path_for(self, sha: str, view: int) -> Path:
        return self.root / f"v{int(view)}" / sha[:2] / f"{sha}.npy"

    # ---------------------------------------------------------------- model
    def feature_model(self):
        if self._model is None:
            import tensorflow as tf

            from ml.backbones.efficientnet_lite import split_last_stage
            from ml.backbones.imagenet import feature_model, load_folded_imagenet_efficientnet_lite

            folded = load_folded_imagenet_efficientnet_lite(self.variant, self.weights_dir)
            if self.input_size != folded.input_shape[1]:
                from ml.backbones.efficientnet_lite import at_input_size

                folded = at_input_size(folded, self.variant, self.input_size)
            if self.stage == "top":
                fm = feature_model(folded)
            else:
                fm, _ = split_last_stage(folded, self.variant)
            size = self.input_size

            @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)],
                         reduce_retracing=True)
            def run(batch):
                return fm(batch, training=False)

            self._model = run
        return self._model

    # ------------------------------------------------------------------ api
    def features(self, paths, views=(0,), batch_size: int = 32, progress: bool = False):
        """Feature maps of every (path, view).

        Returns ``(maps, errors)``: ``maps[(path, view)]`` is a float16 array
        ``(h, w, c)`` (c = 1280 for the top stage; paths as given, ``os.fspath``); ``errors`` maps each
        unreadable file to a message (that file is skipped for every view).
        """
        paths = [os.fspath(p) for p in paths]
        views = [int(v) for v in views]
        errors: dict[str, str] = {}
        shas: dict[str, str] = {}
        for p in paths:
            try:
                shas[p] = file_sha256(p)
            except OSError as e:
                errors[p] = f"{p}: cannot read file ({e.strerror or e})"
        maps: dict[tuple[str, int], np.ndarray] = {}
        todo: list[tuple[str, int]] = []
        for p in paths:
            if p in errors:
                continue
            for v in views:
                f = self.path_for(shas[p], v)
                if f.is_file():
                    try:
                        maps[(p, v)] = np.load(f)
                        continue
                    except Exception:  # noqa: BLE001 - corrupt cache entry: recompute
                        pass
                todo.append((p, v))
        if not todo:
            return maps, errors

        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(todo), desc=f"features ({self.variant}, views {views})", unit="img")
        size = self.input_size

        def load(item):
            p, v = item
            if p in errors:
                return None
            try:
                return augment(load_rgb(p), v, shas[p], size)
            except ImageError as e:
                errors[p] = str(e)
            except Exception as e:  # noqa: BLE001
                errors[p] = f"{p}: {type(e).__name__}: {e}"
            return None

        run = self.feature_model()
        try:
            with ThreadPoolExecutor(max_workers=2) as pool:
                for s in range(0, len(todo), batch_size):
                    chunk = todo[s:s + batch_size]
                    arrays = list(pool.map(load, chunk))
                    ok = [(pv, a) for pv, a in zip(chunk, arrays) if a is not None]
                    if ok:
                        out = run(np.stack([a for _, a in ok])).numpy().astype(np.float16)
                        for (p, v), fmap in zip([pv for pv, _ in ok], out):
                            self._save(self.path_for(shas[p], v), fmap)
                            maps[(p, v)] = fmap
                            self.computed += 1
                    if bar is not None:
                        bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
        for p in errors:
            for v in views:
                maps.pop((p, v), None)
        return maps, errors

    @staticmethod
    def _save(target: Path, array: np.ndarray) -> None:
        with atomic_target(target, ".npy") as tmp:
            np.save(tmp, array)
