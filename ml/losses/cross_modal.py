"""Cross-modal contrastive loss: snapshots against items only (InfoNCE with all linked items as positives).

The retrieval tasks never compare a snapshot with a snapshot or an item with an
item: a street photo ranks catalogue items, an item ranks street photos.  This
loss trains exactly that, inside each batch.  With L2-normalised descriptors
``z``, temperature ``tau`` and ``S`` / ``I`` the batch's snapshots / items::

    s_ij     = <z_i, z_j> / tau
    for a snapshot i:  log p_ij = s_ij - log sum_{k in I} exp(s_ik)     (j in I)
    for an item i:     log p_ij = s_ij - log sum_{k in S} exp(s_ik)     (j in S)
    P(i)     = { j of the other kind : positive_mask[i, j] }   (linked: they share a look)
    L_i      = -(1 / |P(i)|) * sum_{j in P(i)} log p_ij
    L        = mean over anchors with |P(i)| > 0 of L_i        (0 if there are none)

Unlike :class:`~ml.losses.multi_positive.MultiPositiveContrastiveLoss`, images of
the same kind are neither positives nor negatives, so the easy snapshot-snapshot
pairs of one look do not dominate.  Needs ``LossBatch.is_snapshot``.
"""

from __future__ import annotations

from keras import ops

from .base import LossBatch, MetricLoss, positive_mask_from_labels
from .multi_positive import positives_nll, unit_rows

__all__ = ["CrossModalContrastiveLoss"]


class CrossModalContrastiveLoss(MetricLoss):
    name = "cross_modal"

    def __init__(self, temperature: float = 0.1):
        if temperature <= 0:
            raise ValueError("temperature must be > 0")
        self.temperature = float(temperature)

    def compute(self, batch: LossBatch):
        if batch.is_snapshot is None:
            raise ValueError("the cross_modal loss needs LossBatch.is_snapshot (which images are snapshots)")
        z = unit_rows(ops.cast(batch.descriptors, "float32"))
        mask = batch.positive_mask
        if mask is None:
            mask = positive_mask_from_labels(batch.labels)
        snap = ops.cast(ops.reshape(batch.is_snapshot, (-1,)), "float32")
        # 1 where i and j are of different kinds (a snapshot and an item): only they compete
        other_kind = ops.expand_dims(snap, 1) * ops.expand_dims(1.0 - snap, 0)
        return positives_nll(z, mask, other_kind + ops.transpose(other_kind), self.temperature)

    def __repr__(self) -> str:
        return f"CrossModalContrastiveLoss(temperature={self.temperature})"
