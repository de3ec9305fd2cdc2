"""Global pooling layers used by the Combined Global Descriptor (CGD) head.

All layers map a channels-last feature map ``(B, H, W, C)`` to ``(B, C)``.

* :class:`SPoC` -- sum/average pooling, ``f_c = mean_{h,w} x_{hwc}``.
* :class:`MAC`  -- maximum activation of convolutions, ``f_c = max_{h,w} x_{hwc}``.
* :class:`GeM`  -- generalised mean, ``f_c = (mean_{h,w} max(x_{hwc}, eps)^p)^(1/p)``;
  ``p = 1`` is SPoC (for non-negative inputs) and ``p -> inf`` approaches MAC.

Every layer is registered with ``keras.saving`` (package ``"fashionsite"``) so a
model containing it round-trips through ``model.save("x.keras")``.
"""

from __future__ import annotations

import keras
from keras import ops

__all__ = ["SPoC", "MAC", "GeM", "L2Normalize", "POOLINGS", "make_pooling"]


@keras.saving.register_keras_serializable(package="fashionsite")
class SPoC(keras.layers.Layer):
    """Global average pooling: (B, H, W, C) -> (B, C)."""

    def call(self, inputs):
        return ops.mean(inputs, axis=(1, 2))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])


@keras.saving.register_keras_serializable(package="fashionsite")
class MAC(keras.layers.Layer):
    """Global max pooling: (B, H, W, C) -> (B, C)."""

    def call(self, inputs):
        return ops.max(inputs, axis=(1, 2))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])


@keras.saving.register_keras_serializable(package="fashionsite")
class GeM(keras.layers.Layer):
    """Generalised-mean pooling with a (by default trainable) scalar exponent p.

    ``f_c = (1/(H W) * sum_{h,w} clip(x_{hwc}, eps, inf)^p)^(1/p)``

    Inputs are clipped at ``eps`` (GeM is defined for non-negative activations;
    EfficientNet features after swish can be slightly negative).
    """

    def __init__(self, p: float = 3.0, trainable_p: bool = True, eps: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        self.initial_p = float(p)
        self.trainable_p = bool(trainable_p)
        self.eps = float(eps)

    def build(self, input_shape):
        self.p = self.add_weight(
            name="p",
            shape=(),
            initializer=keras.initializers.Constant(self.initial_p),
            trainable=self.trainable_p,
        )
        super().build(input_shape)

    def call(self, inputs):
        p = ops.cast(self.p, inputs.dtype)
        x = ops.maximum(inputs, self.eps)
        # scale by the spatial max first: m * mean((x/m)^p)^(1/p) is the same value but
        # cannot overflow for large p (e.g. 8^60 is inf in float32)
        m = ops.max(x, axis=(1, 2), keepdims=True)
        pooled = ops.power(ops.mean(ops.power(x / m, p), axis=(1, 2)), 1.0 / p)
        return pooled * ops.squeeze(m, axis=(1, 2))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update({"p": self.initial_p, "trainable_p": self.trainable_p, "eps": self.eps})
        return config


@keras.saving.register_keras_serializable(package="fashionsite")
class L2Normalize(keras.layers.Layer):
    """Row-wise L2 normalisation ``x / max(||x||_2, eps)`` along ``axis``."""

    def __init__(self, axis: int = -1, eps: float = 1e-12, **kwargs):
        super().__init__(**kwargs)
        self.axis = int(axis)
        self.eps = float(eps)

    def call(self, inputs):
        sq = ops.sum(ops.square(inputs), axis=self.axis, keepdims=True)
        return inputs * ops.rsqrt(ops.maximum(sq, self.eps * self.eps))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"axis": self.axis, "eps": self.eps})
        return config


@keras.saving.register_keras_serializable(package="fashionsite")
class HorizontalFlip(keras.layers.Layer):
    """The image batch ``(B, H, W, C)`` mirrored left to right (flip at test time, inside the model)."""

    def call(self, inputs):
        return ops.flip(inputs, axis=2)

    def compute_output_shape(self, input_shape):
        return input_shape


POOLINGS = {"spoc": SPoC, "mac": MAC, "gem": GeM}


def make_pooling(kind: str, **kwargs) -> keras.layers.Layer:
    """Instantiate a pooling layer by short name (``"spoc"``, ``"mac"``, ``"gem"``)."""
    key = kind.lower()
    if key not in POOLINGS:
        raise ValueError(f"unknown pooling {kind!r}; choose from {sorted(POOLINGS)}")
    return POOLINGS[key](**kwargs)
