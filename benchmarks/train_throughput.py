"""Images/s of the jitted train step per backbone, size and dtype; FLOPs/image from XLA's cost analysis.

One step = forward, classification + MSML loss, backward, Adam update (msml_jax.training.steps.train_step), on a
P x K batch held in device memory (no input pipeline, no TensorFlow). Utilization is achieved FLOP/s over the
device's dense peak for the dtype, where known.

    python benchmarks/train_throughput.py                                   # the paper's settings (accelerator)
                                                                            # CPU: a small model, unless flags say
    python benchmarks/train_throughput.py --sizes 64x32 --batch 16 --backbones small_resnet,resnet50 --steps 3
    python benchmarks/train_throughput.py --loop ...    # and the whole training loop beside the bare step

Prints one row per (backbone, size, dtype). With --loop, each row also gives the img/s of the real training loop
(msml_jax.training.loop.train_and_evaluate: host batches put on the devices ahead of use, the jitted step, the
NaN watch, logging every 10 steps, an Orbax checkpoint half way and at the end) fed in-memory batches (no
TensorFlow, no evaluation), and its ratio to the bare step.
"""

import argparse
import functools
import json
import os
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # run as a script from anywhere

from msml_jax.config_files import load_config  # noqa: E402
from msml_jax.models import get_model, init_variables  # noqa: E402
from msml_jax.training import steps  # noqa: E402

# Dense peak FLOP/s by device kind substring and dtype (vendor datasheets; float32 = TF32 tensor cores on NVIDIA).
PEAKS = {
    "H100": {"bfloat16": 989e12, "float32": 495e12},
    "H200": {"bfloat16": 989e12, "float32": 495e12},
    "A100": {"bfloat16": 312e12, "float32": 156e12},
    "TPU v4": {"bfloat16": 275e12, "float32": 275e12},
    "TPU v5e": {"bfloat16": 197e12, "float32": 197e12},
}


ACCELERATOR = {"backbones": "resnet50,resnet50x,inception_v2", "sizes": "224x224,256x128",
               "dtypes": "float32,bfloat16", "batch": 128}
CPU = {"backbones": "small_resnet", "sizes": "64x32", "dtypes": "float32", "batch": 32}


def base_config():
    """configs/synthetic.py's loss / optimizer settings (MSML + classification, Adam), loaded without TensorFlow."""
    config = load_config(os.path.join(ROOT, "configs", "synthetic.py"))
    config.loss = "msml"
    config.learning_rate = 1e-3
    return config


def flops_of(compiled):
    """Total FLOPs of a compiled computation from XLA's cost analysis (None when the backend gives none)."""
    if jax.devices()[0].platform == "gpu":
        # XLA's GPU cost analysis counts a convolution lowered to cuDNN as ~0 FLOPs, compiled or lowered alike
        # (H200, ResNet50 224x224: 0.42 GFLOP/img either way, against PyTorch's count of 24.3): no figure beats a
        # wrong one. docs/benchmarks.md gives GPU rates from PyTorch's FlopCounterMode instead.
        return None
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    if not cost:
        return None
    flops = cost.get("flops")
    return float(flops) if flops and flops > 0 else None


def peak_flops(dtype):
    kind = jax.devices()[0].device_kind
    for key, peaks in PEAKS.items():
        if key.lower() in kind.lower():
            return peaks[dtype]
    return None


def measure(name, size, dtype, batch, k, num_classes, embed_dim, num_steps, warmup):
    """(images/s, seconds/step, FLOPs/image or None) of the train step for one setting."""
    config = base_config()
    config.model.name = name
    config.model.embed_dim = embed_dim
    config.dtype = dtype
    config.P, config.K, config.batch_size = batch // k, k, batch
    model = get_model(name, num_classes, embed_dim=embed_dim, dtype=dtype)
    variables = init_variables(model, size, jax.random.key(0))
    state = steps.create_train_state(model, config, variables)
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.integers(0, 256, (batch, *size, 3), np.uint8))
    ids = rng.choice(num_classes, batch // k, replace=False)
    labels = jnp.asarray(np.repeat(ids, k).astype(np.int32))
    step = jax.jit(functools.partial(steps.train_step, settings=steps.StepSettings.from_config(config)), donate_argnums=0)
    compiled = step.lower(state, images, labels).compile()
    flops = flops_of(compiled)
    for _ in range(warmup):
        state, metrics = compiled(state, images, labels)
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(num_steps):
        state, metrics = compiled(state, images, labels)
    jax.block_until_ready((state.params, metrics))
    seconds = (time.perf_counter() - start) / num_steps
    if not np.isfinite(float(metrics["loss"])):
        raise FloatingPointError(f"{name} {size} {dtype}: loss is {float(metrics['loss'])}")
    return batch / seconds, seconds, (flops / batch if flops else None)


def measure_loop(name, size, dtype, batch, k, num_classes, embed_dim, num_steps, warmup, checkpoint_every=None):
    """Images/s of the whole training loop over `warmup + num_steps` steps, timed after the warm-up steps.

    The loop logs images/s per log interval (10 steps) from the end of its first step on; the figure is the total
    of the intervals after `warmup` steps: images over seconds.
    """
    from msml_jax.training.loop import train_and_evaluate

    config = base_config()
    config.model.name, config.model.embed_dim, config.dtype = name, embed_dim, dtype
    config.P, config.K, config.batch_size = batch // k, k, batch
    # Identities only: the loop is fed generated batches, so the synthetic images are rendered tiny.
    config.data.synthetic.update(dict(num_train_ids=num_classes, num_test_ids=2, num_distractors=0,
                                      image_size=(16, 8)))
    config.data.image_size = size
    total = warmup + num_steps
    config.num_train_steps, config.lr_boundaries, config.eval_every_steps = total, (), 0
    config.log_every_steps, config.checkpoint_every_steps = 10, checkpoint_every or max(10, total // 2)
    rng = np.random.default_rng(0)
    pool = [rng.integers(0, 256, (batch, *size, 3), np.uint8) for _ in range(4)]

    def batches(trainer, start_step):
        rows = trainer.sampler  # labels of real PK batches; images from a small in-memory pool
        for step in range(start_step, total):
            labels = np.searchsorted(rows.identities, trainer.train["pids"][rows.batch_indices(step)])
            yield {"images": pool[step % len(pool)], "labels": labels.astype(np.int32), "step": np.int64(step)}

    with tempfile.TemporaryDirectory() as workdir:
        train_and_evaluate(config, workdir, batches=batches, evaluate=False, tensorboard=False)
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
            records = [json.loads(line) for line in f]
    images = seconds = 0.0
    previous = 0
    for r in records:
        if "images_per_sec" in r and r["step"] > warmup:
            interval = (r["step"] - max(previous, 1)) * batch
            images, seconds = images + interval, seconds + interval / r["images_per_sec"]
        previous = r["step"]
    return images / seconds if seconds else float("nan")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", default=None, help=f"default {ACCELERATOR['backbones']} "
                        f"(CPU: {CPU['backbones']})")
    parser.add_argument("--sizes", default=None, help=f"comma-separated HxW, default {ACCELERATOR['sizes']} "
                        f"(CPU: {CPU['sizes']})")
    parser.add_argument("--dtypes", default=None, help=f"default {ACCELERATOR['dtypes']} (CPU: {CPU['dtypes']})")
    parser.add_argument("--batch", type=int, default=None, help=f"P x K images per step, default "
                        f"{ACCELERATOR['batch']} (CPU: {CPU['batch']})")
    parser.add_argument("--K", type=int, default=4, help="images per identity")
    parser.add_argument("--num_classes", type=int, default=751, help="classifier outputs (Market-1501: 751)")
    parser.add_argument("--embed_dim", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--loop", action="store_true", help="also time the whole training loop (see above)")
    args = parser.parse_args(argv)
    device = jax.devices()[0]
    # The paper's settings (ResNet50 at 224x224, batch 128, whole loop with --loop) take hours on a CPU: there the
    # defaults are a small model; a flag given explicitly is always used.
    defaults = CPU if device.platform == "cpu" else ACCELERATOR
    for field, value in defaults.items():
        if getattr(args, field) is None:
            setattr(args, field, value)
    if device.platform == "cpu":
        print(f"CPU: defaults {defaults} (pass --backbones resnet50 --sizes 224x224 --batch 128 for the paper's "
              "settings: hours with --loop)", flush=True)
    if args.batch % args.K:
        parser.error("--batch must be a multiple of --K")
    print(f"device: {device.platform} {device.device_kind} x{jax.device_count()}; batch {args.batch} "
          f"(P={args.batch // args.K}, K={args.K}); {args.steps} timed steps after {args.warmup} warm-up", flush=True)
    columns = ("size", 8), ("dtype", 9), ("img/s", 9), ("ms/step", 9), ("GFLOP/img", 10), ("TFLOP/s", 8), ("util", 6)

    print(f"{'backbone':<16} " + " ".join(f"{c:>{w}}" for c, w in columns))
    for name in args.backbones.split(","):
        for size_text in args.sizes.split(","):
            size = tuple(int(v) for v in size_text.lower().split("x"))
            for dtype in args.dtypes.split(","):
                ips, seconds, flops = measure(
                    name, size, dtype, args.batch, args.K, args.num_classes, args.embed_dim, args.steps, args.warmup
                )
                achieved = flops * ips if flops else None
                peak = peak_flops(dtype)
                util = f"{achieved / peak:6.1%}" if achieved and peak else f"{'-':>6}"
                gflop = f"{flops / 1e9:10.2f}" if flops else f"{'-':>10}"
                tflops = f"{achieved / 1e12:8.3f}" if achieved else f"{'-':>8}"
                print(f"{name:<16} {size_text:>8} {dtype:>9} {ips:9.1f} {seconds * 1e3:9.1f} {gflop} {tflops} {util}",
                      flush=True)
                if args.loop:  # the bare row is out first, in case the loop's run is cut short
                    loop_ips = measure_loop(name, size, dtype, args.batch, args.K, args.num_classes, args.embed_dim,
                                            max(args.steps, 20), max(args.warmup, 10))
                    print(f"{'  whole loop':<16} {size_text:>8} {dtype:>9} {loop_ips:9.1f} "
                          f"{args.batch / loop_ips * 1e3:9.1f}   ({loop_ips / ips:.1%} of the bare step)", flush=True)


if __name__ == "__main__":
    main()
