"""When is an uploaded photo a product of the catalogue? The near-duplicate threshold, measured.

    .venv/bin/python bench/recognition_threshold.py --model /work/models/cgd-dev [--sample 200] [--write-card]

Every distinct item of `--data` is embedded with the model. For `--sample` items (evenly spaced), copies a shop
or a user would upload of the same product are made: re-encoded as JPEG (quality 60), resized to half size,
cropped to the central 85 %, and all three together. A copy is *recognised* when its most similar catalogue item
is the original with a cosine at least the threshold. A *false match* is a product the catalogue does not hold
matched to a catalogue item: each sampled item is taken out of the catalogue (leave one out) and its copies and
itself are matched against the rest. The threshold chosen is the lowest one whose false-match rate on those
photos is at most `--max-false` (1 %); `--write-card` stores it in the model card's `recognition` settings.
"""
import argparse
import io
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ml.embedding import CGDEmbedder  # noqa: E402
from ml.evaluation.dataset import LookDataset  # noqa: E402
from ml.images import load_rgb, to_input_array  # noqa: E402
from ml.model_card import ModelCard  # noqa: E402
from ml.retrieval.recognition import RecognitionSettings  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "musinsa"


def reencode(image, quality=60):
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return load_rgb(io.BytesIO(buffer.getvalue()))


def half(image):
    return image.resize((max(1, image.width // 2), max(1, image.height // 2)))


def crop(image, keep=0.85):
    w, h = image.size
    dx, dy = int(w * (1 - keep) / 2), int(h * (1 - keep) / 2)
    return image.crop((dx, dy, w - dx, h - dy))


COPIES = {"JPEG q60": reencode, "half size": half, "central 85 % crop": crop,
          "all three": lambda im: reencode(half(crop(im)))}


def embed(embedder, images) -> np.ndarray:
    out = []
    for s in range(0, len(images), 16):
        out.append(embedder.embed_batch(np.stack([to_input_array(im, embedder.input_size) for im in images[s:s + 16]])))
    return np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=SHARED / "dev")
    parser.add_argument("--sample", type=int, default=200)
    parser.add_argument("--max-false", type=float, default=0.01)
    parser.add_argument("--write-card", action="store_true")
    args = parser.parse_args()
    dataset = LookDataset.from_folder(args.data)
    embedder = CGDEmbedder(args.model)
    names = [dataset.item_name(k) for k in dataset.items]
    _, catalogue, errors = embedder.embed_files([dataset.root / n for n in names], progress=True)
    if errors:
        raise SystemExit(f"unreadable items: {list(errors)[:3]}")
    picks = np.linspace(0, len(names) - 1, min(args.sample, len(names))).round().astype(int)
    originals = [load_rgb(dataset.root / names[i]) for i in picks]
    copies = {label: embed(embedder, [make(im) for im in originals]) for label, make in COPIES.items()}

    sims = {label: vecs @ catalogue.T for label, vecs in copies.items()}    # (sample, catalogue)
    own = catalogue[picks] @ catalogue.T
    rows = np.arange(len(picks))
    # in the catalogue: recognised when the best item is the original, at cosine >= t
    best = {label: (s.argmax(axis=1) == picks, s.max(axis=1)) for label, s in sims.items()}
    # not in the catalogue (the original left out): the best cosine to any other item is a false match if >= t
    outside = []
    for s in [own] + list(sims.values()):
        left_out = s.copy()
        left_out[rows, picks] = -np.inf
        outside.append(left_out.max(axis=1))
    outside = np.concatenate(outside)
    candidates = np.unique(np.round(np.concatenate([outside, *[b[1] for b in best.values()]]), 4))
    threshold = next((float(t) for t in candidates if np.mean(outside >= t) <= args.max_false), 1.0)

    print(f"model {args.model}: {len(names)} catalogue items, {len(picks)} sampled, "
          f"{len(outside)} photos of products not in the catalogue")
    print(f"threshold (false matches <= {args.max_false:.0%}): cosine {threshold:.4f}\n")
    print("| copy of a catalogue item | recognised (right item, cosine >= threshold) | best item is the original |")
    print("| --- | --- | --- |")
    for label, (right, cos) in best.items():
        print(f"| {label} | {np.mean(right & (cos >= threshold)):.3f} | {np.mean(right):.3f} |")
    print(f"| false-match rate (products not in the catalogue) | {np.mean(outside >= threshold):.3f} | |")
    for t in (0.8, 0.85, 0.9, 0.95):
        rec = np.mean([np.mean(r & (c >= t)) for r, c in best.values()])
        print(f"at cosine {t:.2f}: recognised {rec:.3f} (mean over the copies), false matches {np.mean(outside >= t):.3f}")
    if args.write_card:
        card = ModelCard.read(args.model)
        card.recognition = RecognitionSettings(near_duplicate_cosine=round(threshold, 4))
        card.write(args.model)
        print(f"written to {args.model / 'card.json'}")


if __name__ == "__main__":
    main()
