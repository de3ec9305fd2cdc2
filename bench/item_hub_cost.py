"""What the item hubness and the query centring add to one query, beside the model's own forward pass (same run).

    flock /work/notes/measure.lock .venv/bin/python bench/item_hub_cost.py --model var/models/cgd-val

Times (median of repeats, one process, this machine's load printed beside): the model's forward pass of one
query image, and `item_query_scores` for one query over C candidate snapshots with the card's settings,
with the hubness off and on (its reference items: `hub_reference.npy` of the model); and `score_matrix` for one
snapshot query over C candidate items with look transfer through the card's `lt_top_k` known snapshots, with the
query centring (`snapshot_centring`, the model's `domain_means.npz`) off and on.
"""
import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ml.embedding import CGDEmbedder  # noqa: E402
from ml.retrieval.scoring import DomainMeans, item_query_scores, normalise, score_matrix  # noqa: E402


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--candidates", type=int, nargs="+", default=[100, 400])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    embedder = CGDEmbedder(args.model)
    if embedder.hub_reference is None:
        raise SystemExit(f"{args.model}: no hub_reference.npy")
    settings = embedder.card.postprocessing
    rng = np.random.default_rng(0)
    image = rng.uniform(-1, 1, (1, embedder.input_size, embedder.input_size, 3)).astype(np.float32)
    embedder.embed_batch(image)  # trace
    print(f"uptime: {os.getloadavg()}")
    print(f"forward pass, one image: {median_ms(lambda: embedder.embed_batch(image), args.repeats):.1f} ms")
    query = normalise(rng.normal(size=(1, embedder.dim)))
    for c in args.candidates:
        gallery = normalise(rng.normal(size=(c, embedder.dim)))
        looks = list(range(c))
        off = replace(settings, item_hub_weight=0.0)
        t_off = median_ms(lambda: item_query_scores(query, gallery, looks, off), args.repeats)
        t_on = median_ms(lambda: item_query_scores(query, gallery, looks, settings,
                                                   hub_reference=embedder.hub_reference), args.repeats)
        print(f"{c} candidates: scoring {t_off:.2f} ms without the hubness, {t_on:.2f} ms with it "
              f"({len(embedder.hub_reference)} reference items)")
    means = embedder.domain_means or DomainMeans(snapshot=normalise(rng.normal(size=(1, embedder.dim)))[0],
                                                 item=normalise(rng.normal(size=(1, embedder.dim)))[0])
    known = normalise(rng.normal(size=(max(1, settings.lt_top_k), embedder.dim)))
    for c in args.candidates:
        items = normalise(rng.normal(size=(c, embedder.dim)))
        links = (rng.uniform(size=(len(known), c)) < 0.02).astype(np.float32)
        pop = rng.integers(0, 5, c).astype(np.float32)
        plain = replace(settings, snapshot_centring="off")
        centred = replace(settings, snapshot_centring="centre")
        t_off = median_ms(lambda: score_matrix(query, items, plain, known_snapshot_vecs=known, known_links=links,
                                               item_popularity=pop), args.repeats)
        t_on = median_ms(lambda: score_matrix(query, items, centred, known_snapshot_vecs=known, known_links=links,
                                              item_popularity=pop, domain_means=means), args.repeats)
        print(f"snapshot -> {c} candidate items: scoring {t_off:.2f} ms plain, {t_on:.2f} ms with the query centred"
              f" ({'the model' if embedder.domain_means is not None else 'random'} means)")
    print(f"uptime: {os.getloadavg()}")


if __name__ == "__main__":
    main()
