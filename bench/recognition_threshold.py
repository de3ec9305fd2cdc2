"""When is an uploaded photo a product of the catalogue? The near-duplicate threshold, measured.

    .venv/bin/python bench/recognition_threshold.py --model /work/models/cgd-dev [--sample 200] [--write-card]

The measurement is ``ml.evaluation.recognition.measure_recognition`` (its docstring says how), the one every
exported model runs on its training items (``ml.training.recipe``); this prints the whole table for a model
directory on the items of ``--data``, and `--write-card` stores the threshold in the model card (for cards
written before the recipe measured it).
"""
import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ml.embedding import CGDEmbedder  # noqa: E402
from ml.evaluation.dataset import LookDataset  # noqa: E402
from ml.evaluation.recognition import MAX_FALSE_MATCHES, measure_recognition  # noqa: E402
from ml.model_card import ModelCard  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "musinsa"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=SHARED / "dev")
    parser.add_argument("--sample", type=int, default=200)
    parser.add_argument("--max-false", type=float, default=MAX_FALSE_MATCHES)
    parser.add_argument("--write-card", action="store_true")
    args = parser.parse_args()
    dataset = LookDataset.from_folder(args.data)
    names = [dataset.item_name(k) for k in dataset.items]
    m = measure_recognition(CGDEmbedder(args.model), [dataset.root / n for n in names], sample=args.sample,
                            max_false=args.max_false, progress=True)
    if m is None:
        raise SystemExit("fewer than two readable item photos")
    print(f"model {args.model}: {m.catalogue} catalogue items, {m.sample} sampled, "
          f"{len(m.outside)} photos of products not in the catalogue")
    print(f"threshold (false matches <= {args.max_false:.0%}): cosine {m.threshold:.4f}\n")
    print("| copy of a catalogue item | recognised (right item, cosine >= threshold) | best item is the original |")
    print("| --- | --- | --- |")
    original = m.nearest_is_original()
    for label, share in m.recognised().items():
        print(f"| {label} | {share:.3f} | {original[label]:.3f} |")
    print(f"| false-match rate (products not in the catalogue) | {m.false_matches():.3f} | |")
    for t in (0.8, 0.85, 0.9, 0.95):
        rec = sum(m.recognised(t).values()) / len(m.nearest)
        print(f"at cosine {t:.2f}: recognised {rec:.3f} (mean over the copies), false matches {m.false_matches(t):.3f}")
    if args.write_card:
        card = ModelCard.read(args.model)
        card.recognition = m.settings()
        card.write(args.model)
        print(f"written to {args.model / 'card.json'}")


if __name__ == "__main__":
    main()
