"""Multi-positive contrastive (InfoNCE / SupCon "L_out") loss over a batch.

With L2-normalised descriptors ``z`` and temperature ``tau``::

    s_ij        = <z_i, z_j> / tau
    log p_ij    = s_ij - log sum_{k != i} exp(s_ik)              (j != i)
    P(i)        = { j != i : positive_mask[i, j] }
    L_i         = -(1 / |P(i)|) * sum_{j in P(i)} log p_ij
    L           = mean over anchors with |P(i)| > 0 of L_i        (0 if there are none)

``positive_mask[i, j]`` is True when images i and j share at least one look
(computed by the sampler from the link graph, so an item in two looks is
positive to both looks' images). The diagonal is always ignored.
Note the minimum is not 0 but ``mean_i log |P(i)|`` (reached when all positives
coincide and negatives are infinitely far), so monitor it relative to that floor. If
``positive_mask`` is None, ``labels[i] == labels[j]`` is used.
"""

from __future__ import annotations

from keras import ops

from .base import LossBatch, MetricLoss, positive_mask_from_labels

__all__ = ["MultiPositiveContrastiveLoss", "positives_nll", "unit_rows"]


def unit_rows(z):
    return z * ops.rsqrt(ops.maximum(ops.sum(ops.square(z), axis=-1, keepdims=True), 1e-24))


def positives_nll(z, positive_mask, candidates, temperature: float):
    """The multi-positive InfoNCE above with a choice of who competes: ``candidates[i, j]`` 1 where
    image j is in anchor i's softmax (and may be its positive), 0 elsewhere (the diagonal, and for
    the cross-modal loss the images of the anchor's own kind)."""
    pos = ops.cast(positive_mask, "float32") * candidates
    sim = ops.matmul(z, ops.transpose(z)) / temperature
    # leave non-candidates out of the denominator with a large negative value (finite -> no NaN)
    sim = sim - (1.0 - candidates) * 1e9
    log_prob = sim - ops.logsumexp(sim, axis=1, keepdims=True)
    n_pos = ops.sum(pos, axis=1)
    per_anchor = -ops.sum(pos * log_prob, axis=1) / ops.maximum(n_pos, 1.0)
    has_pos = ops.cast(n_pos > 0, "float32")
    return ops.sum(per_anchor * has_pos) / ops.maximum(ops.sum(has_pos), 1.0)


class MultiPositiveContrastiveLoss(MetricLoss):
    name = "multi_positive"

    def __init__(self, temperature: float = 0.05, normalize: bool = True):
        if temperature <= 0:
            raise ValueError("temperature must be > 0")
        self.temperature = float(temperature)
        self.normalize = bool(normalize)

    def compute(self, batch: LossBatch):
        z = ops.cast(batch.descriptors, "float32")
        if self.normalize:
            z = unit_rows(z)
        mask = batch.positive_mask
        if mask is None:
            mask = positive_mask_from_labels(batch.labels)
        not_self = 1.0 - ops.eye(ops.shape(z)[0], dtype="float32")
        return positives_nll(z, mask, not_self, self.temperature)

    def __repr__(self) -> str:
        return f"MultiPositiveContrastiveLoss(temperature={self.temperature})"
