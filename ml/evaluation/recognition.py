"""When is an uploaded photo a product of the catalogue? A model's near-duplicate threshold, measured.

    measurement = measure_recognition(embedder, item_paths, sample=200)
    card.recognition = measurement.settings()      # what ml.retrieval.recognition.near_duplicate then uses

Every item photo is embedded with the model. For ``sample`` of them (evenly spaced), the copies a shop or a user
would upload of the same product are made (:data:`COPIES`: re-encoded as JPEG at quality 60, half size, the
central 85 %, all three). A copy is *recognised* when its most similar catalogue item is the original with a
cosine at least the threshold. A *false match* is a photo of a product the catalogue does not hold matched to a
catalogue item: each sampled item is left out of the catalogue, and it and its copies are matched against the
rest. The threshold is the lowest cosine at which at most ``max_false`` (1 %) of those photos match.

The cosine at which 1 % of unknown products match moves with the model, so every exported model measures its
own (``ml.training.recipe``); ``bench/recognition_threshold.py`` prints the whole table for a model directory.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ml.images import load_rgb, to_input_pixels
from ml.retrieval.recognition import RecognitionSettings

__all__ = ["COPIES", "RecognitionMeasurement", "measure_recognition", "MAX_FALSE_MATCHES"]

#: the share of photos of products not in the catalogue that may be taken for a catalogue item
MAX_FALSE_MATCHES = 0.01


def _reencode(image: Image.Image, quality: int = 60) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return load_rgb(io.BytesIO(buffer.getvalue()))


def _half(image: Image.Image) -> Image.Image:
    return image.resize((max(1, image.width // 2), max(1, image.height // 2)))


def _crop(image: Image.Image, keep: float = 0.85) -> Image.Image:
    w, h = image.size
    dx, dy = int(w * (1 - keep) / 2), int(h * (1 - keep) / 2)
    return image.crop((dx, dy, w - dx, h - dy))


#: the copies of a catalogue photo an upload may be (label -> PIL image -> PIL image)
COPIES = {"JPEG q60": _reencode, "half size": _half, "central 85 % crop": _crop,
          "all three": lambda im: _reencode(_half(_crop(im)))}


@dataclass
class RecognitionMeasurement:
    """What :func:`measure_recognition` found: the threshold and the rates behind it."""

    threshold: float
    catalogue: int                 # item photos embedded
    sample: int                    # of them copied and left out
    max_false: float
    #: per copy kind: (is the nearest item the original, its cosine), one entry per sampled item
    nearest: dict[str, tuple[np.ndarray, np.ndarray]] = field(repr=False)
    #: the best cosine of each photo of a product not in the catalogue to any catalogue item
    outside: np.ndarray = field(repr=False)

    def recognised(self, threshold: float | None = None) -> dict[str, float]:
        """Per copy kind: the share recognised as the right item at ``threshold`` (default: the measured one)."""
        t = self.threshold if threshold is None else threshold
        return {label: float(np.mean(right & (cos >= t))) for label, (right, cos) in self.nearest.items()}

    def nearest_is_original(self) -> dict[str, float]:
        return {label: float(np.mean(right)) for label, (right, _) in self.nearest.items()}

    def false_matches(self, threshold: float | None = None) -> float:
        t = self.threshold if threshold is None else threshold
        return float(np.mean(self.outside >= t))

    def settings(self) -> RecognitionSettings:
        """The card's recognition settings: the threshold and the rates it was chosen with."""
        return RecognitionSettings(
            near_duplicate_cosine=round(self.threshold, 4),
            measured={"catalogue_items": self.catalogue, "sampled_items": self.sample,
                      "max_false_matches": self.max_false,
                      "false_matches": round(self.false_matches(), 4),
                      "recognised": {k: round(v, 4) for k, v in self.recognised().items()}})


def _embed_images(embedder, images, batch: int = 16) -> np.ndarray:
    size = embedder.input_size
    out = [embedder.embed_batch(np.stack([to_input_pixels(im, size) for im in images[s:s + batch]]))
           for s in range(0, len(images), batch)]
    return np.concatenate(out) if out else np.zeros((0, embedder.dim), np.float32)


def measure_recognition(embedder, item_paths, sample: int = 200, max_false: float = MAX_FALSE_MATCHES,
                        progress: bool = False) -> RecognitionMeasurement | None:
    """The near-duplicate threshold of ``embedder`` on the item photos ``item_paths`` (the module docstring);
    None when fewer than two photos can be read (nothing to tell a product from another with)."""
    names, catalogue, _errors = embedder.embed_files([Path(p) for p in item_paths], progress=progress)
    if len(names) < 2:
        return None
    picks = np.linspace(0, len(names) - 1, min(int(sample), len(names))).round().astype(int)
    originals = [load_rgb(names[i]) for i in picks]
    rows = np.arange(len(picks))
    nearest, copy_sims = {}, []
    for label, make in COPIES.items():
        sims = _embed_images(embedder, [make(im) for im in originals]) @ catalogue.T    # (sample, catalogue)
        nearest[label] = (sims.argmax(axis=1) == picks, sims.max(axis=1))
        copy_sims.append(sims)
    outside = []
    for sims in [catalogue[picks] @ catalogue.T, *copy_sims]:
        left_out = sims.copy()   # the original left out of the catalogue: the best other item is a false match
        left_out[rows, picks] = -np.inf
        outside.append(left_out.max(axis=1))
    outside = np.concatenate(outside)
    candidates = np.unique(np.round(np.concatenate([outside, *[cos for _, cos in nearest.values()]]), 4))
    threshold = next((float(t) for t in candidates if np.mean(outside >= t) <= max_false), 1.0)
    return RecognitionMeasurement(threshold=threshold, catalogue=len(names), sample=len(picks),
                                  max_false=max_false, nearest=nearest, outside=outside)
