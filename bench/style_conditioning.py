"""Style-conditioned ranking against filtering alone, for queries whose style is known.

    .venv/bin/python bench/style_conditioning.py folds                       # choose on the inner folds
    .venv/bin/python bench/style_conditioning.py val --model var/models/cgd-val --weight W   # once, on val

Styles: the hand labels of data/labels/look_styles.csv (one per look).

* item -> looks with a style filter (the search page's and the API's `style`): for each item query and each
  style among the test looks that link it, the gallery keeps only test looks of that style (filtering alone);
  conditioned, the query is also moved towards that style: ``q' = normalise(q + w * c_style)``, ``c_style`` the
  normalised mean of the KNOWN snapshots of looks with that style (the catalogue's history, never a test look).
  Relevant: the test looks of that style linking the item. Metrics at look level (docs/EVALUATION.md).
* snapshot -> items with the query look's style known: filtering alone keeps only items that some known look of
  that style links; conditioned adds ``w * share`` to each item's score, ``share`` the fraction of the known looks
  linking the item that have the style (items no known look links get 0).

`folds` pools the five inner folds' held-out looks (vectors of `bench/inner_kfold.py train`, frozen seed 0,
whichever folds exist); `val` scores the val looks with the val model's heads on the cached feature maps.
"""
import argparse
import csv
import pickle
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from ml.evaluation.dataset import LookDataset, read_look_ids  # noqa: E402
from ml.evaluation.metrics import average_precision_at_k, hit_at_k  # noqa: E402
from ml.evaluation.protocols import SNAPSHOT_TO_ITEMS, build_tasks, look_name  # noqa: E402
from ml.evaluation.pipeline import images_to_embed  # noqa: E402
from ml.retrieval.ranker import ScoringRanker  # noqa: E402
from ml.retrieval.scoring import item_query_scores, normalise, ranked_indices, ranked_looks  # noqa: E402
from ml.training import DEFAULT_POSTPROCESSING, subset_dataset  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "musinsa"
LABELS = ROOT / "data" / "labels" / "look_styles.csv"
WEIGHTS = (0.0, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)


def read_styles() -> dict[int, str]:
    with LABELS.open() as handle:
        return {int(row["look"]): row["style"] for row in csv.DictReader(handle)}


def score(dataset, vectors, test, known, styles, settings, weights):
    """{weight: {"i2l": (mAP, hit, n), "s2i filter": ..., "s2i prior": ...}} for one split."""
    test, known = sorted(test), sorted(known)
    v = lambda names: normalise(np.stack([vectors[n] for n in names]))  # noqa: E731
    known_snaps = [s for i in known for s in dataset.looks[i].snapshots]
    centroid = {}
    for style in set(styles.values()):
        rows = [s for i in known if styles.get(i) == style for s in dataset.looks[i].snapshots]
        if rows:
            centroid[style] = normalise(v(rows).mean(axis=0, keepdims=True))[0]
    out = {w: {"i2l": [0.0, 0.0, 0], "s2i filter": [0.0, 0.0, 0], "s2i prior": [0.0, 0.0, 0]} for w in weights}

    # item -> looks with a style filter
    gallery_snaps = [s for i in test for s in dataset.looks[i].snapshots]
    look_of = {s: i for i in test for s in dataset.looks[i].snapshots}
    name = dataset.item_name
    kv = v(known_snaps)
    for key in {k for i in test for k in dataset.looks[i].items}:
        relevant = {i for i in test if key in dataset.looks[i].items}
        links = np.array([[float(key in dataset.looks[look].items)] for look in known
                          for _ in dataset.looks[look].snapshots], np.float32)
        for style in sorted({styles.get(i) for i in relevant} - {None}):
            if style not in centroid:
                continue
            snaps = [s for s in gallery_snaps if styles.get(look_of[s]) == style]
            rel = {look_name(i) for i in relevant if styles.get(i) == style}
            for w in weights:
                q = v([name(key)])
                if w:
                    q = normalise(q + w * centroid[style][None])
                scores = item_query_scores(q, v(snaps), [look_of[s] for s in snaps], settings,
                                           known_snapshot_vecs=kv, query_links=links)
                ranked = [look_name(look) for look, _ in ranked_looks(scores, [look_of[s] for s in snaps])[0]]
                acc = out[w]["i2l"]
                acc[0] += average_precision_at_k(ranked, rel, 100)
                acc[1] += hit_at_k(ranked, rel, 6)
                acc[2] += 1

    # snapshot -> items with the query look's style
    task = next(t for t in build_tasks(dataset, test) if t.direction == SNAPSHOT_TO_ITEMS)
    ranker = ScoringRanker(vectors, dataset, known, settings)
    base = ranker.scores(task)
    item_looks: dict[str, list[int]] = {}
    for i in known:
        for key in dataset.looks[i].items:
            item_looks.setdefault(name(key), []).append(i)
    gallery_vecs = v(task.gallery)
    query_look = {s: i for i in test for s in dataset.looks[i].snapshots}
    for qi, query in enumerate(task.queries):
        style = styles.get(query_look[query.name])
        share = np.array([np.mean([styles.get(i) == style for i in item_looks[g]]) if g in item_looks else 0.0
                          for g in task.gallery], np.float32)
        for w in weights:
            for label in ("s2i filter", "s2i prior"):
                if label == "s2i filter":
                    if w:  # filtering does not take a weight: only its w = 0 row is filtering alone
                        continue
                    keep = share > 0
                    row = np.where(keep, base[qi], -np.inf)[None]
                else:
                    row = (base[qi] + w * share)[None]
                order = ranked_indices(np.nan_to_num(row, neginf=-1e9), settings, gallery_vecs)[0]
                ranked = [task.gallery[j] for j in order if np.isfinite(row[0, j])][:100]
                acc = out[w][label]
                acc[0] += average_precision_at_k(ranked, query.relevant, 100)
                acc[1] += hit_at_k(ranked, query.relevant, 6)
                acc[2] += 1
    return out


def merge(total, part):
    for w, rows in part.items():
        for label, acc in rows.items():
            t = total.setdefault(w, {}).setdefault(label, [0.0, 0.0, 0])
            for i in range(3):
                t[i] += acc[i]
    return total


def report(total) -> None:
    print("| weight w | item -> looks, style filter: mAP@100 / hit@6 | snapshot -> items + style prior: mAP@100 / hit@6 |")
    print("| --- | --- | --- |")
    for w, rows in total.items():
        i2l, s2i = rows["i2l"], rows["s2i prior"]
        print(f"| {w} | {i2l[0] / i2l[2]:.4f} / {i2l[1] / i2l[2]:.3f} ({i2l[2]} queries) | "
              f"{s2i[0] / s2i[2]:.4f} / {s2i[1] / s2i[2]:.3f} ({s2i[2]} queries) |")
    f = total[0.0]["s2i filter"]
    print(f"\nsnapshot -> items, only items a known look of the query's style links (filtering alone): "
          f"{f[0] / f[2]:.4f} / {f[1] / f[2]:.3f}")
    print("(w = 0 is filtering alone for item -> looks and no style for snapshot -> items)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("where", choices=["folds", "val"])
    parser.add_argument("--data", type=Path, default=SHARED / "dev")
    parser.add_argument("--test-looks", type=Path, default=SHARED / "val_looks.txt")
    parser.add_argument("--model", type=Path, help="with val: the model trained without the val looks")
    parser.add_argument("--weight", type=float, help="with val: the weight chosen on the folds")
    parser.add_argument("--features", type=Path, default=ROOT / "var" / "models" / "features")
    args = parser.parse_args()
    dataset = LookDataset.from_folder(args.data)
    val = read_look_ids(args.test_looks, dataset)
    styles = read_styles()
    settings = replace(DEFAULT_POSTPROCESSING)
    total: dict = {}
    if args.where == "folds":
        import inner_kfold

        pool = sorted(set(dataset.looks) - val)
        split = subset_dataset(dataset, pool)
        for fold in range(inner_kfold.FOLDS):
            path = inner_kfold.run_dir(ROOT / "var" / "bench" / "inner_kfold", fold, "frozen", 0) / "vectors.pkl"
            if not path.exists():
                continue
            with open(path, "rb") as handle:
                vectors = pickle.load(handle)
            known, held = inner_kfold.fold_split(pool, fold)
            merge(total, score(split, vectors, held, known, styles, settings, WEIGHTS))
            print(f"fold {fold} scored", flush=True)
    else:
        from postprocessing_ablation import cached_maps, joined, member_vectors

        from ml.model_card import ModelCard

        card = ModelCard.read(args.model)
        names = images_to_embed(dataset)
        vectors = joined(member_vectors(args.model, cached_maps(dataset, names, card.backbone, args.features)))
        weights = (0.0, args.weight) if args.weight is not None else WEIGHTS
        merge(total, score(dataset, vectors, val, set(dataset.looks) - val, styles, card.postprocessing, weights))
    report(total)


if __name__ == "__main__":
    main()
