"""Recipe choices judged on five inner folds of the training looks, never on the test looks.

    .venv/bin/python bench/inner_kfold.py train  [--seeds 0 1 2] [--configs frozen ft]   # 15 heads per config
    .venv/bin/python bench/inner_kfold.py report [--candidates frozen:0 frozen:0,1,2 ft:0 ft:0,1,2]
    .venv/bin/python bench/inner_kfold.py diversity [--models frozen:0 ft:0]
    .venv/bin/python bench/inner_kfold.py items [--models frozen:0] [--available-folds]
    .venv/bin/python bench/inner_kfold.py val [--candidates frozen:0,1,2 frozen:0,1+l1:0]   # once, after the folds

The looks of `--data` not in `--test-looks` (val_looks.txt: the 189 other dev looks) are shuffled (seed 1234)
into five folds. `train` trains, for every fold, config and seed, one CGD head on the other four folds with early
stopping on the held-out fold (as `train_cgd` does on its inner split), and stores the descriptors of that
split's images under `var/bench/inner_kfold/` (a finished head is not trained again, so the command resumes).
`report` and `diversity` score every fold's held-out looks as test looks (the other four folds known) and pool
the queries of the five folds: about 320 snapshot -> items queries instead of the 60 of one inner split.

* `report`: a candidate is a config and its seeds; several seeds are an ensemble (the L2-normalised
  concatenation, as `--ensemble N` exports), and "+" joins heads of several configs ("frozen:0,1+l1:0").
  Rows: raw cosine and `DEFAULT_POSTPROCESSING`.
* `diversity`: the variety among the first six (weight x depth) on the same models.
* `items`: the item-query recipe (item transfer x link query expansion), judged on item -> looks.
* `val`: the candidates' heads trained on all five folds for the median best epoch of their fold heads, scored
  once on the test looks (val): for a candidate the folds already chose, never to choose.
* `--available-folds`: pool only the folds whose heads exist (a partial `train`).

Configs: `frozen` (the ImageNet backbone frozen, the head trained on cached feature maps), `ft` (the last
backbone stage fine-tuned too, `--fine-tune-last-stage`), `xm`/`xm03` (with the cross-modal loss), `l1` and
`l0` (the `frozen` head on Lite1's or Lite0's maps), `l1s` (on Lite1's maps at Lite2's 260 px, the side a
one-input exported ensemble gives it), `l1r` (Lite1 at its own 240 px, resized from that 260 px input in
the graph). Metrics as ../shared/docs/EVALUATION.md.
"""
import argparse
import json
import pickle
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ml.evaluation.dataset import LookDataset, read_look_ids  # noqa: E402
from ml.retrieval.scoring import ScoringSettings  # noqa: E402
from ml.evaluation.pipeline import images_to_embed  # noqa: E402
from ml.training import DEFAULT_POSTPROCESSING, TrainConfig, evaluate_vectors, subset_dataset, train  # noqa: E402
from ml.training.ensemble import join_descriptors  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "musinsa"
CONFIGS = {"frozen": {}, "ft": {"fine_tune_last_stage": True},
           "xm": {"loss": "arcface+classification+cross_modal"},  # session 11: + the cross-modal loss
           "xm03": {"loss": "arcface+classification+cross_modal", "loss_options": {"weights": {"cross_modal": 0.3}}},
           # session 20: heads on the other ImageNet backbones, for ensembles across backbones ("frozen:0,1+l1:0")
           "l1": {"backbone": "lite1"}, "l0": {"backbone": "lite0"},
           # session 21: Lite1 at Lite2's side (260 px), as an exported model with one input serves it
           "l1s": {"backbone": "lite1", "input_size": 260},
           # ... and Lite1 at its own 240 px, resized from the 260 px input inside the graph (one input, one decode)
           "l1r": {"backbone": "lite1", "input_size": 260, "members_at_own_side": True}}
DIRECTIONS = ("snapshot_to_items", "snapshot_to_unseen_items", "item_to_snapshots", "item_to_looks",
              "unseen_item_to_looks")
FOLDS = 5


def folds(look_ids, k: int = FOLDS, seed: int = 1234) -> list[list[int]]:
    ids = np.array(sorted(look_ids))
    np.random.default_rng(seed).shuffle(ids)
    return [sorted(int(x) for x in ids[i::k]) for i in range(k)]


def fold_split(pool, fold: int) -> tuple[list[int], list[int]]:
    """(known looks, held-out looks) of one fold."""
    held = folds(pool)[fold]
    held_set = set(held)
    return [i for i in pool if i not in held_set], held


def run_dir(out: Path, fold: int, config: str, seed: int) -> Path:
    return out / f"fold{fold}_{config}_seed{seed}"


def train_all(args, dataset, pool) -> None:
    for seed in args.seeds:
        for fold in range(FOLDS):
            for config in args.configs:
                target = run_dir(args.out, fold, config, seed)
                if (target / "vectors.pkl").exists():
                    continue
                known, held = fold_split(pool, fold)
                t0 = time.time()
                result = train(dataset, known, target, args.cache, TrainConfig(seed=seed, ensemble=1, **CONFIGS[config]),
                               val_look_ids=held, known_look_ids=known, progress=False, log=lambda *a: None)
                names = [n for n in images_to_embed(subset_dataset(dataset, pool)) if n in result.index]
                with open(target / "vectors.pkl", "wb") as fh:
                    pickle.dump(dict(zip(names, result.vectors_fn(names))), fh)
                print(f"fold {fold} {config} seed {seed}: best epoch {result.best_epoch}, {time.time() - t0:.0f} s",
                      flush=True)


def candidate_runs(candidate: str) -> list[tuple[str, int]]:
    """(config, seed) of each head of a candidate: "config:seed[,seed...]", several joined by "+" (an ensemble
    across configs, e.g. "frozen:0,1+l1:0")."""
    runs = []
    for part in candidate.split("+"):
        config, seeds = part.split(":")
        runs += [(config, int(seed)) for seed in seeds.split(",")]
    return runs


def fold_vectors(args, fold: int, candidate: str) -> dict:
    """The candidate's descriptors for one fold: one head or an ensemble (candidate_runs), joined as the
    exported ensemble joins its members (each head's descriptors concatenated, then L2-normalised)."""
    runs = []
    for config, seed in candidate_runs(candidate):
        path = run_dir(args.out, fold, config, seed) / "vectors.pkl"
        if not path.exists():
            raise SystemExit(f"{path} missing: run `train` with --configs {config} --seeds {seed} first")
        with open(path, "rb") as fh:
            runs.append(pickle.load(fh))
    return joined_heads(runs)


def joined_heads(runs: list[dict]) -> dict:
    """Image name -> the heads' descriptors joined as the exported ensemble joins its members."""
    names = sorted(set.intersection(*(set(r) for r in runs)))
    return dict(zip(names, join_descriptors([np.stack([r[n] for n in names]) for r in runs])))


def new_pool() -> dict:
    """Metrics pooled over folds: per direction, sums weighted by each fold's queries (add_to_pool, pool_means)."""
    return {d: {"mAP@100": 0.0, "hit@6": 0.0, "queries": 0} for d in DIRECTIONS}


def add_to_pool(total: dict, metrics: dict) -> None:
    """Adds one fold's metrics (evaluate_vectors) to the pool, weighted by its number of queries."""
    for d in DIRECTIONS:
        q = metrics[d]["queries"]
        total[d]["queries"] += q
        for name in ("mAP@100", "hit@6"):
            total[d][name] += (metrics[d][name] or 0.0) * q


def pool_means(total: dict) -> dict:
    """The pool's sums turned into means over all the folds' queries (as if one evaluation)."""
    for d in DIRECTIONS:
        for name in ("mAP@100", "hit@6"):
            total[d][name] /= max(1, total[d]["queries"])
    return total


def pooled(args, dataset, pool, candidate: str, settings: ScoringSettings) -> dict:
    """Metrics over the held-out queries of all folds (each fold's mean weighted by its queries)."""
    total = new_pool()
    folds_done = [f for f in range(FOLDS) if all(
        (run_dir(args.out, f, config, seed) / "vectors.pkl").exists()
        for config, seed in candidate_runs(candidate))] if args.available_folds else range(FOLDS)
    split = subset_dataset(dataset, pool)
    for fold in folds_done:
        known, held = fold_split(pool, fold)
        vectors = fold_vectors(args, fold, candidate)
        zero = np.zeros(len(next(iter(vectors.values()))), np.float32)
        vectors = {n: vectors.get(n, zero) for n in images_to_embed(split)}
        add_to_pool(total, evaluate_vectors(split, vectors, held, known, settings))
    return pool_means(total)


def row(label: str, m: dict) -> str:
    cells = [f"{m[d]['mAP@100']:.4f} / {m[d]['hit@6']:.3f}" for d in DIRECTIONS]
    return f"| {label} | " + " | ".join(cells) + " |"


HEADER = ("| {} | s→i mAP@100 / hit@6 | B s→i mAP@100 / hit@6 | i→s mAP@100 / hit@6 | i→looks mAP@100 / hit@6 "
          "| unseen i→looks mAP@100 / hit@6 |\n| --- | --- | --- | --- | --- | --- |")


def report(args, dataset, pool) -> None:
    print(HEADER.format("candidate, post-processing"))
    for candidate in args.candidates:
        for label, settings in (("raw cosine", ScoringSettings()), ("DEFAULT_POSTPROCESSING", DEFAULT_POSTPROCESSING)):
            metrics = pooled(args, dataset, pool, candidate, settings)
            print(row(f"{candidate}, {label}", metrics), flush=True)
    print("queries pooled over the folds: " + ", ".join(f"{d} {metrics[d]['queries']}" for d in DIRECTIONS))


def diversity(args, dataset, pool) -> None:
    print(HEADER.format("model, diversity weight / depth"))
    for model in args.models:
        for weight, depth in [(0.0, 12)] + [(w, d) for w in (0.3, 0.5, 0.7, 0.9) for d in (12, 18, 24, 36)]:
            settings = replace(DEFAULT_POSTPROCESSING, diversity=weight, diversity_depth=depth)
            label = f"{model}, {weight} / {depth}" if weight else f"{model}, off"
            print(row(label, pooled(args, dataset, pool, model, settings)), flush=True)


def items(args, dataset, pool) -> None:
    """Item-query recipe grid, judged on item -> looks: item transfer x link query expansion.

    (Item-side transfer through the nearest known items, `item_neighbour_qe`, was measured here at commit
    bf6fbcb: +1-2 % item -> looks mAP on two folds, under the 3 % rule, so it is not in the code.)"""
    print(HEADER.format("model, item transfer weight / top-k / link QE"))
    for model in args.models:
        for it, top_k in ((0.0, 5), (0.3, 5), (0.5, 10)):
            for lq in (0.0, 1.0, 2.0):
                settings = replace(DEFAULT_POSTPROCESSING, item_transfer_weight=it, item_transfer_top_k=top_k,
                                   item_link_qe=lq)
                print(row(f"{model}, {it} / {top_k} / {lq}", pooled(args, dataset, pool, model, settings)), flush=True)


def fold_median_epochs(args, config: str) -> int:
    """The median best epoch (highest validation mAP) of a config's fold heads, from their history.json."""
    best = []
    for history in sorted(args.out.glob(f"fold*_{config}_seed*/history.json")):
        records = json.loads(history.read_text())
        best.append(max(records, key=lambda r: r["val_map"] or 0.0)["epoch"])
    if not best:
        raise SystemExit(f"no fold heads of {config} in {args.out}: run `train` with --configs {config} first")
    return int(np.median(best))


def val(args, dataset, pool) -> None:
    """The candidates on val, once, after the folds chose: each head trained on all the fold pool's looks for
    a fixed number of epochs chosen on the folds (fold_median_epochs), so val is neither an early-stopping set
    nor a choice; then scored on the val looks."""
    test = sorted(read_look_ids(args.test_looks, dataset))
    heads, epochs = {}, {}
    for config, seed in sorted({run for c in args.candidates for run in candidate_runs(c)}):
        target = args.out / f"val_{config}_seed{seed}"
        if not (target / "vectors.pkl").exists():
            if config not in epochs:
                epochs[config] = fold_median_epochs(args, config)
                print(f"{config}: {epochs[config]} epochs (the median best epoch of its fold heads)", flush=True)
            result = train(dataset, pool, target, args.cache,
                           TrainConfig(seed=seed, ensemble=1, epochs=int(epochs[config]), **CONFIGS[config]),
                           val_look_ids=test, known_look_ids=pool, fixed_epochs=True, progress=False,
                           log=lambda *a: None)
            names = [n for n in images_to_embed(dataset) if n in result.index]
            with open(target / "vectors.pkl", "wb") as fh:
                pickle.dump(dict(zip(names, result.vectors_fn(names))), fh)
        with open(target / "vectors.pkl", "rb") as fh:
            heads[(config, seed)] = pickle.load(fh)
    print(HEADER.format("candidate on val, DEFAULT_POSTPROCESSING"))
    for candidate in args.candidates:
        vectors = joined_heads([heads[run] for run in candidate_runs(candidate)])
        zero = np.zeros(len(next(iter(vectors.values()))), np.float32)
        vectors = {n: vectors.get(n, zero) for n in images_to_embed(dataset)}
        print(row(candidate, evaluate_vectors(dataset, vectors, test, pool, DEFAULT_POSTPROCESSING)), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["train", "report", "diversity", "items", "val"])
    parser.add_argument("--data", type=Path, default=SHARED / "dev")
    parser.add_argument("--test-looks", type=Path, default=SHARED / "val_looks.txt",
                        help="looks left out of every fold (the split results are reported on)")
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench" / "inner_kfold")
    parser.add_argument("--cache", type=Path, default=ROOT / "var" / "models" / "features")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--candidates", nargs="+", default=["frozen:0", "frozen:0,1,2", "ft:0", "ft:0,1,2"])
    parser.add_argument("--models", nargs="+", default=["frozen:0", "ft:0"])
    parser.add_argument("--available-folds", action="store_true", help="pool only the folds already trained")
    args = parser.parse_args()
    dataset = LookDataset.from_folder(args.data)
    pool = sorted(set(dataset.looks) - read_look_ids(args.test_looks, dataset))
    {"train": train_all, "report": report, "diversity": diversity, "items": items,
     "val": val}[args.command](args, dataset, pool)


if __name__ == "__main__":
    main()
