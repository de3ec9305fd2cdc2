"""The colour words of a garment in a product photo ("navy", "cream and navy"), from its own pixels (no Django).

Product photos show the garment on a studio background (near-uniform white, grey or a flat colour, touching the
borders), often worn by a model. Only the garment's pixels should be named:

1. The photo is shrunk to at most ``WORK_SIZE`` pixels a side (cheap: a few milliseconds a photo).
2. Background: the colours of the border frame are clustered; the border colours covering at least
   ``BORDER_SHARE`` of the frame are background colours, and every pixel within ``BACKGROUND_DELTA_E`` of one
   that is connected to the border through such pixels is background (a flood from the frame, so a white
   garment in the middle of a white photo stays, as long as its outline separates it).
3. Skin: pixels in the usual skin cluster of YCrCb (with R > G > B) are left out, unless they are most of
   what is left (then the garment itself is skin-coloured: beige, camel, tan).
4. The remaining pixels are clustered by k-means in CIE Lab; each cluster's centre gets the nearest name of
   ``PALETTE`` (CIE76 distance, lightness weighted by ``LIGHTNESS_WEIGHT``), clusters of the same name merge.
5. The most common name is the colour. A second name is added when it covers at least ``SECOND_SHARE`` of the
   garment's pixels and its colour is at least ``SECOND_DELTA_E`` from the first (a two-tone item), so the
   shading of one colour (a black coat's grey highlights) does not become a second colour.

The thresholds were set on the first half of ``data/labels/item_colours.csv``; ``bench/colour_accuracy.py``
reports the accuracy on both halves and on ``data/labels/item_colours_fresh.csv`` (labelled after they were
frozen).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage.color import rgb2lab

__all__ = ["PALETTE", "ColourShare", "garment_mask", "garment_colours", "colour_words", "name_of"]

WORK_SIZE = 128
BORDER = 3  # the frame's width in pixels of the shrunk photo
BORDER_SHARE = 0.15
BACKGROUND_DELTA_E = 6.0
MIN_GARMENT_SHARE = 0.04  # below this the background rule ate the garment: fall back to a milder one
SKIN_MAX_SHARE = 0.5
CENTRE_SIGMA = 0.5
CLUSTERS = 5
SAMPLE = 2000
LIGHTNESS_WEIGHT = 0.6
SECOND_SHARE = 0.25
SECOND_DELTA_E = 55.0

# Names and reference sRGB colours; a name may have several references (its light and dark shades).
PALETTE: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("black", (18, 18, 20)),
    ("black", (40, 40, 44)),
    ("grey", (90, 90, 92)),
    ("grey", (135, 135, 137)),
    ("grey", (185, 185, 188)),
    ("white", (246, 246, 246)),
    ("cream", (238, 230, 208)),
    ("beige", (206, 186, 150)),
    ("brown", (120, 80, 45)),
    ("brown", (165, 115, 60)),
    ("khaki", (160, 150, 105)),
    ("khaki", (125, 127, 105)),
    ("olive", (95, 100, 55)),
    ("green", (50, 120, 65)),
    ("navy", (28, 34, 68)),
    ("navy", (32, 38, 56)),
    ("navy", (45, 55, 95)),
    ("blue", (40, 85, 170)),
    ("light blue", (150, 185, 220)),
    ("red", (195, 30, 40)),
    ("burgundy", (110, 28, 42)),
    ("pink", (232, 165, 185)),
    ("orange", (230, 120, 40)),
    ("yellow", (235, 205, 60)),
    ("purple", (95, 55, 120)),
    ("purple", (78, 36, 64)),
    ("purple", (170, 150, 205)),
)
_PALETTE_NAMES = np.array([name for name, _ in PALETTE], dtype=object)
_PALETTE_LAB = rgb2lab(np.array([rgb for _, rgb in PALETTE], dtype=np.float64)[None] / 255.0)[0]


@dataclass(frozen=True)
class ColourShare:
    name: str
    share: float  # of the garment's pixels
    lab: tuple[float, float, float]  # the pixels' mean colour


def _shrunk(image: Image.Image) -> np.ndarray:
    image = image.convert("RGB")
    scale = WORK_SIZE / max(image.size)
    if scale < 1:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.NEAREST)  # true pixel colours: averaging turns stripes grey
    return np.asarray(image, dtype=np.float64) / 255.0


def _squared_distances(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    return np.maximum(
        (points**2).sum(axis=1)[:, None] - 2 * points @ centres.T + (centres**2).sum(axis=1)[None], 0
    )


def _kmeans(points: np.ndarray, k: int, iterations: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(centres, labels): k-means with k-means++ starts, deterministic for a seed."""
    rng = np.random.default_rng(seed)
    k = min(k, len(points))
    centres = points[[rng.integers(len(points))]]
    closest = _squared_distances(points, centres)[:, 0]
    for _ in range(1, k):
        if closest.sum() == 0:
            break
        centres = np.vstack([centres, points[rng.choice(len(points), p=closest / closest.sum())]])
        closest = np.minimum(closest, _squared_distances(points, centres[-1:])[:, 0])
    for _ in range(iterations):
        labels = _squared_distances(points, centres).argmin(axis=1)
        counts = np.bincount(labels, minlength=len(centres))
        sums = np.stack([np.bincount(labels, weights=points[:, d], minlength=len(centres)) for d in range(3)], 1)
        updated = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], centres)
        if np.allclose(updated, centres):
            break
        centres = updated
    return centres, _squared_distances(points, centres).argmin(axis=1)


def _background(lab: np.ndarray, delta_e: float) -> np.ndarray:
    """Pixels connected to the frame through colours close to the frame's main colours."""
    height, width, _ = lab.shape
    frame = np.zeros((height, width), dtype=bool)
    b = max(1, min(BORDER, height // 4, width // 4))
    frame[:b], frame[-b:], frame[:, :b], frame[:, -b:] = True, True, True, True
    centres, labels = _kmeans(lab[frame], 4, seed=1)
    shares = np.bincount(labels, minlength=len(centres)) / len(labels)
    centres = centres[shares >= BORDER_SHARE]
    close = (np.sqrt(((lab[:, :, None, :] - centres[None, None]) ** 2).sum(axis=3)) < delta_e).any(axis=2)
    components, _ = ndimage.label(close)
    touching = np.unique(components[frame & close])
    return np.isin(components, touching[touching > 0])


def _skin(rgb: np.ndarray) -> np.ndarray:
    """The usual skin cluster: 135 <= Cr <= 173, 80 <= Cb <= 127 (of 255) with R > G > B and R - G >= 12."""
    r, g, b = (rgb[..., i] * 255 for i in range(3))
    cr = 128 + 0.5 * r - 0.4187 * g - 0.0813 * b
    cb = 128 - 0.1687 * r - 0.3313 * g + 0.5 * b
    return (cr >= 135) & (cr <= 173) & (cb >= 80) & (cb <= 127) & (r > g) & (g > b) & (r - g >= 12) & (r > 60)


def garment_mask(image: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """(mask, lab) of the shrunk photo: True where the garment is (background and skin left out)."""
    rgb = _shrunk(image)
    lab = rgb2lab(rgb)
    mask = ~_background(lab, BACKGROUND_DELTA_E)
    if mask.mean() < MIN_GARMENT_SHARE:  # a garment of the background's colour: only the nearest background goes
        mask = ~_background(lab, BACKGROUND_DELTA_E / 3)
    if mask.mean() < MIN_GARMENT_SHARE:  # nothing tells them apart: the whole photo
        mask = np.ones(mask.shape, dtype=bool)
    skin = _skin(rgb) & mask
    if skin.sum() <= SKIN_MAX_SHARE * mask.sum():
        mask = mask & ~skin
    return mask, lab


def name_of(lab: np.ndarray) -> np.ndarray:
    """The palette name nearest to each Lab colour (..., 3) -> (...) names."""
    weights = np.array([LIGHTNESS_WEIGHT, 1.0, 1.0])
    distance = ((((lab[..., None, :] - _PALETTE_LAB) * weights) ** 2).sum(axis=-1))
    return _PALETTE_NAMES[distance.argmin(axis=-1)]


def _centre_weights(shape) -> np.ndarray:
    """How much each pixel counts: a Gaussian around the photo's centre (the product is centred; a model's hair,
    shoes or other clothes are nearer the edges)."""
    if CENTRE_SIGMA is None:
        return np.ones(shape)
    height, width = shape
    y = (np.arange(height) - (height - 1) / 2) / (CENTRE_SIGMA * height)
    x = (np.arange(width) - (width - 1) / 2) / (CENTRE_SIGMA * width)
    return np.exp(-0.5 * (y[:, None] ** 2 + x[None, :] ** 2))


def garment_colours(image: Image.Image) -> list[ColourShare]:
    """The garment's colour names, most common first, with their share of its pixels and mean Lab colour."""
    mask, lab = garment_mask(image)
    points, weights = lab[mask], _centre_weights(mask.shape)[mask]
    if len(points) > SAMPLE:
        keep = np.random.default_rng(0).choice(len(points), SAMPLE, replace=False)
        points, weights = points[keep], weights[keep]
    centres, labels = _kmeans(points, CLUSTERS)
    names = name_of(centres)
    shares = np.bincount(labels, weights=weights, minlength=len(centres)) / weights.sum()
    merged: dict[str, tuple[float, np.ndarray]] = {}
    for name, share, centre in zip(names, shares, centres):
        total, weighted = merged.get(name, (0.0, np.zeros(3)))
        merged[name] = (total + share, weighted + share * centre)
    colours = [
        ColourShare(name=str(name), share=float(share), lab=tuple(float(v) for v in weighted / max(share, 1e-12)))
        for name, (share, weighted) in merged.items()
        if share > 0
    ]
    return sorted(colours, key=lambda c: (-c.share, c.name))


def colour_words(image: Image.Image) -> str:
    """"navy", or "cream and navy" for a two-tone garment (see the module's rule for the second colour)."""
    colours = garment_colours(image)
    first = colours[0]
    for other in colours[1:]:
        if other.share < SECOND_SHARE:
            break
        if np.linalg.norm(np.subtract(first.lab, other.lab)) >= SECOND_DELTA_E:
            return f"{first.name} and {other.name}"
    return first.name
