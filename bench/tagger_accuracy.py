"""Accuracy of the automatic category tagger on the 150 hand-labelled items, with a confusion matrix.

    .venv/bin/python bench/tagger_accuracy.py [--variant lite0]

Labels: data/labels/item_categories.csv (file, category); images from ../shared/data/musinsa/dev. Runs the
tagger of ml.tagging.category (ImageNet head of EfficientNet-Lite, classes mapped onto the 8 categories) and
prints, for the shipped mapping and for the first, names-only mapping (before REFINEMENTS, which were made on
unlabelled items only): accuracy, per-category recall, and the confusion matrix (rows: hand label, columns:
tag). The labels are never used to build the mapping.
"""
import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ml.tagging.category import CATEGORIES, CategoryTagger, category_matrix, tags_from_probabilities  # noqa: E402

DEV = ROOT.parent / "shared" / "data" / "musinsa" / "dev"
LABELS = ROOT / "data" / "labels" / "item_categories.csv"


def report(title, truth, predicted) -> None:
    accuracy = np.mean([t == p for t, p in zip(truth, predicted)])
    print(f"\n{title}: accuracy {accuracy:.3f} ({sum(t == p for t, p in zip(truth, predicted))}/{len(truth)})")
    width = 10
    print(" " * width + "".join(f"{c[:8]:>9}" for c in CATEGORIES) + "   recall")
    for c in CATEGORIES:
        row = [sum(1 for t, p in zip(truth, predicted) if t == c and p == d) for d in CATEGORIES]
        n = sum(row)
        recall = f"{row[CATEGORIES.index(c)] / n:.2f} ({n})" if n else "  - (0)"
        print(f"{c:<{width}}" + "".join(f"{v:>9}" for v in row) + f"   {recall}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="lite0")
    args = parser.parse_args()
    rows = list(csv.DictReader(LABELS.open(newline="")))
    paths = [DEV / row["file"] for row in rows]
    truth = [row["category"] for row in rows]

    cache_dir = ROOT / "var" / "models"
    tagger = CategoryTagger(args.variant, cache_dir if cache_dir.is_dir() else None)
    started = time.perf_counter()
    tags, errors = tagger.tag_files(paths)
    elapsed = time.perf_counter() - started
    if errors:
        sys.exit(f"unreadable labelled images: {errors}")
    print(f"{len(rows)} hand-labelled items, EfficientNet-{args.variant} ImageNet head, "
          f"{elapsed:.1f} s ({len(rows) / elapsed:.1f} images/s)")
    report("shipped mapping (CATEGORY_CLASSES + REFINEMENTS)", truth, [t.category for t in tags])

    from ml.images import load_input_array

    probabilities = tagger.probabilities(np.stack([load_input_array(p, tagger.input_size) for p in paths]))
    first = tags_from_probabilities(paths, probabilities, category_matrix(tagger.classes, refined=False),
                                    tagger.classes)
    report("first mapping (class names only, no REFINEMENTS)", truth, [t.category for t in first])
    confident = [(t.category == y) for t, y in zip(tags, truth) if t.confidence >= 0.5]
    print(f"\ntags with confidence >= 0.5: {len(confident)}/{len(tags)}, accuracy {np.mean(confident):.3f}")


if __name__ == "__main__":
    main()
