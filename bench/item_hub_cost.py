"""What the item hubness adds to one item -> looks query, beside the model's own forward pass (same run).

    flock /work/notes/measure.lock .venv/bin/python bench/item_hub_cost.py --model var/models/cgd-val

Times (median of repeats, one process, this machine's load printed beside): the model's forward pass of one
query image, and `item_query_scores` for one query over C candidate snapshots with the card's settings,
with the hubness off and on (its reference items: `hub_reference.npy` of the model).
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
from ml.retrieval.scoring import item_query_scores, normalise  # noqa: E402


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
    print(f"uptime: {os.getloadavg()}")


if __name__ == "__main__":
    main()
