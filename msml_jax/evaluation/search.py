"""Query x gallery distances, top-k retrieval and ranking metrics in query blocks.

Nothing here holds the whole ``[Q, G]`` distance matrix: queries are taken in
blocks of ``b`` rows, each block's ``[b, G]`` distances are computed on the
default JAX device (one jitted program, compiled once: the last block is
padded) and consumed before the next one is made.  Memory grows with
``b * G`` (about ``max_block_bytes``, 128 MiB by default), not with ``Q * G``.

* ``distance_blocks``: the ``(query slice, [b, G] float32 numpy)`` blocks.
* ``top_k``: the ``k`` nearest gallery items of every query, exactly as the
  first ``k`` columns of a stable ``argsort`` of the full distance rows (ties
  by gallery index), in ``[b, G']`` tiles: only the entries at or below each
  row's current k-th distance leave a tile, merged into exact top lists.
* ``evaluate_ranking_blocks``: the dense ``evaluate_ranking`` (Market-1501
  protocol) applied to each block of rows and combined; accepts any blocks,
  e.g. re-ranked ones from ``msml_jax.evaluation.rerank``.
* ``evaluate_ranking_blocked``: both of the above, from embeddings.

Distances are those of ``msml_jax.distances.pairwise_distance`` (its
``METRICS``), from the same pieces (float32, highest matmul precision); pass
the embeddings through ``distances.comparable`` first, as the dense evaluation
does.  The gallery is put on the device once: pass a JAX
array to avoid that copy (on the CPU backend a NumPy gallery costs one copy in host memory).
"""

from __future__ import annotations

import functools
from typing import Iterable, Iterator, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from msml_jax.evaluation.ranking import AP_MODES, MEAN_PRECISION, evaluate_ranking
from msml_jax.distances import (COSINE, EUCLIDEAN, METRICS, SQEUCLIDEAN, check_metric, inverse_norm, l2_normalize,
                                sq_euclidean_expansion)

__all__ = ["METRICS", "distance_blocks", "top_k", "evaluate_ranking_blocks",
           "evaluate_ranking_blocked", "block_rows_for"]

# Default size of one [b, G] float32 distance block: large enough that the
# per-block costs (launch, evaluate_ranking's O(G) bookkeeping) are amortized,
# small enough to keep a 10^6 gallery evaluation within a few hundred MiB.
_DEFAULT_BLOCK_BYTES = 128 << 20

# Gallery rows per tile of top_k: a multiple of this.  How XLA's CPU matmul rounds a product (~1 ulp) depends
# on the block's shape (its kernel and blocking): with such widths the 10^6 benchmark gallery gets bitwise the
# products, hence the top-k, of the whole-row blocks; other shapes (or the 10^5 one) may swap near-ties.
_TILE_ALIGN = 128

# Queries per tile of top_k (its tiles are [b, G'] with b of at most this and G' as max_block_bytes allows).
_TOP_K_TILE_QUERIES = 4096

# Distances handed to one evaluate_ranking call (it needs several times that).
_EVAL_BLOCK_BYTES = 32 << 20


def block_rows_for(num_rows: int, row_elements: int, max_block_bytes: int = _DEFAULT_BLOCK_BYTES,
                   itemsize: int = 4) -> int:
    """Rows per block so that a ``[b, row_elements]`` block stays within ``max_block_bytes``.

    The rows are split evenly (the last, padded block wastes little), and ``b``
    is at least 1 and at most ``num_rows``.
    """
    cap = max(1, int(max_block_bytes) // max(1, row_elements * itemsize))
    num_blocks = -(-max(num_rows, 1) // cap)
    return max(1, min(num_rows, -(-num_rows // num_blocks)))


def _as_embeddings(name: str, x) -> jax.Array:
    """``x`` as a 2-D float32 JAX array on the default device (a JAX array is not copied); rejects NaN/inf.

    (Sharing a NumPy array's memory through DLPack would spare the CPU backend
    a copy, but XLA then releases it from its own threads and, at interpreter
    exit, aborts the process now and then: JAX 0.7 / NumPy 2.4.)
    """
    if not isinstance(x, jax.Array):
        x = np.asarray(x)
        if x.dtype.kind not in "fiu":
            raise ValueError(f"{name} must be a real array, got dtype {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D [num, dim], got shape {tuple(x.shape)}")
    x = jnp.asarray(x)
    dtype = jnp.promote_types(x.dtype, jnp.float32)
    if x.dtype != dtype:
        x = x.astype(dtype)
    if not bool(_all_finite(x)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


# max |x| propagates NaN and inf; jitted it fuses into one reduction (isfinite(x).all()
# materializes a [G, D] bool array on the CPU backend).
_all_finite = jax.jit(lambda x: jnp.isfinite(jnp.max(jnp.abs(x))))


@functools.partial(jax.jit, static_argnames=("metric",))
def gallery_aux(gallery: jax.Array, metric: str) -> jax.Array:
    """Per gallery row: squared norm (euclidean metrics) or inverse norm (cosine), ``[G]``."""
    if metric == COSINE:
        return inverse_norm(gallery)
    return jnp.sum(gallery * gallery, axis=-1)


def block_distance(query: jax.Array, gallery: jax.Array, aux: jax.Array, metric: str,
                   dot: jax.Array | None = None) -> jax.Array:
    """``[b, G]`` distances of ``distances.pairwise_distance`` (traceable, no gradient care).

    ``aux = gallery_aux(gallery, metric)``, computed once for the whole gallery
    (so the gallery is never normalized or copied per block).  Exact zeros are
    ``+0.0``, so negated distances tie as the distances do.  ``dot``: the
    product ``_block_dot(query, gallery, metric)`` made apart (then ``gallery``
    is not read): on XLA's CPU backend the arithmetic fused into the matmul
    runs ~2.5x slower than after it.
    """
    if metric == COSINE:
        if dot is None:
            dot = jnp.matmul(l2_normalize(query), gallery.T, precision=jax.lax.Precision.HIGHEST)
        dist = jnp.clip(1.0 - dot * aux[None, :], 0.0, 2.0)
    else:
        dist = sq_euclidean_expansion(query, gallery, aux, dot=dot)
        if metric == EUCLIDEAN:
            dist = jnp.sqrt(dist)
    return jnp.where(dist > 0, dist, 0.0)


@jax.jit
def _dot_jit(xb, x):
    return jnp.matmul(xb, x.T, precision=jax.lax.Precision.HIGHEST)


def _block_dot(query: jax.Array, gallery: jax.Array, metric: str) -> jax.Array:
    """The product ``block_distance`` starts from, as its own program (not fused with the arithmetic)."""
    return _dot_jit(l2_normalize(query) if metric == COSINE else query, gallery)


@functools.partial(jax.jit, static_argnames=("metric",), donate_argnums=(0,))
def _distance_from_dot(dot, query, aux, metric):
    return block_distance(query, None, aux, metric, dot=dot)


@functools.partial(jax.jit, static_argnames=("metric",), donate_argnums=(0,))
def _presqrt_and_code(dot, query, aux, limit, metric):
    """``block_distance`` from ``dot``, but for euclidean the squared distance (the square root is the
    costly part of XLA's CPU arithmetic), and an int8 mask of the entries ``<= limit`` of their row."""
    pre = block_distance(query, None, aux, SQEUCLIDEAN if metric == EUCLIDEAN else metric, dot=dot)
    return pre, (pre <= limit[:, None]).astype(jnp.int8)


# The largest subnormal float32: XLA's CPU arithmetic reads subnormals as 0 (and flushes results to 0).
_MAX_SUBNORMAL = np.array(0x007FFFFF, np.int32).view(np.float32)


def _xla_sqrt(x: np.ndarray) -> np.ndarray:
    """XLA's float32 square root on the CPU, on the host: IEEE (NumPy's), subnormal inputs read as 0."""
    return np.where(x > _MAX_SUBNORMAL, np.sqrt(x), np.float32(0))


def _finish(pre: np.ndarray, metric: str) -> np.ndarray:
    """``block_distance``'s values from ``_presqrt_and_code``'s (the same bits: +0.0 for zeros)."""
    dist = _xla_sqrt(pre) if metric == EUCLIDEAN else pre
    return np.where(dist > 0, dist, np.float32(0))


def _presqrt_limit(bound: np.ndarray, metric: str) -> np.ndarray:
    """Per row the largest float32 ``t`` with ``sqrt(t) <= bound`` (euclidean; else ``bound``):
    ``distance <= bound`` iff ``squared distance <= t``, XLA's square root being monotone."""
    if metric != EUCLIDEAN:
        return bound
    t = np.maximum(np.square(bound.astype(np.float64)).astype(np.float32), _MAX_SUBNORMAL)
    while True:  # b * b in float64 rounds to within an ulp or two of t: a few steps
        down = (_xla_sqrt(t) > bound) & (t > _MAX_SUBNORMAL)
        up_t = np.nextafter(t, np.float32(np.inf))
        up = ~down & np.isfinite(t) & (_xla_sqrt(up_t) <= bound)
        if not (down.any() or up.any()):
            return t
        t = np.where(down, np.nextafter(t, np.float32(0)), np.where(up, up_t, t))


def _block_distance(query, gallery, aux, metric):
    """``block_distance`` in two programs: the product, then the arithmetic in its buffer."""
    return _distance_from_dot(_block_dot(query, gallery, metric), query, aux, metric)


def _flat_nonzero_sparse(code: np.ndarray) -> np.ndarray:
    """``np.flatnonzero`` of a 1-D int8 array that is mostly 0: scans it 8 bytes at a time (~8x faster)."""
    whole = code.size // 8 * 8
    words = np.flatnonzero(code[:whole].view(np.uint64))
    flat = (words[:, None] * 8 + np.arange(8)).reshape(-1)
    flat = flat[code[flat] != 0]
    return np.concatenate([flat, whole + np.flatnonzero(code[whole:])])


class _TopK:
    """Per row, the k smallest (value, column) seen so far, merged from candidate batches.

    Values are non-negative float32 (``+0.0`` only); ``num_cols`` (default ``n``) columns.
    """

    def __init__(self, n: int, k: int, num_cols: int | None = None):
        num_cols = n if num_cols is None else num_cols
        self.n, self.k = n, k
        self.vals = np.full((n, k), np.inf, np.float32)
        self.cols = np.full((n, k), num_cols, np.int64)  # num_cols: padding, after every real column
        self.col_bits = int(num_cols).bit_length()

    def bound(self, r0: int, r1: int) -> np.ndarray:
        """Upper bounds of rows [r0, r1)'s k-th smallest value (inf until k seen), a copy."""
        return self.vals[r0:r1, -1].copy()

    def merge_dense(self, r0: int, c0: int, block: np.ndarray) -> None:
        """Merges every entry of ``block`` (rows from ``r0``, columns from ``c0``): per row only its k smallest."""
        k = self.k
        for p0 in range(0, block.shape[0], 256):  # the partition's copies stay small
            part = block[p0:p0 + 256]
            if part.shape[1] > k:
                bound = np.partition(part, k - 1, axis=1)[:, k - 1]
                r, cc = np.nonzero(part <= bound[:, None])
            else:
                r, cc = np.nonzero(np.ones(part.shape, bool))
            self.merge(r0 + p0 + r, c0 + cc, part[r, cc])

    def merge(self, rows: np.ndarray, cols: np.ndarray, vals: np.ndarray) -> None:
        if rows.size == 0:
            return
        k = self.k
        uniq, local = np.unique(rows, return_inverse=True)
        u = uniq.size
        all_local = np.concatenate([np.repeat(np.arange(u), k), local])
        all_cols = np.concatenate([self.cols[uniq].ravel(), cols])
        all_vals = np.concatenate([self.vals[uniq].ravel(), vals])
        # One int64 key (row, value, column): a non-negative float32's bit
        # pattern orders like its value (+0.0 only; inf included).
        cb = self.col_bits
        if int(u - 1).bit_length() + 31 + cb <= 63:
            bits = (all_vals + np.float32(0)).view(np.int32).astype(np.int64)
            key = np.sort((((all_local.astype(np.int64) << 31) | bits) << cb) | all_cols)
            take = key.reshape(-1)[np.searchsorted(key >> (31 + cb), np.arange(u))[:, None] + np.arange(k)]
            self.cols[uniq] = take & ((1 << cb) - 1)
            self.vals[uniq] = ((take >> cb) & 0x7FFFFFFF).astype(np.int32).view(np.float32)
        else:
            order = np.lexsort((all_cols, all_vals, all_local))
            take = order[np.searchsorted(all_local[order], np.arange(u))[:, None] + np.arange(k)]
            self.cols[uniq], self.vals[uniq] = all_cols[take], all_vals[take]


def _padded_blocks(query: jax.Array, block_rows: int):
    """Yields (slice, [block_rows, D] query block), the last one zero-padded."""
    num_q = query.shape[0]
    for q0 in range(0, num_q, block_rows):
        q1 = min(q0 + block_rows, num_q)
        blk = query[q0:q1]
        if q1 - q0 < block_rows:
            blk = jnp.pad(blk, ((0, block_rows - (q1 - q0)), (0, 0)))
        yield slice(q0, q1), blk


def _prepare(query_emb, gallery_emb, metric):
    """(query, gallery) as float32 device arrays."""
    check_metric(metric)
    query = _as_embeddings("query_emb", query_emb)
    gallery = _as_embeddings("gallery_emb", gallery_emb)
    if query.shape[1] != gallery.shape[1] or gallery.shape[0] == 0:
        raise ValueError(f"query_emb [{query.shape[0]}, {query.shape[1]}] and gallery_emb [{gallery.shape[0]}, "
                         f"{gallery.shape[1]}]: dimensions differ or the gallery is empty")
    return query, gallery


def _check_block_rows(block_rows, num_q, num_g, max_block_bytes):
    if block_rows is None:
        return block_rows_for(num_q, num_g, max_block_bytes)
    if isinstance(block_rows, bool) or not isinstance(block_rows, (int, np.integer)) or block_rows < 1:
        raise ValueError(f"block_rows must be a positive integer, got {block_rows!r}")
    return int(min(block_rows, max(num_q, 1)))


def distance_blocks(query_emb, gallery_emb, metric: str = EUCLIDEAN, *, block_rows: int | None = None,
                    max_block_bytes: int = _DEFAULT_BLOCK_BYTES) -> Iterator[Tuple[slice, np.ndarray]]:
    """Query x gallery distances, one block of query rows at a time.

    Args:
        query_emb: ``[Q, D]`` embeddings (NumPy or JAX).
        gallery_emb: ``[G, D]`` embeddings.
        metric: one of ``distances.METRICS`` (as
            ``distances.pairwise_distance``).
        block_rows: queries per block; default: as many as fit ``max_block_bytes``.

    Yields:
        ``(rows, dist)``: ``rows`` a ``slice`` of query indices in increasing
        order, covering ``range(Q)``; ``dist`` float32 ``[len(rows), G]``.
    """
    query, gallery = _prepare(query_emb, gallery_emb, metric)
    block_rows = _check_block_rows(block_rows, query.shape[0], gallery.shape[0], max_block_bytes)
    return _distance_block_iter(query, gallery, metric, block_rows)


def _distance_block_iter(query, gallery, metric, block_rows):
    aux = gallery_aux(gallery, metric)
    for rows, blk in _padded_blocks(query, block_rows):
        dist = np.asarray(_block_distance(blk, gallery, aux, metric))
        yield rows, dist[: rows.stop - rows.start]


def top_k(query_emb, gallery_emb, k: int, metric: str = EUCLIDEAN, *, block_rows: int | None = None,
          max_block_bytes: int = _DEFAULT_BLOCK_BYTES) -> Tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest gallery items of every query.

    Returns:
        ``(indices, distances)``: int64 ``[Q, k]`` gallery indices and float32
        ``[Q, k]`` distances, in the order of a stable ascending sort of each
        full distance row (equal distances: smaller gallery index first).

    Raises:
        ValueError: for ``k`` outside ``[1, G]``, mismatched shapes, NaN/inf
            embeddings or an unknown metric.
    """
    query, gallery = _prepare(query_emb, gallery_emb, metric)
    num_q, num_g = query.shape[0], gallery.shape[0]
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= num_g:
        raise ValueError(f"k must be an integer in [1, num_gallery = {num_g}], got {k!r}")
    if block_rows is None:
        block_rows = block_rows_for(num_q, 1, _TOP_K_TILE_QUERIES * 4)
    block_rows = _check_block_rows(block_rows, num_q, num_g, max_block_bytes)
    best = _TopK(num_q, int(k), num_g)
    gallery_rows = block_rows_for(num_g, block_rows, max_block_bytes)
    if _TILE_ALIGN <= gallery_rows < num_g:
        gallery_rows -= gallery_rows % _TILE_ALIGN
    _search_tiles(query, gallery, metric, block_rows, gallery_rows, best)
    return best.cols, best.vals


def _search_tiles(query, gallery, metric, block_rows, gallery_rows, best: _TopK) -> None:
    """Merges into ``best`` each query's nearest gallery items, in ``[block_rows, gallery_rows]`` tiles.

    A tile's distances are made in two programs (the product, then the
    arithmetic and a mask of the entries at or below each row's current
    bound, ``best.bound``): only those leave it, merged by (distance, index).
    Euclidean: the tile holds squared distances, masked by the equivalent
    limit, and the host takes the square roots of the candidates alone.
    A row block's first tile is merged whole (by a partition on the host), so
    that its rows have a bound before any other tile is made; the next tile
    is made while one is read, with the bounds of that moment (upper bounds
    still: the result is exact).
    """
    aux = gallery_aux(gallery, metric)
    num_g = gallery.shape[0]
    tiles = [(rows, blk, g0, min(g0 + gallery_rows, num_g)) for rows, blk in _padded_blocks(query, block_rows)
             for g0 in range(0, num_g, gallery_rows)]

    def submit(t):
        rows, blk, g0, g1 = tiles[t]
        bound = np.full(block_rows, np.inf, np.float32)
        bound[: rows.stop - rows.start] = best.bound(rows.start, rows.stop)
        limit = _presqrt_limit(bound, metric)
        return _presqrt_and_code(_block_dot(blk, gallery[g0:g1], metric), blk, aux[g0:g1], limit, metric)

    pending = submit(0)
    for t, (rows, _, g0, g1) in enumerate(tiles):
        pre, code = pending
        first = g0 == 0
        if t + 1 < len(tiles) and not first:
            pending = submit(t + 1)  # made while this tile is read
        n = rows.stop - rows.start
        if first:
            best.merge_dense(rows.start, 0, _finish(np.asarray(pre)[:n], metric))
            if t + 1 < len(tiles):
                pending = submit(t + 1)
            continue
        code = np.asarray(code)[:n].reshape(-1)
        flat = _flat_nonzero_sparse(code)
        r, c = np.divmod(flat, g1 - g0)
        best.merge(rows.start + r, g0 + c, _finish(np.asarray(pre)[:n].reshape(-1)[flat], metric))


def _int_ids(name, x):
    a = np.asarray(x)
    integral = a.dtype.kind in "iu" or (a.dtype.kind == "f" and bool(np.all(a == np.round(a))))
    if a.ndim != 1 or not integral:
        raise ValueError(f"{name} must be a 1-D array of integers, got shape {a.shape} dtype {a.dtype}")
    return a.astype(np.int64, copy=False)


def _has_valid_match(q_pids, g_pids, q_camids, g_camids) -> np.ndarray:
    """``[Q]`` bool: the query has a gallery entry of its pid from another camera."""
    _, pid_code = np.unique(np.concatenate([q_pids, g_pids]), return_inverse=True)
    cams, cam_code = np.unique(np.concatenate([q_camids, g_camids]), return_inverse=True)
    num_q = q_pids.shape[0]
    key = pid_code.astype(np.int64) * len(cams) + cam_code
    pid_sorted = np.sort(pid_code[num_q:])
    key_sorted = np.sort(key[num_q:])
    same_pid = (np.searchsorted(pid_sorted, pid_code[:num_q], "right")
                - np.searchsorted(pid_sorted, pid_code[:num_q], "left"))
    same_cam = (np.searchsorted(key_sorted, key[:num_q], "right")
                - np.searchsorted(key_sorted, key[:num_q], "left"))
    return same_pid > same_cam


def evaluate_ranking_blocks(blocks: Iterable[Tuple[slice, np.ndarray]], q_pids, g_pids, q_camids, g_camids,
                            max_rank: int = 50, ap_mode: str = MEAN_PRECISION) -> dict:
    """``evaluate_ranking`` over distances given as blocks of query rows.

    Each block ``(rows, dist)`` (``rows`` a slice of query indices, ``dist``
    ``[len(rows), G]``; the blocks must cover every query exactly once, in any
    order) is evaluated by the dense ``evaluate_ranking`` and the results are
    combined, weighted by each block's valid queries: the CMC counts are
    recovered as integers, so ``cmc`` and ``num_valid_queries`` are bitwise
    those of the dense call on the assembled matrix, and ``mAP``/``mINP``
    equal it up to float64 rounding of the average (~1e-16).

    Returns:
        the dict of ``evaluate_ranking``: ``cmc`` (float64 ``[max_rank]``),
        ``mAP``, ``mINP`` and ``num_valid_queries``.

    Raises:
        ValueError: as ``evaluate_ranking`` (NaN, no valid query, bad
            arguments), or when the blocks overlap or miss queries.  A block
            without any valid query is skipped unread.
    """
    if ap_mode not in AP_MODES:
        raise ValueError(f"unknown ap_mode {ap_mode!r}; valid modes: {', '.join(AP_MODES)}")
    if isinstance(max_rank, bool) or not isinstance(max_rank, (int, np.integer)) or max_rank < 1:
        raise ValueError(f"max_rank must be a positive integer, got {max_rank!r}")
    q_pids, g_pids = _int_ids("q_pids", q_pids), _int_ids("g_pids", g_pids)
    q_camids, g_camids = _int_ids("q_camids", q_camids), _int_ids("g_camids", g_camids)
    num_q, num_g = q_pids.shape[0], g_pids.shape[0]
    if q_camids.shape[0] != num_q or g_camids.shape[0] != num_g:
        raise ValueError(f"camids lengths ({q_camids.shape[0]}, {g_camids.shape[0]}) do not match pids "
                         f"lengths ({num_q}, {num_g})")
    valid = _has_valid_match(q_pids, g_pids, q_camids, g_camids)
    g_order = np.argsort(g_pids, kind="stable")  # once, not per evaluate_ranking call
    by_pid = (g_order, g_pids[g_order])

    seen = np.zeros(num_q, bool)
    cmc_hits = np.zeros(int(max_rank), np.float64)
    ap_sum = inp_sum = 0.0
    num_valid = 0
    for rows, dist in blocks:
        if not isinstance(rows, slice) or rows.step not in (None, 1):
            raise ValueError(f"block rows must be a contiguous slice, got {rows!r}")
        start, stop, _ = rows.indices(num_q)
        if np.shape(dist) != (stop - start, num_g):
            raise ValueError(f"block for queries [{start}, {stop}) has shape {np.shape(dist)}, "
                             f"expected {(stop - start, num_g)}")
        if seen[start:stop].any():
            raise ValueError(f"block for queries [{start}, {stop}) overlaps an earlier block")
        seen[start:stop] = True
        # evaluate_ranking's working memory is several times its input: give it at most
        # _EVAL_BLOCK_BYTES of distances at a time, whatever the size of the blocks.
        rows = block_rows_for(stop - start, num_g, _EVAL_BLOCK_BYTES)
        for a in range(start, stop, rows):
            b = min(a + rows, stop)
            n_valid = int(valid[a:b].sum())
            if n_valid == 0:
                continue
            res = evaluate_ranking(dist[a - start:b - start], q_pids[a:b], g_pids, q_camids[a:b], g_camids,
                                   max_rank=int(max_rank), ap_mode=ap_mode, gallery_by_pid=by_pid)
            # cmc = cumulative hit count / n_valid: the counts are integers.
            cmc_hits += np.rint(res["cmc"] * n_valid)
            ap_sum += res["mAP"] * n_valid
            inp_sum += res["mINP"] * n_valid
            num_valid += n_valid
    if not seen.all():
        missing = np.flatnonzero(~seen)
        raise ValueError(f"the blocks miss {missing.size} queries (first: {missing[0]})")
    if num_valid == 0:
        raise ValueError("no valid query: every query lacks a matching gallery entry "
                         "(same pid, different camera) after junk removal")
    return {
        "cmc": cmc_hits / num_valid,
        "mAP": float(ap_sum / num_valid),
        "mINP": float(inp_sum / num_valid),
        "num_valid_queries": num_valid,
    }


def evaluate_ranking_blocked(query_emb, gallery_emb, q_pids, g_pids, q_camids, g_camids,
                             metric: str = EUCLIDEAN, max_rank: int = 50, ap_mode: str = MEAN_PRECISION,
                             *, block_rows: int | None = None,
                             max_block_bytes: int = _DEFAULT_BLOCK_BYTES) -> dict:
    """CMC / mAP / mINP of ranking the gallery by ``metric``, never holding ``[Q, G]``.

    The result is that of ``evaluate_ranking(pairwise_distance(q, g, metric), ...)``
    (same keys, see ``evaluate_ranking_blocks`` for the equality), with
    memory of one ``[block_rows, G]`` block (about ``max_block_bytes``) plus
    ``evaluate_ranking``'s working memory on it.
    """
    blocks = distance_blocks(query_emb, gallery_emb, metric, block_rows=block_rows,
                             max_block_bytes=max_block_bytes)
    return evaluate_ranking_blocks(blocks, q_pids, g_pids, q_camids, g_camids, max_rank=max_rank,
                                   ap_mode=ap_mode)
