"""Where the training loop's time goes beyond the bare step: one setting, the loop's parts added one by one.

    python benchmarks/loop_overhead.py --backbone resnet50 --size 256x128 --dtype bfloat16 --steps 40

Rows (ms/step, mean over the timed steps, synced at the end only):
  bare              the jitted train step on one device-resident batch (benchmarks/train_throughput.py's figure)
  + host batch      a numpy batch put on the devices each step (sharding.global_batch), no prefetch
  + prefetch        the same through sharding.prefetch (the next batch's copy issued before the step)
  + NaN watch       the loop's step: train step and NaN/Inf watch in one jitted program
  whole loop        training.loop.train_and_evaluate fed in-memory batches: logging every 10 steps, no
                    checkpoint but the final one, no evaluation
"""

import argparse
import os
import sys
import time

import jax
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.train_throughput import base_config  # noqa: E402
from msml_jax import sharding  # noqa: E402
from msml_jax.models import get_model, init_variables  # noqa: E402
from msml_jax.training import steps  # noqa: E402
from msml_jax.training.trainer import jit_train_step  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--size", default="256x128")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--K", type=int, default=4)
    parser.add_argument("--num_classes", type=int, default=751)
    parser.add_argument("--embed_dim", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args(argv)
    size = tuple(int(v) for v in args.size.split("x"))
    config = base_config()
    config.model.name, config.model.embed_dim, config.dtype = args.backbone, args.embed_dim, args.dtype
    config.P, config.K, config.batch_size = args.batch // args.K, args.K, args.batch
    mesh = sharding.make_mesh()
    model = get_model(args.backbone, args.num_classes, embed_dim=args.embed_dim, dtype=args.dtype)
    state = sharding.replicate(steps.create_train_state(
        model, config, init_variables(model, size, jax.random.key(0))), mesh)
    step_fn = jit_train_step(config, mesh)
    rng = np.random.default_rng(0)
    pool = [rng.integers(0, 256, (args.batch, *size, 3), np.uint8) for _ in range(4)]
    labels = np.repeat(rng.choice(args.num_classes, args.batch // args.K, replace=False), args.K).astype(np.int32)
    host = [{"images": p, "labels": labels, "step": np.int64(i)} for i, p in enumerate(pool)]
    resident = sharding.global_batch({"images": pool[0], "labels": labels}, args.batch, mesh)
    watched_fn = jit_train_step(config, mesh, watch=True)

    def run(name, batches, watch=False):
        nonlocal state
        guard = jax.device_put(steps.no_bad_step(), sharding.replicated(mesh))
        it = iter(batches)
        for _ in range(3):  # warm-up (compiles)
            b = next(it)
            if watch:
                state, metrics, guard = watched_fn(state, b["images"], b["labels"], guard)
            else:
                state, metrics = step_fn(state, b["images"], b["labels"])
        jax.block_until_ready(metrics)
        start = time.perf_counter()
        for i in range(args.steps):
            b = next(it)
            if watch:
                state, metrics, guard = watched_fn(state, b["images"], b["labels"], guard)
            else:
                state, metrics = step_fn(state, b["images"], b["labels"])
        jax.block_until_ready((state.params, metrics, guard))
        ms = (time.perf_counter() - start) / args.steps * 1e3
        print(f"{name:<16} {ms:8.1f} ms/step {args.batch / ms * 1e3:9.1f} img/s", flush=True)

    def forever(make):
        i = 0
        while True:
            yield make(i)
            i += 1

    print(f"device: {jax.devices()[0].device_kind}; {args.backbone} {args.size} {args.dtype}, batch {args.batch}")
    run("bare", forever(lambda i: resident))
    run("+ host batch", forever(lambda i: sharding.global_batch(
        {"images": pool[i % 4], "labels": labels}, args.batch, mesh)))
    run("+ prefetch", sharding.prefetch(forever(lambda i: host[i % 4]), args.batch, mesh))
    run("+ NaN watch", sharding.prefetch(forever(lambda i: host[i % 4]), args.batch, mesh), watch=True)

    from benchmarks.train_throughput import measure_loop

    ips = measure_loop(args.backbone, size, args.dtype, args.batch, args.K, args.num_classes, args.embed_dim,
                       args.steps, 10, checkpoint_every=10**9)
    print(f"{'whole loop':<16} {args.batch / ips * 1e3:8.1f} ms/step {ips:9.1f} img/s", flush=True)


if __name__ == "__main__":
    main()
