"""EfficientNet-Lite (lite0..lite4) as a Keras functional model.

Mirrors the reference PyTorch implementation ``efficientnet-lite-pytorch``
0.1.0 (ml-illustrated/EfficientNet-Lite-PyTorch, itself a port of the
official TF ``efficientnet/lite`` builder), so that its ImageNet weights can
be ported one-to-one (see :mod:`ml.backbones.imagenet`):

* MBConv blocks without squeeze-excitation, ReLU6 everywhere;
* stem (32 channels) and head (1280 channels) are NOT width-scaled, and the
  first and last block groups are NOT depth-scaled;
* BatchNorm eps 1e-3 (momentum 0.99 in TF terms);
* convolutions use TF-style "SAME" padding (for the fixed input size) (the reference's
  ``Conv2dStaticSamePadding`` pads ``total // 2`` before and the rest after,
  which is exactly TF/Keras ``padding="same"``);
* input: channels-last RGB, already normalised as ``(x - 127) / 128``
  (see :func:`ml.images.to_input_array`).

Layer names follow the PyTorch module names (``blocks_3_expand_conv`` for
``_blocks.3._expand_conv``).  The final feature map (head 1x1 conv + BN +
ReLU6, 1280 channels) is the layer named ``"top_activation"``; with
``include_top=True`` the model outputs 1000 ImageNet *logits*
(layer ``"predictions"``, no softmax).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


import keras  # noqa: E402
import numpy as np
from keras import layers

__all__ = ["VARIANTS", "Variant", "BLOCK_GROUPS", "build_efficientnet_lite", "block_configs",
           "FEATURE_LAYER", "FEATURE_DIM", "BN_EPSILON", "fold_batchnorm", "at_input_size", "last_stage_blocks",
           "last_stage_input_layer", "split_last_stage"]

FEATURE_LAYER = "top_activation"
FEATURE_DIM = 1280
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99  # Keras convention (PyTorch momentum 0.01)


@dataclass(frozen=True)
class Variant:
    name: str
    width: float
    depth: float
    input_size: int
    dropout: float


VARIANTS: dict[str, Variant] = {
    "lite0": Variant("lite0", 1.0, 1.0, 224, 0.2),
    "lite1": Variant("lite1", 1.0, 1.1, 240, 0.2),
    "lite2": Variant("lite2", 1.1, 1.2, 260, 0.3),
    "lite3": Variant("lite3", 1.2, 1.4, 280, 0.3),
    "lite4": Variant("lite4", 1.4, 1.8, 300, 0.3),
}

# (num_repeat, kernel, stride, expand_ratio, input_filters, output_filters)
BLOCK_GROUPS = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]

STEM_FILTERS = 32
HEAD_FILTERS = 1280
DEPTH_DIVISOR = 8


def _round_filters(filters: int, width: float) -> int:
    if not width:
        return filters
    filters *= width
    new = max(DEPTH_DIVISOR, int(filters + DEPTH_DIVISOR / 2) // DEPTH_DIVISOR * DEPTH_DIVISOR)
    if new < 0.9 * filters:
        new += DEPTH_DIVISOR
    return int(new)


def _round_repeats(repeats: int, depth: float) -> int:
    return int(math.ceil(depth * repeats)) if depth else repeats


@dataclass(frozen=True)
class BlockConfig:
    index: int
    kernel: int
    stride: int
    expand_ratio: int
    input_filters: int
    output_filters: int

    @property
    def has_skip(self) -> bool:
        return self.stride == 1 and self.input_filters == self.output_filters


def _variant(variant) -> Variant:
    if isinstance(variant, Variant):
        return variant
    try:
        return VARIANTS[variant]
    except KeyError:
        raise ValueError(
            f"unknown EfficientNet-Lite variant {variant!r}; expected one of {sorted(VARIANTS)}"
        ) from None


def block_configs(variant="lite0") -> list[BlockConfig]:
    """The flat list of MBConv blocks, exactly as the reference builds them."""
    v = _variant(variant)
    out: list[BlockConfig] = []
    last = len(BLOCK_GROUPS) - 1
    for g, (r, k, s, e, i, o) in enumerate(BLOCK_GROUPS):
        inp = _round_filters(i, v.width)
        outp = _round_filters(o, v.width)
        if g == 0 or g == last:
            repeats = r  # fix_head_stem: first/last groups not depth-scaled
            if g == 0:
                inp = STEM_FILTERS
        else:
            repeats = _round_repeats(r, v.depth)
        for rep in range(repeats):
            out.append(BlockConfig(len(out), k, s if rep == 0 else 1, e,
                                   inp if rep == 0 else outp, outp))
    return out


def _bn(name: str, fold_bn: bool = False):
    if fold_bn:
        return lambda x: x
    return layers.BatchNormalization(axis=-1, epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)


def _mbconv(x, cfg: BlockConfig, fold_bn: bool = False):
    p = f"blocks_{cfg.index}_"
    inputs = x
    expanded = cfg.input_filters * cfg.expand_ratio
    if cfg.expand_ratio != 1:
        x = layers.Conv2D(expanded, 1, padding="same", use_bias=fold_bn, name=p + "expand_conv")(x)
        x = _bn(p + "bn0", fold_bn)(x)
        x = layers.ReLU(6.0, name=p + "expand_activation")(x)
    x = layers.DepthwiseConv2D(cfg.kernel, strides=cfg.stride, padding="same", use_bias=fold_bn,
                               name=p + "depthwise_conv")(x)
    x = _bn(p + "bn1", fold_bn)(x)
    x = layers.ReLU(6.0, name=p + "depthwise_activation")(x)
    x = layers.Conv2D(cfg.output_filters, 1, padding="same", use_bias=fold_bn,
                      name=p + "project_conv")(x)
    x = _bn(p + "bn2", fold_bn)(x)
    if cfg.has_skip:
        x = layers.Add(name=p + "add")([x, inputs])
    return x


def build_efficientnet_lite(variant="lite0", include_top: bool = True,
                            num_classes: int = 1000, fold_bn: bool = False,
                            input_size: int | None = None) -> keras.Model:
    """Build EfficientNet-Lite ``variant`` (randomly initialised).

    Input: ``(size, size, 3)`` float32, channels-last, preprocessed.
    Output: logits ``(num_classes,)`` if ``include_top`` else the
    ``top_activation`` feature map ``(h, w, 1280)``.
    ``fold_bn=True`` builds the inference-only graph without BatchNorm layers
    (convolutions with bias); fill it with :func:`fold_batchnorm`.
    ``input_size``: another input side than the variant's own (the same layers and weights: every layer is
    convolutional up to the feature map, which grows with the side); see :func:`at_input_size`.
    """
    v = _variant(variant)
    size = int(input_size) if input_size else v.input_size
    inputs = keras.Input(shape=(size, size, 3), name="image")
    x = layers.Conv2D(STEM_FILTERS, 3, strides=2, padding="same", use_bias=fold_bn,
                      name="stem_conv")(inputs)
    x = _bn("stem_bn", fold_bn)(x)
    x = layers.ReLU(6.0, name="stem_activation")(x)
    for cfg in block_configs(v):
        x = _mbconv(x, cfg, fold_bn)
    x = _head_conv(x, fold_bn)
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dropout(v.dropout, name="top_dropout")(x)
        x = layers.Dense(num_classes, name="predictions")(x)
    return keras.Model(inputs, x, name=f"efficientnet_{v.name}")


def _head_conv(x, fold_bn: bool):
    x = layers.Conv2D(HEAD_FILTERS, 1, padding="same", use_bias=fold_bn, name="top_conv")(x)
    x = _bn("top_bn", fold_bn)(x)
    return layers.ReLU(6.0, name=FEATURE_LAYER)(x)


# ------------------------------------------------------------- the last stage
# Fine-tuning "the last backbone stage" means training the last block group
# (one MBConv block for every variant, it is not depth-scaled) and the 1x1 head
# convolution, on cached inputs of that stage: the frozen trunk runs once per image.

def last_stage_blocks(variant="lite0") -> list[BlockConfig]:
    """The MBConv blocks of the last block group."""
    configs = block_configs(variant)
    n_last = BLOCK_GROUPS[-1][0]  # not depth-scaled
    return configs[-n_last:]


def last_stage_input_layer(variant="lite0", fold_bn: bool = True) -> str:
    """Name of the layer whose output is the last stage's input (the end of the block before it)."""
    cfg = block_configs(variant)[-len(last_stage_blocks(variant)) - 1]
    p = f"blocks_{cfg.index}_"
    if cfg.has_skip:
        return p + "add"
    return p + ("project_conv" if fold_bn else "bn2")


def split_last_stage(folded: keras.Model, variant="lite0") -> tuple[keras.Model, keras.Model]:
    """``(trunk, last_stage)`` of a BatchNorm-folded backbone (:func:`fold_batchnorm`).

    ``trunk``: image -> input of the last stage (weights shared with ``folded``);
    ``last_stage``: that feature map -> ``top_activation`` (h, w, 1280), a new model
    with its own copy of the weights (so it can be trained while the trunk stays frozen).
    ``last_stage(trunk(image))`` equals ``folded``'s feature map.
    """
    v = _variant(variant)
    boundary = folded.get_layer(last_stage_input_layer(v, fold_bn=True)).output
    trunk = keras.Model(folded.inputs, boundary, name=f"{folded.name}_trunk")
    x = inputs = keras.Input(shape=tuple(boundary.shape[1:]), name="last_stage_input")
    for cfg in last_stage_blocks(v):
        x = _mbconv(x, cfg, fold_bn=True)
    x = _head_conv(x, fold_bn=True)
    last_stage = keras.Model(inputs, x, name=f"efficientnet_{v.name}_last_stage")
    for layer in last_stage.layers:
        if layer.weights:
            layer.set_weights(folded.get_layer(layer.name).get_weights())
    return trunk, last_stage


def _conv_bn_pairs(variant) -> list[tuple[str, str]]:
    pairs = [("stem_conv", "stem_bn")]
    for cfg in block_configs(variant):
        p = f"blocks_{cfg.index}_"
        if cfg.expand_ratio != 1:
            pairs.append((p + "expand_conv", p + "bn0"))
        pairs.append((p + "depthwise_conv", p + "bn1"))
        pairs.append((p + "project_conv", p + "bn2"))
    pairs.append(("top_conv", "top_bn"))
    return pairs


def at_input_size(model: keras.Model, variant, size: int) -> keras.Model:
    """A copy of ``model`` (built by :func:`build_efficientnet_lite` for ``variant``, folded or not, with or
    without its head) that takes ``size`` x ``size`` images, with the same weights."""
    include_top = any(layer.name == "predictions" for layer in model.layers)
    fold_bn = not any(isinstance(layer, layers.BatchNormalization) for layer in model.layers)
    num_classes = model.get_layer("predictions").units if include_top else 1000
    resized = build_efficientnet_lite(variant, include_top=include_top, num_classes=num_classes, fold_bn=fold_bn,
                                      input_size=size)
    resized.set_weights(model.get_weights())
    return resized


def fold_batchnorm(model: keras.Model, variant="lite0") -> keras.Model:
    """Inference-only copy of ``model`` with every BatchNorm folded into the
    preceding convolution (conv + bias).  Same outputs (up to float rounding),
    noticeably faster on CPU.  ``model`` must come from
    ``build_efficientnet_lite(variant, ...)`` (unfolded); the head, if any, is kept."""
    v = _variant(variant)
    include_top = any(layer.name == "predictions" for layer in model.layers)
    num_classes = model.get_layer("predictions").units if include_top else 1000
    folded = build_efficientnet_lite(v, include_top=include_top, num_classes=num_classes,
                                     fold_bn=True)
    for conv_name, bn_name in _conv_bn_pairs(v):
        (kernel,) = model.get_layer(conv_name).get_weights()
        bn = model.get_layer(bn_name)
        gamma, beta, mean, var = bn.get_weights()
        scale = gamma / np.sqrt(var + bn.epsilon)
        if isinstance(model.get_layer(conv_name), layers.DepthwiseConv2D):
            kernel = kernel * scale[None, None, :, None]
        else:
            kernel = kernel * scale[None, None, None, :]
        bias = beta - mean * scale
        folded.get_layer(conv_name).set_weights([kernel.astype(np.float32),
                                                 bias.astype(np.float32)])
    if include_top:
        folded.get_layer("predictions").set_weights(model.get_layer("predictions").get_weights())
    return folded
