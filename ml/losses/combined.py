"""Weighted sum of losses: ``L = sum_k w_k * L_k(batch)``.

The CGD recipe is ``CombinedLoss({"arcface": (ArcFaceLoss(...), 1.0),
"classification": (ClassificationLoss(...), 1.0)})``.
:meth:`CombinedLoss.breakdown` returns every weighted term for logging.
"""

from __future__ import annotations

from typing import Mapping, Tuple

from keras import ops

from .base import LossBatch, MetricLoss

__all__ = ["CombinedLoss"]


class CombinedLoss(MetricLoss):
    name = "combined"

    def __init__(self, terms: Mapping[str, Tuple[MetricLoss, float]]):
        if not terms:
            raise ValueError("CombinedLoss needs at least one term")
        self.terms = {name: (loss, float(weight)) for name, (loss, weight) in terms.items()}

    @property
    def layers(self):
        out = []
        for loss, _ in self.terms.values():
            for layer in loss.layers:
                if all(layer is not seen for seen in out):
                    out.append(layer)
        return out

    def breakdown(self, batch: LossBatch) -> dict:
        """``{term_name: unweighted value, ..., "total": weighted sum}`` (scalar tensors)."""
        out = {}
        total = None
        for name, (loss, weight) in self.terms.items():
            value = loss(batch)
            out[name] = value
            term = ops.cast(value, "float32") * weight
            total = term if total is None else total + term
        out["total"] = total
        return out

    def compute(self, batch: LossBatch):
        return self.breakdown(batch)["total"]

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}: ({l!r}, {w})" for n, (l, w) in self.terms.items())
        return f"CombinedLoss({{{inner}}})"
