"""Time and peak memory of k-reciprocal re-ranking (msml_jax.evaluation.rerank).

Usage:
    python benchmarks/rerank.py                   # every case, each in its own subprocess
    python benchmarks/rerank.py --case market-dense [--k1 20 --k2 6]

Cases (synthetic embeddings around identity centres, L2-normalized, Euclidean):
  market-dense       k_reciprocal_rerank on the three distance matrices of a
                     Market-1501-sized problem (3,368 queries x 15,913 gallery;
                     the matrices are built from --market-dim-d embeddings
                     before timing: their cost does not depend on the dimension)
  market-embeddings  k_reciprocal_rerank_blocks from 2048-d embeddings, same sizes
  msmt-embeddings    k_reciprocal_rerank_blocks from 512-d embeddings of an
                     MSMT17-sized problem (11,659 x 82,161)
Each case runs in a fresh subprocess, so that its peak RSS (ru_maxrss) is its own.
Printed: wall time of the re-ranking (blocks consumed and dropped for the
embedding cases), peak RSS of the whole process, and the NumPy memory the call
allocates beyond its inputs and output (tracemalloc; JAX device buffers are not
traced, see the RSS for those).  A summary line evaluates the re-ranked blocks
(rank-1 / mAP before and after) as a sanity check.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import time
import tracemalloc

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

CASES = {
    "market-dense": dict(num_query=3368, num_gallery=15913, dim=128, num_ids=1501),
    "market-embeddings": dict(num_query=3368, num_gallery=15913, dim=2048, num_ids=1501),
    "msmt-embeddings": dict(num_query=11659, num_gallery=82161, dim=512, num_ids=3060),
}


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    """User + system CPU time of this process (all threads): less sensitive to a loaded machine than wall time."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def make_problem(num_query, num_gallery, dim, num_ids, num_cams=6, noise=None, seed=0):
    """float32 L2-normalized embeddings, pids and camids (a fifth of the gallery: pid -1 distractors).

    The default noise (2 (dim / 512)^(1/4) per coordinate, identity centres of
    unit variance) gives a rank-1 ~0.98, mAP ~0.8 problem at Market size.
    """
    noise = 2.0 * (dim / 512) ** 0.25 if noise is None else noise
    rng = np.random.default_rng(seed)
    q_ids = rng.integers(0, num_ids, num_query)
    num_distractors = num_gallery // 5
    g_ids = np.concatenate([rng.integers(0, num_ids, num_gallery - num_distractors),
                            np.full(num_distractors, -1)])
    centres = rng.standard_normal((num_ids, dim), dtype=np.float32)
    cam_bias = 0.3 * rng.standard_normal((num_cams, dim), dtype=np.float32)

    def embed(ids, cams):
        x = np.empty((len(ids), dim), np.float32)
        for s in range(0, len(ids), 8192):  # chunked: the peak stays near the output
            i, c = ids[s:s + 8192], cams[s:s + 8192]
            e = noise * rng.standard_normal((len(i), dim), dtype=np.float32) + cam_bias[c]
            e[i >= 0] += centres[i[i >= 0]]
            x[s:s + 8192] = e / np.linalg.norm(e, axis=1, keepdims=True)
        return x

    q_cams, g_cams = rng.integers(0, num_cams, num_query), rng.integers(0, num_cams, num_gallery)
    return embed(q_ids, q_cams), embed(g_ids, g_cams), q_ids, g_ids, q_cams, g_cams


def euclidean(a, b, same=False):
    """float32 Euclidean distances of L2-normalized rows, built in place."""
    d = a @ b.T
    np.multiply(d, -2.0, out=d)
    np.add(d, 2.0, out=d)
    np.maximum(d, 0.0, out=d)
    np.sqrt(d, out=d)
    if same:
        np.fill_diagonal(d, 0.0)
    return d


def run_case(name, k1, k2, lambda_value):
    from msml_jax.evaluation import rerank
    from msml_jax.evaluation.search import evaluate_ranking_blocked, evaluate_ranking_blocks

    spec = CASES[name]
    q, g, q_ids, g_ids, q_cams, g_cams = make_problem(**spec)
    nq, ng = len(q), len(g)
    print(f"[{name}] {nq} queries x {ng} gallery, {spec['dim']}-d, k1={k1} k2={k2} lambda={lambda_value}",
          flush=True)
    evaluated = {}
    if name == "market-dense":
        t = time.perf_counter()
        inputs = (euclidean(q, g), euclidean(q, q, True), euclidean(g, g, True))
        in_mib = sum(a.nbytes for a in inputs) / 2**20
        print(f"  inputs: {in_mib:.0f} MiB of distance matrices, built in {time.perf_counter() - t:.1f} s; "
              f"peak RSS so far {rss_mib():.0f} MiB", flush=True)
        rss0 = rss_mib()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        cpu = cpu_seconds()
        t = time.perf_counter()
        out = rerank.k_reciprocal_rerank(*inputs, k1=k1, k2=k2, lambda_value=lambda_value)
        dt = time.perf_counter() - t
        cpu = cpu_seconds() - cpu
        peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
        print(f"  k_reciprocal_rerank: {dt:.2f} s wall ({cpu:.2f} s CPU); NumPy memory beyond inputs and output "
              f"{(peak - out.nbytes) / 2**20:.0f} MiB (output {out.nbytes / 2**20:.0f} MiB); "
              f"peak RSS {rss_mib():.0f} MiB (+{rss_mib() - rss0:.0f} MiB over the inputs' peak)")
        evaluated["before"] = evaluate_ranking_blocks([(slice(0, nq), inputs[0])], q_ids, g_ids, q_cams, g_cams)
        evaluated["after"] = evaluate_ranking_blocks([(slice(0, nq), out)], q_ids, g_ids, q_cams, g_cams)
    else:
        rss0 = rss_mib()
        cpu = cpu_seconds()
        t = time.perf_counter()
        blocks = rerank.k_reciprocal_rerank_blocks(q, g, k1=k1, k2=k2, lambda_value=lambda_value)
        times = []

        def timed():
            for blk in blocks:
                times.append(time.perf_counter())
                yield blk

        evaluated["after"] = evaluate_ranking_blocks(timed(), q_ids, g_ids, q_cams, g_cams)
        dt = time.perf_counter() - t
        cpu = cpu_seconds() - cpu
        print(f"  k_reciprocal_rerank_blocks + blocked evaluation: {dt:.1f} s wall ({cpu:.1f} s CPU; first block after "
              f"{times[0] - t:.1f} s); peak RSS {rss_mib():.0f} MiB for the whole process "
              f"({rss0:.0f} MiB before the call, embeddings {(q.nbytes + g.nbytes) / 2**20:.0f} MiB)")
        evaluated["before"] = evaluate_ranking_blocked(q, g, q_ids, g_ids, q_cams, g_cams)
    for key in ("before", "after"):
        r = evaluated[key]
        print(f"  {key:>6} re-ranking: rank-1 {r['cmc'][0]:.4f}  mAP {r['mAP']:.4f}  "
              f"({r['num_valid_queries']} valid queries)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--case", choices=sorted(CASES))
    ap.add_argument("--k1", type=int, default=20)
    ap.add_argument("--k2", type=int, default=6)
    ap.add_argument("--lambda-value", type=float, default=0.3)
    args = ap.parse_args(argv)
    if args.case:
        run_case(args.case, args.k1, args.k2, args.lambda_value)
        return
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    print(f"{platform.processor() or platform.machine()}, {cores} cores available; numpy {np.__version__}")
    for case in CASES:
        subprocess.run([sys.executable, os.path.abspath(__file__), "--case", case, "--k1", str(args.k1),
                        "--k2", str(args.k2), "--lambda-value", str(args.lambda_value)], check=True)


if __name__ == "__main__":
    main()
