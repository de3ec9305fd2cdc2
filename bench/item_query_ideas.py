"""Session 9 of issue 11: ideas for item -> looks and snapshot -> items, judged on the five inner folds.

    .venv/bin/python bench/item_query_ideas.py [--models frozen:0] [--available-folds] [--ideas fusion centring ...]

Runs on the descriptors `bench/inner_kfold.py train` stored (var/bench/inner_kfold/) and on the backbone's
cached feature maps (var/models/features), so every row costs seconds to minutes, no training:

* `fusion`: the trained descriptor joined with the backbone's own global average-pooled feature map (the
  untrained descriptor of the same forward pass, free at serving time): cosine = (1 - a) * trained + a * GAP;
* `centring`: each kind's mean descriptor (items, snapshots: over the fold's known looks) subtracted before
  cosine, alone and with CSLS;
* `pooling`: a look scored by its best photo plus `b` times the mean of its photos;
* `flip`: flip at test time (the mean of the descriptors of the image and its mirror image, the fold's head on
  the cached feature maps of the mirrored images), alone and with the item hubness;
* `hub`: item queries' hubness against the known items (inverted softmax, `item_hub_weight` x temperature);
* `softmax`: the inverted softmax in place of CSLS for both directions (CSLS's shared knob; screening only).
* `moves` (session 10): the queries moved by their kind's mean (`ScoringSettings.snapshot_centring` /
  `item_centring`: "centre" or "translate", the gallery as stored), beside session 9's domain centring of every
  vector (`centring`'s transform, which the platform could not fetch candidates for exactly);
* `regions` (session 10): region descriptors for the test looks' snapshots (the fold's head on bands of rows of the
  9 x 9 cached feature map: halves 0-4 / 4-8, or thirds 0-3 / 2-6 / 5-8; each region one more photo of its look), judged on item -> looks only
  (a look at the rank of its best photo or region; the snapshot -> items columns of these rows are not meaningful);
* `antihub` (session 10): the item hubness clipped below at a quantile of the known snapshots' own hubness, so
  that photos no reference item resembles (anti-hubs) are not promoted.

* `partial` (session 11): snapshot queries centred (or translated) with a strength beta < 1 (q - beta * mu);
* `s2ihub` (session 11): for snapshot queries, each gallery item's score lowered by `w * tau * log sum exp(<i, s> /
  tau)` over the known snapshots (the inverted softmax, mirror of the item-query hubness), after the recipe;
* `neighbours` (session 11): item-side transfer for new products: an item query no known look links borrows the
  known snapshots of its `k` nearest known items (cosine-weighted mean of their look-linked snapshots, weight `w`);
* `knobs` (session 11): the recipe's knobs re-tuned one at a time from the default (`--knob name=v1,v2 ...`);
* `grid` (session 11): every combination of `--grid name=v1,v2 ...` (the default's other knobs kept);
* `reselect` (session 11): does re-choosing look transfer and popularity on a small split help? For each test fold,
  the look-transfer and popularity search `select_postprocessing` ran through session 10 (its grid, its 3 %
  rule) run on ONE other fold's
  held-out looks (about as many as the val model's 60-look inner split), its choice scored on the test fold, beside
  the default scored there; the mean over the 20 (test, selection) pairs, pooled as the other rows;
* `perfold` (session 11): snapshot -> items fold by fold for every combination of `--grid` (how certain a choice is).

`--flip-all` puts every row on top of flip at test time.

Rows are pooled over the folds as `bench/inner_kfold.py` pools them (same folds, same held-out looks), with
`DEFAULT_POSTPROCESSING` unless a row says otherwise. Never run on val.
"""
import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.inner_kfold import (FOLDS, HEADER, SHARED, add_to_pool, fold_split,  # noqa: E402
                               fold_vectors, new_pool, pool_means, row, run_dir)
from ml.evaluation.dataset import LookDataset, read_look_ids  # noqa: E402
from ml.evaluation.pipeline import images_to_embed  # noqa: E402
from ml.retrieval.scoring import normalise  # noqa: E402
from ml.training import DEFAULT_POSTPROCESSING, evaluate_vectors, subset_dataset  # noqa: E402


def gap_vectors(dataset, names, cache_dir, variant="lite2") -> dict:
    """The untrained descriptor of each image: global average pooling of the cached backbone feature map."""
    from ml.training.feature_cache import FeatureCache

    maps, errors = FeatureCache(cache_dir, variant).features([dataset.root / n for n in names], progress=False)
    return {Path(p).name: normalise(m.astype(np.float32).mean(axis=(0, 1))[None])[0] for (p, _), m in maps.items()}


def fused(trained: dict, gap: dict, a: float) -> dict:
    """cosine of the result = (1 - a) * cosine(trained) + a * cosine(gap)."""
    return {n: np.concatenate([np.sqrt(1 - a) * v, np.sqrt(a) * gap[n]]) for n, v in trained.items() if n in gap}


def pca_projected(gap: dict, dataset, known, dims: int) -> dict:
    """The GAP descriptors projected on the first ``dims`` principal axes of the known looks' images."""
    names = [n for i in known for n in dataset.looks[i].snapshots] + sorted(
        {dataset.item_name(k) for i in known for k in dataset.looks[i].items})
    x = np.stack([gap[n] for n in names if n in gap])
    mean = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    axes = vt[:dims].T
    return {n: normalise(((v - mean) @ axes)[None])[0] for n, v in gap.items()}


def fold_head(run: Path, feature_shape):
    """The descriptor model of one fold's trained head (``head.weights.npz``), default config's shape."""
    from ml.cgd import build_cgd_head, build_descriptor_model
    from ml.training import TrainConfig
    from ml.training.checkpoints import load_weights

    weights = load_weights(run / "head.weights.npz")
    config = TrainConfig()
    classes = [w for w in weights if w.ndim == 1][-1].shape[0]  # the auxiliary classifier's bias
    head = build_cgd_head(feature_shape, classes, config.descriptor_dim, branches=tuple(config.branches))
    head.set_weights(weights)
    return build_descriptor_model(head)


def candidate_on_maps(args, fold: int, candidate: str, maps: np.ndarray) -> np.ndarray:
    """The candidate's descriptors (its seeds' fold heads, the L2-normalised concatenation, as the fold vectors
    join them) of feature maps ``(n, h, w, c)`` computed here, not read from the fold's stored vectors."""
    config, seeds = candidate.split(":")
    parts = []
    for seed in seeds.split(","):
        head = fold_head(run_dir(args.out, fold, config, int(seed)), maps.shape[1:])
        parts.append(np.concatenate([np.asarray(head(maps[i:i + 128])) for i in range(0, len(maps), 128)]))
    return normalise(np.concatenate(parts, axis=1))


_FLIPPED: dict = {}


def flip_vectors(args, dataset, names, fold: int, candidate: str) -> dict:
    """The candidate's descriptors of the mirrored images (``FLIP_VIEW`` feature maps), one fold."""
    if (fold, candidate) in _FLIPPED:
        return _FLIPPED[(fold, candidate)]
    from ml.training.feature_cache import FLIP_VIEW, FeatureCache

    maps, _ = FeatureCache(args.cache, "lite2").features([dataset.root / n for n in names], views=(FLIP_VIEW,))
    flipped = {Path(p).name: m for (p, _), m in maps.items()}
    order = [n for n in names if n in flipped]
    x = np.stack([flipped[n] for n in order]).astype(np.float32)
    _FLIPPED[(fold, candidate)] = dict(zip(order, candidate_on_maps(args, fold, candidate, x)))
    return _FLIPPED[(fold, candidate)]


_RESIZED: dict = {}


def item_vectors_at(args, dataset, vectors: dict, fold: int, candidate: str, size: int, flip: bool = False) -> dict:
    """``vectors`` with every item's descriptor recomputed from its image resized to ``size`` (the fold's heads on
    the backbone's feature maps at that side; snapshots as they were): products described at a higher resolution
    than street photos. With ``flip``, each item also averaged with its mirror image at that side."""
    from ml.training.feature_cache import FLIP_VIEW, FeatureCache

    key = (fold, candidate, size, flip)
    if key not in _RESIZED:
        items = sorted({n for n in vectors if n in ITEM_NAMES})
        views = (0, FLIP_VIEW) if flip else (0,)
        maps, _ = FeatureCache(args.cache, "lite2", input_size=size).features(
            [dataset.root / n for n in items], views=views)
        described = {}
        for view in views:
            by_name = {Path(p).name: m for (p, v), m in maps.items() if v == view}
            order = [n for n in items if n in by_name]
            x = np.stack([by_name[n] for n in order]).astype(np.float32)
            for name, v in zip(order, candidate_on_maps(args, fold, candidate, x)):
                described[name] = described.get(name, 0) + v
        _RESIZED[key] = {n: normalise(v[None])[0] for n, v in described.items()}
    return {**vectors, **_RESIZED[key]}


def with_flip(vectors: dict, flipped: dict) -> dict:
    """Flip test-time augmentation: the mean of an image's and its mirror image's descriptors, normalised."""
    return {n: normalise((v + flipped[n])[None])[0] if n in flipped else v for n, v in vectors.items()}


def centred(vectors: dict, dataset, known) -> dict:
    snapshots = {s for look in dataset.looks.values() for s in look.snapshots}
    known_snaps = [s for i in known for s in dataset.looks[i].snapshots if s in vectors]
    known_items = sorted({dataset.item_name(k) for i in known for k in dataset.looks[i].items} & set(vectors))
    mu_s = np.mean([vectors[n] for n in known_snaps], axis=0)
    mu_i = np.mean([vectors[n] for n in known_items], axis=0)
    return {n: normalise((v - (mu_s if n in snapshots else mu_i))[None])[0] for n, v in vectors.items()}


def mean_pooling(extra: float):
    """pool_by_look with ``extra`` times the mean of a look's photos added to its best (monkeypatched in)."""
    import ml.retrieval.scoring as scoring

    original = scoring.pool_by_look

    def pool(scores, gallery_looks, weight):
        out = original(scores, gallery_looks, weight)
        looks = np.asarray(gallery_looks)
        mean = np.empty_like(out)
        for look in np.unique(looks):
            cols = np.flatnonzero(looks == look)
            mean[:, cols] = np.asarray(scores)[:, cols].mean(axis=1, keepdims=True)
        return (out + extra * mean).astype(np.float32)

    return original, pool


def softmax_hubness(temperature: float):
    """CSLS's hubness replaced by the inverted softmax's normaliser: tau * logsumexp(<g, r> / tau) over the
    reference set (Smith et al. 2017; a dual softmax for ranking one query's gallery)."""
    def hub(vectors, reference, top_k):
        if len(reference) == 0:
            return np.zeros(len(vectors), np.float32)
        sims = normalise(vectors) @ normalise(reference).T / temperature
        top = sims.max(axis=1, keepdims=True)
        return (temperature * (top[:, 0] + np.log(np.exp(sims - top).sum(axis=1)))).astype(np.float32)

    return hub


def clipped_hubness(quantile: float):
    """``softmax_hubness`` floored at ``quantile`` of the known snapshots' hubness against the known items (set
    per fold by the returned transform, before that fold is scored)."""
    import ml.retrieval.scoring as scoring

    original = scoring.softmax_hubness
    state = {"floor": -np.inf}

    def hub(vectors, reference, temperature, chunk=4096):
        return np.maximum(original(vectors, reference, temperature, chunk), state["floor"]).astype(np.float32)

    def per_fold(vectors, known, fold, dataset=None):
        snaps = [n for i in known for n in DATASET.looks[i].snapshots if n in vectors]
        items = sorted({DATASET.item_name(k) for i in known for k in DATASET.looks[i].items} & set(vectors))
        ref = normalise(np.stack([vectors[n] for n in items]))
        h = original(np.stack([vectors[n] for n in snaps]), ref, DEFAULT_POSTPROCESSING.item_hub_temperature)
        state["floor"] = float(np.quantile(h, quantile))
        return vectors

    per_fold.per_fold = True
    return original, hub, per_fold


def partial_centring(beta: float):
    """``centred_queries`` with strength ``beta``: q - beta * mean(own) (+ beta * mean(other) to translate)."""
    import ml.retrieval.scoring as scoring

    original = scoring.centred_queries

    def centred(query_vecs, mode, own_mean=None, other_mean=None):
        scale = lambda m: None if m is None else beta * np.asarray(m, np.float32)  # noqa: E731
        return original(query_vecs, mode, scale(own_mean), scale(other_mean))

    return original, centred


def snapshot_query_hubness(weight: float, temperature: float):
    """The ranker's snapshot -> items scores minus ``weight`` times each gallery item's inverted-softmax hubness
    against the known snapshots (patched into ``ml.retrieval.ranker``: only snapshot queries use it there)."""
    import ml.retrieval.ranker as ranker
    from ml.retrieval.scoring import softmax_hubness as hub

    original = ranker.score_matrix

    def scored(q, g, s=None, known_snapshot_vecs=None, **kwargs):
        out = original(q, g, s, known_snapshot_vecs=known_snapshot_vecs, **kwargs)
        if known_snapshot_vecs is None or len(known_snapshot_vecs) == 0 or weight <= 0:
            return out
        return (out - weight * hub(g, normalise(known_snapshot_vecs), temperature)[None, :]).astype(np.float32)

    return original, scored


def neighbour_expansion(weight: float, k: int):
    """Item-side transfer for new products (``expanded_item_queries`` patched; per-fold state set by the returned
    transform): an item query no known snapshot wears gets ``+ weight * sum_j c_j m_j / sum_j c_j`` over its ``k``
    nearest known items ``j`` (``c_j`` their cosine to the query, floored at 0; ``m_j`` the mean of the known
    snapshots whose looks link ``j``)."""
    import ml.retrieval.scoring as scoring

    original = scoring.expanded_item_queries
    state: dict = {}

    def expanded(query_item_vecs, settings=None, known_snapshot_vecs=None, query_links=None, domain_means=None):
        q = original(query_item_vecs, settings, known_snapshot_vecs, query_links, domain_means)
        if weight <= 0 or query_links is None or not state:
            return q
        links = query_links.toarray() if hasattr(query_links, "toarray") else np.asarray(query_links)
        new = np.flatnonzero(links.sum(axis=0) == 0)
        if len(new) == 0:
            return q
        raw = normalise(query_item_vecs)[new]
        sims = raw @ state["items"].T
        top = np.argsort(-sims, axis=1)[:, :k]
        c = np.maximum(np.take_along_axis(sims, top, axis=1), 0.0)
        borrowed = (c[:, :, None] * state["means"][top]).sum(axis=1) / np.maximum(c.sum(axis=1), 1e-6)[:, None]
        q = q.copy()
        q[new] = normalise(q[new] + weight * borrowed)
        return q

    def per_fold(vectors, known, fold, dataset=None):
        worn: dict = {}
        for i in known:
            look = DATASET.looks[i]
            snaps = [vectors[n] for n in look.snapshots if n in vectors]
            for key in look.items:
                worn.setdefault(DATASET.item_name(key), []).extend(snaps)
        names = sorted(n for n in worn if n in vectors and worn[n])
        state["items"] = normalise(np.stack([vectors[n] for n in names]))
        state["means"] = np.stack([np.mean(worn[n], axis=0) for n in names]).astype(np.float32)
        return vectors

    per_fold.per_fold = True
    return original, expanded, per_fold


def parse_knob(text: str) -> tuple[str, list]:
    """``name=v1,v2`` -> (name, values), values typed as the default's field."""
    name, values = text.split("=", 1)
    kind = type(getattr(DEFAULT_POSTPROCESSING, name))
    cast = (lambda v: v.lower() in ("1", "true", "yes")) if kind is bool else kind
    return name, [cast(v) for v in values.split(",")]


def reselection_rows(args, dataset, pool, candidate, settings) -> tuple[dict, dict, list]:
    """(default, re-selected, choices): the `reselect` idea of the module docstring."""
    import json

    split = subset_dataset(dataset, pool)
    done = trained_folds(args, candidate)
    vectors = {f: split_vectors(args, f, candidate, split) for f in done}
    cache: dict = {}

    def metrics(fold: int, st) -> dict:
        key = (fold, json.dumps(st.to_dict(), sort_keys=True))
        if key not in cache:
            known, held = fold_split(pool, fold)
            cache[key] = evaluate_vectors(split, vectors[fold], held, known, st)
        return cache[key]

    def s2i(m, name):
        return m["snapshot_to_items"][name] or 0.0

    def select(fold: int):
        best = settings
        for changes in ([dict(lt_weight=w, lt_top_k=k, lt_reduce=r) for w in (0.0, 0.3, 0.5, 0.7, 0.85)
                         for k in (5, 10, 20, 50) for r in ("max", "weighted")]
                        + [dict(pop_weight=pw) for pw in (0.0, 0.05, 0.1, 0.2, 0.3, 0.5)]):
            st = replace(best, **changes)
            new, old = metrics(fold, st), metrics(fold, best)
            if (s2i(new, "mAP@100") > s2i(old, "mAP@100") * 1.03 + 1e-9
                    and s2i(new, "hit@6") >= s2i(old, "hit@6") - 1e-9):
                best = st
        return best

    default_total, chosen_total, choices = new_pool(), new_pool(), []
    for test in done:
        for other in done:
            if other == test:
                continue
            st = select(other)
            choices.append((test, other, st.lt_weight, st.lt_top_k, st.lt_reduce, st.pop_weight))
            add_to_pool(default_total, metrics(test, settings))
            add_to_pool(chosen_total, metrics(test, st))
    return pool_means(default_total), pool_means(chosen_total), choices


DATASET = None
ITEM_NAMES: set = set()  # the canonical file name of every item of DATASET

REGION_SETS = {"halves": {"top": slice(0, 5), "bottom": slice(4, 9)},
               "thirds": {"top": slice(0, 4), "middle": slice(2, 7), "bottom": slice(5, 9)}}


def trained_folds(args, candidate: str) -> list[int]:
    """The folds whose heads of `candidate` ("config:seed,seed") are all trained."""
    config, seeds = candidate.split(":")
    return [f for f in range(FOLDS) if all((run_dir(args.out, f, config, int(s)) / "vectors.pkl").exists()
                                           for s in seeds.split(","))]


def split_vectors(args, fold: int, candidate: str, split) -> dict:
    """The fold's vectors for every image of `split` (zeros for an image the fold could not embed)."""
    vectors = fold_vectors(args, fold, candidate)
    zero = np.zeros(len(next(iter(vectors.values()))), np.float32)
    return {n: vectors.get(n, zero) for n in images_to_embed(split)}


def region_rows(args, dataset, pool, candidate, settings, regions: dict) -> dict:
    """item -> looks with region descriptors as extra photos of the held-out looks (module docstring)."""
    from ml.evaluation.dataset import Look, LookDataset
    from ml.training.feature_cache import FeatureCache

    total = new_pool()
    split = subset_dataset(dataset, pool)
    done = trained_folds(args, candidate)
    for fold in done:
        known, held = fold_split(pool, fold)
        vectors = split_vectors(args, fold, candidate, split)
        snaps = [n for i in held for n in split.looks[i].snapshots if n in vectors]
        maps, _ = FeatureCache(args.cache, "lite2").features([dataset.root / n for n in snaps], progress=False)
        by_name = {Path(p).name: m for (p, _), m in maps.items()}
        order = [n for n in snaps if n in by_name]
        x = np.stack([by_name[n] for n in order]).astype(np.float32)
        looks = {i: Look(i, list(l.snapshots), list(l.items)) for i, l in split.looks.items()}
        for region, rows in regions.items():
            for name, v in zip(order, candidate_on_maps(args, fold, candidate, x[:, rows])):
                vectors[f"{name}#{region}"] = v
        for i in held:
            looks[i].snapshots += [f"{n}#{r}" for n in list(split.looks[i].snapshots) if n in by_name for r in regions]
        regional = LookDataset(root=split.root, looks=looks, items={k: list(v) for k, v in split.items.items()})
        add_to_pool(total, evaluate_vectors(regional, vectors, held, known, settings))
    total = pool_means(total)
    total["folds"] = done
    return total


def pooled(args, dataset, pool, candidate, settings, transform=None, gap=None) -> dict:
    total = new_pool()
    split = subset_dataset(dataset, pool)
    done = trained_folds(args, candidate)
    for fold in done:
        known, held = fold_split(pool, fold)
        vectors = split_vectors(args, fold, candidate, split)
        if args.flip_all:  # every row on top of flip at test time
            vectors = with_flip(vectors, flip_vectors(args, dataset, list(vectors), fold, candidate))
        if transform is not None:
            vectors = transform(vectors, known) if not getattr(transform, "per_fold", False) else transform(
                vectors, known, fold)
        add_to_pool(total, evaluate_vectors(split, vectors, held, known, settings))
    total = pool_means(total)
    total["folds"] = done
    return total


def labelled_row(args, label: str, metrics: dict) -> str:
    return row(("flip at test time + " if args.flip_all else "") + label, metrics)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SHARED / "dev")
    parser.add_argument("--test-looks", type=Path, default=SHARED / "val_looks.txt")
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench" / "inner_kfold")
    parser.add_argument("--cache", type=Path, default=ROOT / "var" / "models" / "features")
    parser.add_argument("--models", nargs="+", default=["frozen:0"])
    parser.add_argument("--ideas", nargs="+", default=["fusion", "centring", "pooling"])
    parser.add_argument("--fusion-weights", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.5])
    parser.add_argument("--hub-temperatures", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.3])
    parser.add_argument("--hub-weights", type=float, nargs="+", default=[0.5, 1.0])
    parser.add_argument("--flip-all", action="store_true", help="every row with flip at test time")
    parser.add_argument("--betas", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    parser.add_argument("--s2i-hub", nargs="+", default=["0.5/0.1", "1.0/0.1"], help="weight/temperature cells")
    parser.add_argument("--neighbours", nargs="+", default=["0.5/5", "1.0/5"], help="weight/k cells")
    parser.add_argument("--knob", nargs="+", default=[], help="name=v1,v2 (the default's other knobs kept)")
    parser.add_argument("--grid", nargs="+", default=[], help="name=v1,v2 ...: every combination (idea `grid`)")
    parser.add_argument("--base", nargs="*", default=[], help="name=value changes to DEFAULT_POSTPROCESSING for every row")
    parser.add_argument("--item-sizes", type=int, nargs="+", default=[288, 320], help="idea `itemsize`")
    parser.add_argument("--pca-dims", type=int, nargs="*", default=[])
    args = parser.parse_args()
    global DATASET, ITEM_NAMES
    dataset = DATASET = LookDataset.from_folder(args.data)
    ITEM_NAMES = {dataset.item_name(k) for k in dataset.items}
    pool = sorted(set(dataset.looks) - read_look_ids(args.test_looks, dataset))
    names = images_to_embed(subset_dataset(dataset, pool))
    gap = gap_vectors(dataset, names, args.cache) if "fusion" in args.ideas else None
    base = replace(DEFAULT_POSTPROCESSING, **{n: v[0] for n, v in map(parse_knob, args.base)})
    print(HEADER.format("model, idea"))
    for model in args.models:
        m = pooled(args, dataset, pool, model, base)
        label = "flip at test time + " if args.flip_all else ""
        print(row(f"{model}, {label}DEFAULT_POSTPROCESSING (folds {m['folds']})", m), flush=True)
        if "fusion" in args.ideas:
            for a in args.fusion_weights:
                print(row(f"{model}, fusion with GAP a = {a}",
                          pooled(args, dataset, pool, model, base, lambda v, k, a=a: fused(v, gap, a))), flush=True)
            for dims in args.pca_dims:
                for a in args.fusion_weights:
                    print(row(f"{model}, fusion with GAP (PCA {dims} of the known images) a = {a}",
                              pooled(args, dataset, pool, model, base, lambda v, k, a=a, d=dims: fused(
                                  v, pca_projected(gap, dataset, k, d), a))), flush=True)
        if "centring" in args.ideas:
            print(row(f"{model}, domain centring", pooled(args, dataset, pool, model, base,
                                                          lambda v, k: centred(v, dataset, k))), flush=True)
            for ck, cw in ((10, 0.5), (20, 0.5)):
                st = replace(base, csls_k=ck, csls_weight=cw)
                print(row(f"{model}, CSLS {ck} / {cw}", pooled(args, dataset, pool, model, st)), flush=True)
                print(row(f"{model}, domain centring + CSLS {ck} / {cw}",
                          pooled(args, dataset, pool, model, st, lambda v, k: centred(v, dataset, k))), flush=True)
        if "moves" in args.ideas:
            print(row(f"{model}, domain centring of every vector (session 9)", pooled(
                args, dataset, pool, model, base, lambda v, k: centred(v, dataset, k))), flush=True)
            for label, changes in (("no query moved (session 9's default)", dict(snapshot_centring="off",
                                                                                   item_centring="off")),
                                   ("snapshot queries centred", dict(snapshot_centring="centre")),
                                   ("snapshot queries translated", dict(snapshot_centring="translate")),
                                   ("item queries centred", dict(item_centring="centre")),
                                   ("item queries translated", dict(item_centring="translate")),
                                   ("both centred", dict(snapshot_centring="centre", item_centring="centre"))):
                print(row(f"{model}, {label}", pooled(args, dataset, pool, model, replace(base, **changes))),
                      flush=True)
        if "regions" in args.ideas:
            for label, regions in REGION_SETS.items():
                print(row(f"{model}, region descriptors ({label} of the map's rows) as extra photos of each test look",
                          region_rows(args, dataset, pool, model, base, regions)), flush=True)
        if "antihub" in args.ideas:
            import ml.retrieval.scoring as scoring

            for quantile in (0.25, 0.5):
                original, hub, per_fold = clipped_hubness(quantile)
                scoring.softmax_hubness = hub
                try:
                    print(row(f"{model}, item hubness floored at the known snapshots' {quantile} quantile",
                              pooled(args, dataset, pool, model, base, per_fold)), flush=True)
                finally:
                    scoring.softmax_hubness = original
        if "flip" in args.ideas:
            def flip(v, k, fold, model=model):
                return with_flip(v, flip_vectors(args, dataset, names, fold, model))
            flip.per_fold = True
            print(row(f"{model}, flip at test time", pooled(args, dataset, pool, model, base, flip)), flush=True)
            hub = replace(base, item_hub_weight=1.0, item_hub_temperature=0.15)
            print(row(f"{model}, flip at test time + item hubness 0.15 / 1.0",
                      pooled(args, dataset, pool, model, hub, flip)), flush=True)
        if "itemsize" in args.ideas:
            for size in args.item_sizes:
                for flip_items in (False, True):
                    def at_size(v, k, fold, model=model, size=size, flip_items=flip_items):
                        return item_vectors_at(args, dataset, v, fold, model, size, flip_items)
                    at_size.per_fold = True
                    print(labelled_row(args, f"{model}, items at {size} px{' + flipped' if flip_items else ''} "
                                             "(snapshots as trained)", pooled(args, dataset, pool, model, base, at_size)),
                          flush=True)
        if "hub" in args.ideas:
            for tau in args.hub_temperatures:
                for w in args.hub_weights:
                    st = replace(base, item_hub_weight=w, item_hub_temperature=tau)
                    print(labelled_row(args, f"{model}, item hubness (inverted softmax over the known items) tau {tau} weight {w}",
                              pooled(args, dataset, pool, model, st)), flush=True)
        if "softmax" in args.ideas:
            import ml.retrieval.scoring as scoring

            original = scoring.hubness
            for tau in (0.02, 0.05, 0.1):
                for w in (0.5, 1.0):
                    scoring.hubness = softmax_hubness(tau)
                    try:
                        for label, t in (("", None), ("domain centring + ", lambda v, k: centred(v, dataset, k))):
                            st = replace(base, csls_k=1, csls_weight=w)
                            print(row(f"{model}, {label}inverted softmax tau {tau} weight {w}",
                                      pooled(args, dataset, pool, model, st, t)), flush=True)
                    finally:
                        scoring.hubness = original
        if "partial" in args.ideas:
            import ml.retrieval.scoring as scoring

            for mode in ("centre", "translate"):
                for beta in args.betas:
                    original, patched = partial_centring(beta)
                    scoring.centred_queries = patched
                    try:
                        print(labelled_row(args, f"{model}, snapshot queries {mode}d, strength {beta}", pooled(
                            args, dataset, pool, model, replace(base, snapshot_centring=mode))), flush=True)
                    finally:
                        scoring.centred_queries = original
        if "s2ihub" in args.ideas:
            import ml.retrieval.ranker as ranker

            for cell in args.s2i_hub:
                w, tau = map(float, cell.split("/"))
                original, patched = snapshot_query_hubness(w, tau)
                ranker.score_matrix = patched
                try:
                    print(labelled_row(args, f"{model}, snapshot queries: item hubness vs known snapshots w {w} tau {tau}",
                                       pooled(args, dataset, pool, model, base)), flush=True)
                finally:
                    ranker.score_matrix = original
        if "neighbours" in args.ideas:
            import ml.retrieval.scoring as scoring

            for cell in args.neighbours:
                w, k = cell.split("/")
                original, patched, per_fold = neighbour_expansion(float(w), int(k))
                scoring.expanded_item_queries = patched
                try:
                    print(labelled_row(args, f"{model}, new products borrow their {k} nearest known items' snapshots, w {w}",
                                       pooled(args, dataset, pool, model, base, per_fold)), flush=True)
                finally:
                    scoring.expanded_item_queries = original
        if "knobs" in args.ideas:
            for text in args.knob:
                name, values = parse_knob(text)
                for value in values:
                    print(labelled_row(args, f"{model}, {name} = {value}",
                                       pooled(args, dataset, pool, model, replace(base, **{name: value}))), flush=True)
        if "grid" in args.ideas:
            import itertools

            knobs = [parse_knob(text) for text in args.grid]
            for values in itertools.product(*(v for _, v in knobs)):
                changes = {name: value for (name, _), value in zip(knobs, values)}
                label = ", ".join(f"{n} = {v}" for n, v in changes.items())
                print(labelled_row(args, f"{model}, {label}",
                                   pooled(args, dataset, pool, model, replace(base, **changes))), flush=True)
        if "reselect" in args.ideas:
            default, chosen, choices = reselection_rows(args, dataset, pool, model, base)
            print(row(f"{model}, the default on each test fold (20 pairs)", default), flush=True)
            print(row(f"{model}, re-selected on one other fold, scored on the test fold (20 pairs)", chosen), flush=True)
            for c in choices:
                print(f"    test fold {c[0]}, selected on fold {c[1]}: lt {c[2]} / top-{c[3]} / {c[4]}, pop {c[5]}")
        if "perfold" in args.ideas:
            import itertools

            split = subset_dataset(dataset, pool)
            knobs = [parse_knob(text) for text in args.grid]
            for fold in trained_folds(args, model):
                known, held = fold_split(pool, fold)
                vectors = split_vectors(args, fold, model, split)
                for values in itertools.product(*(v for _, v in knobs)):
                    changes = {name: value for (name, _), value in zip(knobs, values)}
                    m = evaluate_vectors(split, vectors, held, known, replace(base, **changes))["snapshot_to_items"]
                    print(f"    fold {fold}, {', '.join(f'{n} = {v}' for n, v in changes.items())}: s->i "
                          f"{m['mAP@100']:.4f} / {m['hit@6']:.3f}", flush=True)
        if "pooling" in args.ideas:
            import ml.retrieval.scoring as scoring

            for extra in (0.25, 0.5, 1.0):
                original, patched = mean_pooling(extra)
                scoring.pool_by_look = patched
                try:
                    print(row(f"{model}, look = best photo + {extra} x mean of its photos",
                              pooled(args, dataset, pool, model, base)), flush=True)
                finally:
                    scoring.pool_by_look = original


if __name__ == "__main__":
    main()
