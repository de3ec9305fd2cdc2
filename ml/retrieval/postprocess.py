"""Retrieval post-processing on L2-normalised descriptors (numpy only).

All vector inputs are ``float32`` matrices with unit-norm rows; similarity is the
dot product (cosine). ``N_k(x, X)`` is the set of the ``k`` rows of ``X`` with the
highest similarity to ``x`` (ties broken arbitrarily); ``norm(v) = v / ||v||``.
Work is done in row chunks (``chunk_size``) so the similarity matrix never has
to be held in full.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "top_k_neighbours",
    "average_query_expansion",
    "alpha_query_expansion",
    "database_side_augmentation",
    "look_transfer_scores",
]


def _normalise(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(n, 1e-12)).astype(np.float32)


def top_k_neighbours(queries: np.ndarray, database: np.ndarray, top_k: int,
                     exclude_self: bool = False, chunk_size: int = 4096):
    """Indices ``(Q, k)`` and similarities ``(Q, k)`` of each query's top-k database
    rows, sorted by decreasing similarity. ``exclude_self`` (queries is database)
    drops row i from row i's neighbours."""
    queries = np.asarray(queries, dtype=np.float32)
    database = np.asarray(database, dtype=np.float32)
    n_q, n_db = len(queries), len(database)
    k = min(int(top_k), n_db - (1 if exclude_self else 0))
    idx = np.zeros((n_q, max(k, 0)), dtype=np.int64)
    sims = np.zeros((n_q, max(k, 0)), dtype=np.float32)
    if k <= 0:
        return idx, sims
    for s in range(0, n_q, chunk_size):
        sim = queries[s:s + chunk_size] @ database.T
        if exclude_self:
            r = np.arange(sim.shape[0])
            sim[r, s + r] = -np.inf
        part = np.argpartition(-sim, k - 1, axis=1)[:, :k] if k < n_db else np.tile(np.arange(n_db), (len(sim), 1))
        part_sims = np.take_along_axis(sim, part, axis=1)
        order = np.argsort(-part_sims, axis=1, kind="stable")
        idx[s:s + chunk_size] = np.take_along_axis(part, order, axis=1)
        sims[s:s + chunk_size] = np.take_along_axis(part_sims, order, axis=1)
    return idx, sims


def _expand(vectors, database, idx, weights, chunk_size):
    """``norm(v_i + sum_r weights[i, r] * database[idx[i, r]])`` for every row i."""
    out = np.empty_like(vectors, dtype=np.float32)
    for s in range(0, len(vectors), chunk_size):
        sl = slice(s, s + chunk_size)
        neigh = database[idx[sl]]                              # (c, k, D)
        out[sl] = vectors[sl] + np.einsum("ck,ckd->cd", weights[sl], neigh)
    return _normalise(out)


def average_query_expansion(queries: np.ndarray, database: np.ndarray, top_k: int,
                            chunk_size: int = 4096) -> np.ndarray:
    """AQE: ``q' = norm(q + sum_{d in N_k(q, database)} d)`` (the normalised mean of
    the query and its top_k database neighbours). Returns ``(Q, D)`` float32."""
    return alpha_query_expansion(queries, database, top_k, alpha=0.0, chunk_size=chunk_size)


def alpha_query_expansion(queries: np.ndarray, database: np.ndarray, top_k: int, alpha: float,
                          chunk_size: int = 4096) -> np.ndarray:
    """alpha-QE (Radenovic et al.): ``q' = norm(q + sum_{d in N_k(q)} max(<q,d>, 0)^alpha * d)``.

    The query itself has weight 1. ``alpha = 0`` gives AQE (``0^0 = 1``: all
    neighbours weight 1, including non-positive ones). Returns ``(Q, D)`` float32.
    """
    queries = np.asarray(queries, dtype=np.float32)
    database = np.asarray(database, dtype=np.float32)
    idx, sims = top_k_neighbours(queries, database, top_k, chunk_size=chunk_size)
    if idx.shape[1] == 0:
        return _normalise(queries)
    weights = np.ones_like(sims) if alpha == 0 else np.power(np.maximum(sims, 0.0), alpha)
    return _expand(queries, database, idx, weights.astype(np.float32), chunk_size)


def database_side_augmentation(database: np.ndarray, top_k: int, alpha: float | None = None,
                               chunk_size: int = 4096) -> np.ndarray:
    """DBA: ``d_i' = norm(d_i + sum_{d_j in N_k(d_i, database \\ {d_i})} w_ij d_j)``,
    ``w_ij = 1`` if ``alpha is None`` (mean) else ``max(<d_i, d_j>, 0)^alpha``.

    Neighbours come from the ORIGINAL database (not sequentially updated) and
    exclude the vector itself, which always has weight 1. Returns ``(N, D)`` float32.
    """
    database = np.asarray(database, dtype=np.float32)
    idx, sims = top_k_neighbours(database, database, top_k, exclude_self=True, chunk_size=chunk_size)
    if idx.shape[1] == 0:
        return _normalise(database)
    weights = np.ones_like(sims) if alpha is None else np.power(np.maximum(sims, 0.0), alpha)
    return _expand(database, database, idx, weights.astype(np.float32), chunk_size)


def look_transfer_scores(query_vecs: np.ndarray, known_snapshot_vecs: np.ndarray,
                         known_snapshot_item_links, direct_scores: np.ndarray,
                         weight: float, top_k: int | None = 10, reduce: str = "max",
                         chunk_size: int = 4096) -> np.ndarray:
    """Blend direct query->item scores with scores transferred through known looks.

    Let ``S`` be the known snapshot vectors, ``L`` the ``(n_snapshots, n_items)``
    0/1 link matrix (dense bool/0-1 array or scipy sparse; ``L[s, g] = 1`` when a
    look of snapshot s links gallery item g), ``N(q)`` the ``top_k`` snapshots most
    similar to q (all snapshots if ``top_k`` is None) and ``w_qs = max(<q, s>, 0)``::

        reduce="max":      T[q, g] = max_{s in N(q), L[s,g]=1} w_qs       (0 if none)
        reduce="weighted": T[q, g] = sum_{s in N(q)} w_qs L[s, g] / sum_{s in N(q)} w_qs

        score[q, g] = (1 - weight) * direct_scores[q, g] + weight * T[q, g]

    "max" keeps the cosine scale of the direct scores (an item scores as high as
    the most similar known snapshot whose look contains it); "weighted" is a
    similarity-weighted vote in [0, 1]. The loop runs over the ``top_k`` neighbour
    ranks, never over queries. Returns ``(Q, n_items)`` float32.
    """
    if reduce not in ("max", "weighted"):
        raise ValueError("reduce must be 'max' or 'weighted'")
    query_vecs = np.asarray(query_vecs, dtype=np.float32)
    snaps = np.asarray(known_snapshot_vecs, dtype=np.float32)
    direct = np.asarray(direct_scores, dtype=np.float32)
    links = known_snapshot_item_links
    sparse = hasattr(links, "tocsr")
    if sparse:
        links = links.tocsr()
    else:
        links = np.asarray(links)
    n_items = links.shape[1]
    if direct.shape != (len(query_vecs), n_items):
        raise ValueError(f"direct_scores shape {direct.shape} != ({len(query_vecs)}, {n_items})")

    k = len(snaps) if top_k is None else min(int(top_k), len(snaps))
    idx, sims = top_k_neighbours(query_vecs, snaps, k, chunk_size=chunk_size)
    w = np.maximum(sims, 0.0)
    transfer = np.zeros_like(direct)
    for r in range(idx.shape[1]):
        rows = links[idx[:, r]]
        rows = rows.toarray() if sparse else rows
        contrib = w[:, r:r + 1] * rows.astype(np.float32)
        if reduce == "max":
            np.maximum(transfer, contrib, out=transfer)
        else:
            transfer += contrib
    if reduce == "weighted":
        transfer /= np.maximum(w.sum(axis=1, keepdims=True), 1e-12)
    return ((1.0 - weight) * direct + weight * transfer).astype(np.float32)
