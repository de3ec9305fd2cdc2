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

__all__ = ["build_cgd_head", "build_cgd_model", "build_descriptor_model", "DOMAIN_MODES"]


def build_cgd_head(
    feature_shape: Sequence[int],
    num_classes: int,
    descriptor_dim: int = 512,
    branches: Sequence[str] = ("spoc", "gem"),
    gem_p: float = 3.0,
    gem_trainable: bool = True,
    domains: str = "shared",
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
        domains: how product photos and street snapshots share the projections (see :data:`DOMAIN_MODES`):
            ``"shared"`` (one head for both), ``"separate"`` (each branch has one projection per kind),
            ``"adapter"`` (the shared projection plus a product-only correction, initialised to zero) or
            ``"affine"`` (the pooled features of product photos scaled and shifted per channel before the
            shared projection). Every mode but ``"shared"`` adds a second input ``is_item`` ``(B, 1)``: 1.0 for
            a product photo, 0.0 for a snapshot; the auxiliary classifier stays shared.

    Returns:
        ``keras.Model`` mapping ``(B, H, W, C)`` to
        ``{"descriptor": (B, descriptor_dim) unit-norm, "logits": (B, num_classes)}``.
    """
    branches = tuple(b.lower() for b in branches)
    if not branches:
        raise ValueError("at least one branch is required")
    if descriptor_dim % len(branches):
        raise ValueError(f"descriptor_dim={descriptor_dim} not divisible by {len(branches)} branches")
    if domains not in DOMAIN_MODES:
        raise ValueError(f"unknown domains mode {domains!r}; known: {', '.join(DOMAIN_MODES)}")
    branch_dim = descriptor_dim // len(branches)

    features = keras.Input(shape=tuple(feature_shape), name="features")
    is_item = keras.Input(shape=(1,), name="is_item") if domains != "shared" else None
    parts = []
    first_pooled = None
    for i, kind in enumerate(branches):
        kwargs = {"p": gem_p, "trainable_p": gem_trainable} if kind == "gem" else {}
        pooled = make_pooling(kind, name=f"pool_{i}_{kind}", **kwargs)(features)
        if i == 0:
            first_pooled = pooled
        proj = _domain_projection(pooled, is_item, domains, branch_dim, name=f"fc_{i}_{kind}")
        parts.append(L2Normalize(name=f"l2_{i}_{kind}")(proj))
    concat = parts[0] if len(parts) == 1 else keras.layers.Concatenate(name="concat")(parts)
    descriptor = L2Normalize(name="descriptor")(concat)

    aux = keras.layers.BatchNormalization(name="aux_bn")(first_pooled)
    logits = keras.layers.Dense(num_classes, name="aux_logits")(aux)
    inputs = features if is_item is None else [features, is_item]
    return keras.Model(inputs, {"descriptor": descriptor, "logits": logits}, name=name)


#: How a head treats the two kinds of image (:func:`build_cgd_head`'s ``domains``).
DOMAIN_MODES = ("shared", "separate", "adapter", "affine")


class _DomainAffine(keras.layers.Layer):
    """``g * (1 + is_item * a) + is_item * b`` per channel, ``a`` and ``b`` starting at zero (a snapshot passes
    unchanged; a product photo's pooled features get their own learnt scale and shift)."""

    def build(self, input_shape):
        channels = input_shape[0][-1]
        self.scale = self.add_weight(name="scale", shape=(channels,), initializer="zeros")
        self.shift = self.add_weight(name="shift", shape=(channels,), initializer="zeros")

    def call(self, inputs):
        pooled, is_item = inputs
        return pooled * (1.0 + is_item * self.scale) + is_item * self.shift


def _domain_projection(pooled, is_item, domains: str, units: int, name: str):
    """One branch's projection of its pooled features under the ``domains`` mode."""
    if domains == "shared":
        return keras.layers.Dense(units, use_bias=False, name=name)(pooled)
    if domains == "affine":
        moved = _DomainAffine(name=f"{name}_item_affine")([pooled, is_item])
        return keras.layers.Dense(units, use_bias=False, name=name)(moved)
    snapshot = keras.layers.Dense(units, use_bias=False, name=name)(pooled)
    if domains == "separate":
        item = keras.layers.Dense(units, use_bias=False, name=f"{name}_item")(pooled)
        return is_item * item + (1.0 - is_item) * snapshot
    correction = keras.layers.Dense(units, use_bias=False, kernel_initializer="zeros", name=f"{name}_item_delta")(pooled)
    return snapshot + is_item * correction  # "adapter"


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
