"""One evaluation run: embed a data folder with an embedder, rank, score, write the rankings file.

Used by `manage.py evaluate_cgd`, so what is measured is exactly what the command prints.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ml.embedding import Embedder
from .dataset import LookDataset, read_look_ids
from .protocols import CosineRanker, EvaluationResult, Ranker, evaluate
from .report import format_table, write_metrics_json, write_rankings


def images_to_embed(dataset: LookDataset) -> list[str]:
    """Every snapshot and one representative file per distinct item."""
    return dataset.snapshot_names() + [dataset.item_name(key) for key in dataset.items]


def embed_dataset(dataset: LookDataset, embedder: Embedder, progress: bool = False) -> dict[str, np.ndarray]:
    """File name -> descriptor. An unreadable image is reported on stderr and gets a zero vector, so it is still
    in the gallery (as the platform would list it) but never scores above a readable image."""
    names = images_to_embed(dataset)
    ok_paths, vectors, errors = embedder.embed_files(
        [str(dataset.root / name) for name in names], progress=progress
    )
    for path, message in errors.items():
        print(f"skipped {Path(path).name}: {message}", file=sys.stderr)
    by_name = {Path(path).name: vector for path, vector in zip(ok_paths, vectors)}
    zero = np.zeros(embedder.dim, dtype=np.float32)
    return {name: by_name.get(name, zero) for name in names}


def run_evaluation(
    data: Path,
    test_looks: Path,
    ranker_factory,
    rankings_out: Path,
    json_out: Path | None = None,
    method: str = "",
) -> EvaluationResult:
    """Loads the folder and split, ranks with `ranker_factory(dataset) -> Ranker`, writes the outputs."""
    dataset = LookDataset.from_folder(data)
    test_look_ids = read_look_ids(test_looks, dataset)
    ranker: Ranker = ranker_factory(dataset)
    result = evaluate(dataset, test_look_ids, ranker)
    write_rankings(rankings_out, result.rankings)
    if json_out:
        write_metrics_json(
            json_out, result.metrics, {"method": method, "data": str(data), "test_looks": str(test_looks)}
        )
    return result


def cosine_ranker_factory(embedder: Embedder, progress: bool = False):
    return lambda dataset: CosineRanker(embed_dataset(dataset, embedder, progress=progress))


__all__ = ["images_to_embed", "embed_dataset", "run_evaluation", "cosine_ranker_factory", "format_table"]
