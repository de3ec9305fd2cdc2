"""Writing and re-scoring evaluation results (docs/EVALUATION.md, "Rankings file").

Pure Python: nothing here imports Django.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from .dataset import LookDataset
from .protocols import (
    MAX_RANKED,
    METRIC_NAMES,
    SCORED_DIRECTIONS,
    build_tasks,
    canonical_query,
    canonical_ranking,
    score_tasks,
)

__all__ = ["write_rankings", "read_rankings", "write_metrics_json", "format_table", "score_rankings_file"]


def write_rankings(path: str | os.PathLike, rankings: Iterable[Mapping]) -> None:
    """JSON Lines, one object per query: {"query": ..., "direction": ..., "ranked": [...]}."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for rec in rankings:
            ranked = list(rec["ranked"])
            if len(ranked) > MAX_RANKED:
                raise ValueError(f"ranking of {rec['query']} has {len(ranked)} > {MAX_RANKED} entries")
            line = {"query": rec["query"], "direction": rec["direction"], "ranked": ranked}
            fh.write(json.dumps(line, ensure_ascii=False) + "\n")


def read_rankings(path: str | os.PathLike) -> list[dict]:
    """Read a rankings file; ValueError (naming file and line) on a malformed record."""
    path = Path(path)
    out = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not JSON: {e}") from None
            if (
                not isinstance(rec, dict)
                or not isinstance(rec.get("query"), str)
                or not isinstance(rec.get("direction"), str)
                or not isinstance(rec.get("ranked"), list)
                or not all(isinstance(n, str) for n in rec["ranked"])
            ):
                raise ValueError(f"{path}:{lineno}: expected {{query: str, direction: str, ranked: [str]}}")
            out.append(rec)
    return out


def write_metrics_json(path: str | os.PathLike, metrics: Mapping, extra: Mapping | None = None) -> None:
    """Write ``{**extra, "metrics": metrics}`` as indented JSON (``extra``: run details
    such as method, split, backbone...)."""
    extra = dict(extra or {})
    if "metrics" in extra:
        raise ValueError('extra must not hold a "metrics" key')
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump({**extra, "metrics": metrics}, fh, indent=2, ensure_ascii=False, allow_nan=False)
        fh.write("\n")


def _cell(value, base) -> str:
    if value is None:
        return "n/a"
    text = f"{value:.4f}"
    if base is None:
        return text
    if base == 0 or math.isnan(base):
        return f"{text} (×n/a)"
    return f"{text} (×{value / base:.2f})"


def format_table(results: Mapping[str, Mapping], baseline: str | None = "untrained") -> str:
    """Markdown table: one row per method (in ``results`` order), and for each direction
    present its mAP@100 / hit@6 / recall@6, each cell "value (×ratio to baseline)".

    ``results`` maps a method name to its metrics ({direction: {metric: value}}).
    ``baseline`` must be one of the methods (ValueError otherwise); None prints values only.
    """
    if baseline is not None and baseline not in results:
        raise ValueError(f"baseline {baseline!r} is not among the results: {list(results)}")
    present = {d for m in results.values() for d in m}
    directions = [d for d in SCORED_DIRECTIONS if d in present] + sorted(present - set(SCORED_DIRECTIONS))
    header = ["method"] + [f"{d} {m}" for d in directions for m in METRIC_NAMES]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    base_metrics = results[baseline] if baseline is not None else None
    for method, metrics in results.items():
        cells = [method]
        for d in directions:
            for m in METRIC_NAMES:
                value = metrics.get(d, {}).get(m)
                base = None
                if base_metrics is not None:
                    base = base_metrics.get(d, {}).get(m)
                    if base is None:
                        base = float("nan")
                cells.append(_cell(value, base))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def score_rankings_file(
    path: str | os.PathLike, dataset: LookDataset, test_look_ids: Iterable[int]
) -> dict[str, dict]:
    """Re-score a rankings file against the tasks of this split.

    Item queries and entries may name any file of the item.  Entries out of the gallery
    or repeated are skipped (as the metrics define).  ValueError if the file lacks a
    query of a task, holds a query twice, or holds a query or direction that is not
    part of the split's tasks.
    """
    path = Path(path)
    tasks = build_tasks(dataset, test_look_ids)
    by_key: dict[tuple[str, str], list[str]] = {}
    known_directions = {t.direction for t in tasks}
    for rec in read_rankings(path):
        direction = rec["direction"]
        if direction not in known_directions:
            raise ValueError(f"{path}: unknown direction {direction!r}")
        key = (direction, canonical_query(dataset, direction, rec["query"]))
        if key in by_key:
            raise ValueError(f"{path}: query {rec['query']} ({direction}) appears twice")
        by_key[key] = canonical_ranking(dataset, direction, rec["ranked"])

    ranked: dict[str, list[list[str]]] = {}
    for task in tasks:
        keys = [(task.direction, q.name) for q in task.queries]
        missing = [name for (_, name) in keys if (task.direction, name) not in by_key]
        if missing:
            raise ValueError(
                f"{path}: {len(missing)} {task.direction} queries have no ranking, e.g. "
                + ", ".join(missing[:5])
            )
        ranked[task.direction] = [by_key.pop(k) for k in keys]
    if by_key:
        extra = [f"{q} ({d})" for d, q in list(by_key)[:5]]
        raise ValueError(f"{path}: {len(by_key)} rankings for queries outside the split, e.g. " + ", ".join(extra))
    return score_tasks(dataset, test_look_ids, tasks, ranked)
