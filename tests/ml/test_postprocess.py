"""Retrieval post-processing on hand-made unit vectors (numpy only, no Django)."""

import numpy as np
import pytest

from ml.retrieval.postprocess import (alpha_query_expansion, average_query_expansion,
                                      database_side_augmentation, look_transfer_scores,
                                      top_k_neighbours)

F = np.float32
# 2-D database, all unit norm
D0, D1, D2, D3 = [1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.8, 0.6]
DB = np.array([D0, D1, D2, D3], dtype=F)
Q = np.array([[1.0, 0.0]], dtype=F)          # sims to DB: d0 1.0, d1 0.0, d2 0.6, d3 0.8


def test_top_k_neighbours_sorted():
    idx, sims = top_k_neighbours(Q, DB, 3)
    np.testing.assert_array_equal(idx, [[0, 3, 2]])
    np.testing.assert_allclose(sims, [[1.0, 0.8, 0.6]], atol=1e-6)
    idx, _ = top_k_neighbours(DB, DB, 1, exclude_self=True)
    # nearest other vector: d0 -> d3 (0.8), d1 -> d2 (0.8), d2 -> d3 (0.96), d3 -> d2 (0.96)
    np.testing.assert_array_equal(idx[:, 0], [3, 2, 3, 2])


def test_average_query_expansion():
    # top-2 of q = d0 (1.0) and d3 (0.8): q + d0 + d3 = (2.8, 0.6), norm sqrt(8.2) = 2.86356
    out = average_query_expansion(Q, DB, top_k=2)
    np.testing.assert_allclose(out, [[2.8 / np.sqrt(8.2), 0.6 / np.sqrt(8.2)]], atol=1e-6)
    np.testing.assert_allclose(out, [[0.977802, 0.209529]], atol=1e-5)
    assert out.dtype == np.float32
    # top_k = 0 leaves the query unchanged
    np.testing.assert_allclose(average_query_expansion(Q, DB, top_k=0), Q)


def test_alpha_query_expansion():
    # alpha = 2, top-2: weights 1^2 = 1 (d0) and 0.8^2 = 0.64 (d3)
    # q + d0 + 0.64 d3 = (1 + 1 + 0.512, 0.384) = (2.512, 0.384), norm 2.541181
    out = alpha_query_expansion(Q, DB, top_k=2, alpha=2.0)
    np.testing.assert_allclose(out, [[2.512 / 2.541181, 0.384 / 2.541181]], atol=1e-5)
    # alpha = 0 is AQE
    np.testing.assert_allclose(alpha_query_expansion(Q, DB, 2, alpha=0.0), average_query_expansion(Q, DB, 2),
                               atol=1e-7)
    # negative similarities get weight 0: only d4 = (-0.6, 0.8) (sim -0.6) as neighbour -> q unchanged
    out = alpha_query_expansion(Q, np.array([[-0.6, 0.8]], F), top_k=1, alpha=1.0)
    np.testing.assert_allclose(out, Q, atol=1e-7)


def test_alpha_query_expansion_batch_of_queries():
    # a query equal to d1 = (0, 1): top-1 = d1 itself, alpha=3 weight 1 -> normalised 2 * d1 = d1
    queries = np.array([[1.0, 0.0], [0.0, 1.0]], F)
    out = alpha_query_expansion(queries, DB, top_k=1, alpha=3.0)
    np.testing.assert_allclose(out, [[1.0, 0.0], [0.0, 1.0]], atol=1e-6)


def test_database_side_augmentation_mean():
    # top-1 other neighbour: d0 -> d3: (1.8, 0.6)/1.897367 = (0.948683, 0.316228)
    #                        d1 -> d2: (0.6, 1.8) -> (0.316228, 0.948683)
    #                        d2 -> d3 and d3 -> d2: (1.4, 1.4) -> (0.707107, 0.707107)
    out = database_side_augmentation(DB, top_k=1)
    expected = [[0.948683, 0.316228], [0.316228, 0.948683], [0.707107, 0.707107], [0.707107, 0.707107]]
    np.testing.assert_allclose(out, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)


def test_database_side_augmentation_weighted():
    # alpha = 1, top-2 for d0: d3 (0.8) and d2 (0.6):
    # d0 + 0.8 d3 + 0.6 d2 = (1 + 0.64 + 0.36, 0.48 + 0.48) = (2.0, 0.96), norm 2.218468
    out = database_side_augmentation(DB, top_k=2, alpha=1.0, chunk_size=3)   # chunking must not matter
    np.testing.assert_allclose(out[0], [2.0 / 2.218468, 0.96 / 2.218468], atol=1e-5)
    np.testing.assert_allclose(out, database_side_augmentation(DB, top_k=2, alpha=1.0), atol=1e-7)


# look transfer: 3-D, 3 known snapshots, 4 gallery items
SNAPS = np.array([[0.8, 0.6, 0.0],    # s0 links items g0, g1
                  [0.0, 1.0, 0.0],    # s1 links g1, g2
                  [0.6, 0.0, 0.8]],   # s2 links g1
                 dtype=F)
LINKS = np.array([[1, 1, 0, 0], [0, 1, 1, 0], [0, 1, 0, 0]], dtype=bool)   # g3 is linked by no snapshot
QUERIES = np.array([[1.0, 0.0, 0.0],   # sims to s0, s1, s2: 0.8, 0.0, 0.6
                    [0.0, 0.6, 0.8]],  # sims: 0.36, 0.6, 0.64
                   dtype=F)
DIRECT = np.array([[0.5, 0.1, 0.2, 0.9], [0.3, 0.3, 0.3, 0.3]], dtype=F)


def test_look_transfer_max_all_snapshots():
    # T[q0] = [max(0.8), max(0.8, 0, 0.6), max(0), -] = [0.8, 0.8, 0.0, 0.0]
    # T[q1] = [0.36, max(0.36, 0.6, 0.64), 0.6, 0.0] = [0.36, 0.64, 0.6, 0.0]
    # score = 0.75 * direct + 0.25 * T
    out = look_transfer_scores(QUERIES, SNAPS, LINKS, DIRECT, weight=0.25, top_k=None)
    np.testing.assert_allclose(out, [[0.575, 0.275, 0.15, 0.675],
                                     [0.315, 0.385, 0.375, 0.225]], atol=1e-6)


def test_look_transfer_top_k_and_weights():
    # top_k = 1: q0 only sees s0 -> T = [0.8, 0.8, 0, 0]; q1 only sees s2 -> T = [0, 0.64, 0, 0]
    out = look_transfer_scores(QUERIES, SNAPS, LINKS, DIRECT, weight=1.0, top_k=1)
    np.testing.assert_allclose(out, [[0.8, 0.8, 0.0, 0.0], [0.0, 0.64, 0.0, 0.0]], atol=1e-6)
    # weight = 0 returns the direct scores
    np.testing.assert_allclose(look_transfer_scores(QUERIES, SNAPS, LINKS, DIRECT, weight=0.0), DIRECT)


def test_look_transfer_weighted_vote_and_sparse():
    # q0: w = [0.8, 0, 0.6], sum 1.4: g0 0.8/1.4 = 0.571429, g1 (0.8+0+0.6)/1.4 = 1, g2 0, g3 0
    out = look_transfer_scores(QUERIES[:1], SNAPS, LINKS, DIRECT[:1], weight=1.0, top_k=None, reduce="weighted")
    np.testing.assert_allclose(out, [[0.571429, 1.0, 0.0, 0.0]], atol=1e-5)
    sparse = pytest.importorskip("scipy.sparse")
    dense = look_transfer_scores(QUERIES, SNAPS, LINKS, DIRECT, weight=0.4, top_k=2)
    sp = look_transfer_scores(QUERIES, SNAPS, sparse.csr_matrix(LINKS), DIRECT, weight=0.4, top_k=2)
    np.testing.assert_allclose(sp, dense, atol=1e-7)
    with pytest.raises(ValueError):
        look_transfer_scores(QUERIES, SNAPS, LINKS, DIRECT[:1], weight=0.5)
