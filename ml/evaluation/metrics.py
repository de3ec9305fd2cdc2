"""Ranking metrics, exactly as docs/EVALUATION.md defines them.

Per query:

- mAP@100: the ranked list is cut at 100 entries; AP = (sum over the relevant entries
  found, of the precision at that rank) / (number of relevant items of the query).
- hit@6: 1 if a relevant entry is among the first 6, else 0.
- recall@6: relevant entries in the first 6 / number of relevant items.

Entries out of the gallery, or repeating an entry already listed, are skipped and take
no rank.  That cleaning lives in :func:`clean_ranking`, which every metric uses.

Pure Python: nothing here imports Django.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

__all__ = ["clean_ranking", "average_precision_at_k", "hit_at_k", "recall_at_k"]


def clean_ranking(ranked: Iterable[str], gallery: Collection[str] | None, k: int) -> list[str]:
    """The first ``k`` entries of ``ranked`` that are in ``gallery`` (any entry if
    ``gallery`` is None) and not already listed, in order.  Skipped entries take no rank."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if gallery is not None and not isinstance(gallery, (set, frozenset, dict)):
        gallery = set(gallery)
    out: list[str] = []
    seen: set[str] = set()
    if k == 0:
        return out
    for name in ranked:
        if name in seen or (gallery is not None and name not in gallery):
            continue
        seen.add(name)
        out.append(name)
        if len(out) == k:
            break
    return out


def _check_relevant(relevant: Collection[str]) -> None:
    if len(relevant) == 0:
        raise ValueError("a query needs at least one relevant item")


def average_precision_at_k(
    ranked: Iterable[str],
    relevant: Collection[str],
    k: int = 100,
    gallery: Collection[str] | None = None,
) -> float:
    """AP@k: sum of precision at the rank of each relevant entry within the cleaned
    top ``k``, divided by the number of relevant items (not by the number found)."""
    _check_relevant(relevant)
    relevant = set(relevant)
    hits = 0
    total = 0.0
    for rank, name in enumerate(clean_ranking(ranked, gallery, k), start=1):
        if name in relevant:
            hits += 1
            total += hits / rank
    return total / len(relevant)


def hit_at_k(
    ranked: Iterable[str],
    relevant: Collection[str],
    k: int = 6,
    gallery: Collection[str] | None = None,
) -> float:
    """1.0 if a relevant entry is among the cleaned top ``k``, else 0.0."""
    _check_relevant(relevant)
    relevant = set(relevant)
    return 1.0 if any(name in relevant for name in clean_ranking(ranked, gallery, k)) else 0.0


def recall_at_k(
    ranked: Iterable[str],
    relevant: Collection[str],
    k: int = 6,
    gallery: Collection[str] | None = None,
) -> float:
    """Relevant entries among the cleaned top ``k`` / number of relevant items."""
    _check_relevant(relevant)
    relevant = set(relevant)
    found = sum(1 for name in clean_ranking(ranked, gallery, k) if name in relevant)
    return found / len(relevant)
