"""Accuracy of the style suggester on held-out hand-labelled looks, next to the majority-class baseline.

    .venv/bin/python bench/style_accuracy.py [--folds 5] [--spec untrained-lite0]

Labels: data/labels/look_styles.csv (240 looks). Descriptors: the platform's embedder (`--spec`, the default
model version) over ../shared/data/musinsa/dev, computed here (about a minute on 2 cores; `--cache FILE.npz`
keeps them). K-fold over looks (fold = position in the look-id order modulo K): every look is tested once, by a
classifier trained on the other folds only. Two tasks:

* look: a look's snapshots (mean descriptor) -> its style (what new catalogue looks get);
* item: one item photo -> the style of the look it belongs to (what wardrobe uploads get); trained on the
  items of training looks that appear in no test look, tested on every (item, test look) pair;
* item-by-look-model: the same test pairs, classified by the look model (trained on training looks' snapshots).

Prints accuracy, balanced accuracy (mean per-style recall) and the majority-class baseline (the training
folds' most frequent style) for each method of ml.tagging.style.
"""
import argparse
import csv
import hashlib
import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ml.tagging.style import METHODS, StyleClassifier, look_vector, majority_style  # noqa: E402

DEV = ROOT.parent / "shared" / "data" / "musinsa" / "dev"
LABELS = ROOT / "data" / "labels" / "look_styles.csv"
NAME = re.compile(r"^(\d+)_(\d+)_(part|reco)\.jpg$")


def load_descriptors(spec: str, cache: Path | None):
    files = sorted(p.name for p in DEV.iterdir() if NAME.match(p.name))
    if cache and cache.is_file():
        data = np.load(cache, allow_pickle=False)
        if list(data["names"]) == files:
            return dict(zip(files, data["vectors"]))
    from ml.embedding import load_embedder

    cache_dir = ROOT / "var" / "models"
    embedder = load_embedder(spec, cache_dir if cache_dir.is_dir() else None)
    ok, vectors, errors = embedder.embed_files([DEV / f for f in files], progress=True)
    if errors:
        print(f"unreadable: {errors}", file=sys.stderr)
    names = [Path(p).name for p in ok]
    if cache:
        np.savez(cache, names=np.array(names), vectors=vectors)
    return dict(zip(names, vectors))


def balanced_accuracy(truth, predicted) -> float:
    recalls = []
    for style in sorted(set(truth)):
        idx = [i for i, t in enumerate(truth) if t == style]
        recalls.append(np.mean([predicted[i] == style for i in idx]))
    return float(np.mean(recalls))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--spec", default="untrained-lite0")
    parser.add_argument("--cache", type=Path, help="npz file to keep the descriptors in between runs")
    args = parser.parse_args()

    styles = {row["look"]: row["style"] for row in csv.DictReader(LABELS.open(newline=""))}
    vectors = load_descriptors(args.spec, args.cache)
    snapshots, items = defaultdict(list), defaultdict(list)  # look -> names
    sha = {}
    for name in vectors:
        look, _, kind = NAME.match(name).groups()
        (snapshots if kind == "part" else items)[look].append(name)
        if kind == "reco":
            sha[name] = hashlib.sha256((DEV / name).read_bytes()).hexdigest()
    looks = sorted(styles, key=int)
    fold_of = {look: i % args.folds for i, look in enumerate(looks)}
    print(f"{len(looks)} labelled looks, {args.folds}-fold by look id, descriptors: {args.spec}")
    print("styles:", ", ".join(f"{s} {n}" for s, n in sorted(
        ((s, list(styles.values()).count(s)) for s in set(styles.values())), key=lambda t: -t[1])))

    for task in ("look", "item", "item-by-look-model"):
        results = {m: ([], []) for m in (*METHODS, "majority")}
        for fold in range(args.folds):
            train = [lk for lk in looks if fold_of[lk] != fold]
            test = [lk for lk in looks if fold_of[lk] == fold]
            if task == "look":
                x_train = np.stack([look_vector([vectors[n] for n in snapshots[lk]]) for lk in train])
                y_train = [styles[lk] for lk in train]
                x_test = np.stack([look_vector([vectors[n] for n in snapshots[lk]]) for lk in test])
                y_test = [styles[lk] for lk in test]
            else:
                test_shas = {sha[n] for lk in test for n in items[lk]}
                if task == "item":
                    pairs = {(sha[n], lk): n for lk in train for n in items[lk] if sha[n] not in test_shas}
                    x_train = np.stack([vectors[n] for n in pairs.values()])
                    y_train = [styles[lk] for _, lk in pairs]
                else:  # the look classifier (trained on snapshots) applied to item photos
                    x_train = np.stack([look_vector([vectors[n] for n in snapshots[lk]]) for lk in train])
                    y_train = [styles[lk] for lk in train]
                test_pairs = {(sha[n], lk): n for lk in test for n in items[lk]}
                x_test = np.stack([vectors[n] for n in test_pairs.values()])
                y_test = [styles[lk] for _, lk in test_pairs]
            for method in METHODS:
                predicted = StyleClassifier(method).fit(x_train, y_train).predict(x_test)
                results[method][0].extend(y_test)
                results[method][1].extend(predicted)
            baseline = majority_style(y_train)
            results["majority"][0].extend(y_test)
            results["majority"][1].extend([baseline] * len(y_test))
        n = len(results["majority"][0])
        print(f"\n{task} -> style ({n} test {'looks' if task == 'look' else 'item/look pairs'})")
        print(f"  {'method':<10} {'accuracy':>9} {'balanced':>9}")
        for method, (truth, predicted) in results.items():
            accuracy = np.mean([t == p for t, p in zip(truth, predicted)])
            print(f"  {method:<10} {accuracy:>9.3f} {balanced_accuracy(truth, predicted):>9.3f}")


if __name__ == "__main__":
    main()
