"""Query x gallery distances, top-k retrieval and ranking metrics in blocks and tiles.

Nothing here holds the whole ``[Q, G]`` distance matrix: distances are made on
the default JAX device, a block of ``[b, G]`` or a tile of ``[b, G']`` at a
time (about ``max_block_bytes``: 30 MiB blocks, 4 MiB tiles by default), by one jitted program per
shape, and consumed before the next one is made.

* ``distance_blocks``: the ``(query slice, [b, G] float32 numpy)`` blocks.
* ``top_k``: the ``k`` nearest gallery items of every query, exactly as the
  first ``k`` columns of a stable ``argsort`` of the full distance rows (ties
  by gallery index), in ``[b, G']`` tiles: only the entries at or below each
  row's current k-th distance leave a tile, merged into exact top lists.
* ``evaluate_ranking_blocks``: the dense ``evaluate_ranking`` (Market-1501
  protocol) applied to each block of rows and combined; accepts any blocks,
  e.g. re-ranked ones from ``msml_jax.evaluation.rerank``.
* ``evaluate_ranking_blocked``: the same metrics from embeddings, in the tiles
  of ``top_k``: each match's rank is counted (entries per row and cell of
  distances), and only entries whose distance lies near a match's leave a tile.

Distances are those of ``msml_jax.distances.pairwise_distance`` (its
``METRICS``), from the same pieces (float32, highest matmul precision); pass
the embeddings through ``distances.comparable`` first, as the dense evaluation
does.  How XLA's CPU matmul rounds a product (~1 ulp) depends on the shape of
the block, so two entries within an ulp of each other may rank in another order
than in a dense matrix.  The gallery is put on the device once: pass a JAX
array to avoid that copy (on the CPU backend a NumPy gallery costs one copy in host memory).
"""

from __future__ import annotations

import functools
import typing
from typing import Iterable, Iterator, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from msml_jax.evaluation.ranking import (AP_MODES, MEAN_PRECISION, NO_VALID_QUERY, evaluate_ranking,
                                         metrics_from_ranks, order_pairs, same_pid_pairs)
from msml_jax.distances import (COSINE, EUCLIDEAN, METRICS, SQEUCLIDEAN, check_metric, inverse_norm, l2_normalize,
                                l2_normalize_numpy, sq_euclidean_expansion)

__all__ = ["METRICS", "distance_blocks", "top_k", "evaluate_ranking_blocks",
           "evaluate_ranking_blocked", "block_rows_for", "tile_shape", "fallback_block_rows"]

# Default size of one [b, G] float32 distance block of whole rows (distance_blocks): large enough that the
# per-block costs (launch, evaluate_ranking's O(G) bookkeeping) are amortized, and under glibc malloc's
# largest mmap threshold (32 MiB on 64-bit), above which every buffer is a fresh mmap whose pages the kernel
# faults in and zeroes as they are first written.
_DEFAULT_BLOCK_BYTES = 30 << 20

# Default size of one [b, G'] float32 tile of top_k and evaluate_ranking_blocked.  Small: a tile costs a
# dispatch and ~20 NumPy calls, but two tiles in flight (and the host's work on one) stay far under glibc's
# trim threshold, so their buffers are reused from the heap instead of faulted in anew.  On 2 cores, XLA's
# CPU matmul makes ~400-470 GFLOP/s into a reused buffer and ~235 into fresh pages; 128 MiB tiles spent a
# third of a 10^6 gallery evaluation's CPU time in page faults, 30 MiB ones 0-20%, varying from run to run.
_DEFAULT_TILE_BYTES = 4 << 20

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
    ``+0.0`` (a flushed denormal could be ``-0.0``; ``abs`` clears the sign, where
    a select would cost XLA's CPU backend ~7% of the matmul), so bit patterns and
    negated distances order as the distances do.  ``dot``: the
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
    return jnp.abs(dist)


@functools.partial(jax.jit, static_argnames=("width", "normalize"))
def _tile_dot(query: jax.Array, gallery: jax.Array, g0, width: int, normalize: bool = False) -> jax.Array:
    """``query @ gallery[g0:g0 + width].T`` (``query`` L2-normalized first if ``normalize``: the cosine metric's
    product) as its own program: not fused with the arithmetic, the rows read in place (one dispatch per tile)."""
    rows = jax.lax.dynamic_slice_in_dim(gallery, g0, width)
    return jnp.matmul(l2_normalize(query) if normalize else query, rows.T, precision=jax.lax.Precision.HIGHEST)


def _block_dot(query: jax.Array, gallery: jax.Array, metric: str) -> jax.Array:
    """The product ``block_distance`` starts from, with the whole gallery."""
    return _tile_dot(query, gallery, 0, gallery.shape[0], metric == COSINE)


@functools.partial(jax.jit, static_argnames=("metric",), donate_argnums=(0,))
def _distance_from_dot(dot, query, aux, metric):
    return block_distance(query, None, aux, metric, dot=dot)


def _presqrt(dot, query, aux, g0, metric):
    """``block_distance`` from a tile's ``dot`` (gallery rows from ``g0``; ``aux`` of the whole gallery), but for
    euclidean the squared distance (the square root is the costly part of XLA's CPU arithmetic)."""
    aux = jax.lax.dynamic_slice_in_dim(aux, g0, dot.shape[1])
    return block_distance(query, None, aux, SQEUCLIDEAN if metric == EUCLIDEAN else metric, dot=dot)


@functools.partial(jax.jit, static_argnames=("metric",), donate_argnums=(0,))
def _presqrt_and_code(dot, query, aux, g0, limit, metric):
    """``_presqrt``'s values and an int8 mask of the entries ``<= limit`` of their row."""
    pre = _presqrt(dot, query, aux, g0, metric)
    return pre, (pre <= limit[:, None]).astype(jnp.int8)


# The largest subnormal float32: XLA's CPU arithmetic reads subnormals as 0 (and flushes results to 0).
_MAX_SUBNORMAL = np.array(0x007FFFFF, np.int32).view(np.float32)


def _xla_sqrt(x: np.ndarray) -> np.ndarray:
    """XLA's float32 square root on the CPU, on the host: IEEE (NumPy's), subnormal inputs read as 0."""
    return np.where(x > _MAX_SUBNORMAL, np.sqrt(x), np.float32(0))


def _finish(pre: np.ndarray, metric: str) -> np.ndarray:
    """``block_distance``'s values from ``_presqrt_and_code``'s (the same bits: +0.0 for zeros)."""
    return np.abs(_xla_sqrt(pre) if metric == EUCLIDEAN else pre)


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
    words = np.flatnonzero(code[:whole].view(np.uint64) != 0)  # (NumPy's nonzero: ~10x faster on bool)
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
          max_block_bytes: int = _DEFAULT_TILE_BYTES) -> Tuple[np.ndarray, np.ndarray]:
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
    best = _TopK(num_q, int(k), num_g)
    _search_tiles(query, gallery, metric, *tile_shape(num_q, num_g, block_rows, max_block_bytes), best)
    return best.cols, best.vals


def tile_shape(num_q: int, num_g: int, block_rows: int | None = None,
               max_block_bytes: int = _DEFAULT_TILE_BYTES) -> Tuple[int, int]:
    """``(b, G')``: the tiles of ``top_k`` and ``evaluate_ranking_blocked``, ``[b, G']`` float32 of about
    ``max_block_bytes``; ``b`` = ``block_rows``, by default every query up to ``_TOP_K_TILE_QUERIES``, and
    ``G'`` a multiple of ``_TILE_ALIGN`` unless the whole gallery fits."""
    if block_rows is None:
        block_rows = block_rows_for(num_q, 1, _TOP_K_TILE_QUERIES * 4)
    block_rows = _check_block_rows(block_rows, num_q, num_g, max_block_bytes)
    gallery_rows = block_rows_for(num_g, block_rows, max_block_bytes)
    if _TILE_ALIGN <= gallery_rows < num_g:
        gallery_rows -= gallery_rows % _TILE_ALIGN
    return block_rows, gallery_rows


def _tiles(query, block_rows, gallery_rows, num_g):
    """``(query slice, [block_rows, D] query block, g0, g1)`` of every tile, row block by row block."""
    return [(rows, blk, g0, min(g0 + gallery_rows, num_g)) for rows, blk in _padded_blocks(query, block_rows)
            for g0 in range(0, num_g, gallery_rows)]


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
    tiles = _tiles(query, block_rows, gallery_rows, num_g)

    def submit(t):
        rows, blk, g0, g1 = tiles[t]
        bound = np.full(block_rows, np.inf, np.float32)
        bound[: rows.stop - rows.start] = best.bound(rows.start, rows.stop)
        limit = _presqrt_limit(bound, metric)
        return _presqrt_and_code(_tile_dot(blk, gallery, g0, g1 - g0, metric == COSINE), blk, aux, g0, limit, metric)

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
    q_pids, g_pids, q_camids, g_camids = _ranking_ids(q_pids, g_pids, q_camids, g_camids, max_rank, ap_mode)
    num_q, num_g = q_pids.shape[0], g_pids.shape[0]
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
        raise ValueError(NO_VALID_QUERY)
    return {
        "cmc": cmc_hits / num_valid,
        "mAP": float(ap_sum / num_valid),
        "mINP": float(inp_sum / num_valid),
        "num_valid_queries": num_valid,
    }


def evaluate_ranking_blocked(query_emb, gallery_emb, q_pids, g_pids, q_camids, g_camids,
                             metric: str = EUCLIDEAN, max_rank: int = 50, ap_mode: str = MEAN_PRECISION,
                             *, block_rows: int | None = None,
                             max_block_bytes: int = _DEFAULT_TILE_BYTES) -> dict:
    """CMC / mAP / mINP of ranking the gallery by ``metric``, never holding ``[Q, G]``.

    The result is that of ``evaluate_ranking(pairwise_distance(q, g, metric), ...)`` (same keys; the cmc
    counts and ``num_valid_queries`` exact, mAP / mINP up to float64 rounding of the averages) on the
    distances as the tiles compute them.  Distances are made in ``[block_rows, G']`` tiles of about
    ``max_block_bytes``, as ``top_k`` makes them, and only a few entries per row leave a tile
    (``_rank_tiles``); if those grow beyond ``_EVAL_KEPT_BYTES`` (a ranking where most of the gallery lies
    close to a pair), it evaluates instead whole rows of ``distance_blocks`` with ``evaluate_ranking_blocks``,
    in blocks of at least ``_DEFAULT_BLOCK_BYTES``.
    """
    ids = _ranking_ids(q_pids, g_pids, q_camids, g_camids, max_rank, ap_mode)
    query, gallery = _prepare(query_emb, gallery_emb, metric)
    num_q, num_g = query.shape[0], gallery.shape[0]
    if (num_q, num_g) != (ids[0].shape[0], ids[1].shape[0]):
        raise ValueError(f"{num_q} queries and {num_g} gallery embeddings, but {ids[0].shape[0]} query and "
                         f"{ids[1].shape[0]} gallery ids")
    if not _has_valid_match(*ids).any():
        raise ValueError(NO_VALID_QUERY)
    try:
        return _rank_tiles(query, gallery, *ids, metric, int(max_rank), ap_mode,
                           *tile_shape(num_q, num_g, block_rows, max_block_bytes))
    except _TooManyKept:
        blocks = _distance_block_iter(query, gallery, metric, fallback_block_rows(num_q, num_g, max_block_bytes))
        return evaluate_ranking_blocks(blocks, *ids, max_rank=max_rank, ap_mode=ap_mode)


def fallback_block_rows(num_q: int, num_g: int, max_block_bytes: int = _DEFAULT_TILE_BYTES) -> int:
    """Query rows per block of ``evaluate_ranking_blocked``'s whole-row fallback.  Each block reads the whole
    gallery, so at least ``_DEFAULT_BLOCK_BYTES`` of rows: at 10^6 a 4 MiB tile is one row, and 3,368 passes
    over the gallery took 67 s against 25 s."""
    return block_rows_for(num_q, num_g, max(max_block_bytes, _DEFAULT_BLOCK_BYTES))


def _ranking_ids(q_pids, g_pids, q_camids, g_camids, max_rank, ap_mode):
    """The four id arrays as int64, after checking them and ``max_rank`` / ``ap_mode`` (ValueError)."""
    if ap_mode not in AP_MODES:
        raise ValueError(f"unknown ap_mode {ap_mode!r}; valid modes: {', '.join(AP_MODES)}")
    if isinstance(max_rank, bool) or not isinstance(max_rank, (int, np.integer)) or max_rank < 1:
        raise ValueError(f"max_rank must be a positive integer, got {max_rank!r}")
    q_pids, g_pids = _int_ids("q_pids", q_pids), _int_ids("g_pids", g_pids)
    q_camids, g_camids = _int_ids("q_camids", q_camids), _int_ids("g_camids", g_camids)
    if q_camids.shape[0] != q_pids.shape[0] or g_camids.shape[0] != g_pids.shape[0]:
        raise ValueError(f"camids lengths ({q_camids.shape[0]}, {g_camids.shape[0]}) do not match pids "
                         f"lengths ({q_pids.shape[0]}, {g_pids.shape[0]})")
    return q_pids, g_pids, q_camids, g_camids


# The tiled evaluation's code of an entry: 0 beyond its row's last match, 1 before the row's first pair, and
# 2 + cell for the cells (runs of 2**shift consecutive float32 bit patterns) in between.
_NUM_CODES = 256

# Entries the tiled evaluation keeps whole (those in a cell where a pair may lie; row, column, distance,
# code), at most.
_EVAL_KEPT_BYTES = 256 << 20
_KEPT_ENTRY_BYTES = 13


class _TooManyKept(Exception):
    pass


@functools.partial(jax.jit, static_argnames=("metric",), donate_argnums=(0,))
def _presqrt_and_bitmask(dot, query, aux, g0, hi_bits, r0, metric):
    """``_presqrt``'s values, and a bitmask of the entries whose float32 bit pattern is at most their row's
    ``hi_bits`` (rows from ``r0`` of it; non-negative floats order as their bit patterns).

    The bitmask is uint8 ``[b, ceil(G' / 8)]``: entry ``8 i + k`` of the row in bit ``k`` of its byte ``i``
    (8x less for the host to scan than a byte per entry).
    """
    pre = _presqrt(dot, query, aux, g0, metric)
    hi_bits = jax.lax.dynamic_slice_in_dim(hi_bits, r0, dot.shape[0])
    mask = jax.lax.bitcast_convert_type(pre, jnp.int32) <= hi_bits[:, None]
    mask = jnp.pad(mask, ((0, 0), (0, -pre.shape[1] % 8))).reshape(pre.shape[0], -1, 8)
    return pre, jnp.sum(mask.astype(jnp.uint8) << jnp.arange(8, dtype=jnp.uint8), axis=2, dtype=jnp.uint8)


# Per byte value: the index of its lowest set bit.
_LOW_BIT = np.array([(v & -v).bit_length() - 1 if v else 0 for v in range(256)], np.int64)


def _set_bits(mask: np.ndarray) -> np.ndarray:
    """Flat indices of the set bits of a uint8 bitmask (bit ``k`` of byte ``i``: ``8 i + k``), in no set order."""
    flat = mask.reshape(-1)
    byte = np.flatnonzero(flat != 0)  # (NumPy's nonzero is ~5x faster on bool than on uint8)
    value = flat[byte]
    single = (value & (value - 1)) == 0  # one bit: most bytes of a sparse mask
    many = byte[~single]
    i, k = np.nonzero(np.unpackbits(flat[many][:, None], axis=1, bitorder="little").view(bool))
    return np.concatenate([byte[single] * 8 + _LOW_BIT[value[single]], many[i] * 8 + k])


def _pair_bands(query, gallery, p_q, p_g, metric):
    """Per (query, gallery) pair, float32 bit patterns ``(a, b)`` around the value the tiles compute for it.

    The value is that of ``_presqrt_and_bitmask`` (squared distance for euclidean), made in float64 here; a
    float32 matmul of dimension D errs by at most ``D u |q| |g|`` (u = 2^-24), the norms and the sums by a few
    u more, so ``[v - band, v + band]`` with ``band = 2 (D + 8) u s`` (``s`` bounds every term) holds the
    tile's value whatever its summation order.  A further relative ``8 u`` keeps every value outside
    ``[a, b]`` from sharing a square root with one inside.
    """
    queries = np.asarray(query, np.float64)
    bands = [_pair_band_chunk(queries[p_q[s:s + _PAIR_CHUNK]], gallery, p_g[s:s + _PAIR_CHUNK], metric)
             for s in range(0, p_g.size, _PAIR_CHUNK)]
    a = np.concatenate([x for x, _ in bands] + [np.zeros(0, np.int32)])
    return a, np.concatenate([y for _, y in bands] + [np.zeros(0, np.int32)])


# Pairs per piece of _pair_bands (gallery rows gathered at once: one program for every piece).
_PAIR_CHUNK = 4096

_take_rows = jax.jit(lambda x, i: jnp.take(x, i, axis=0))


def _pair_band_chunk(q, gallery, p_g, metric):
    g = np.asarray(_take_rows(gallery, np.pad(p_g, (0, _PAIR_CHUNK - p_g.size)).astype(np.int32)),
                   np.float64)[:p_g.size]
    if metric == COSINE:
        v = 1.0 - np.sum(l2_normalize_numpy(q) * l2_normalize_numpy(g), axis=1)
        scale = 4.0
    else:
        qq, gg = np.sum(q * q, axis=1), np.sum(g * g, axis=1)
        v = qq + gg - 2.0 * np.sum(q * g, axis=1)
        scale = (np.sqrt(qq) + np.sqrt(gg)) ** 2
    u = 2.0 ** -24
    band = 2 * (q.shape[1] + 8) * u * scale + 8 * u * np.abs(v) + 1e-30
    lower, upper = np.maximum(v - band, 0.0), v + band
    a, b = lower.astype(np.float32), upper.astype(np.float32)  # rounded outwards:
    a = np.where(a > lower, np.nextafter(a, np.float32(0)), a)
    b = np.where(b < upper, np.nextafter(b, np.float32(np.inf)), b)
    return a.view(np.int32), b.view(np.int32)


class _RowCells(typing.NamedTuple):
    """The cells of the rows of ``_rank_tiles``: int64 ``[Q]`` float32 bit patterns ``lo`` (the first pair's band
    start) and ``hi`` (the last good pair's band end; -1 for a row without one), and ``shift``: the code of an
    entry with bit pattern ``x`` is 0 above ``hi``, 1 below ``lo``, else ``2 + (x - lo) >> shift`` (<= 255)."""

    lo: np.ndarray
    hi: np.ndarray
    shift: np.ndarray

    @classmethod
    def of(cls, num_rows, good_rows, good_b, pair_rows, pair_a):
        hi = np.full(num_rows, -1, np.int64)
        np.maximum.at(hi, good_rows, good_b)
        lo = np.full(num_rows, np.iinfo(np.int32).max, np.int64)
        np.minimum.at(lo, pair_rows, pair_a)
        lo = np.where(hi >= 0, lo, 0)
        shift = np.zeros(num_rows, np.int64)
        while ((hi - lo) >> shift > _NUM_CODES - 3).any():
            shift += (hi - lo) >> shift > _NUM_CODES - 3
        return cls(lo, hi, shift)

    def code(self, rows, bits):
        """The codes of entries of ``rows`` with float32 bit patterns ``bits``."""
        return np.where(bits > self.hi[rows], 0, 2 + (np.maximum(bits - self.lo[rows], -1) >> self.shift[rows]))


def _rank_tiles(query, gallery, q_pids, g_pids, q_camids, g_camids, metric, max_rank, ap_mode,
                block_rows, gallery_rows) -> dict:
    """``evaluate_ranking_blocked`` in ``[block_rows, gallery_rows]`` tiles: a match's rank by counting.

    The stable 0-based position of a good pair ``j`` of row ``q`` is the number of entries before it in
    the order (distance, gallery index); its rank subtracts the junk pairs before it (``ranking.order_pairs``).
    Each pair's tile value is known beforehand to within a band (``_pair_bands``), so per row the entries
    beyond the last good pair's band precede no match and those before the first pair's band precede every
    pair.  A tile marks in a bitmask the entries up to the row's last good band; the host codes those by cell
    (1 before the first band, else 2 + a run of ``2**shift`` consecutive float32 bit patterns: at most 254
    cells per row), counts them per (row, cell), and keeps whole (row, column, distance) only the entries
    in a cell some pair's band reaches.  Then an entry in a cell below pair ``j``'s lowest cell precedes it
    (its value is below the band), one in a higher cell follows it, and the kept entries (the pairs among
    them, with their exact tile values) are compared with ``j`` by (distance, gallery index).  The tiles
    are made by the arithmetic of ``top_k`` (squared distances for euclidean; the host takes the square roots
    of the kept entries only).
    """
    num_q, num_g = query.shape[0], gallery.shape[0]
    tiles = _tiles(query, block_rows, gallery_rows, num_g)
    # The first two products need no bands: made while the bands are.
    products = [_tile_dot(blk, gallery, g0, g1 - g0, metric == COSINE) for _, blk, g0, g1 in tiles[:2]]
    p_q, p_g, n_same = same_pid_pairs(q_pids, g_pids)
    p_junk = g_camids[p_g] == q_camids[p_q]
    a_bits, b_bits = _pair_bands(query, gallery, p_q, p_g, metric)
    # The pairs of each tile (tiles go row block by row block), whose values are read from it.
    tile_of = (p_q // block_rows) * -(-num_g // gallery_rows) + p_g // gallery_rows
    pair_order = np.argsort(tile_of, kind="stable")
    pair_bounds = np.searchsorted(tile_of[pair_order], np.arange(len(tiles) + 1))
    p_val = np.full(p_q.size, np.inf, np.float32)

    cells = _RowCells.of(num_q, p_q[~p_junk], b_bits[~p_junk], p_q, a_bits)
    lo, hi, shift = cells

    # The cells each pair's band reaches (ignoring pairs beyond the row's last good pair).
    reach = np.zeros((num_q, _NUM_CODES + 1), np.int64)
    near = a_bits <= hi[p_q]
    np.add.at(reach, (p_q[near], cells.code(p_q[near], a_bits[near])), 1)
    np.add.at(reach, (p_q[near], cells.code(p_q[near], np.minimum(b_bits[near], hi[p_q[near]])) + 1), -1)
    uncertain = (np.cumsum(reach, axis=1)[:, :_NUM_CODES] > 0).reshape(-1)

    aux = gallery_aux(gallery, metric)
    hi_d = jnp.asarray(np.pad(hi, (0, -num_q % block_rows), constant_values=-1).astype(np.int32))

    def submit(t):
        rows, blk, g0, g1 = tiles[t]
        dot = products.pop(0) if products else _tile_dot(blk, gallery, g0, g1 - g0, metric == COSINE)
        return _presqrt_and_bitmask(dot, blk, aux, g0, hi_d, rows.start, metric)

    counts = np.zeros(num_q * _NUM_CODES, np.int64)
    keys, num_keys = [], 0  # counted a few tiles at a time: a bincount costs its minlength (Q * 256)
    kept_rows, kept_cols, kept_vals, kept_codes = [], [], [], []
    kept = 0
    pending = submit(0)
    for t, (rows, _, g0, g1) in enumerate(tiles):
        pre, mask = pending
        if t + 1 < len(tiles):
            pending = submit(t + 1)  # made while this tile is read
        n = rows.stop - rows.start
        mask, pre = np.asarray(mask)[:n], np.asarray(pre)[:n]
        pairs = pair_order[pair_bounds[t]:pair_bounds[t + 1]]
        pair_bits = pre[p_q[pairs] - rows.start, p_g[pairs] - g0].view(np.int32)
        if not ((a_bits[pairs] <= pair_bits) & (pair_bits <= b_bits[pairs])).all():  # cannot happen
            raise RuntimeError("a pair's distance fell outside the band _pair_bands gave it (an overflow to inf "
                               "or NaN: embeddings of magnitude ~1e19?)")
        p_val[pairs] = _finish(pair_bits.view(np.float32), metric)
        r, c = np.divmod(_set_bits(mask), mask.shape[1] * 8)
        val = pre.reshape(-1)[r * pre.shape[1] + c]
        r += rows.start
        code = 2 + (np.maximum(val.view(np.int32) - lo[r], -1) >> shift[r])  # cells.code, knowing val <= hi
        key = r * _NUM_CODES + code
        keys.append(key)
        num_keys += key.size
        if num_keys >= counts.size or t + 1 == len(tiles):
            counts += np.bincount(np.concatenate(keys), minlength=counts.size)
            keys, num_keys = [], 0
        sel = np.flatnonzero(uncertain[key])
        kept += sel.size
        if kept * _KEPT_ENTRY_BYTES > _EVAL_KEPT_BYTES:
            raise _TooManyKept
        kept_rows.append(r[sel].astype(np.int32))
        kept_codes.append(code[sel].astype(np.uint8))
        kept_cols.append((g0 + c[sel]).astype(np.int32))
        kept_vals.append(_finish(val[sel], metric))
    del pending
    e_row, e_col = np.concatenate(kept_rows).astype(np.int64), np.concatenate(kept_cols).astype(np.int64)
    e_val, e_code = np.concatenate(kept_vals), np.concatenate(kept_codes)

    gq, gg, gd, junk_before, hit_k, index = order_pairs(p_q, p_g, p_val, p_junk, n_same)

    # Position = entries in cells below the pair's band + kept entries before it that are not in those cells.
    first = cells.code(gq, a_bits[index])
    below = np.cumsum(counts.reshape(num_q, _NUM_CODES), axis=1)
    kept_below = np.cumsum(np.bincount(e_row * _NUM_CODES + e_code, minlength=num_q * _NUM_CODES)
                           .reshape(num_q, _NUM_CODES), axis=1)
    before = _count_before(e_row, e_val, e_col, gq, gd, gg, num_g)
    pos = below[gq, first - 1] + before - kept_below[gq, first - 1]
    rank = (pos - junk_before + 1).astype(np.float64)
    return metrics_from_ranks(gq, hit_k, rank, num_q, max_rank, ap_mode)


def _count_before(rows, vals, cols, q_rows, q_vals, q_cols, num_cols: int) -> np.ndarray:
    """For each i: ``#{e : rows[e] == q_rows[i], (vals[e], cols[e]) < (q_vals[i], q_cols[i])}``, values >= +0.0.

    One sort of int64 keys (row, value bits, column) and a search; rows are taken in chunks of
    ``2**(32 - column bits)`` so that a key fits 63 bits.
    """
    cb = int(num_cols).bit_length()
    span = 1 << (32 - cb)

    def keys(r, v, c):
        bits = (v.astype(np.float32) + np.float32(0)).view(np.int32).astype(np.int64)
        return ((((r % span) << 31) | bits) << cb) | c

    out = np.zeros(q_rows.size, np.int64)
    chunk_e, chunk_q = rows // span, q_rows // span
    for chunk in np.unique(chunk_q):
        e, q = chunk_e == chunk, chunk_q == chunk
        srt = np.sort(keys(rows[e], vals[e], cols[e]))
        start = np.searchsorted(srt, (q_rows[q] % span) << (31 + cb))
        out[q] = np.searchsorted(srt, keys(q_rows[q], q_vals[q], q_cols[q])) - start
    return out
