"""Recognising an uploaded photo as a product of the catalogue (pure numpy, no Django).

An upload is the catalogue product when it has the same bytes (SHA-256, checked by the caller) or when its
descriptor is a near-duplicate of the product's: cosine at least ``near_duplicate_cosine``.  A recognised
upload borrows the product's expert links (the looks that link it), as the evaluation's item queries do.

    match = near_duplicate(query_vec, candidate_vecs, settings)   # index into candidates, or None

The threshold is measured, not guessed (``ml.evaluation.recognition``): re-encoded, resized and cropped
copies of catalogue items against their nearest distinct item. Every model the recipe exports measures its own
on its training items; the default here (one model's value) is for cards written before that.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

__all__ = ["RecognitionSettings", "near_duplicate"]


@dataclass
class RecognitionSettings:
    """Stored in a model's card (a card without them gets these defaults); 0 turns near-duplicate recognition
    off (identical bytes only)."""

    #: the lowest cosine at which at most 1 % of photos of products NOT in the catalogue match a catalogue item,
    #: measured with the default recipe's model (cgd-dev, the 240 dev looks; bench/recognition_threshold.py,
    #: docs/RESULTS.md "Recognition threshold, session 10"): it recognises 80 % of JPEG re-encodes, a third of
    #: half-size copies and few crops
    near_duplicate_cosine: float = 0.9691
    #: how the threshold was measured for this model (``ml.evaluation.recognition.RecognitionMeasurement
    #: .settings``: items, false-match rate, share of each kind of copy recognised); None: the default above
    measured: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> "RecognitionSettings":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in names})


def near_duplicate(query_vec, candidate_vecs, settings: RecognitionSettings) -> tuple[int, float] | None:
    """(index of the most similar candidate, its cosine) when that cosine reaches the threshold, else None."""
    threshold = float(settings.near_duplicate_cosine)
    candidates = np.asarray(candidate_vecs, dtype=np.float32)
    if threshold <= 0 or candidates.size == 0:
        return None
    q = np.asarray(query_vec, dtype=np.float32).ravel()
    q = q / max(float(np.linalg.norm(q)), 1e-12)
    c = candidates / np.maximum(np.linalg.norm(candidates, axis=1, keepdims=True), 1e-12)
    sims = c @ q
    best = int(np.argmax(sims))
    return (best, float(sims[best])) if sims[best] >= threshold else None
