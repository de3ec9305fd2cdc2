"""Common interface for metric-learning losses.

Every loss is a small object with the SAME call signature::

    loss_value = loss(batch)        # scalar float32 tensor

where ``batch`` is a :class:`LossBatch`:

* ``descriptors``   -- ``(B, D)`` float tensor, L2-normalised (CGD "descriptor" output).
* ``labels``        -- ``(B,)`` int tensor, the look (class) index each image was drawn for,
  in ``[0, num_classes)``.
* ``logits``        -- ``(B, num_classes)`` auxiliary classifier logits (CGD "logits"
  output) or ``None`` if the model has no classifier.
* ``positive_mask`` -- ``(B, B)`` bool tensor, ``True`` where two images share at least
  one look (from :class:`ml.training.sampler.LookBalancedSampler`); ``None`` means
  "derive from labels" (``labels[i] == labels[j]``). The diagonal is ignored by losses.
* ``is_snapshot``   -- ``(B,)`` bool tensor, ``True`` for street snapshots, ``False`` for
  catalogue items, or ``None`` when unknown (losses that need it say so).

Losses that own weights (e.g. ArcFace class centres) keep them in keras layers and
expose them via :attr:`MetricLoss.trainable_variables` and :attr:`MetricLoss.layers`;
the training step must add ``loss.trainable_variables`` to the variables it
differentiates and updates (see ``ml/losses/__init__.py`` for an example).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional

import keras
from keras import ops

__all__ = ["LossBatch", "MetricLoss", "positive_mask_from_labels"]


@dataclass
class LossBatch:
    """Everything a loss may need from one training batch (see module docstring)."""

    descriptors: Any
    labels: Any
    logits: Optional[Any] = None
    positive_mask: Optional[Any] = None
    is_snapshot: Optional[Any] = None

    @classmethod
    def from_outputs(cls, outputs: dict, labels, positive_mask=None, is_snapshot=None) -> "LossBatch":
        """Build from a CGD head output dict ``{"descriptor", "logits"}``."""
        return cls(
            descriptors=outputs["descriptor"],
            labels=labels,
            logits=outputs.get("logits"),
            positive_mask=positive_mask,
            is_snapshot=is_snapshot,
        )


def positive_mask_from_labels(labels):
    """``(B,)`` int labels -> ``(B, B)`` bool mask ``labels[i] == labels[j]``."""
    labels = ops.reshape(labels, (-1,))
    return ops.equal(ops.expand_dims(labels, 1), ops.expand_dims(labels, 0))


class MetricLoss:
    """Base class: subclasses implement :meth:`compute` (``LossBatch -> scalar``).

    ``__call__`` just forwards to :meth:`compute`; losses with weights override
    :attr:`layers` to return the keras layers that own them.
    """

    name: str = "loss"

    def __call__(self, batch: LossBatch):
        return self.compute(batch)

    def compute(self, batch: LossBatch):  # pragma: no cover - interface
        raise NotImplementedError

    @property
    def layers(self) -> List[keras.layers.Layer]:
        """Keras layers owning this loss's weights (empty for weightless losses).

        Assign this list to an attribute of a ``keras.Model`` subclass
        (``self.loss_layers = loss.layers``) to have Keras track/save the weights.
        """
        return []

    @property
    def trainable_variables(self) -> list:
        """Trainable variables to include in the optimizer update."""
        out = []
        for layer in self.layers:
            out.extend(layer.trainable_variables)
        return out

    @property
    def variables(self) -> list:
        out = []
        for layer in self.layers:
            out.extend(layer.variables)
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
