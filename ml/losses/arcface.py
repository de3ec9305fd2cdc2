"""ArcFace additive angular margin loss (Deng et al., 2019) on the descriptor.

With L2-normalised descriptor ``x_i`` and learnable class centres ``W_c``
(normalised on the fly), ``cos_ic = <x_i, W_c / ||W_c||>`` and ``theta = arccos(cos)``::

    target logit   s * cos(theta_{i,y_i} + m)
    other logits   s * cos_ic
    L = mean_i CE(softmax(logits_i), y_i)

``cos(theta + m)`` is computed as ``cos*cos(m) - sin*sin(m)`` with
``sin = sqrt(max(1 - cos^2, eps))`` (no arccos, so gradients stay finite at
``|cos| -> 1``). "Easy margin" is off: when ``theta + m > pi`` (``cos <= cos(pi - m)``),
the target logit falls back to the monotonic ``cos - m*sin(m)`` as in InsightFace.
With ``m = 0`` this is exactly softmax CE on ``s * cos`` logits.

The class centres live in :class:`ArcFaceCentres`, a serialisable keras layer;
``ArcFaceLoss.trainable_variables`` returns them so a custom training step can
update them alongside the model.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from .base import LossBatch, MetricLoss
from .classification import smoothed_cross_entropy

__all__ = ["ArcFaceCentres", "ArcFaceLoss"]


@keras.saving.register_keras_serializable(package="fashionsite")
class ArcFaceCentres(keras.layers.Layer):
    """Holds a ``(descriptor_dim, num_classes)`` centre matrix; ``call(x)`` returns
    the cosine matrix ``(B, num_classes)`` between L2-normalised ``x`` and the
    L2-normalised centres."""

    def __init__(self, num_classes: int, descriptor_dim: int, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.descriptor_dim = int(descriptor_dim)
        self.centres = self.add_weight(
            name="centres",
            shape=(self.descriptor_dim, self.num_classes),
            initializer="glorot_uniform",
            trainable=True,
            dtype="float32",
        )
        self.built = True

    def call(self, descriptors):
        x = ops.cast(descriptors, "float32")
        x = x * ops.rsqrt(ops.maximum(ops.sum(ops.square(x), axis=-1, keepdims=True), 1e-24))
        w = self.centres
        w = w * ops.rsqrt(ops.maximum(ops.sum(ops.square(w), axis=0, keepdims=True), 1e-24))
        return ops.matmul(x, w)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update({"num_classes": self.num_classes, "descriptor_dim": self.descriptor_dim})
        return config


class ArcFaceLoss(MetricLoss):
    """ArcFace loss owning its class-centre weights (see module docstring)."""

    name = "arcface"

    def __init__(
        self,
        num_classes: int,
        descriptor_dim: int,
        scale: float = 30.0,
        margin: float = 0.15,
        label_smoothing: float = 0.0,
        eps: float = 1e-7,
        centres: ArcFaceCentres | None = None,
    ):
        self.num_classes = int(num_classes)
        self.descriptor_dim = int(descriptor_dim)
        self.scale = float(scale)
        self.margin = float(margin)
        self.label_smoothing = float(label_smoothing)
        self.eps = float(eps)
        self.centres = centres if centres is not None else ArcFaceCentres(
            self.num_classes, self.descriptor_dim, name="arcface_centres")
        self._cos_m = math.cos(self.margin)
        self._sin_m = math.sin(self.margin)
        self._th = math.cos(math.pi - self.margin)
        self._mm = math.sin(math.pi - self.margin) * self.margin

    @property
    def layers(self):
        return [self.centres]

    def cosine(self, descriptors):
        """``(B, C)`` cosine similarities to the class centres."""
        return self.centres(descriptors)

    def logits(self, descriptors, labels):
        """Margin-adjusted, scaled logits ``(B, C)`` (useful for monitoring accuracy)."""
        cos = ops.clip(self.cosine(descriptors), -1.0 + self.eps, 1.0 - self.eps)
        labels = ops.cast(ops.reshape(labels, (-1,)), "int32")
        onehot = ops.one_hot(labels, self.num_classes, dtype="float32")
        if self.margin:
            sin = ops.sqrt(ops.maximum(1.0 - ops.square(cos), self.eps))
            phi = cos * self._cos_m - sin * self._sin_m
            phi = ops.where(cos > self._th, phi, cos - self._mm)
        else:
            phi = cos
        return self.scale * (onehot * phi + (1.0 - onehot) * cos)

    def compute(self, batch: LossBatch):
        logits = self.logits(batch.descriptors, batch.labels)
        return smoothed_cross_entropy(logits, batch.labels, self.num_classes, self.label_smoothing)

    def __repr__(self) -> str:
        return (f"ArcFaceLoss(num_classes={self.num_classes}, descriptor_dim={self.descriptor_dim}, "
                f"scale={self.scale}, margin={self.margin})")
