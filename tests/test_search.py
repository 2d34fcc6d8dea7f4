"""Tests for msml_jax.evaluation.search: blocked distances, top-k and ranking metrics.

References are computed here, densely: exact distances of small-integer embeddings
(every dot product is exact in float32, so ties are real ties), a stable argsort
for top-k, and the dense ``evaluate_ranking`` on the full matrix.
"""

import numpy as np
import pytest

from msml_jax.evaluation import search
from msml_jax.evaluation.ranking import evaluate_ranking


def integer_problem(seed, num_q=13, num_g=40, dim=4, num_ids=6, num_cams=3):
    """Small-integer embeddings (many exact ties), pids with junk and match-less queries."""
    rng = np.random.default_rng(seed)
    q = rng.integers(-2, 3, (num_q, dim)).astype(np.float32)
    g = rng.integers(-2, 3, (num_g, dim)).astype(np.float32)
    q_pids = rng.integers(0, num_ids + 2, num_q)  # ids >= num_ids have no gallery entry
    g_pids = rng.integers(0, num_ids, num_g)
    return q, g, q_pids, g_pids, rng.integers(0, num_cams, num_q), rng.integers(0, num_cams, num_g)


def exact_distances(q, g, metric):
    d2 = ((q.astype(np.int64)[:, None, :] - g.astype(np.int64)[None, :, :]) ** 2).sum(-1)
    return d2.astype(np.float32) if metric == "sqeuclidean" else np.sqrt(d2.astype(np.float32))


@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean"])
@pytest.mark.parametrize("block_rows, gallery_rows", [(5, None), (None, None), (5, 9), (5, 4), (13, 6)])
def test_top_k_is_stable_argsort_prefix(metric, block_rows, gallery_rows):
    # gallery_rows: tiles of [block_rows, gallery_rows] (a row block's first one merged whole, the others
    # through the bounds; 4 < k: the first tiles leave the bounds infinite).
    q, g, *_ = integer_problem(seed=0)
    dist = exact_distances(q, g, metric)
    assert any(len(np.unique(row)) < len(row) for row in dist)  # ties exist
    tile = {} if gallery_rows is None else {"max_block_bytes": (block_rows or len(q)) * gallery_rows * 4}
    idx, d = search.top_k(q, g, 7, metric, block_rows=block_rows, **tile)
    want = np.argsort(dist, axis=1, kind="stable")[:, :7]
    np.testing.assert_array_equal(idx, want)
    np.testing.assert_array_equal(d, np.take_along_axis(dist, want, axis=1))
    assert idx.dtype == np.int64 and d.dtype == np.float32


def test_top_k_cosine_and_whole_gallery():
    rng = np.random.default_rng(1)
    q, g = rng.standard_normal((6, 8)), rng.standard_normal((20, 8))
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    gn = g / np.linalg.norm(g, axis=1, keepdims=True)
    dist = 1.0 - qn @ gn.T
    for tile in ({}, {"max_block_bytes": 4 * 6 * 4}):
        idx, d = search.top_k(q.astype(np.float32), g.astype(np.float32), 20, "cosine", block_rows=4, **tile)
        np.testing.assert_array_equal(idx, np.argsort(dist, axis=1, kind="stable"))
        np.testing.assert_allclose(d, np.sort(dist, axis=1), atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ap_mode", ["mean_precision", "official"])
def test_blocked_evaluation_equals_dense(seed, ap_mode):
    q, g, q_pids, g_pids, q_cams, g_cams = integer_problem(seed)
    want = evaluate_ranking(exact_distances(q, g, "euclidean"), q_pids, g_pids, q_cams, g_cams,
                            max_rank=50, ap_mode=ap_mode)  # max_rank > G
    got = search.evaluate_ranking_blocked(q, g, q_pids, g_pids, q_cams, g_cams, max_rank=50,
                                          ap_mode=ap_mode, block_rows=5)
    assert sorted(got) == sorted(want)
    np.testing.assert_array_equal(got["cmc"], want["cmc"])
    assert got["num_valid_queries"] == want["num_valid_queries"] < len(q)  # some queries without match
    assert got["mAP"] == pytest.approx(want["mAP"], rel=1e-12)
    assert got["mINP"] == pytest.approx(want["mINP"], rel=1e-12)


@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean"])
@pytest.mark.parametrize("block_rows, gallery_rows", [(7, 9), (19, 40), (4, 200), (19, 13)])
def test_tiled_evaluation_equals_dense(metric, block_rows, gallery_rows):
    # Tiles of [block_rows, gallery_rows] (widths not multiples of 8 included), many pairs per query, exact
    # ties with matches, duplicates of queries (distance 0) and zero vectors; every value exact in float32.
    q, g, q_pids, g_pids, q_cams, g_cams = integer_problem(seed=8, num_q=19, num_g=200, dim=6, num_ids=5)
    g[:3] = q[:3]  # distance 0, same or other pid
    g_pids[:2] = q_pids[:2]
    q[5], g[7] = 0.0, 0.0
    dist = exact_distances(q, g, metric)
    for ap_mode in ("mean_precision", "official"):
        want = evaluate_ranking(dist, q_pids, g_pids, q_cams, g_cams, max_rank=30, ap_mode=ap_mode)
        got = search.evaluate_ranking_blocked(q, g, q_pids, g_pids, q_cams, g_cams, metric, max_rank=30,
                                              ap_mode=ap_mode, block_rows=block_rows,
                                              max_block_bytes=block_rows * gallery_rows * 4)
        np.testing.assert_array_equal(got["cmc"], want["cmc"])
        assert got["num_valid_queries"] == want["num_valid_queries"]
        assert got["mAP"] == pytest.approx(want["mAP"], rel=1e-12)
        assert got["mINP"] == pytest.approx(want["mINP"], rel=1e-12)


def test_tiled_evaluation_cosine_and_fallback(monkeypatch):
    # Gaussian embeddings against float64 cosine distances (no near-ties at this size: checked), in tiles;
    # then with no room for kept entries, through the whole-row fallback.
    rng = np.random.default_rng(9)
    q, g = rng.standard_normal((11, 16)).astype(np.float32), rng.standard_normal((150, 16)).astype(np.float32)
    q_pids, g_pids = rng.integers(0, 4, 11), rng.integers(0, 4, 150)
    q_cams, g_cams = rng.integers(0, 3, 11), rng.integers(0, 3, 150)
    qn = q / np.linalg.norm(q.astype(np.float64), axis=1, keepdims=True)
    gn = g / np.linalg.norm(g.astype(np.float64), axis=1, keepdims=True)
    dist = 1.0 - qn @ gn.T
    gaps = np.diff(np.sort(dist, axis=1), axis=1)
    assert gaps.min() > 1e-6
    want = evaluate_ranking(dist, q_pids, g_pids, q_cams, g_cams, max_rank=20)
    fallback = []
    real_blocks = search.evaluate_ranking_blocks
    monkeypatch.setattr(search, "evaluate_ranking_blocks", lambda *a, **k: fallback.append(1) or real_blocks(*a, **k))
    for kept_bytes in (search._EVAL_KEPT_BYTES, 0):
        monkeypatch.setattr(search, "_EVAL_KEPT_BYTES", kept_bytes)
        got = search.evaluate_ranking_blocked(q, g, q_pids, g_pids, q_cams, g_cams, "cosine", max_rank=20,
                                              block_rows=4, max_block_bytes=4 * 30 * 4)
        np.testing.assert_array_equal(got["cmc"], want["cmc"])
        assert got["mAP"] == pytest.approx(want["mAP"], rel=1e-12)
        assert got["mINP"] == pytest.approx(want["mINP"], rel=1e-12)
        assert len(fallback) == (kept_bytes == 0)


def test_count_before_in_row_chunks():
    # _count_before against a loop, with ties, rows spread over several key chunks (2**30 columns: 4 rows each).
    rng = np.random.default_rng(10)
    rows, cols = rng.integers(0, 11, 500), rng.integers(0, 2**30, 500)
    vals = rng.integers(0, 6, 500).astype(np.float32) / 4
    pick = rng.integers(0, 500, 60)
    got = search._count_before(rows, vals, cols, rows[pick], vals[pick], cols[pick], 2**30)
    want = [np.count_nonzero((rows == rows[i]) & ((vals < vals[i]) | ((vals == vals[i]) & (cols < cols[i]))))
            for i in pick]
    np.testing.assert_array_equal(got, want)


def test_blocks_in_any_order_and_blocks_without_valid_query():
    q, g, q_pids, g_pids, q_cams, g_cams = integer_problem(seed=4)
    q_pids[:4] = 99  # the first block has no valid query: skipped, even with NaN in it
    dist = exact_distances(q, g, "euclidean")
    want = evaluate_ranking(dist, q_pids, g_pids, q_cams, g_cams, max_rank=5)
    bad = dist.copy()
    bad[:4] = np.nan
    blocks = [(slice(7, 13), dist[7:]), (slice(0, 4), bad[:4]), (slice(4, 7), dist[4:7])]
    got = search.evaluate_ranking_blocks(blocks, q_pids, g_pids, q_cams, g_cams, max_rank=5)
    np.testing.assert_array_equal(got["cmc"], want["cmc"])
    assert got["mAP"] == pytest.approx(want["mAP"], rel=1e-12)


def test_distance_blocks_cover_queries():
    q, g, *_ = integer_problem(seed=5)
    blocks = list(search.distance_blocks(q, g, "euclidean", block_rows=5))
    assert [(r.start, r.stop) for r, _ in blocks] == [(0, 5), (5, 10), (10, 13)]
    np.testing.assert_array_equal(np.concatenate([d for _, d in blocks]), exact_distances(q, g, "euclidean"))


def test_block_rows_for():
    assert search.block_rows_for(3368, 10**6, 128 << 20) == 33  # 33 * 10**6 float32 <= 128 MiB < 34 * ...
    assert search.block_rows_for(3368, 15913, 128 << 20) == 1684  # 2 blocks fit: split evenly, not 2108 + 1260
    assert search.block_rows_for(10, 100, 1 << 30) == 10
    assert search.block_rows_for(10, 10**9, 1) == 1


def test_errors():
    q, g, q_pids, g_pids, q_cams, g_cams = integer_problem(seed=6)
    dist = exact_distances(q, g, "euclidean")
    with pytest.raises(ValueError, match="k must be an integer in"):
        search.top_k(q, g, len(g) + 1)
    with pytest.raises(ValueError, match="metric"):
        search.top_k(q, g, 3, "manhattan")
    with pytest.raises(ValueError, match="dimensions differ"):
        search.top_k(q, g[:, :3], 3)
    with pytest.raises(ValueError, match="NaN"):
        search.top_k(q, np.full_like(g, np.nan), 3)
    with pytest.raises(ValueError, match="overlaps"):
        search.evaluate_ranking_blocks([(slice(0, 13), dist), (slice(2, 3), dist[2:3])],
                                       q_pids, g_pids, q_cams, g_cams)
    with pytest.raises(ValueError, match="miss 3 queries"):
        search.evaluate_ranking_blocks([(slice(0, 10), dist[:10])], q_pids, g_pids, q_cams, g_cams)
    with pytest.raises(ValueError, match="no valid query"):
        search.evaluate_ranking_blocks([(slice(0, 13), dist)], q_pids + 100, g_pids, q_cams, g_cams)


def test_large_blocks_are_evaluated_in_pieces(monkeypatch):
    # Blocks larger than what one evaluate_ranking call gets are cut into row pieces.
    q, g, q_pids, g_pids, q_cams, g_cams = integer_problem(seed=7)
    dist = exact_distances(q, g, "euclidean")
    calls = []
    real = search.evaluate_ranking
    monkeypatch.setattr(search, "_EVAL_BLOCK_BYTES", 2 * 4 * len(g))  # two rows
    monkeypatch.setattr(search, "evaluate_ranking", lambda d, *a, **k: calls.append(len(d)) or real(d, *a, **k))
    got = search.evaluate_ranking_blocks([(slice(0, 13), dist)], q_pids, g_pids, q_cams, g_cams, max_rank=10)
    want = real(dist, q_pids, g_pids, q_cams, g_cams, max_rank=10)
    assert max(calls) == 2 and len(calls) > 3
    np.testing.assert_array_equal(got["cmc"], want["cmc"])
    assert got["mAP"] == pytest.approx(want["mAP"], rel=1e-12)
    assert got["mINP"] == pytest.approx(want["mINP"], rel=1e-12)
