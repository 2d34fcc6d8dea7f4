"""The checkpoint save's integrity digest: the device checksum against the host sha256 it replaced.

    python benchmarks/state_digest.py --backbone resnet50 --repeats 5

Builds the train state of `--backbone` (Adam, `--num_classes` classes, embedding `--embed_dim`), replicated on
the devices as the trainer holds it, and times, after one warm-up call each:
  host sha256       checkpoint._legacy_state_sha256: every leaf copied to the host and hashed there (what `save`
                    did before; kept to verify older checkpoints)
  device checksum   checkpoint.state_checksum: two uint32 sums per leaf computed on the devices, 8 bytes per
                    leaf fetched; its first call (the compiles, one per leaf shape) is printed separately
Best of `--repeats` calls, wall time and CPU time of this process (time.process_time; all threads).
"""

import argparse
import os
import sys
import time

import jax

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.train_throughput import base_config  # noqa: E402
from msml_jax import checkpoint, sharding  # noqa: E402
from msml_jax.models import get_model, init_variables  # noqa: E402
from msml_jax.training import steps  # noqa: E402


def _timed(fn, state):
    wall, cpu = time.perf_counter(), time.process_time()
    fn(state)
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--num_classes", type=int, default=751)
    parser.add_argument("--embed_dim", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    config = base_config()
    config.model.name, config.model.embed_dim = args.backbone, args.embed_dim
    model = get_model(args.backbone, args.num_classes, embed_dim=args.embed_dim)
    variables = init_variables(model, (64, 32), jax.random.key(0))  # the parameter shapes do not depend on it
    state = sharding.replicate(steps.create_train_state(model, config, variables), sharding.make_mesh())
    leaves = jax.tree_util.tree_leaves(state)
    megabytes = sum(leaf.nbytes for leaf in leaves) / 1e6
    print(f"{args.backbone} train state: {len(leaves)} leaves, {megabytes:.0f} MB, on {jax.devices()}")
    wall, cpu = _timed(checkpoint.state_checksum, state)
    print(f"{'device checksum, first call (compiles)':<40} {wall:8.3f} s wall {cpu:8.3f} s CPU")
    for name, fn in (("host sha256", checkpoint._legacy_state_sha256), ("device checksum", checkpoint.state_checksum)):
        fn(state)  # warm-up
        times = [_timed(fn, state) for _ in range(args.repeats)]
        wall, cpu = min(t[0] for t in times), min(t[1] for t in times)
        print(f"{name + f' (best of {args.repeats})':<40} {wall:8.3f} s wall {cpu:8.3f} s CPU", flush=True)


if __name__ == "__main__":
    main()
