"""Vectorized Market-1501 / torchreid-style ranking evaluation (CMC, mAP, mINP).

Only numpy is needed.  The protocol is the one implemented by torchreid's and
fast-reid's ``eval_market1501``:

* For a query with person id ``pid`` and camera ``cam``, gallery entries with
  the same ``pid`` *and* the same ``cam`` are "junk": they are removed from the
  ranking (they neither count as hits nor occupy a rank).
* The gallery is ranked by ascending distance; ties are broken by gallery
  index (a stable sort).
* Queries without any matching gallery entry (after junk removal) are skipped.

Algorithm (no per-query Python loop)
------------------------------------
Only the ranks of the matching ("good") gallery entries are needed -- a few
per query.  The stable 0-based position of good entry ``p`` in query row ``q``
is ``#{j : d_j < d_p} + #{j < p : d_j == d_p}``; subtracting the number of junk
entries that precede ``p`` in that same order gives its rank after junk
removal.

1. Same-pid (query, gallery) pairs are enumerated sparsely from a sorted copy
   of ``g_pids`` (no dense ``Q x G`` pid comparison).  A stable sort of the
   pairs by (query, distance) -- they are generated in gallery-index order --
   yields for each good pair its hit number ``k`` and the number of junk
   entries preceding it.
2. ``#{j : d_j < d_p}`` is needed for every good pair.  Only entries with
   ``d_j <= t_q`` (``t_q``: distance of the query's farthest match) can precede
   a match, and for any useful model they are a small fraction of the gallery.
   Per block of rows the entries ``d <= t_q`` are extracted, encoded as int64
   keys ``row << 32 | c(d)`` with ``c`` an order-preserving 32-bit code
   (flipped float32 bit pattern, or the rank among distinct values for other
   dtypes), sorted, and a single ``np.searchsorted`` answers all pairs of the
   block.  Blocks where most entries qualify (poor rankings) are instead
   sorted whole with ``np.sort`` (SIMD-accelerated for float32 in numpy 2.x)
   and searched with a vectorized (lockstep) binary search.
3. Exact ties (another entry with ``d_j == d_p``) are detected in the sorted
   data; only for those pairs the equal entries with a smaller gallery index
   are counted directly (vectorized, chunked).
4. Row blocks are spread over a small thread pool (numpy releases the GIL in
   its array loops and sorts).

The metrics are then segment reductions over the good pairs.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

__all__ = ["evaluate_ranking", "AP_MODES", "MEAN_PRECISION", "OFFICIAL_AP"]

# The AP rules (``evaluate_ranking``'s ``ap_mode``): torchreid's mean of the precisions at the hits, and the
# trapezoid rule of the official MATLAB evaluations (Market-1501's and MARS's ``compute_AP.m``).
MEAN_PRECISION, OFFICIAL_AP = "mean_precision", "official"
AP_MODES = (MEAN_PRECISION, OFFICIAL_AP)

NO_VALID_QUERY = ("no valid query: every query lacks a matching gallery entry (same pid, different camera) "
                  "after junk removal")

# Rows processed per work item.  Small enough that a block (and its mask and
# sorted copy) stays mostly in cache, large enough to amortize numpy overhead.
_BLOCK_ROWS = 32
# If at least this fraction of a block's entries lie at or below the rows'
# farthest-match distances, sort the rows whole instead of compacting first.
_FULL_SORT_FRACTION = 0.6
# Upper bound on elements materialized at once by the tie fix-up.
_TIE_CHUNK_ELEMENTS = 1 << 22


def _as_1d_int(name: str, x) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {a.shape}")
    if a.dtype.kind in "iu":
        return a
    if a.size == 0:
        return a.astype(np.int64)
    if a.dtype.kind == "f" and np.all(np.isfinite(a)) and np.all(a == np.round(a)):
        return a.astype(np.int64)
    raise ValueError(f"{name} must contain integers, got dtype {a.dtype}")


def _default_num_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def _min_value(dtype: np.dtype):
    if dtype.kind == "f":
        return np.array(-np.inf, dtype=dtype)
    return np.array(np.iinfo(dtype).min, dtype=dtype)


def _order_codes(vals: np.ndarray, queries: np.ndarray):
    """Order-preserving int64 codes in ``[-2**31, 2**31)`` for ``vals`` and ``queries``.

    ``queries`` must be a subset of ``vals`` (or empty).  ``code(a) < code(b)``
    iff ``a < b`` and ``code(a) == code(b)`` iff ``a == b`` (so ``-0.0`` and
    ``0.0`` share a code).  No NaN allowed.  Because the codes span less than
    ``2**32``, ``(row << 32) + code`` orders lexicographically by (row, value).
    """
    if vals.dtype.kind == "f" and vals.dtype.itemsize <= 4:
        out = []
        for v in (vals, queries):
            # float32 bit pattern as int32 ("+ 0" maps -0.0 to +0.0); flipping
            # the 31 low bits of negatives makes the integer order the float order.
            b = (v.astype(np.float32, copy=False) + np.float32(0)).view(np.int32)
            out.append((b ^ ((b >> 31) & np.int32(0x7FFFFFFF))).astype(np.int64))
        return out[0], out[1]
    # Any other dtype: codes are ranks among the distinct values.
    uniq = np.unique(vals)
    return (np.searchsorted(uniq, vals) - 2**31, np.searchsorted(uniq, queries) - 2**31)


def _count_less_rows(srt: np.ndarray, rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    """For each i: #{c : srt[rows[i], c] < values[i]}, rows of ``srt`` sorted.

    Vectorized binary search, all searches advance in lockstep.
    """
    width = srt.shape[1]
    count = np.zeros(rows.shape[0], dtype=np.int64)
    step = 1 << (int(width).bit_length() - 1)
    while step:
        cand = count + step
        m = np.flatnonzero(cand <= width)
        m = m[srt[rows[m], cand[m] - 1] < values[m]]
        count[m] = cand[m]
        step >>= 1
    return count


def _block_counts(dist: np.ndarray, r0: int, r1: int, thresh: np.ndarray,
                  p_rows: np.ndarray, p_vals: np.ndarray):
    """Counts for the good pairs of query rows [r0, r1).

    ``p_rows`` are block-local row indices, ``p_vals`` the pair distances, each
    ``<= thresh[p_rows]``.  Returns ``(lt, tied)``: ``lt = #{j : d_j < v}`` over
    the full row and whether another entry of the row equals ``v``.  Raises
    ValueError if any row of the block contains NaN.
    """
    blk = dist[r0:r1]
    n, g = blk.shape
    is_float = blk.dtype.kind == "f"
    # Cheap estimate (one column in 512) of the fraction of entries with
    # d <= thresh; it only selects the faster strategy, both are exact.
    sample = blk[:, ::512]
    full = np.count_nonzero(sample <= thresh[:, None]) >= _FULL_SORT_FRACTION * sample.size
    if not full:
        # keep = not (d > thresh): the entries <= thresh, plus any NaN.
        keep = np.greater(blk, thresh[:, None])
        np.logical_not(keep, out=keep)
        idx = np.flatnonzero(keep)
        del keep
        full = idx.size >= _FULL_SORT_FRACTION * blk.size
    if full:
        # Whole rows, sorted as floats (SIMD sort); NaN would sort last.
        srt = np.sort(blk, axis=1)
        if is_float and np.isnan(srt[:, -1]).any():
            raise ValueError("distmat contains NaN")
        lt = _count_less_rows(srt, p_rows, p_vals)
        nxt = np.minimum(lt + 1, g - 1)
        tied = (lt + 1 < g) & (srt[p_rows, nxt] == p_vals)
        return lt, tied
    # Only the entries d <= thresh can precede a match: sort just those, as
    # int64 keys (row << 32 | order code), so that a single searchsorted
    # serves every pair of the block.
    vals = np.take(blk.reshape(-1), idx)
    if is_float and np.isnan(vals).any():
        raise ValueError("distmat contains NaN")
    codes, p_codes = _order_codes(vals, p_vals)
    keys = ((idx // g) << 32) + codes
    keys.sort()
    p_rowkey = p_rows.astype(np.int64) << 32
    pos = np.searchsorted(keys, p_rowkey + p_codes, side="left")
    lt = pos - np.searchsorted(keys, p_rowkey - 2**31, side="left")
    # keys[pos] is the pair's own entry; a tie exists iff the next key is equal.
    nxt = np.minimum(pos + 1, keys.size - 1)
    tied = (pos + 1 < keys.size) & (keys[nxt] == p_rowkey + p_codes)
    return lt, tied


def _equal_before(dist: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                  vals: np.ndarray) -> np.ndarray:
    """For each i: #{j < cols[i] : dist[rows[i], j] == vals[i]} (vectorized, chunked)."""
    g = dist.shape[1]
    out = np.zeros(rows.shape[0], dtype=np.int64)
    chunk = max(1, _TIE_CHUNK_ELEMENTS // max(g, 1))
    ar = np.arange(g)
    for s in range(0, rows.shape[0], chunk):
        sl = slice(s, s + chunk)
        sub = dist[rows[sl]]
        hit = (sub == vals[sl, None]) & (ar[None, :] < cols[sl, None])
        out[sl] = np.count_nonzero(hit, axis=1)
    return out


def evaluate_ranking(distmat, q_pids, g_pids, q_camids, g_camids, max_rank: int = 50,
                     ap_mode: str = MEAN_PRECISION, *, num_threads: int | None = None,
                     per_query: bool = False, gallery_by_pid: tuple | None = None):
    """Market-1501-protocol ranking metrics (torchreid / fast-reid semantics).

    Args:
        distmat: ``[Q, G]`` distances (smaller = more similar), float or int.
        q_pids, g_pids: integer person ids of queries / gallery entries.
        q_camids, g_camids: integer camera ids of queries / gallery entries.
        max_rank: length of the returned CMC curve.
        ap_mode: ``"mean_precision"`` (AP = mean over hits of precision at the
            hit, as torchreid/fast-reid) or ``"official"`` (trapezoid rule of
            the official Market-1501 MATLAB ``compute_AP.m``).
        num_threads: worker threads for the row blocks (default: CPUs available
            to this process).
        per_query: also return ``ap``.
        gallery_by_pid: ``(order, g_pids[order])`` with ``order =
            np.argsort(g_pids, kind="stable")``, when the caller has them (one
            evaluation per block of query rows against the same gallery: it
            is then sorted once, not per block).

    Returns:
        dict with ``cmc`` (float64 array ``[max_rank]``: fraction of valid
        queries whose first correct match is within rank k+1), ``mAP``,
        ``mINP`` (floats), ``num_valid_queries`` (int) and, with ``per_query``,
        ``ap`` (float64 ``[Q]``: each query's AP, NaN for a query without a
        valid match).

    Raises:
        ValueError: on shape mismatches, NaN distances, an unknown ``ap_mode``,
            a non-positive ``max_rank``, or when no query has a valid match.
    """
    if ap_mode not in AP_MODES:
        raise ValueError(f"unknown ap_mode {ap_mode!r}; valid modes: {', '.join(AP_MODES)}")
    if isinstance(max_rank, bool) or not isinstance(max_rank, (int, np.integer)) or max_rank < 1:
        raise ValueError(f"max_rank must be a positive integer, got {max_rank!r}")
    max_rank = int(max_rank)

    dist = np.asarray(distmat)
    if dist.ndim != 2:
        raise ValueError(f"distmat must be 2-D [num_query, num_gallery], got shape {dist.shape}")
    if dist.dtype.kind not in "fiu" or dist.dtype.kind == "f" and dist.dtype.itemsize < 2:
        raise ValueError(f"distmat must be a real float or integer array, got dtype {dist.dtype}")
    q_pids = _as_1d_int("q_pids", q_pids)
    g_pids = _as_1d_int("g_pids", g_pids)
    q_camids = _as_1d_int("q_camids", q_camids)
    g_camids = _as_1d_int("g_camids", g_camids)
    num_q, num_g = q_pids.shape[0], g_pids.shape[0]
    if dist.shape != (num_q, num_g):
        raise ValueError(f"distmat shape {dist.shape} does not match "
                         f"(len(q_pids), len(g_pids)) = {(num_q, num_g)}")
    if q_camids.shape[0] != num_q:
        raise ValueError(f"q_camids has length {q_camids.shape[0]}, expected len(q_pids) = {num_q}")
    if g_camids.shape[0] != num_g:
        raise ValueError(f"g_camids has length {g_camids.shape[0]}, expected len(g_pids) = {num_g}")
    dist = np.ascontiguousarray(dist)

    # ---- 1. sparse same-pid pairs, grouped by query, ascending gallery index, in the stable ranking order.
    p_q, p_g, n_same = same_pid_pairs(q_pids, g_pids, gallery_by_pid)
    p_junk = g_camids[p_g] == q_camids[p_q]
    p_d = dist[p_q, p_g]
    if dist.dtype.kind == "f" and np.isnan(p_d).any():
        raise ValueError("distmat contains NaN")
    gq, gg, gd, junk_before, hit_k, _ = order_pairs(p_q, p_g, p_d, p_junk, n_same)
    n_good = np.bincount(gq, minlength=num_q)
    valid = n_good > 0
    num_valid = int(valid.sum())

    # Threshold per query: distance of its farthest good match (last in order).
    thresh = np.full(num_q, _min_value(dist.dtype), dtype=dist.dtype)
    if gq.size:
        last = np.flatnonzero(np.append(gq[1:] != gq[:-1], True))
        thresh[gq[last]] = gd[last]

    if num_valid == 0:
        if dist.dtype.kind == "f" and np.isnan(dist).any():
            raise ValueError("distmat contains NaN")
        raise ValueError(NO_VALID_QUERY)

    # ---- 2. per row block (threaded): #{j : d_j < d_p} and tie detection for
    # every good pair; this also checks every row for NaN.
    blocks = [(r0, min(r0 + _BLOCK_ROWS, num_q)) for r0 in range(0, num_q, _BLOCK_ROWS)]
    bounds = np.searchsorted(gq, [r0 for r0, _ in blocks] + [num_q])
    lt = np.zeros(gq.size, np.int64)
    tied = np.zeros(gq.size, bool)

    def work(i):
        (r0, r1), a, b = blocks[i], bounds[i], bounds[i + 1]
        lt[a:b], tied[a:b] = _block_counts(dist, r0, r1, thresh[r0:r1], gq[a:b] - r0, gd[a:b])

    threads = num_threads if num_threads is not None else _default_num_threads()
    threads = max(1, min(int(threads), len(blocks)))
    if threads == 1:
        for i in range(len(blocks)):
            work(i)
    else:
        with ThreadPoolExecutor(max_workers=threads) as ex:
            list(ex.map(work, range(len(blocks))))

    # ---- 3. exact ties: stable position = #less + #(equal, smaller index).
    pos = lt
    tied = np.flatnonzero(tied)
    if tied.size:
        pos[tied] += _equal_before(dist, gq[tied], gg[tied], gd[tied])
    rank = (pos - junk_before + 1).astype(np.float64)  # 1-based, junk removed

    # ---- 4. metrics.
    return metrics_from_ranks(gq, hit_k, rank, num_q, max_rank, ap_mode, per_query)


def same_pid_pairs(q_pids: np.ndarray, g_pids: np.ndarray, gallery_by_pid: tuple | None = None):
    """``(p_q, p_g, n_same)``: every (query, gallery) pair of one pid, grouped by query, ascending gallery index.

    ``n_same[q]``: the pairs of query ``q``.  Enumerated from a sorted copy of ``g_pids`` (``gallery_by_pid``:
    ``(order, g_pids[order])`` of a stable argsort, when the caller has it), never a dense ``Q x G`` comparison.
    """
    if gallery_by_pid is None:
        g_order = np.argsort(g_pids, kind="stable")
        g_sorted = g_pids[g_order]
    else:
        g_order, g_sorted = gallery_by_pid
    lo = np.searchsorted(g_sorted, q_pids, side="left")
    n_same = np.searchsorted(g_sorted, q_pids, side="right") - lo
    n_pairs = int(n_same.sum())
    pair_start = np.cumsum(n_same) - n_same  # first pair of each query
    p_q = np.repeat(np.arange(q_pids.shape[0]), n_same)
    p_g = g_order[np.repeat(lo - pair_start, n_same) + np.arange(n_pairs)]
    return p_q, p_g, n_same


def order_pairs(p_q, p_g, p_d, p_junk, n_same):
    """The good pairs in the stable ranking order, with what their ranks need.

    Pairs (``same_pid_pairs``' order, distances ``p_d``, ``p_junk``: same camera) are sorted by (query,
    distance, gallery index).  Returns ``(gq, gg, gd, junk_before, hit_k, index)`` of the good (not junk)
    pairs: query, gallery index, distance, the junk pairs of the query before it, its 1-based hit number, and
    its index in the arrays given.
    """
    pair_start = np.cumsum(n_same) - n_same
    # Already grouped by query with ascending gallery index: a stable sort on (query, distance) suffices
    # (pairs stay grouped by query, so pair_start remains valid).
    p_codes = _order_codes(p_d, p_d[:0])[0]
    order = np.argsort((p_q.astype(np.int64) << 32) + p_codes, kind="stable")
    p_q, p_g, p_d, p_junk = p_q[order], p_g[order], p_d[order], p_junk[order]
    good = ~p_junk
    junk_cum = np.concatenate(([0], np.cumsum(p_junk)))
    good_cum = np.concatenate(([0], np.cumsum(good)))
    junk_before = junk_cum[:-1] - np.repeat(junk_cum[pair_start], n_same)
    hit_k = good_cum[1:] - np.repeat(good_cum[pair_start], n_same)  # meaningful for good pairs
    return p_q[good], p_g[good], p_d[good], junk_before[good], hit_k[good], order[good]


def metrics_from_ranks(gq, hit_k, rank, num_q: int, max_rank: int, ap_mode: str, per_query: bool = False) -> dict:
    """CMC, mAP, mINP (``evaluate_ranking``'s dict) from the good pairs in ``order_pairs``' order.

    ``rank``: each good pair's 1-based rank after junk removal; ``hit_k``: its hit number.
    """
    n_good = np.bincount(gq, minlength=num_q)
    valid = n_good > 0
    num_valid = int(valid.sum())
    k = hit_k.astype(np.float64)
    m_q = n_good[valid].astype(np.float64)
    if ap_mode == MEAN_PRECISION:
        ap_terms = k / rank
    else:
        p_before = np.where(rank > 1, (k - 1) / np.maximum(rank - 1, 1), 1.0)
        ap_terms = 0.5 * (p_before + k / rank)
    ap = np.bincount(gq, weights=ap_terms, minlength=num_q)[valid] / m_q

    is_last = np.append(gq[1:] != gq[:-1], True)
    inp = hit_k[is_last] / rank[is_last]  # one per valid query, in query order
    first_rank = rank[hit_k == 1].astype(np.int64)
    hist = np.bincount(np.minimum(first_rank, max_rank + 1) - 1, minlength=max_rank + 1)
    cmc = np.cumsum(hist[:max_rank]) / num_valid

    result = {
        "cmc": cmc.astype(np.float64),
        "mAP": float(ap.mean()),
        "mINP": float(inp.mean()),
        "num_valid_queries": num_valid,
    }
    if per_query:
        result["ap"] = np.full(num_q, np.nan)
        result["ap"][valid] = ap
    return result
