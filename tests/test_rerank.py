"""Tests for msml_jax.evaluation.rerank (k-reciprocal re-ranking).

The fast, sparse implementation is compared with a direct transcription of the
algorithm of Zhong et al. (CVPR 2017), as published by the authors in Python
(``re_ranking``): dense N x N matrices, one item at a time, sets and loops.
"""

import numpy as np
import pytest

from msml_jax.evaluation import rerank
from msml_jax.evaluation.ranking import evaluate_ranking
from msml_jax.evaluation.search import evaluate_ranking_blocks


def reference_rerank(q_g, q_q, g_g, k1, k2, lambda_value):
    """Straightforward transcription: dense matrices, per-item loops."""
    num_q = q_g.shape[0]
    dist = np.concatenate([np.concatenate([q_q, q_g], axis=1),
                           np.concatenate([q_g.T, g_g], axis=1)])
    n = dist.shape[0]
    sq = (dist ** 2).astype(np.float32)
    m = (sq / sq.max(axis=0)).T  # row i: column i over its maximum
    ranked = np.argsort(m, axis=1, kind="stable")

    def neighbours(i, k):
        return list(ranked[i, :k + 1])

    def reciprocal(i, k):
        return [j for j in neighbours(i, k) if i in neighbours(j, k)]

    half = int(np.around(k1 / 2.0))
    v = np.zeros((n, n), np.float32)
    for i in range(n):
        r = reciprocal(i, k1)
        members = set(r)
        for c in r:
            rc = reciprocal(c, half)
            if len(set(rc) & set(r)) > 2.0 / 3.0 * len(rc):
                members |= set(rc)
        members = sorted(members)
        w = np.exp(-m[i, members])
        v[i, members] = w / w.sum()
    if k2 != 1:
        v = np.stack([v[ranked[i, :k2]].mean(axis=0) for i in range(n)])

    final = np.zeros((num_q, n - num_q), np.float32)
    for q in range(num_q):
        for g in range(n - num_q):
            both = (v[q] != 0) & (v[num_q + g] != 0)
            t = float(np.minimum(v[q, both], v[num_q + g, both]).sum(dtype=np.float64))
            jaccard = 1.0 - t / (2.0 - t)
            final[q, g] = (1 - lambda_value) * jaccard + lambda_value * m[q, num_q + g]
    return final


def clustered(rng, num_ids, per_id, dim=6, spread=0.6):
    """Embeddings around identity centres: non-trivial k-reciprocal structure, no ties."""
    centres = rng.standard_normal((num_ids, dim))
    pids = np.repeat(np.arange(num_ids), per_id)
    x = centres[pids] + spread * rng.standard_normal((pids.size, dim))
    return x.astype(np.float32), pids


def problem(seed, num_q=6, num_ids=9, per_id=5, dim=6):
    rng = np.random.default_rng(seed)
    x, pids = clustered(rng, num_ids, per_id, dim)
    perm = rng.permutation(len(x))
    x, pids = x[perm], pids[perm]
    return x[:num_q], x[num_q:], pids[:num_q], pids[num_q:]


def distances(a, b, metric):
    """float32 distances computed in float64 (as losses.pairwise_distance defines them)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    if metric == "cosine":
        a = a / np.linalg.norm(a, axis=1, keepdims=True)
        b = b / np.linalg.norm(b, axis=1, keepdims=True)
        return np.clip(1.0 - a @ b.T, 0.0, 2.0).astype(np.float32)
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)).astype(np.float32)


def dense_inputs(q, g, metric="euclidean"):
    q_q, g_g = distances(q, q, metric), distances(g, g, metric)
    np.fill_diagonal(q_q, 0.0)
    np.fill_diagonal(g_g, 0.0)
    return distances(q, g, metric), q_q, g_g


@pytest.mark.parametrize("k1,k2,lam", [(20, 6, 0.3), (5, 1, 0.3), (6, 3, 0.5), (3, 2, 0.0), (1, 1, 1.0),
                                       (7, 7, 0.2), (2, 1, 0.3)])
def test_matches_transcription(k1, k2, lam):
    q, g, _, _ = problem(seed=k1 * 10 + k2)
    q_g, q_q, g_g = dense_inputs(q, g)
    got = rerank.k_reciprocal_rerank(q_g, q_q, g_g, k1=k1, k2=k2, lambda_value=lam)
    want = reference_rerank(q_g, q_q, g_g, k1, k2, lam)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)
    # Not a trivial case: the Jaccard term varies over the gallery.
    if lam < 1:
        sq = q_g.astype(np.float32) ** 2
        col_max = np.maximum(sq.max(axis=1), (q_q.astype(np.float32) ** 2).max(axis=0))
        jaccard = (want - lam * sq / col_max[:, None]) / (1 - lam)
        assert jaccard.min() < 0.9 and jaccard.std() > 0.05


def test_asymmetric_float64_inputs_match_transcription():
    # Published semantics for any inputs: squares in the inputs' dtype, column maxima of D2.
    rng = np.random.default_rng(3)
    num_q, num_g = 5, 30
    q_g = rng.random((num_q, num_g)) + 0.1
    q_q = rng.random((num_q, num_q)) + 0.1
    g_g = rng.random((num_g, num_g)) + 0.1
    np.fill_diagonal(q_q, 0.0)
    np.fill_diagonal(g_g, 0.0)
    got = rerank.k_reciprocal_rerank(q_g, q_q, g_g, k1=6, k2=3, lambda_value=0.3)
    np.testing.assert_allclose(got, reference_rerank(q_g, q_q, g_g, 6, 3, 0.3), rtol=0, atol=2e-6)


@pytest.mark.parametrize("metric,k1,k2", [("euclidean", 20, 6), ("euclidean", 4, 1), ("cosine", 6, 3)])
def test_blocks_from_embeddings_match_dense(metric, k1, k2):
    q, g, _, _ = problem(seed=7, num_q=9, num_ids=10, per_id=6)
    want = rerank.k_reciprocal_rerank(*dense_inputs(q, g, metric), k1=k1, k2=k2, lambda_value=0.3)
    blocks = list(rerank.k_reciprocal_rerank_blocks(q, g, k1=k1, k2=k2, lambda_value=0.3, metric=metric,
                                                    block_rows=4))
    assert [(b[0].start, b[0].stop) for b in blocks] == [(0, 4), (4, 8), (8, 9)]
    got = np.concatenate([b[1] for b in blocks])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_reranked_blocks_evaluate_like_dense_matrix():
    q, g, q_pids, g_pids = problem(seed=11, num_q=9, num_ids=10, per_id=6)  # shapes as above: no compile
    rng = np.random.default_rng(0)
    q_cams, g_cams = rng.integers(0, 3, len(q)), rng.integers(0, 3, len(g))
    dense = rerank.k_reciprocal_rerank(*dense_inputs(q, g), k1=20, k2=6)
    blocks = rerank.k_reciprocal_rerank_blocks(q, g, k1=20, k2=6, block_rows=4)
    got = evaluate_ranking_blocks(blocks, q_pids, g_pids, q_cams, g_cams, max_rank=10)
    want = evaluate_ranking(dense, q_pids, g_pids, q_cams, g_cams, max_rank=10)
    np.testing.assert_array_equal(got["cmc"], want["cmc"])
    assert got["num_valid_queries"] == want["num_valid_queries"]
    assert got["mAP"] == pytest.approx(want["mAP"], abs=1e-12)
    assert got["mINP"] == pytest.approx(want["mINP"], abs=1e-12)


def test_ties_ordered_by_index():
    # Two identical gallery items: the published argsort orders them arbitrarily, here by index;
    # the result is still finite and symmetric in the duplicates' columns.
    q, g, _, _ = problem(seed=5)
    g = np.concatenate([g, g[:1]])
    out = rerank.k_reciprocal_rerank(*dense_inputs(q, g), k1=5, k2=2)
    assert np.isfinite(out).all()
    assert out.shape == (len(q), len(g))


@pytest.mark.parametrize("kwargs,match", [
    (dict(k1=0), "k1 must be >= 1"),
    (dict(k1=5, k2=6), r"k2 must be in \[1, k1 = 5\], got 6"),
    (dict(k2=0), "k2 must be in"),
    (dict(k1=200), "k1 = 200 needs"),
    (dict(lambda_value=1.5), "lambda_value"),
    (dict(k1=2.5), "k1 must be an integer"),
])
def test_bad_parameters(kwargs, match):
    q, g, _, _ = problem(seed=1)
    with pytest.raises(ValueError, match=match):
        rerank.k_reciprocal_rerank(*dense_inputs(q, g), **kwargs)
    with pytest.raises(ValueError, match=match):
        rerank.k_reciprocal_rerank_blocks(q, g, **kwargs)


def test_bad_inputs():
    q, g, _, _ = problem(seed=1)
    q_g, q_q, g_g = dense_inputs(q, g)
    with pytest.raises(ValueError, match="g_g_dist"):
        rerank.k_reciprocal_rerank(q_g, q_q, g_g[:-1], k1=3, k2=1)
    with pytest.raises(ValueError, match="all 0"):
        rerank.k_reciprocal_rerank(q_g * 0, q_q * 0, g_g * 0, k1=3, k2=1)
    with pytest.raises(ValueError, match="metric"):
        rerank.k_reciprocal_rerank_blocks(q, g, k1=3, k2=1, metric="sqeuclidean")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_neighbour_selection_orders_ties_by_index(dtype):
    # Many exact ties (small integers): the k smallest by (value, index) = a stable argsort's prefix,
    # on both selection paths (one int64 key for float32, lexsort otherwise).
    rng = np.random.default_rng(2)
    m = rng.integers(0, 6, (37, 3000)).astype(dtype)
    for k in (1, 5, 21):
        np.testing.assert_array_equal(rerank._smallest_k(m, k), np.argsort(m, axis=1, kind="stable")[:, :k])


@pytest.mark.parametrize("source", ["matrices", "embeddings"])
@pytest.mark.parametrize("neighbour_rows", [None, 5])  # one block of rows; blocks of 5 rows (12 blocks)
def test_neighbour_blocks_match_transcription(monkeypatch, source, neighbour_rows):
    # The neighbour lists come one block of rows at a time (distance matrices: [rows, N] slabs; embeddings:
    # [rows, rows] tiles of the symmetric N x N, read both ways): each block must zero its own diagonal.
    q, g, _, _ = problem(seed=13, num_q=9, num_ids=10, per_id=6)
    n = len(q) + len(g)
    if neighbour_rows:
        monkeypatch.setattr(rerank, "_NEIGHBOUR_BLOCK_BYTES", neighbour_rows * n * 4)
        monkeypatch.setattr(rerank, "_NEIGHBOUR_TILE_BYTES", neighbour_rows * neighbour_rows * 4)
    seen = []  # rows per block of the neighbour pass
    real = rerank.search.block_rows_for

    def block_rows_for(num_rows, row_elements, *args, **kwargs):
        rows = real(num_rows, row_elements, *args, **kwargs)
        if num_rows == n:
            seen.append(rows)
        return rows

    monkeypatch.setattr(rerank.search, "block_rows_for", block_rows_for)
    inputs = dense_inputs(q, g)
    if source == "matrices":
        got = rerank.k_reciprocal_rerank(*inputs, k1=6, k2=3, lambda_value=0.3)
    else:
        got = np.concatenate([b for _, b in rerank.k_reciprocal_rerank_blocks(q, g, k1=6, k2=3, lambda_value=0.3)])
    assert seen == [neighbour_rows or n]
    np.testing.assert_allclose(got, reference_rerank(*inputs, 6, 3, 0.3), rtol=0, atol=1e-5)


@pytest.mark.parametrize("slack", [0, 4])
def test_neighbour_tiles_recompute_rows_that_may_miss_a_neighbour(monkeypatch, slack):
    # From embeddings each row keeps k + _NEIGHBOUR_SLACK candidates by D2; a row whose last kept
    # entry rounds to the k-th M is recomputed in full. Slack 0: every row is; 7-row tiles.
    q, g, _, _ = problem(seed=13, num_q=9, num_ids=10, per_id=6)
    g = np.concatenate([g, g[:3]])  # exact ties
    monkeypatch.setattr(rerank, "_NEIGHBOUR_SLACK", slack)
    monkeypatch.setattr(rerank, "_NEIGHBOUR_TILE_BYTES", 7 * 7 * 4)
    inputs = dense_inputs(q, g)
    got = np.concatenate([b for _, b in rerank.k_reciprocal_rerank_blocks(q, g, k1=6, k2=3, lambda_value=0.3)])
    np.testing.assert_allclose(got, reference_rerank(*inputs, 6, 3, 0.3), rtol=0, atol=1e-5)


def test_top_k_merge_keeps_the_smallest_by_value_then_index():
    # Merged in batches, the kept lists are a stable argsort's prefix; both key paths (one int64 key, lexsort).
    rng = np.random.default_rng(3)
    vals = rng.integers(0, 5, (6, 40)).astype(np.float32)
    for col_bits in (None, 40):
        best = rerank._TopK(40, 7)  # rows and columns index the same 40 items; rows 0..5 merged
        if col_bits:
            best.col_bits = col_bits  # too wide for one key: the lexsort path
        for c0 in range(0, 40, 9):
            rows, cols = np.nonzero(np.ones((6, min(9, 40 - c0)), bool))
            best.merge(rows, c0 + cols, vals[rows, c0 + cols])
        want = np.argsort(vals, axis=1, kind="stable")[:, :7]
        np.testing.assert_array_equal(best.cols[:6], want)
        np.testing.assert_array_equal(best.vals[:6], np.take_along_axis(vals, want, axis=1))
        assert np.isinf(best.vals[6:]).all()
