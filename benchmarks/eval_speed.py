"""Speed benchmark of msml_jax.evaluation.evaluate_ranking at Market-1501 size.

Usage:
    python benchmarks/eval_speed.py [--num-query 3368] [--num-gallery 15913]
                                    [--repeats 7] [--distribution embedding|uniform]

Builds a synthetic Market-1501-shaped problem (751 test identities, 6 cameras,
a few thousand pid-0 distractors in the gallery, float32 distances where
same-identity pairs are closer on average), times ``evaluate_ranking`` for
both AP modes (best and median after one warm-up), then runs a
straightforward torchreid-style per-query loop (stable argsort per query)
once and reports its time and the largest absolute differences.

``--distribution uniform`` draws i.i.d. uniform distances instead (matches
scattered over the whole ranking): the worst case for the evaluator, which
only needs to order entries closer than each query's farthest match.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from msml_jax.evaluation import evaluate_ranking  # noqa: E402


def make_market_like(num_query: int, num_gallery: int, num_ids: int = 751, num_cams: int = 6,
                     distractor_fraction: float = 2798 / 15913, dim: int = 128,
                     noise: float = 1.3, distribution: str = "embedding", seed: int = 0):
    rng = np.random.default_rng(seed)
    ids = np.arange(1, num_ids + 1)
    # queries: every identity appears, the rest drawn at random
    q_pids = np.concatenate([ids, rng.choice(ids, max(0, num_query - num_ids))])[:num_query]
    q_camids = rng.integers(0, num_cams, num_query)
    num_distr = int(round(distractor_fraction * num_gallery))
    num_real = num_gallery - num_distr
    g_pids = np.concatenate([ids, rng.choice(ids, max(0, num_real - num_ids))])[:num_real]
    g_pids = np.concatenate([g_pids, np.zeros(num_distr, np.int64)])  # pid 0 = distractor
    g_camids = rng.integers(0, num_cams, num_gallery)
    perm = rng.permutation(num_gallery)
    g_pids, g_camids = g_pids[perm], g_camids[perm]

    if distribution == "uniform":
        dist = rng.random((num_query, num_gallery), dtype=np.float32)
        return dist, q_pids, g_pids, q_camids, g_camids

    # Embedding model: identity centre + camera bias + noise, L2-normalized.
    centres = rng.standard_normal((num_ids + 1, dim)).astype(np.float32)
    cam_bias = 0.5 * rng.standard_normal((num_cams, dim)).astype(np.float32)

    def embed(pids, cams):
        x = centres[pids] + cam_bias[cams] + noise * rng.standard_normal((len(pids), dim),
                                                                        dtype=np.float32)
        distractor = pids == 0  # distractors: unrelated random appearances
        x[distractor] = rng.standard_normal((int(distractor.sum()), dim), dtype=np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    qf, gf = embed(q_pids, q_camids), embed(g_pids, g_camids)
    dist = np.maximum(2.0 - 2.0 * (qf @ gf.T), 0.0).astype(np.float32)  # squared L2
    return dist, q_pids, g_pids, q_camids, g_camids


def loop_reference(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50):
    """torchreid eval_market1501-style loop (stable argsort per query).

    Returns the metrics for both AP definitions at once.
    """
    cmcs, aps, aps_off, inps = [], [], [], []
    for q in range(distmat.shape[0]):
        order = np.argsort(distmat[q], kind="stable")
        remove = (g_pids[order] == q_pids[q]) & (g_camids[order] == q_camids[q])
        matches = (g_pids[order] == q_pids[q])[~remove].astype(np.int64)
        if not matches.any():
            continue
        cmc = matches.cumsum()
        cmc[cmc > 1] = 1
        row = np.ones(max_rank)
        n = min(max_rank, len(cmc))
        row[:n] = cmc[:n]
        cmcs.append(row)
        hits = np.flatnonzero(matches) + 1.0  # 1-based ranks of the hits
        k = np.arange(1, len(hits) + 1)
        aps.append(np.mean(k / hits))
        p_before = np.where(hits > 1, (k - 1) / np.maximum(hits - 1, 1), 1.0)
        aps_off.append(np.mean((p_before + k / hits) / 2))
        inps.append(len(hits) / hits[-1])
    cmc = np.mean(cmcs, axis=0)
    base = {"cmc": cmc, "mINP": float(np.mean(inps)), "num_valid_queries": len(cmcs)}
    return ({**base, "mAP": float(np.mean(aps))}, {**base, "mAP": float(np.mean(aps_off))})


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--num-query", type=int, default=3368)
    ap.add_argument("--num-gallery", type=int, default=15913)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--max-rank", type=int, default=50)
    ap.add_argument("--distribution", choices=["embedding", "uniform"], default="embedding")
    ap.add_argument("--noise", type=float, default=1.3,
                    help="embedding noise level (higher = harder ranking)")
    ap.add_argument("--skip-reference", action="store_true")
    args = ap.parse_args(argv)

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    print(f"numpy {np.__version__}; CPU cores available to this process: {cores}")

    t0 = time.perf_counter()
    data = make_market_like(args.num_query, args.num_gallery, noise=args.noise,
                            distribution=args.distribution)
    dist = data[0]
    print(f"problem: {dist.shape[0]} queries x {dist.shape[1]} gallery "
          f"({dist.size / 1e6:.1f}M {dist.dtype} distances, distribution={args.distribution}, "
          f"{int((data[2] == 0).sum())} pid-0 distractors); built in "
          f"{time.perf_counter() - t0:.1f} s")

    results, times_by_mode = {}, {}
    for mode in ("mean_precision", "official"):
        evaluate_ranking(*data, max_rank=args.max_rank, ap_mode=mode)  # warm-up
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            results[mode] = evaluate_ranking(*data, max_rank=args.max_rank, ap_mode=mode)
            times.append(time.perf_counter() - t)
        times_by_mode[mode] = times
        best, med = min(times), float(np.median(times))
        r = results[mode]
        print(f"evaluate_ranking[{mode:>14}]: best {best:.3f} s, median {med:.3f} s "
              f"over {args.repeats} runs ({dist.shape[0] / best:,.0f} queries/s, "
              f"{dist.size / best / 1e6:,.0f}M distances/s)  "
              f"rank-1 {r['cmc'][0]:.4f}  mAP {r['mAP']:.4f}  mINP {r['mINP']:.4f}  "
              f"valid queries {r['num_valid_queries']}")

    if args.skip_reference:
        return
    t = time.perf_counter()
    ref_mp, ref_off = loop_reference(*data, max_rank=args.max_rank)
    t_ref = time.perf_counter() - t
    best_mp = min(times_by_mode["mean_precision"])
    print(f"per-query loop reference (stable argsort per query, both AP modes): {t_ref:.3f} s "
          f"({dist.shape[0] / t_ref:,.0f} queries/s; {t_ref / best_mp:.0f}x slower)")
    for mode, ref in (("mean_precision", ref_mp), ("official", ref_off)):
        r = results[mode]
        print(f"max |diff| vs loop [{mode:>14}]: "
              f"cmc {np.max(np.abs(r['cmc'] - ref['cmc'])):.3g}  "
              f"mAP {abs(r['mAP'] - ref['mAP']):.3g}  "
              f"mINP {abs(r['mINP'] - ref['mINP']):.3g}  "
              f"valid queries {r['num_valid_queries']} vs {ref['num_valid_queries']}")


if __name__ == "__main__":
    main()
