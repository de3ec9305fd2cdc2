"""Combined Global Descriptor (CGD) head and model builders (Jun et al., 2019).

Architecture of the head (input: a backbone feature map ``(B, H, W, C)``)::

    for each branch b in branches (e.g. ("spoc", "gem")):
        g_b = pool_b(F)                       # (B, C)
        d_b = L2(Dense(dim / n_branches, no bias)(g_b))
    descriptor = L2(concat(d_1, ..., d_n))    # (B, dim), unit norm
    logits     = Dense(num_classes)(BatchNorm(g_1))   # auxiliary head, FIRST branch only

The head is a ``keras.Model`` whose output is a dict
``{"descriptor": (B, dim), "logits": (B, num_classes)}``.
Because training mostly runs on cached (frozen-backbone) feature maps the head
takes a feature map, not an image; :func:`build_cgd_model` composes it with a
backbone feature extractor, and :func:`build_descriptor_model` strips the
auxiliary classifier for inference/export.
"""

from __future__ import annotations

from typing import Sequence

import keras

from .pooling import L2Normalize, make_pooling

__all__ = ["build_cgd_head", "build_cgd_model", "build_descriptor_model"]


def build_cgd_head(
    feature_shape: Sequence[int],
    num_classes: int,
    descriptor_dim: int = 512,
    branches: Sequence[str] = ("spoc", "gem"),
    gem_p: float = 3.0,
    gem_trainable: bool = True,
    name: str = "cgd_head",
) -> keras.Model:
    """Build the CGD head on a feature-map input.

    Args:
        feature_shape: ``(H, W, C)`` of the backbone feature map, e.g. ``(7, 7, 1280)``.
            ``H`` and ``W`` may be ``None`` for variable resolution.
        num_classes: number of classes (looks) of the auxiliary classifier.
        descriptor_dim: final descriptor size; must be divisible by ``len(branches)``.
        branches: pooling names from ``{"spoc", "mac", "gem"}``; the first one
            feeds the auxiliary classifier.
        gem_p / gem_trainable: initial exponent and trainability for GeM branches.

    Returns:
        ``keras.Model`` mapping ``(B, H, W, C)`` to
        ``{"descriptor": (B, descriptor_dim) unit-norm, "logits": (B, num_classes)}``.
    """
    branches = tuple(b.lower() for b in branches)
    if not branches:
        raise ValueError("at least one branch is required")
    if descriptor_dim % len(branches):
        raise ValueError(f"descriptor_dim={descriptor_dim} not divisible by {len(branches)} branches")
    branch_dim = descriptor_dim // len(branches)

    features = keras.Input(shape=tuple(feature_shape), name="features")
    parts = []
    first_pooled = None
    for i, kind in enumerate(branches):
        kwargs = {"p": gem_p, "trainable_p": gem_trainable} if kind == "gem" else {}
        pooled = make_pooling(kind, name=f"pool_{i}_{kind}", **kwargs)(features)
        if i == 0:
            first_pooled = pooled
        proj = keras.layers.Dense(branch_dim, use_bias=False, name=f"fc_{i}_{kind}")(pooled)
        parts.append(L2Normalize(name=f"l2_{i}_{kind}")(proj))
    concat = parts[0] if len(parts) == 1 else keras.layers.Concatenate(name="concat")(parts)
    descriptor = L2Normalize(name="descriptor")(concat)

    aux = keras.layers.BatchNormalization(name="aux_bn")(first_pooled)
    logits = keras.layers.Dense(num_classes, name="aux_logits")(aux)
    return keras.Model(features, {"descriptor": descriptor, "logits": logits}, name=name)


def build_cgd_model(backbone_feature_model: keras.Model, head: keras.Model, name: str = "cgd") -> keras.Model:
    """Compose ``image -> backbone feature map -> CGD head``.

    Returns a ``keras.Model`` with the backbone's input(s) and the head's dict
    output ``{"descriptor", "logits"}``. Weights are shared with the given models.
    """
    inputs = backbone_feature_model.inputs
    inputs = inputs[0] if len(inputs) == 1 else inputs
    outputs = head(backbone_feature_model(inputs))
    return keras.Model(inputs, outputs, name=name)


def build_descriptor_model(model: keras.Model, name: str | None = None) -> keras.Model:
    """Inference-only view of a CGD head or full model: same input, output is the
    ``(B, dim)`` unit-norm descriptor only (the auxiliary classifier is dropped)."""
    out = model.output
    if not isinstance(out, dict) or "descriptor" not in out:
        raise ValueError("model must have a dict output with a 'descriptor' key")
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return keras.Model(inputs, out["descriptor"], name=name or f"{model.name}_descriptor")
