"""Metric-learning losses behind one interface (see :mod:`ml.losses.base`).

Registry / factory::

    loss = build_loss("arcface+multi_positive", num_classes, descriptor_dim,
                      arcface={"margin": 0.2}, multi_positive={"temperature": 0.05},
                      weights={"arcface": 1.0, "multi_positive": 0.5})
    loss = build_loss("arcface", num_classes, descriptor_dim, scale=30, margin=0.15)

Any ``"+"``-joined combination of the single losses in :data:`LOSSES` is valid;
single-loss names take their options as plain keyword arguments, combined names
take one options dict per component plus an optional ``weights`` dict (default 1.0).

Custom training step (TensorFlow backend)::

    head = build_cgd_head(...)
    loss = build_loss("arcface+classification", C, D)
    variables = head.trainable_variables + loss.trainable_variables
    with tf.GradientTape() as tape:
        out = head(features, training=True)
        value = loss(LossBatch.from_outputs(out, labels, positive_mask))
    grads = tape.gradient(value, variables)
    optimizer.apply_gradients(zip(grads, variables))

In a ``keras.Model`` subclass, assign ``self.loss_layers = loss.layers`` in
``__init__`` so the ArcFace centres are tracked (and saved with the model's weights).

Adding a loss: write a new module with a ``MetricLoss`` subclass and register
a builder with :func:`register_loss`.
"""

from __future__ import annotations

from typing import Callable, Dict

from .arcface import ArcFaceCentres, ArcFaceLoss
from .base import LossBatch, MetricLoss, positive_mask_from_labels
from .classification import ClassificationLoss, smoothed_cross_entropy
from .combined import CombinedLoss
from .cross_modal import CrossModalContrastiveLoss
from .multi_positive import MultiPositiveContrastiveLoss

__all__ = [
    "LossBatch", "MetricLoss", "positive_mask_from_labels",
    "ClassificationLoss", "smoothed_cross_entropy",
    "ArcFaceCentres", "ArcFaceLoss",
    "MultiPositiveContrastiveLoss", "CrossModalContrastiveLoss", "CombinedLoss",
    "LOSSES", "register_loss", "build_loss",
]

# name -> builder(num_classes, descriptor_dim, **options) -> MetricLoss
LOSSES: Dict[str, Callable[..., MetricLoss]] = {}


def register_loss(name: str):
    """Decorator registering ``builder(num_classes, descriptor_dim, **options)``."""

    def deco(builder):
        LOSSES[name] = builder
        return builder

    return deco


@register_loss("classification")
def _build_classification(num_classes, descriptor_dim, **options):
    return ClassificationLoss(num_classes, **options)


@register_loss("arcface")
def _build_arcface(num_classes, descriptor_dim, **options):
    return ArcFaceLoss(num_classes, descriptor_dim, **options)


@register_loss("multi_positive")
def _build_multi_positive(num_classes, descriptor_dim, **options):
    return MultiPositiveContrastiveLoss(**options)


@register_loss("cross_modal")
def _build_cross_modal(num_classes, descriptor_dim, **options):
    return CrossModalContrastiveLoss(**options)


def _build_combined(names):
    def builder(num_classes, descriptor_dim, weights=None, **options):
        weights = dict(weights or {})
        unknown = set(options) - set(names)
        if unknown:
            raise TypeError(f"options for a combined loss must be keyed by component name "
                            f"{names}; got {sorted(unknown)}")
        extra = set(weights) - set(names)
        if extra:
            raise TypeError(f"weights for unknown components {sorted(extra)}")
        terms = {}
        for n in names:
            terms[n] = (LOSSES[n](num_classes, descriptor_dim, **dict(options.get(n) or {})),
                        float(weights.get(n, 1.0)))
        return CombinedLoss(terms)

    return builder


for _combo in ("arcface+classification", "arcface+multi_positive", "multi_positive+classification",
               "arcface+multi_positive+classification"):
    LOSSES[_combo] = _build_combined(_combo.split("+"))


def build_loss(name: str, num_classes: int, descriptor_dim: int, **options) -> MetricLoss:
    """Instantiate a registered loss (or any ``"+"``-joined combination of registered
    single losses) -- see the module docstring for the options convention."""
    if name in LOSSES:
        return LOSSES[name](num_classes, descriptor_dim, **options)
    parts = name.split("+")
    if len(parts) > 1 and all(p in LOSSES and "+" not in p for p in parts):
        return _build_combined(parts)(num_classes, descriptor_dim, **options)
    raise KeyError(f"unknown loss {name!r}; registered: {sorted(LOSSES)}")
