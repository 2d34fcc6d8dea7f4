"""Evaluation protocols, registered by name: how a dataset's query and gallery features become ranking metrics.

A protocol is a small object (`Protocol`): its ranking function, the split field whose rows it pools into one
item first (MARS's tracklets) and how (config.eval.pooling, or the pooling the protocol prescribes), and the AP
rule (`ranking.AP_MODES`) its records name. Each dataset names the protocols that rank it
(`msml_jax.data.Dataset.protocols`); the evaluator looks them up here and never branches on dataset or protocol names. A new protocol is one
`register_protocol(...)` call. Features arrive as dicts with `embeddings` float [N, D], `pids`, `camids` int [N]
(already pooled when the protocol has `group_by`).
"""

import dataclasses
import functools
from typing import Callable, Optional

import numpy as np

from msml_jax.evaluation.ranking import MEAN_PRECISION, OFFICIAL_AP, evaluate_ranking
from msml_jax.evaluation.rerank import k_reciprocal_rerank_blocks
from msml_jax.evaluation.retrieval import distance_matrix
from msml_jax.evaluation.search import evaluate_ranking_blocked, evaluate_ranking_blocks
from msml_jax.distances import EUCLIDEAN, comparable

RANKS = (1, 5, 10, 20)
SINGLE_GALLERY_SHOT_REPEATS = 10


def _summary(result):
    cmc = result["cmc"]
    out = {"mAP": float(result["mAP"]), "mINP": float(result["mINP"]),
           "num_queries": int(result["num_valid_queries"])}
    out.update({f"rank{k}": float(cmc[min(k, len(cmc)) - 1]) for k in RANKS})
    return out


def _compared(query, gallery, metric, normalize):
    """The embeddings whose `metric` distances rank the gallery (`distances.comparable`, as `distance_matrix`)."""
    return comparable(np.asarray(query["embeddings"], np.float32), np.asarray(gallery["embeddings"], np.float32),
                      metric, normalize)


def _reranked(query, gallery, metric, normalize, rerank):
    """k-reciprocal re-ranked distances as (query rows, [b, G]) blocks; `rerank` = (k1, k2, lambda)."""
    k1, k2, lambda_value = rerank
    q, g = _compared(query, gallery, metric, normalize)
    return k_reciprocal_rerank_blocks(q, g, k1, k2, lambda_value, metric=metric)


def rank_images(query, gallery, *, metric=EUCLIDEAN, normalize=True, rerank=None, ap_mode=MEAN_PRECISION,
                every_query=False):
    """Market-1501 rules: every query against the whole gallery; same pid and camera is junk.

    Returns {mAP, mINP, rank1, rank5, rank10, rank20, num_queries} (fractions). `rerank` (k1, k2, lambda): rank by k-reciprocal re-ranked distances (Zhong et al.
    2017). `ap_mode`: the AP rule (`ranking.AP_MODES`). every_query: average over every query, one without a
    match (same pid, another camera) scoring 0 in every metric, as the official MATLAB evaluations do; otherwise
    (torchreid's rule) such queries are skipped. num_queries: the queries averaged over. Computed in blocks of
    queries: memory grows with the block, not with Q x G.
    """
    ids = (query["pids"], gallery["pids"], query["camids"], gallery["camids"])
    if rerank:
        result = evaluate_ranking_blocks(_reranked(query, gallery, metric, normalize, rerank), *ids,
                                         max_rank=max(RANKS), ap_mode=ap_mode)
    else:
        q, g = _compared(query, gallery, metric, normalize)
        result = evaluate_ranking_blocked(q, g, *ids, metric=metric, max_rank=max(RANKS), ap_mode=ap_mode)
    out = _summary(result)
    if every_query:  # the skipped queries count as 0: scale the means over the matched ones
        scale = out["num_queries"] / len(query["pids"])
        out = {k: (v * scale if k != "num_queries" else len(query["pids"])) for k, v in out.items()}
    return out


def all_test_tracklets(query, gallery, group_by="tracklet"):
    """MARS's official gallery: every test tracklet, the queries included, in the order of their `group_by`
    ids (the rows of tracks_test_info.mat, which is the order in which equal distances are ranked).

    Every field both splits carry comes along, and `from_query` (bool [N]) says which split each item is from
    (its `image_index` indexes that split's images)."""
    ids = np.concatenate([np.asarray(query[group_by]), np.asarray(gallery[group_by])])
    _, rows = np.unique(ids, return_index=True)  # a tracklet in both splits counts once
    out = {k: np.concatenate([np.asarray(query[k]), np.asarray(gallery[k])])[rows] for k in query if k in gallery}
    out["from_query"] = rows < len(query[group_by])
    return out


def single_gallery_shot(query, gallery, *, metric=EUCLIDEAN, normalize=True, distances=None, rerank=None,
                        repeats=SINGLE_GALLERY_SHOT_REPEATS, seed=0):
    """CUHK03's classic protocol: each query against ONE gallery image per identity, averaged over draws.

    Draw r (r = 0..repeats-1) picks, with `np.random.default_rng([seed, r])`, one gallery image of every gallery
    identity (the same picks for every query of that draw); each query is ranked against those images under the
    image rules, and CMC / mAP / mINP are averaged over the draws. mAP here is the mean reciprocal rank (one
    match per query and draw).
    """
    if distances is None and rerank:  # re-ranked against the whole gallery, then drawn from
        distances = np.concatenate([blk for _, blk in _reranked(query, gallery, metric, normalize, rerank)])
    if distances is None:
        distances = distance_matrix(query["embeddings"], gallery["embeddings"], metric, normalize)
    g_pids, g_camids = np.asarray(gallery["pids"]), np.asarray(gallery["camids"])
    identities, inverse = np.unique(g_pids, return_inverse=True)
    members = [np.flatnonzero(inverse == i) for i in range(len(identities))]
    results = []
    for r in range(repeats):
        rng = np.random.default_rng([seed, r])
        picks = np.array([rng.choice(m) for m in members])
        results.append(_summary(evaluate_ranking(distances[:, picks], query["pids"], g_pids[picks],
                                                 query["camids"], g_camids[picks], max_rank=max(RANKS))))
    out = {k: float(np.mean([res[k] for res in results])) for k in results[0] if k != "num_queries"}
    out["num_queries"] = results[0]["num_queries"]
    return out


@dataclasses.dataclass(frozen=True)
class Protocol:
    """rank: fn(query, gallery, *, metric, normalize, rerank) -> {mAP, mINP, rank1, rank5, rank10, rank20,
    num_queries} (fractions), from features dicts (see the module docstring).
    group_by: a split field (e.g. "tracklet") whose rows are pooled into one item before ranking; that item
    carries the pid, camid and name of its first row. None: each image is an item.
    pooling: the pooling of a group's rows the protocol prescribes ("avg" | "max"); None: config.eval.pooling.
    ap_mode: the AP rule of `rank` (`ranking.AP_MODES`), written into the records.
    gallery: fn(query, gallery) -> the items the queries are ranked against, when they are not the gallery split
      (MARS's official protocol: every test tracklet, `all_test_tracklets`); the items carry `from_query` (bool
      [N]: which split each came from, for the pictures). None: the gallery split.
    """

    name: str
    rank: Callable
    group_by: Optional[str] = None
    pooling: Optional[str] = None
    ap_mode: str = MEAN_PRECISION
    gallery: Optional[Callable] = None

    def ranked_against(self, query, gallery):
        """The items the `query` features are ranked against, from the gallery split's features `gallery`."""
        return gallery if self.gallery is None else self.gallery(query, gallery)

    def pooling_of(self, configured):
        """The pooling of this protocol's groups when config.eval.pooling is `configured`; None without groups."""
        return (self.pooling or configured) if self.group_by else None


PROTOCOLS = {}


def register_protocol(name, rank, group_by=None, pooling=None, ap_mode=MEAN_PRECISION, gallery=None):
    """Declares protocol `name` (see `Protocol`); returns it. An `ap_mode` other than MEAN_PRECISION is given to
    `rank` as its `ap_mode=` argument."""
    if name in PROTOCOLS:
        raise ValueError(f"protocol {name!r} is registered twice")
    if ap_mode != MEAN_PRECISION:
        rank = functools.partial(rank, ap_mode=ap_mode)
    PROTOCOLS[name] = Protocol(name, rank, group_by, pooling, ap_mode, gallery)
    return PROTOCOLS[name]


def get_protocol(name):
    """The registered `Protocol` called `name`; ValueError naming the registered ones otherwise."""
    if name not in PROTOCOLS:
        raise ValueError(f"unknown evaluation protocol {name!r}: registered protocols are {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


register_protocol("image", rank_images)
# Market-1501's official evaluation (its MATLAB evaluation.m / compute_AP.m): the image rules, trapezoid AP.
register_protocol("image_official", functools.partial(rank_images, every_query=True), ap_mode=OFFICIAL_AP)
register_protocol("tracklet", rank_images, group_by="tracklet")  # MARS: frame features pooled per tracklet
# MARS's official evaluation (`evaluation_mars.m` of MARS-evaluation): max-pooled tracklets, each query against
# ALL test tracklets (the queries too), same pid and camera removed (the query itself among them), junk (pid -1)
# never ranked (the builder drops it), distractors (pid 0) ranked; AP by the trapezoid rule; every query averaged
# (one without a match scores 0).
register_protocol("tracklet_official", functools.partial(rank_images, every_query=True), group_by="tracklet",
                  pooling="max", ap_mode=OFFICIAL_AP, gallery=all_test_tracklets)
register_protocol("single_gallery_shot", single_gallery_shot)  # CUHK03 classic
