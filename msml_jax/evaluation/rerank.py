"""k-reciprocal re-ranking (Zhong, Zheng, Cao, Li, CVPR 2017), exact and memory-bounded.

This follows the authors' published Python version, ``re_ranking`` in
zhunzhong07/person-re-ranking (``python-version/re_ranking_ranklist.py``; the
same code is torchreid's ``torchreid/utils/rerank.py``): same inputs, same
meaning, same results.  With ``N = Q + G`` items (queries first):

    D      = [[q_q, q_g], [q_g^T, g_g]]                         N x N
    D2     = float32(D ** 2)                                    (squared in D's dtype)
    M[i]   = D2[:, i] / max(D2[:, i])                           (column i over its max, transposed)
    nn(i, k)  = the first k + 1 entries of argsort(M[i])         (i itself first)
    R(i, k)   = [j in nn(i, k) if i in nn(j, k)]                 k-reciprocal neighbours
    S(i)   = R(i, k1) and, for each c in R(i, k1) with
             |R(c, h) & R(i, k1)| > 2/3 |R(c, h)|  (h = round(k1 / 2), numpy rounding),
             R(c, h) too
    V[i, j] = exp(-M[i, j]) / sum_{j' in S(i)} exp(-M[i, j'])    for j in S(i), else 0
    if k2 != 1:  V[i] <- mean of V[j] over j in nn(i, k2 - 1)    (local query expansion)
    t[q, g] = sum_j min(V[q, j], V[Q + g, j]);   jaccard = 1 - t / (2 - t)
    final[q, g] = (1 - lambda) * jaccard + lambda * M[q, Q + g]   float32 [Q, G]

How it is computed (the published version holds several N x N matrices):
  * Only the k1 + 1 nearest neighbours of each item are kept, found one block
    of rows of M at a time for the distance matrices (a bounded selection on
    host); from embeddings D is symmetric, so each [B, B] tile of it is
    computed once (one matmul) and read both ways: per row a running bound on
    its (k1 + 1 + slack)-th smallest D2 lets only candidates leave the tile,
    merged into an exact top list by (D2, index).  Each row's maximum comes
    from the same pass, as M's row i is D2's column i.
  * V is sparse (rows of ~k1 .. 1.5 k1 entries, ~k2 times more after the
    expansion): the reciprocity tests, the 2/3 rule and the expansion are
    vectorized over the neighbour lists, V is kept as CSR arrays.
  * The Jaccard term is summed, per block of queries, only over the gallery
    items sharing a non-zero column with the query (an inverted index of V's
    gallery rows), so only ``[b, G]`` blocks exist.

Differences from the published code, all below float32 rounding except ties:
  * Ties: the published ``np.argsort`` (unstable) orders equal distances
    arbitrarily; here equal values of M are ordered by item index.  Without
    ties the neighbour lists are identical.
  * The weights' normalizing sums accumulate in float64 (then round to
    float32), the expansion's means add in another order: V differs from the
    published one by float32 rounding (~1e-7 relative).  The Jaccard sums and
    the final combination are float32 in the published order.
  * From embeddings, distances are computed in blocks (``search.block_distance``'s
    formula; for the neighbour lists one matmul of rows augmented with their
    squared norms, each pair once), not from the three given matrices, so they
    differ from a dense ``pairwise_distance`` by matmul rounding.

Only numpy and jax are needed.
"""

from __future__ import annotations

import functools
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from msml_jax.distances import EUCLIDEAN, RANKING_METRICS, SQEUCLIDEAN, inverse_norm, sq_euclidean_expansion
from msml_jax.evaluation import search
from msml_jax.evaluation.search import _flat_nonzero_sparse, _tile_dot, _TopK

__all__ = ["k_reciprocal_rerank", "k_reciprocal_rerank_blocks"]


# Buffer sizes below: 16 MiB, under glibc malloc's mmap and trim thresholds (see search._DEFAULT_TILE_BYTES),
# so that buffers are reused instead of faulted in anew: MSMT17-sized from embeddings 30.5 s at 64 MiB, 25.8 s
# at 16 (27.0 at 24, 28.9 at 8, 33.8 at 4: smaller ones cost more per block), benchmarks/rerank.py on 2 cores.
# Row blocks of the neighbour pass from distance matrices: [rows, N] float32 slabs of about this size.
_NEIGHBOUR_BLOCK_BYTES = 16 << 20
# From embeddings: [B, B] float32 tiles of the symmetric N x N of about this size.
_NEIGHBOUR_TILE_BYTES = 16 << 20
# Neighbours kept per row beyond the k needed (the margin for M's rounding ties).
_NEIGHBOUR_SLACK = 4
# Rows per vectorized step of the V construction (bounds its [b, K, H, K] tests).
_SET_BLOCK_ROWS = 4096
# Expanded (query entry, gallery entry) pairs per step of the Jaccard sums.
_JACCARD_PAIRS = 1 << 22
# Output blocks: [b, G] float32 of about this size.
_OUTPUT_BLOCK_BYTES = 16 << 20


def _num_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def _check_params(k1, k2, lambda_value, num_all: int) -> None:
    for name, v in (("k1", k1), ("k2", k2)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ValueError(f"{name} must be an integer, got {v!r}")
    if k1 < 1:
        raise ValueError(f"k1 must be >= 1, got {k1}")
    if k1 + 1 > num_all:
        raise ValueError(f"k1 = {k1} needs k1 + 1 = {k1 + 1} items (queries + gallery), "
                         f"there are {num_all}")
    if not 1 <= k2 <= k1:
        raise ValueError(f"k2 must be in [1, k1 = {k1}], got {k2}")
    if not isinstance(lambda_value, (int, float, np.floating)) or not 0.0 <= lambda_value <= 1.0:
        raise ValueError(f"lambda_value must be a number in [0, 1], got {lambda_value!r}")


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + n)`` for each (s, n), vectorized."""
    total = int(lengths.sum())
    offsets = np.cumsum(lengths) - lengths
    return np.repeat(starts - offsets, lengths) + np.arange(total)


def _check_row_max(row_max: np.ndarray, first: int) -> None:
    bad = ~(np.isfinite(row_max) & (row_max > 0))
    if bad.any():
        i = first + int(np.flatnonzero(bad)[0])
        raise ValueError(f"item {i} (0-based over queries then gallery): its distances are "
                         f"{'all 0' if row_max[i - first] == 0 else 'not finite'}; "
                         "re-ranking divides them by their maximum")


def _smallest_k(m: np.ndarray, k: int) -> np.ndarray:
    """``[b, k]`` column indices of each row's k smallest values, by (value, index); no NaN."""
    b, n = m.shape
    # The k-th smallest of a subset of a row bounds the row's k-th smallest
    # from above: every entry <= it is a candidate (~k * stride of them).
    stride = max(1, n // (64 * k))
    sample = m[:, ::stride]
    bound = np.partition(sample, k - 1, axis=1)[:, k - 1] if k < sample.shape[1] else sample.max(axis=1)
    flat = np.flatnonzero(m <= bound[:, None])
    rows, cols = np.divmod(flat, n)
    vals = m.reshape(-1)[flat]
    col_bits, row_bits = int(n - 1).bit_length(), int(b - 1).bit_length()
    if m.dtype == np.float32 and (vals >= 0).all() and row_bits + 31 + col_bits <= 63:
        # One int64 key (row, value, column): a non-negative float32's bit
        # pattern orders like its value (+0.0 only: -0.0 >= 0 but has the sign bit).
        bits = (vals + np.float32(0)).view(np.int32).astype(np.int64)
        key = np.sort((((rows << 31) | bits) << col_bits) | cols)
        rows, cols = key >> (31 + col_bits), key & ((1 << col_bits) - 1)
    else:
        order = np.lexsort((cols, vals, rows))
        rows, cols = rows[order], cols[order]
    start = np.searchsorted(rows, np.arange(b))
    return cols[start[:, None] + np.arange(k)]


def _transpose_into(out: np.ndarray, src: np.ndarray, tile: int = 64) -> None:
    """``out[:] = src.T`` in tiles of source rows: reads stay within cache lines (~4x faster)."""
    for r0 in range(0, src.shape[0], tile):
        out[:, r0:r0 + tile] = src[r0:r0 + tile].T


# --------------------------------------------------------------------------
# The two sources of M: given distance matrices, or embeddings.
# --------------------------------------------------------------------------
class _Matrices:
    """M from the three published inputs, read in blocks (no N x N concatenation)."""

    def __init__(self, q_g_dist, q_q_dist, g_g_dist):
        q_g, q_q, g_g = (np.asarray(a) for a in (q_g_dist, q_q_dist, g_g_dist))
        for name, a in (("q_g_dist", q_g), ("q_q_dist", q_q), ("g_g_dist", g_g)):
            if a.ndim != 2 or a.dtype.kind not in "fiu":
                raise ValueError(f"{name} must be a 2-D real array, got shape {a.shape} dtype {a.dtype}")
        num_q, num_g = q_g.shape
        if q_q.shape != (num_q, num_q) or g_g.shape != (num_g, num_g):
            raise ValueError(f"shapes do not fit q_g_dist {q_g.shape}: q_q_dist {q_q.shape} should be "
                             f"{(num_q, num_q)}, g_g_dist {g_g.shape} should be {(num_g, num_g)}")
        self.q_g, self.q_q, self.g_g = q_g, q_q, g_g
        self.dtype = np.result_type(q_g, q_q, g_g)  # that of the published concatenation
        self.num_query, self.num_gallery = num_q, num_g

    def _square(self, d: np.ndarray) -> np.ndarray:
        return np.square(d.astype(self.dtype, copy=False)).astype(np.float32, copy=False)

    def columns(self, i0: int, i1: int, buf: np.ndarray, buf32: np.ndarray | None) -> np.ndarray:
        """``D2[:, i0:i1].T``, float32 ``[i1 - i0, N]``; [i0, i1) within queries or within gallery.

        Written into ``buf`` (``[>= i1 - i0, N]``, the inputs' dtype) and, unless
        that is float32, ``buf32``: reused buffers spare the page faults of
        fresh 64 MiB arrays.
        """
        q = self.num_query
        out = buf[: i1 - i0]
        if i1 <= q:
            _transpose_into(out[:, :q], self.q_q[:, i0:i1])
            out[:, q:] = self.q_g[i0:i1]
        else:
            _transpose_into(out[:, :q], self.q_g[:, i0 - q:i1 - q])
            _transpose_into(out[:, q:], self.g_g[:, i0 - q:i1 - q])
        np.square(out, out=out)
        if buf32 is None:
            return out
        out32 = buf32[: i1 - i0]
        out32[...] = out
        return out32

    def pairs(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """``D2[j, i]`` for index arrays, float32."""
        q = self.num_query
        out = np.empty(i.shape, self.dtype)
        iq, jq = i < q, j < q
        m = iq & jq
        out[m] = self.q_q[j[m], i[m]]
        m = iq & ~jq
        out[m] = self.q_g[i[m], j[m] - q]
        m = ~iq & jq
        out[m] = self.q_g[j[m], i[m] - q]
        m = ~iq & ~jq
        out[m] = self.g_g[j[m] - q, i[m] - q]
        return self._square(out)

    def query_gallery(self, q0: int, q1: int, out: np.ndarray) -> np.ndarray:
        """``D2[Q + g, q]`` for queries [q0, q1) into ``out``, float32 ``[q1 - q0, G]``."""
        if self.q_g.dtype == self.dtype == np.float32:
            return np.square(self.q_g[q0:q1], out=out)
        out[...] = self._square(self.q_g[q0:q1])
        return out

    def neighbours(self, k: int):
        """(``[N, k]`` int64 nearest items by (M, index), ``[N]`` float32 maxima of D2's columns)."""
        q, n = self.num_query, self.num_query + self.num_gallery
        top = np.empty((n, k), np.int64)
        col_max = np.empty(n, np.float32)
        rows = search.block_rows_for(n, n, _NEIGHBOUR_BLOCK_BYTES)
        blocks = [(a, min(a + rows, end)) for lo, end in ((0, q), (q, n)) for a in range(lo, end, rows)]
        local = threading.local()

        def work(block):
            i0, i1 = block
            if not hasattr(local, "buf"):
                local.buf = np.empty((rows, n), self.dtype)
                local.buf32 = None if self.dtype == np.float32 else np.empty((rows, n), np.float32)
            d2 = self.columns(i0, i1, local.buf, local.buf32)
            mx = d2.max(axis=1)
            _check_row_max(mx, i0)
            col_max[i0:i1] = mx
            np.divide(d2, mx[:, None], out=d2)  # float32 / float32, as published
            top[i0:i1] = _smallest_k(d2, k)

        with ThreadPoolExecutor(max_workers=_num_threads()) as ex:
            list(ex.map(work, blocks))
        return top, col_max


def _tile_d2(xa, xb, aux_a, aux_b, metric):
    """D2 of rows ``xa`` x rows ``xb`` as one matmul of augmented rows (no [a, b] sums after it).

    Euclidean: ``[x_a, |x_a|^2, 1] . [-2 x_b, 1, |x_b|^2]``, which may round below
    0 (the reader clamps); cosine: ``[x_a / |x_a|, 1] . [-x_b / |x_b|, 1]`` = D,
    clipped to [0, 2] and squared.  ``aux_*``: ``gallery_aux`` of the rows.
    """
    hi = jax.lax.Precision.HIGHEST
    dim = xa.shape[1]
    pad = -(dim + 2) % 8  # a multiple of 8 columns: the matmul's fast path
    ones_a, ones_b = jnp.ones((xa.shape[0], 1), xa.dtype), jnp.ones((xb.shape[0], 1), xb.dtype)
    if metric == EUCLIDEAN:
        lhs = jnp.concatenate([xa, aux_a[:, None], ones_a], axis=1)
        rhs = jnp.concatenate([-2.0 * xb, ones_b, aux_b[:, None]], axis=1)
    else:
        lhs = jnp.concatenate([xa * aux_a[:, None], ones_a], axis=1)
        rhs = jnp.concatenate([-(xb * aux_b[:, None]), ones_b], axis=1)
    lhs, rhs = jnp.pad(lhs, ((0, 0), (0, pad))), jnp.pad(rhs, ((0, 0), (0, pad)))
    d = jnp.matmul(lhs, rhs.T, precision=hi)
    if metric == EUCLIDEAN:
        return d
    d = jnp.clip(d, 0.0, 2.0)
    return d * d


_tile_d2_jit = jax.jit(_tile_d2, static_argnames=("metric",))


@functools.partial(jax.jit, static_argnames=("metric",))
def _neighbour_tile(xa, xb, aux_a, aux_b, tau_a, tau_b, metric):
    """One off-diagonal tile of the symmetric N x N: raw D2 (clamp it to >= 0), candidates, maxima.

    ``code`` bit 0: ``d2 <= tau_a`` (a candidate of row a), bit 1: ``d2 <= tau_b``
    (a candidate of row b, the tile read transposed).
    """
    d2 = _tile_d2(xa, xb, aux_a, aux_b, metric)
    code = ((d2 <= tau_a[:, None]).astype(jnp.int8)
            | ((d2 <= tau_b[None, :]).astype(jnp.int8) << 1))
    return d2, code, d2.max(axis=1), d2.max(axis=0)


def _clamp(d2: np.ndarray) -> np.ndarray:
    """``max(d2, 0)`` with exact zeros ``+0.0``, in place."""
    np.copyto(d2, np.float32(0), where=~(d2 > 0))
    return d2


@functools.partial(jax.jit, static_argnames=("metric",), donate_argnums=(0,))
def _scaled_from_dot(dot, xb, aux, col_max, lambda_value, metric):
    """``lambda * (D2 / col_max)`` of rows ``xb`` x rows ``x`` given ``dot = xb @ x.T`` (its buffer is reused).

    D2: ``search.block_distance`` (squared for cosine); float32 division then
    product, as the published ``original_dist * lambda_value``.
    """
    if metric == EUCLIDEAN:
        d2 = sq_euclidean_expansion(xb, None, aux, dot=dot)
    else:
        cos = dot * (inverse_norm(xb)[:, None] * aux[None, :])
        d = jnp.clip(1.0 - cos, 0.0, 2.0)
        d2 = d * d
    return jnp.abs(d2) / col_max[:, None] * lambda_value  # abs: zeros +0.0, as search.block_distance


class _Embeddings:
    """M from embeddings: D = pairwise distances (``metric``) of [queries; gallery]."""

    def __init__(self, query_emb, gallery_emb, metric):
        if metric not in RANKING_METRICS:
            raise ValueError(f"unknown metric {metric!r}; valid metrics: {', '.join(RANKING_METRICS)}")
        query, gallery = search._prepare(query_emb, gallery_emb, metric)
        self.metric = metric
        self.num_query, self.num_gallery = query.shape[0], gallery.shape[0]
        self.x = jnp.concatenate([query, gallery])
        self.aux = search.gallery_aux(self.x, SQEUCLIDEAN if metric == EUCLIDEAN else metric)
        self.host_x = np.asarray(self.x)
        self.host_aux = np.asarray(self.aux)

    def neighbours(self, k: int):
        """(``[N, k]`` nearest items by (M, index), ``[N]`` float32 maxima of D2's rows).

        D is symmetric: each tile of blocks (I, J), J >= I, is computed once and
        read both ways (rows of I over columns J, rows of J over columns I).
        Per row, the ``k + _NEIGHBOUR_SLACK`` smallest (D2, index) are kept,
        merged tile by tile; a tile passes on only the entries at or below each
        row's current bound.  M = D2 / max orders like D2 up to rounding ties:
        the k smallest by (M, index) are chosen among the kept ones, and a row
        whose kept set could miss one (its last kept entry rounds to the k-th
        M) is recomputed in full.
        """
        n = self.num_query + self.num_gallery
        tile = search.block_rows_for(n, min(n, math.isqrt(_NEIGHBOUR_TILE_BYTES // 4)), _NEIGHBOUR_TILE_BYTES)
        edges = list(range(0, n, tile)) + [n]
        blocks = list(zip(edges[:-1], edges[1:]))
        pairs = [(bi, bj) for i, bi in enumerate(blocks) for bj in blocks[i:]]
        kept = min(n, k + _NEIGHBOUR_SLACK)
        best = _TopK(n, kept)
        row_max = np.zeros(n, np.float32)

        def submit(bi, bj):
            (a0, a1), (b0, b1) = bi, bj
            xa, xb, aux_a, aux_b = self.x[a0:a1], self.x[b0:b1], self.aux[a0:a1], self.aux[b0:b1]
            if a0 == b0:
                return _tile_d2_jit(xa, xa, aux_a, aux_a, self.metric), None, None, None
            return _neighbour_tile(xa, xb, aux_a, aux_b, best.bound(a0, a1), best.bound(b0, b1), self.metric)

        # The diagonal tiles first: each row's bound comes from its own block,
        # before any other tile is read.
        pairs.sort(key=lambda p: p[0] != p[1])
        pending = submit(*pairs[0])
        for t, ((a0, a1), (b0, b1)) in enumerate(pairs):
            d2, code, mx_a, mx_b = pending
            diagonal = a0 == b0
            if t + 1 < len(pairs) and not diagonal:
                pending = submit(*pairs[t + 1])  # runs while this tile is read
            if diagonal:
                d2 = _clamp(np.array(d2))
                pending = None  # the device buffer
                np.fill_diagonal(d2, 0.0)  # pairwise_distance(x) has an exact 0 diagonal; so does D here.
                np.maximum(row_max[a0:a1], d2.max(axis=1), out=row_max[a0:a1])
                best.merge_dense(a0, b0, d2)
                if t + 1 < len(pairs):
                    pending = submit(*pairs[t + 1])
                continue
            np.maximum(row_max[a0:a1], np.asarray(mx_a), out=row_max[a0:a1])
            code = np.asarray(code).reshape(-1)
            flat = _flat_nonzero_sparse(code)
            c, v = code[flat], _clamp(np.asarray(d2).reshape(-1)[flat])
            r, cc = np.divmod(flat, b1 - b0)
            own = (c & 1) != 0
            np.maximum(row_max[b0:b1], np.asarray(mx_b), out=row_max[b0:b1])
            other = (c & 2) != 0
            best.merge(np.concatenate([a0 + r[own], b0 + cc[other]]),
                       np.concatenate([b0 + cc[own], a0 + r[other]]), np.concatenate([v[own], v[other]]))
        del pending
        _check_row_max(row_max, 0)
        m = best.vals / row_max[:, None]  # float32 / float32, as published
        order = np.lexsort((best.cols, m), axis=-1)
        top = np.take_along_axis(best.cols, order[:, :k], axis=1)
        if kept < n:
            # Entries not kept have D2 >= the last kept one: their M is at least its M.
            last = np.take_along_axis(m, order[:, k - 1:k], axis=1)[:, 0]
            redo = np.flatnonzero(~(last < m[:, -1]))
            step = max(1, _NEIGHBOUR_TILE_BYTES // (4 * n))  # [step, N] blocks
            for r0 in range(0, redo.size, step):
                rows = redo[r0:r0 + step]
                d2 = _clamp(np.array(_tile_d2_jit(self.x[rows], self.x, self.aux[rows], self.aux, self.metric)))
                d2[np.arange(rows.size), rows] = 0.0
                top[rows] = _smallest_k(d2 / row_max[rows, None], k)
        return top, row_max

    def pairs(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Squared distances of the pairs, float32 (host, in chunks)."""
        out = np.empty(i.shape, np.float32)
        step = max(1, (8 << 20) // (4 * self.host_x.shape[1]))  # two [step, D] gathers of 8 MiB
        for s in range(0, i.size, step):
            a, b = i[s:s + step], j[s:s + step]
            dot = np.einsum("pd,pd->p", self.host_x[a], self.host_x[b])
            if self.metric == EUCLIDEAN:
                d2 = np.maximum(self.host_aux[a] + self.host_aux[b] - 2.0 * dot, 0.0)
            else:
                d = np.clip(1.0 - dot * self.host_aux[a] * self.host_aux[b], 0.0, 2.0)
                d2 = d * d
            out[s:s + step] = np.where(a == b, 0.0, d2)
        return out

    def query_gallery_blocks(self, block_rows: int, col_max: np.ndarray, lambda_value: float):
        """Yields (rows, ``lambda * D2[Q + g, q] / col_max[q]`` float32, read-only), as ``_rerank`` needs."""
        q = self.num_query
        gallery, aux = self.x[q:], self.aux[q:]
        for rows, xb in search._padded_blocks(self.x[:q], block_rows):
            mx = np.ones(xb.shape[0], np.float32)
            mx[: rows.stop - rows.start] = col_max[rows]
            # Two calls: XLA's CPU backend would fuse the sums into the matmul, ~2.5x slower.
            dot = _tile_dot(xb, gallery, 0, gallery.shape[0])
            term = _scaled_from_dot(dot, xb, aux, mx, np.float32(lambda_value), self.metric)
            yield rows, np.asarray(term)[: rows.stop - rows.start]


# --------------------------------------------------------------------------
# V: k-reciprocal sets, weights, local query expansion (CSR arrays).
# --------------------------------------------------------------------------
def _reciprocal(nn: np.ndarray) -> np.ndarray:
    """``[N, k]`` bool: ``i in nn[nn[i, r]]``."""
    out = np.empty(nn.shape, bool)
    for r0 in range(0, nn.shape[0], _SET_BLOCK_ROWS):
        r1 = min(r0 + _SET_BLOCK_ROWS, nn.shape[0])
        out[r0:r1] = (nn[nn[r0:r1]] == np.arange(r0, r1)[:, None, None]).any(axis=2)
    return out


def _expansion_sets(top: np.ndarray, k1: int):
    """CSR (indptr, cols) of S(i), columns ascending in each row."""
    n, k = top.shape
    h = int(np.around(k1 / 2.0)) + 1  # the published int(np.around(k1 / 2.)) + 1
    recip = _reciprocal(top)
    top_h = top[:, :h]
    recip_h = _reciprocal(top_h)
    size_h = recip_h.sum(axis=1)
    recip_ids = np.where(recip, top, -1)
    half_ids = np.where(recip_h, top_h, -2)  # -2: never equal to recip_ids' padding
    counts = np.empty(n, np.int64)
    cols = []
    for r0 in range(0, n, _SET_BLOCK_ROWS):
        r1 = min(r0 + _SET_BLOCK_ROWS, n)
        own = recip_ids[r0:r1]  # R(i, k1), padded
        cand = half_ids[top[r0:r1]]  # [b, k, h]: R(c, h) of c = top[i, r]
        shared = (cand[..., None] == own[:, None, None, :]).any(axis=3).sum(axis=2)
        accept = recip[r0:r1] & (shared > 2.0 / 3 * size_h[top[r0:r1]])
        members = np.concatenate([own, np.where(accept[..., None], cand, -1).reshape(r1 - r0, -1)], axis=1)
        members.sort(axis=1)
        keep = members >= 0
        keep[:, 1:] &= members[:, 1:] != members[:, :-1]
        counts[r0:r1] = keep.sum(axis=1)
        cols.append(members[keep])
    indptr = np.concatenate([[0], np.cumsum(counts)])
    return indptr, np.concatenate(cols)


def _weights(source, col_max, indptr, cols) -> np.ndarray:
    """V's values: exp(-M[i, j]) normalized over each row, float32."""
    n = indptr.shape[0] - 1
    rows = np.repeat(np.arange(n), np.diff(indptr))
    w = np.exp(-(source.pairs(rows, cols) / col_max[rows]))  # M[i, j] = D2[j, i] / max(D2[:, i])
    total = np.bincount(rows, weights=w, minlength=n).astype(np.float32)
    return w / total[rows]


def _query_expansion(indptr, cols, vals, top, k2: int):
    """CSR of V'[i] = mean of V[j] over j in top[i, :k2]."""
    n = indptr.shape[0] - 1
    lengths = np.diff(indptr)
    out_counts = np.empty(n, np.int64)
    out_cols, out_vals = [], []
    step = max(1, _SET_BLOCK_ROWS // 4)
    for r0 in range(0, n, step):
        r1 = min(r0 + step, n)
        src = top[r0:r1, :k2].ravel()
        idx = _ranges(indptr[src], lengths[src])
        owner = np.repeat(np.repeat(np.arange(r1 - r0), k2), lengths[src])
        key = owner * n + cols[idx]
        order = np.argsort(key, kind="stable")  # k2 sorted runs per row: cheap merges
        key, v = key[order], vals[idx][order]
        if key.size == 0:
            out_counts[r0:r1] = 0
            continue
        first = np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1]]))
        out_vals.append(np.add.reduceat(v, first) / k2)  # float32, as np.mean
        out_cols.append(key[first] % n)
        out_counts[r0:r1] = np.bincount(key[first] // n, minlength=r1 - r0)
    return (np.concatenate([[0], np.cumsum(out_counts)]), np.concatenate(out_cols),
            np.concatenate(out_vals))


def _gallery_index(indptr, cols, vals, num_query: int):
    """Inverted index of V's gallery rows: per column j, (gallery index, value), by column."""
    n = indptr.shape[0] - 1
    lo = indptr[num_query]
    g_rows = np.repeat(np.arange(n - num_query), np.diff(indptr[num_query:]))
    c = cols[lo:]
    order = np.argsort(c, kind="stable")
    col_ptr = np.concatenate([[0], np.cumsum(np.bincount(c, minlength=n))])
    return col_ptr, g_rows[order], vals[lo:][order]


def _shared_mass(q0, q1, indptr, cols, vals, index, t: np.ndarray) -> np.ndarray:
    """t[q, g] = sum_j min(V[q, j], V[Q + g, j]) for queries [q0, q1), into float32 ``t`` ``[q1 - q0, G]``.

    Summed in float32 over ascending j, as the published loop does.
    """
    col_ptr, g_rows, g_vals = index
    num_gallery = t.shape[1]
    t[...] = 0
    flat_t = t.reshape(-1)
    # pairs (query entry, gallery entry) up to each query, to cut the work in pieces
    e0, e1 = indptr[q0], indptr[q1]
    ent_len = col_ptr[cols[e0:e1] + 1] - col_ptr[cols[e0:e1]]
    bounds = np.concatenate([[0], np.cumsum(ent_len)])[indptr[q0 + 1:q1 + 1] - e0]
    a = q0
    while a < q1:
        # queries [a, b): about _JACCARD_PAIRS pairs (at least one query)
        base = bounds[a - q0 - 1] if a > q0 else 0
        b = min(q1, max(a + 1, q0 + int(np.searchsorted(bounds, base + _JACCARD_PAIRS, "right"))))
        s, e = indptr[a], indptr[b]
        c, v = cols[s:e], vals[s:e]
        lens = col_ptr[c + 1] - col_ptr[c]
        idx = _ranges(col_ptr[c], lens)
        local = np.repeat(np.repeat(np.arange(a - q0, b - q0), np.diff(indptr[a:b + 1])), lens)
        # Within a query the entries come by ascending column j: np.add.at adds
        # each (q, g)'s terms in the published order.
        np.add.at(flat_t, local * num_gallery + g_rows[idx], np.minimum(np.repeat(v, lens), g_vals[idx]))
        a = b
    return t


def _rerank(source, k1, k2, lambda_value, qg_blocks, out=None) -> Iterator[Tuple[slice, np.ndarray]]:
    """The re-ranked ``[b, G]`` blocks.

    ``qg_blocks(col_max)`` yields (rows, ``lambda * (D2[Q + g, q] / col_max[q])``
    block, float32): the weighted original distance.

    With ``out`` (``[Q, G]`` float32) the blocks are views of it.
    """
    num_q = source.num_query
    top, col_max = source.neighbours(k1 + 1)
    indptr, cols = _expansion_sets(top, k1)
    vals = _weights(source, col_max, indptr, cols)
    if k2 != 1:
        indptr, cols, vals = _query_expansion(indptr, cols, vals, top, k2)
    del top
    index = _gallery_index(indptr, cols, vals, num_q)
    for rows, term in qg_blocks(col_max):
        q0, q1 = rows.start, rows.stop
        # In place, float32, the published expression:
        # (1 - t / (2 - t)) * (1 - lambda) + (D2 / col_max) * lambda.
        blk = np.empty((q1 - q0, source.num_gallery), np.float32) if out is None else out[q0:q1]
        _shared_mass(q0, q1, indptr, cols, vals, index, blk)
        np.divide(blk, 2.0 - blk, out=blk)
        np.subtract(1, blk, out=blk)
        np.multiply(blk, 1 - lambda_value, out=blk)
        np.add(blk, term, out=blk)
        yield rows, blk


def k_reciprocal_rerank(q_g_dist, q_q_dist, g_g_dist, k1: int = 20, k2: int = 6,
                        lambda_value: float = 0.3) -> np.ndarray:
    """Re-ranked query x gallery distances of the published ``re_ranking`` (see module doc).

    Args:
        q_g_dist: ``[Q, G]`` query-gallery distances (not squared: they are
            squared here, as in the published code).
        q_q_dist: ``[Q, Q]`` query-query distances.
        g_g_dist: ``[G, G]`` gallery-gallery distances.
        k1: neighbours of the k-reciprocal sets (``k1 + 1 <= Q + G``).
        k2: neighbours of the local query expansion, in ``[1, k1]``
            (1: no expansion).
        lambda_value: weight of the original distance, in ``[0, 1]``.

    Returns:
        float32 ``[Q, G]`` re-ranked distances (smaller = more similar).

    Memory beyond the inputs and the output: one ``[b, Q + G]`` block per
    thread (~64 MiB each), the sparse V, and the ``[b, G]`` output blocks.

    Raises:
        ValueError: on shapes that do not fit, out-of-range parameters, or an
            item whose distances are all 0 or not finite.
    """
    source = _Matrices(q_g_dist, q_q_dist, g_g_dist)
    num_q, num_g = source.num_query, source.num_gallery
    _check_params(k1, k2, lambda_value, num_q + num_g)
    out = np.empty((num_q, num_g), np.float32)
    rows = search.block_rows_for(num_q, num_g, _OUTPUT_BLOCK_BYTES)
    buf = np.empty((rows, num_g), np.float32)

    def qg(col_max):
        for a in range(0, num_q, rows):
            b = min(a + rows, num_q)
            d2 = source.query_gallery(a, b, buf[:b - a])
            np.divide(d2, col_max[a:b, None], out=d2)
            yield slice(a, b), np.multiply(d2, lambda_value, out=d2)

    for _ in _rerank(source, k1, k2, lambda_value, qg, out=out):
        pass
    return out


def k_reciprocal_rerank_blocks(query_emb, gallery_emb, k1: int = 20, k2: int = 6, lambda_value: float = 0.3,
                               *, metric: str = EUCLIDEAN,
                               block_rows: int | None = None) -> Iterator[Tuple[slice, np.ndarray]]:
    """The same re-ranking from embeddings, as blocks of query rows; no ``N x N`` matrix exists.

    The distances are ``losses.pairwise_distance(., ., metric)`` of
    ``[query_emb; gallery_emb]``, i.e. the result is that of
    ``k_reciprocal_rerank(pd(q, g), pd(q, q), pd(g, g))`` (``pd`` =
    ``pairwise_distance``), up to matmul rounding and ties (module doc).  The
    nearest-neighbour pass runs on the default JAX device in tiles of the symmetric ``N x N``.

    Args:
        query_emb: ``[Q, D]``; gallery_emb: ``[G, D]`` (NumPy or JAX arrays).
        k1, k2, lambda_value: as ``k_reciprocal_rerank``.
        metric: one of ``distances.RANKING_METRICS``.
        block_rows: queries per yielded block (default: ~64 MiB blocks).

    Returns:
        an iterator of ``(rows, dist)``: ``rows`` a slice of query indices
        (increasing, covering ``range(Q)``), ``dist`` float32 ``[len(rows), G]``
        re-ranked distances; feed it to ``search.evaluate_ranking_blocks``.
        Arguments are checked at the call; the work starts at the first block.

    Memory: the embeddings (host and device copies), two ``[B, B]`` tiles of
    the ``N x N`` distances (~64 MiB each), the per-row top lists, the sparse
    V (~``(Q + G) * 30 * k2`` entries of 12 bytes) and
    one ``[b, G]`` block at a time.
    """
    source = _Embeddings(query_emb, gallery_emb, metric)
    num_q, num_g = source.num_query, source.num_gallery
    _check_params(k1, k2, lambda_value, num_q + num_g)
    if block_rows is None:
        block_rows = search.block_rows_for(num_q, num_g, _OUTPUT_BLOCK_BYTES)
    elif isinstance(block_rows, bool) or not isinstance(block_rows, (int, np.integer)) or block_rows < 1:
        raise ValueError(f"block_rows must be a positive integer, got {block_rows!r}")
    block_rows = int(min(block_rows, num_q))
    return _rerank(source, k1, k2, lambda_value,
                   lambda col_max: source.query_gallery_blocks(block_rows, col_max, lambda_value))
