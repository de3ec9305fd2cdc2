"""Softmax cross-entropy on the auxiliary classifier logits, as in CGD.

    p = softmax(logits / T)
    y = (1 - eps) * onehot(label) + eps / C        (label smoothing)
    L = mean_i  -sum_c y_ic log p_ic

Defaults follow the CGD paper: ``label_smoothing=0.1``, ``temperature=0.5``.
With ``label_smoothing=0`` and ``temperature=1`` it is plain softmax cross-entropy.
"""

from __future__ import annotations

from keras import ops

from .base import LossBatch, MetricLoss

__all__ = ["ClassificationLoss", "smoothed_cross_entropy"]


def smoothed_cross_entropy(logits, labels, num_classes: int, label_smoothing: float = 0.0):
    """Mean label-smoothed softmax CE of ``(B, C)`` logits against ``(B,)`` int labels."""
    logits = ops.cast(logits, "float32")
    labels = ops.cast(ops.reshape(labels, (-1,)), "int32")
    onehot = ops.one_hot(labels, num_classes, dtype="float32")
    if label_smoothing:
        onehot = onehot * (1.0 - label_smoothing) + label_smoothing / num_classes
    log_p = ops.log_softmax(logits, axis=-1)
    return ops.mean(-ops.sum(onehot * log_p, axis=-1))


class ClassificationLoss(MetricLoss):
    """Temperature-scaled, label-smoothed CE on ``batch.logits``."""

    name = "classification"

    def __init__(self, num_classes: int, label_smoothing: float = 0.1, temperature: float = 0.5):
        if temperature <= 0:
            raise ValueError("temperature must be > 0")
        self.num_classes = int(num_classes)
        self.label_smoothing = float(label_smoothing)
        self.temperature = float(temperature)

    def compute(self, batch: LossBatch):
        if batch.logits is None:
            raise ValueError("ClassificationLoss needs batch.logits (the CGD auxiliary classifier)")
        return smoothed_cross_entropy(
            ops.cast(batch.logits, "float32") / self.temperature,
            batch.labels,
            self.num_classes,
            self.label_smoothing,
        )

    def __repr__(self) -> str:
        return (f"ClassificationLoss(num_classes={self.num_classes}, "
                f"label_smoothing={self.label_smoothing}, temperature={self.temperature})")
