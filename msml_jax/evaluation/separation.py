"""How far apart the positive and negative pair distances of a test set lie: the paper's Figure 3 as numbers.

Pairs are query x gallery pairs, defined as in the ranking protocol (`ranking.py`):

* positive: same pid, different camera;
* junk (same pid, same camera): excluded, as the protocol removes it from the ranking;
* negative: different pid. A gallery pid below 0 (or any pid no query has, such as Market-1501's
  distractors 0000) is a negative for every query;
* queries with pid < 0 are ignored (they have no identity to match).

Nothing here builds the Q x G distance matrix: pairs are listed as index pairs and their distances computed
in chunks of pairs, so memory grows with `max_pairs`, not with Q x G. When the test set has more than
`max_pairs` pairs, pairs are sampled (uniformly, with replacement, from a `numpy.random.default_rng(seed)`
stream, so a given seed gives the same figures): positives keep all their pairs if they fit in half the
budget, negatives fill the rest. Positives are enumerated sparsely (by sorting the gallery pids), negatives by
rejection from uniform (query, gallery) draws. Sampled figures are estimates: AUC's standard error is at most
about 0.5 / sqrt(min(num_pos, num_neg)).

Distances in numpy, float64: `distances.paired_distance` on the embeddings `distances.comparable` gives.
"""

from __future__ import annotations

import functools

import numpy as np

from msml_jax.distances import EUCLIDEAN, METRICS, comparable, paired_distance

__all__ = ["METRICS", "pair_distances", "separation_from_distances", "separation_figures"]

DEFAULT_MAX_PAIRS = 1_000_000
# Elements (pairs x embedding dims) gathered at once when computing pair distances: ~32 MB of float64 per side.
_CHUNK_ELEMENTS = 1 << 22
# Query rows whose gallery mask is built at once when listing every negative pair.
_MASK_ELEMENTS = 1 << 24


def _check_inputs(query_emb, gallery_emb, q_pids, g_pids, q_camids, g_camids):
    q = np.asarray(query_emb)
    g = np.asarray(gallery_emb)
    if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
        raise ValueError(f"embeddings must be [Q, D] and [G, D] with the same D, got {q.shape} and {g.shape}")
    arrays = [np.asarray(x).astype(np.int64).reshape(-1) for x in (q_pids, g_pids, q_camids, g_camids)]
    for name, a, n in zip(("q_pids", "g_pids", "q_camids", "g_camids"), arrays,
                          (len(q), len(g), len(q), len(g))):
        if a.shape[0] != n:
            raise ValueError(f"{name} has length {a.shape[0]}, expected {n} (one per embedding row)")
    return (q, g, *arrays)


def _metric_fn(metric):
    if callable(metric):
        return metric
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; use one of {sorted(METRICS)} or a callable "
                         f"f(a [n, D], b [n, D]) -> [n]")
    return functools.partial(paired_distance, metric=metric)


def _positive_pairs(q_pids, g_pids, q_camids, g_camids, queries):
    """(query index, gallery index) int64 arrays of every positive pair of the `queries` rows, query-major."""
    order = np.argsort(g_pids, kind="stable")
    g_sorted = g_pids[order]
    lo = np.searchsorted(g_sorted, q_pids[queries], side="left")
    n_same = np.searchsorted(g_sorted, q_pids[queries], side="right") - lo
    total = int(n_same.sum())
    start = np.cumsum(n_same) - n_same
    qi = np.repeat(queries, n_same)
    gi = order[np.repeat(lo - start, n_same) + np.arange(total)]
    keep = g_camids[gi] != q_camids[qi]  # same pid, same camera is junk
    return qi[keep], gi[keep], n_same


def _all_negative_pairs(q_pids, g_pids, queries):
    """(query index, gallery index) of every different-pid pair of the `queries` rows, query-major."""
    rows = max(1, _MASK_ELEMENTS // max(len(g_pids), 1))
    qs, gs = [], []
    for s in range(0, len(queries), rows):
        block = queries[s:s + rows]
        r, c = np.nonzero(q_pids[block, None] != g_pids[None, :])
        qs.append(block[r])
        gs.append(c)
    if not qs:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(qs).astype(np.int64), np.concatenate(gs).astype(np.int64)


def _sample_negative_pairs(rng, q_pids, g_pids, queries, n_neg, size):
    """`size` different-pid pairs drawn uniformly (with replacement) among the n_neg of `queries` x gallery."""
    population = len(queries) * len(g_pids)
    accept = n_neg / population
    qs, gs, have = [], [], 0
    while have < size:
        draw = int(np.ceil((size - have) / accept * 1.05)) + 64
        flat = rng.integers(0, population, size=draw)
        qi, gi = queries[flat // len(g_pids)], flat % len(g_pids)
        keep = q_pids[qi] != g_pids[gi]
        qs.append(qi[keep])
        gs.append(gi[keep])
        have += int(keep.sum())
    return np.concatenate(qs)[:size], np.concatenate(gs)[:size]


def _distances(fn, q, g, qi, gi):
    """fn over the pairs (q[qi], g[gi]) in chunks: float64 [len(qi)]."""
    out = np.empty(len(qi), np.float64)
    step = max(1, _CHUNK_ELEMENTS // max(q.shape[1], 1))
    for s in range(0, len(qi), step):
        a = q[qi[s:s + step]].astype(np.float64)
        b = g[gi[s:s + step]].astype(np.float64)
        out[s:s + step] = fn(a, b)
    return out


def pair_distances(query_emb, gallery_emb, q_pids, g_pids, q_camids, g_camids, *, metric=EUCLIDEAN,
                   normalize=False, max_pairs=DEFAULT_MAX_PAIRS, seed=0):
    """Positive and negative query x gallery pair distances (pairs defined in the module docstring).

    Args:
        query_emb, gallery_emb: embeddings [Q, D] and [G, D] (any float dtype; computed in float64).
        q_pids, g_pids, q_camids, g_camids: integer ids, one per row.
        metric: one of distances.METRICS, or a callable f(a [n, D], b [n, D]) -> distances [n]
            of paired rows (it gets the embeddings as given).
        normalize: compare l2-normalised embeddings under the euclidean metric, as the ranking does
            (distances.comparable)
            (`distances.comparable`).
        max_pairs: pair budget; above it pairs are sampled with `seed` (see the module docstring).

    Returns:
        (pos, neg, info): float64 distance arrays, and a dict with the test set's exact pair counts
        `num_pos_pairs`, `num_neg_pairs` and `sampled` (bool). Exact (not sampled) pairs come query-major,
        gallery index ascending.
    """
    q, g, q_pids, g_pids, q_camids, g_camids = _check_inputs(
        query_emb, gallery_emb, q_pids, g_pids, q_camids, g_camids)
    if int(max_pairs) < 2:
        raise ValueError(f"max_pairs must be at least 2, got {max_pairs}")
    fn = _metric_fn(metric)
    if not callable(metric):
        q, g = comparable(q, g, metric, normalize, numpy=True)
    queries = np.flatnonzero(q_pids >= 0)
    pq, pg, n_same = _positive_pairs(q_pids, g_pids, q_camids, g_camids, queries)
    n_pos = len(pq)
    n_neg = len(queries) * len(g_pids) - int(n_same.sum())
    sampled = n_pos + n_neg > max_pairs
    if not sampled:
        nq, ng = _all_negative_pairs(q_pids, g_pids, queries)
    else:
        rng = np.random.default_rng(seed)
        if n_pos > max_pairs // 2:
            pick = rng.integers(0, n_pos, size=max_pairs // 2)
            pq, pg = pq[pick], pg[pick]
        nq, ng = _sample_negative_pairs(rng, q_pids, g_pids, queries, n_neg, int(max_pairs) - len(pq)) \
            if n_neg else (pq[:0], pg[:0])
    info = {"num_pos_pairs": int(n_pos), "num_neg_pairs": int(n_neg), "sampled": bool(sampled)}
    return _distances(fn, q, g, pq, pg), _distances(fn, q, g, nq, ng), info


def separation_from_distances(pos, neg):
    """Separation of positive distances `pos` [n_pos] from negative distances `neg` [n_neg] (smaller = closer).

    Returns a dict of floats:
        auc: area under the ROC curve of "negative" vs distance, i.e. P(d_neg > d_pos) + 0.5 P(d_neg == d_pos)
            for a random positive and a random negative pair; 1 = every negative farther than every positive,
            0.5 = chance. Computed from mid-ranks after one sort (Mann-Whitney U), O(n log n).
        neg_closer_than_median_pos: fraction of negative pairs strictly closer than the median positive pair.
        gap_p95_p5: 5th percentile of negatives minus 95th percentile of positives (numpy's linear
            percentiles), in distance units. Positive = the bulk of the two sets is separated by that much;
            negative = they overlap. Compare with the loss's margin.
        pos_median, neg_median: medians, in distance units.
    """
    pos = np.asarray(pos, np.float64).reshape(-1)
    neg = np.asarray(neg, np.float64).reshape(-1)
    if pos.size == 0 or neg.size == 0:
        raise ValueError(f"need positive and negative pairs, got {pos.size} positive and {neg.size} negative")
    if np.isnan(pos).any() or np.isnan(neg).any():
        raise ValueError("distances contain NaN")
    both = np.concatenate([pos, neg])
    values, inverse, counts = np.unique(both, return_inverse=True, return_counts=True)
    # Mid-rank of each distinct value (1-based): ties share the mean of the ranks they span.
    midrank = np.cumsum(counts) - (counts - 1) / 2.0
    neg_rank_sum = midrank[inverse[pos.size:]].sum()
    u_neg = neg_rank_sum - neg.size * (neg.size + 1) / 2.0
    median_pos = float(np.median(pos))
    return {
        "auc": float(u_neg / (pos.size * neg.size)),
        "neg_closer_than_median_pos": float(np.mean(neg < median_pos)),
        "gap_p95_p5": float(np.percentile(neg, 5) - np.percentile(pos, 95)),
        "pos_median": median_pos,
        "neg_median": float(np.median(neg)),
    }


def separation_figures(query_emb, gallery_emb, q_pids, g_pids, q_camids, g_camids, *, metric=EUCLIDEAN,
                       normalize=False, max_pairs=DEFAULT_MAX_PAIRS, seed=0):
    """`separation_from_distances` of `pair_distances` (same arguments), plus the pair counts and `sampled`.

    Returns a dict: auc, neg_closer_than_median_pos, gap_p95_p5, pos_median, neg_median (floats),
    num_pos_pairs, num_neg_pairs (exact counts of the test set, ints) and sampled (bool).
    """
    pos, neg, info = pair_distances(query_emb, gallery_emb, q_pids, g_pids, q_camids, g_camids, metric=metric,
                                    normalize=normalize, max_pairs=max_pairs, seed=seed)
    return {**separation_from_distances(pos, neg), **info}
