"""How certain a choice between two look-transfer settings is: a paired bootstrap over the held-out looks of the
five inner folds (session 12, issue 11 point 3 (c)).

    .venv/bin/python bench/lt_tie_bootstrap.py --model frozen:0,1,2 --a lt_weight=0.6 --b lt_weight=0.7 [--draws 2000]

Each fold's held-out looks are scored as test looks (the other four folds known), on the stored fold descriptors
of `bench/inner_kfold.py`, with `DEFAULT_POSTPROCESSING` changed by ``--a`` and by ``--b``; every snapshot ->
items query keeps its AP@100 and hit@6 under both. A draw resamples the 189 looks with replacement (a look's
queries come along), and both settings are scored on the same draw; the output is the pooled figures, the share of
draws where B is higher than A, and the 95 % interval of B - A, for mAP@100 and hit@6. New folds (another folds
seed) would need new heads: the stored descriptors of a fold come from heads trained on the other four.
"""
import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from inner_kfold import FOLDS, SHARED, fold_split, fold_vectors  # noqa: E402
from ml.evaluation.dataset import LookDataset, read_look_ids  # noqa: E402
from ml.evaluation.metrics import average_precision_at_k, hit_at_k  # noqa: E402
from ml.evaluation.pipeline import images_to_embed  # noqa: E402
from ml.evaluation.protocols import SNAPSHOT_TO_ITEMS, evaluate  # noqa: E402
from ml.retrieval.ranker import ScoringRanker  # noqa: E402
from ml.training import DEFAULT_POSTPROCESSING, subset_dataset  # noqa: E402


def parse_changes(pairs):
    """name=value pairs as typed values for ScoringSettings (float, int, or text)."""
    out = {}
    for pair in pairs:
        name, value = pair.split("=")
        current = getattr(DEFAULT_POSTPROCESSING, name)
        out[name] = type(current)(value) if not isinstance(current, bool) else value.lower() == "true"
    return out


def per_query(split, vectors, held, known, settings):
    """[(look id, AP@100, hit@6)] of the fold's snapshot -> items queries."""
    result = evaluate(split, held, ScoringRanker(vectors, split, known, settings))
    task = next(t for t in result.tasks if t.direction == SNAPSHOT_TO_ITEMS)
    lists = [r["ranked"] for r in result.rankings if r["direction"] == SNAPSHOT_TO_ITEMS]
    look_of = {s: look.id for look in split.looks.values() for s in look.snapshots}
    gallery = set(task.gallery)
    return [(look_of[q.name], average_precision_at_k(r, q.relevant, k=100, gallery=gallery),
             hit_at_k(r, q.relevant, k=6, gallery=gallery)) for q, r in zip(task.queries, lists)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SHARED / "dev")
    parser.add_argument("--test-looks", type=Path, default=SHARED / "val_looks.txt")
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench" / "inner_kfold")
    parser.add_argument("--model", default="frozen:0,1,2")
    parser.add_argument("--a", nargs="+", default=["lt_weight=0.6"], help="name=value changes of setting A")
    parser.add_argument("--b", nargs="+", default=["lt_weight=0.7"], help="name=value changes of setting B")
    parser.add_argument("--draws", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    dataset = LookDataset.from_folder(args.data)
    pool = sorted(set(dataset.looks) - read_look_ids(args.test_looks, dataset))
    split = subset_dataset(dataset, pool)
    settings = {k: replace(DEFAULT_POSTPROCESSING, **parse_changes(v)) for k, v in (("A", args.a), ("B", args.b))}
    rows = {"A": [], "B": []}
    for fold in range(FOLDS):
        known, held = fold_split(pool, fold)
        vectors = fold_vectors(args, fold, args.model)
        zero = np.zeros(len(next(iter(vectors.values()))), np.float32)
        vectors = {n: vectors.get(n, zero) for n in images_to_embed(split)}
        for k in rows:
            rows[k] += per_query(split, vectors, held, known, settings[k])
    looks = np.array([r[0] for r in rows["A"]])
    assert looks.tolist() == [r[0] for r in rows["B"]]
    ids = sorted(set(looks.tolist()))
    position = {look: i for i, look in enumerate(ids)}
    owner = np.array([position[x] for x in looks])
    rng = np.random.default_rng(args.seed)
    print(f"{args.model}: {len(looks)} snapshot -> items queries of {len(ids)} looks; A = {args.a}, B = {args.b}")
    for column, name in ((1, "mAP@100"), (2, "hit@6")):
        a = np.array([r[column] for r in rows["A"]])
        b = np.array([r[column] for r in rows["B"]])
        diffs = []
        for _ in range(args.draws):
            weight = np.bincount(rng.integers(0, len(ids), len(ids)), minlength=len(ids))[owner]
            diffs.append(((b - a) * weight).sum() / max(1, weight.sum()))
        diffs = np.array(diffs)
        low, high = np.percentile(diffs, [2.5, 97.5])
        print(f"{name}: A {a.mean():.4f}, B {b.mean():.4f}, B - A {b.mean() - a.mean():+.4f} "
              f"(95 % interval {low:+.4f} .. {high:+.4f}); B higher in {np.mean(diffs > 0):.1%} of "
              f"{args.draws} draws, lower in {np.mean(diffs < 0):.1%}")


if __name__ == "__main__":
    main()
