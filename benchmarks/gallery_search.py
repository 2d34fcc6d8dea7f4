"""Time and peak memory of blocked evaluation and top-k search against large galleries.

Usage:
    python benchmarks/gallery_search.py                       # every case, each in its own subprocess
    python benchmarks/gallery_search.py --op eval --gallery 1000000 [--block-mib 4]
    python benchmarks/gallery_search.py --op eval --gallery 1000000 --whole_rows   # the fallback path

3,368 queries (Market-1501's count) against galleries of 10^4, 10^5 and 10^6
256-d embeddings: identities of unit-variance centres plus noise (751
identities, about 20 gallery images each, the rest of a large gallery pid -1
distractors), L2-normalized, Euclidean distance.  Ops:
  eval   msml_jax.evaluation.search.evaluate_ranking_blocked (exact CMC/mAP/mINP); with --whole_rows, its
         fallback for rankings that keep too much per tile (whole distance rows, evaluate_ranking_blocks)
  topk   msml_jax.evaluation.search.top_k with k = 100
  dense  the dense path for comparison (pairwise_distance + evaluate_ranking on
         the whole [Q, G] matrix), 10^4 gallery only; it also checks that the
         blocked result is equal
Each case runs in a fresh subprocess: its peak RSS (ru_maxrss, whole process:
Python, JAX, the embeddings and the work) is its own.  The gallery is made on
the JAX device, chunk by chunk into one donated buffer, as a model's embeddings
would be: a NumPy gallery would cost one more copy of it (1 GiB at 10^6).  Time
to generate it is not counted.  Page faults (ru_minflt) are those of the call: each
is a fresh 4 KiB page the kernel zeroes, the cost of buffers that malloc does not reuse.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

NUM_QUERY = 3368
DIM = 256
NUM_IDS = 751
PER_ID = 20
GALLERIES = (10_000, 100_000, 1_000_000)


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def page_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def make_problem(num_gallery, num_query=NUM_QUERY, dim=DIM, seed=0):
    rng = np.random.default_rng(seed)
    noise = 2.0 * (dim / 512) ** 0.25
    centres = rng.standard_normal((NUM_IDS, dim), dtype=np.float32)
    num_real = min(num_gallery, NUM_IDS * PER_ID)
    g_pids = np.full(num_gallery, -1, np.int64)
    g_pids[:num_real] = rng.integers(0, NUM_IDS, num_real)
    g_pids = g_pids[rng.permutation(num_gallery)]
    q_pids = rng.integers(0, NUM_IDS, num_query)
    q_cams, g_cams = rng.integers(0, 6, num_query), rng.integers(0, 6, num_gallery)

    def embed(pids):
        e = noise * rng.standard_normal((len(pids), dim), dtype=np.float32)
        e[pids >= 0] += centres[pids[pids >= 0]]
        return e / np.linalg.norm(e, axis=1, keepdims=True)

    import jax
    import jax.numpy as jnp

    put = jax.jit(lambda buf, chunk, start: jax.lax.dynamic_update_slice(buf, chunk, (start, 0)),
                  donate_argnums=0)  # in place: no second gallery
    g = jnp.zeros((num_gallery, dim), jnp.float32)
    chunk = 10_000  # divides every gallery size here
    for s in range(0, num_gallery, chunk):
        g = put(g, embed(g_pids[s:s + chunk]), s)
    return embed(q_pids), g, q_pids, g_pids, q_cams, g_cams


def run_case(op, num_gallery, block_mib, k, whole_rows=False):
    from msml_jax.evaluation import search

    if whole_rows:
        search._EVAL_KEPT_BYTES = 0  # the first kept entry sends evaluate_ranking_blocked to its fallback

    q, g, q_pids, g_pids, q_cams, g_cams = make_problem(num_gallery)
    rss0 = rss_mib()
    block = search._DEFAULT_TILE_BYTES if block_mib is None else block_mib << 20
    cpu, faults, t = cpu_seconds(), page_faults(), time.perf_counter()
    if op == "eval":
        r = search.evaluate_ranking_blocked(q, g, q_pids, g_pids, q_cams, g_cams, max_block_bytes=block)
        what = (f"rank-1 {r['cmc'][0]:.4f} mAP {r['mAP']:.4f} mINP {r['mINP']:.4f} "
                f"({r['num_valid_queries']} valid queries)")
    elif op == "topk":
        idx, dist = search.top_k(q, g, k, max_block_bytes=block)
        what = f"top-{k}: {idx.shape} indices, mean distance to the nearest {dist[:, 0].mean():.4f}"
    else:
        import jax.numpy as jnp

        from msml_jax.evaluation import evaluate_ranking
        from msml_jax.losses import pairwise_distance

        dist = np.asarray(pairwise_distance(jnp.asarray(q), jnp.asarray(g)))
        r = evaluate_ranking(dist, q_pids, g_pids, q_cams, g_cams)
        what = f"rank-1 {r['cmc'][0]:.4f} mAP {r['mAP']:.4f} mINP {r['mINP']:.4f}"
    dt, cpu, faults = time.perf_counter() - t, cpu_seconds() - cpu, page_faults() - faults
    if op == "eval" and whole_rows:
        shape = f"whole-row blocks of {search.fallback_block_rows(NUM_QUERY, num_gallery, block)} queries"
    elif op in ("topk", "eval"):  # both go over [rows, cols] tiles
        shape = "tiles of {} x {}".format(*search.tile_shape(NUM_QUERY, num_gallery, max_block_bytes=block))
    else:
        shape = f"one dense {NUM_QUERY} x {num_gallery} matrix"
    print(f"{op:>5} G={num_gallery:>9,}: {dt:7.1f} s wall ({cpu:7.1f} s CPU, {faults / 1e3:5.0f}k page faults)  "
          f"peak RSS {rss_mib():6.0f} MiB (before the call {rss0:.0f} MiB, gallery {g.nbytes / 2**20:.0f} MiB; "
          f"{shape})  "
          f"{what}", flush=True)
    if op == "dense":
        blocked = search.evaluate_ranking_blocked(q, g, q_pids, g_pids, q_cams, g_cams, max_block_bytes=block)
        print(f"      blocked vs dense: cmc equal {np.array_equal(blocked['cmc'], r['cmc'])}, valid queries equal "
              f"{blocked['num_valid_queries'] == r['num_valid_queries']}, |mAP diff| "
              f"{abs(blocked['mAP'] - r['mAP']):.1e}, |mINP diff| {abs(blocked['mINP'] - r['mINP']):.1e} (the "
              f"tiles' and the dense matmul's roundings may differ by 1 ulp, swapping near-ties)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--op", choices=["eval", "topk", "dense"])
    ap.add_argument("--gallery", type=int)
    ap.add_argument("--block-mib", type=int, default=None,
                    help="size of one [b, G'] float32 tile (default: the library's, 4 MiB)")
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--whole_rows", action="store_true", help="--op eval: time its whole-row fallback")
    args = ap.parse_args(argv)
    if args.op:
        run_case(args.op, args.gallery, args.block_mib, args.k, args.whole_rows)
        return
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    print(f"{platform.processor() or platform.machine()}, {cores} cores available; numpy {np.__version__}; "
          f"{NUM_QUERY} queries, {DIM}-d")
    cases = [("dense", GALLERIES[0])] + [(op, g) for g in GALLERIES for op in ("eval", "topk")]
    for op, g in cases:
        block = [] if args.block_mib is None else ["--block-mib", str(args.block_mib)]
        subprocess.run([sys.executable, os.path.abspath(__file__), "--op", op, "--gallery", str(g), *block,
                        "--k", str(args.k)], check=True)


if __name__ == "__main__":
    main()
