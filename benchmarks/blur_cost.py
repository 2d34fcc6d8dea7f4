"""CPU time of the input pipeline's Gaussian blur per blurred image, on 1 and on 2 cores.

    python benchmarks/blur_cost.py                      # 128x64 sources to 256x128 and 224x224, 1 and 2 cores
    python benchmarks/blur_cost.py --cores 1 --sizes 256x128 --rounds 5
    git worktree add /tmp/before REV && python benchmarks/blur_cost.py --root /tmp/before   # another commit's code

The per-image augmentation (`augment.plan` for a batch of 64, then `augment.apply` per image in a tf.data map:
crop, flip, blur, resize, the paper's shift 0.1 and zoom 0.1) runs over the same uint8 sources twice, with
blur_prob 1 and with blur_prob 0 (no blur in the graph at all), blur_sigma 1 (output pixels) as the paper's
setting; the blur's cost per blurred image is the difference of the CPU time per image (the process's, all its
threads). Each figure comes from a child pinned to the first N cores with TF's pools set to N; the two settings
take turns, best of `--rounds` runs each. A steadier figure than `input_pipeline.py --parts`, which takes it
from two whole pipelines' rates at blur_prob 0.5.
"""

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE = (128, 64)


def child(cores, size, blur_prob, images_per_run, root=ROOT):
    """Seconds of CPU per image of the augmentation at `blur_prob`, in this process pinned to `cores` cores, with
    the `msml_jax` of the checkout `root`."""
    import time

    import tensorflow as tf

    from benchmarks.input_pipeline import pin

    pin(cores)
    sys.path.insert(0, root)
    from msml_jax.data import augment

    batch = 64
    sources = tf.cast(tf.random.stateless_uniform([batch, *SOURCE, 3], [1, 2], 0, 256), tf.uint8)
    a = augment.Augmentation(flip=True, shift=0.1, zoom=0.1, blur_prob=blur_prob, blur_sigma=1.0)

    def images_of(step):
        seed = tf.stack([step, tf.constant(7, tf.int64)])
        p = augment.plan(seed, a, augment.Rows(0, batch, batch), SOURCE, size)
        return tf.data.Dataset.from_tensor_slices((sources, p)).map(
            lambda image, row: augment.apply(image, augment.Plan(*row), size, a, seed))

    options = tf.data.Options()
    options.threading.private_threadpool_size = cores
    options.autotune.enabled = False
    ds = tf.data.Dataset.range(10**6).flat_map(images_of).with_options(options)
    it = iter(ds)
    for _ in range(2 * batch):  # warm-up
        next(it)
    start = time.process_time()
    for _ in range(images_per_run):
        next(it)
    return (time.process_time() - start) / images_per_run


def run_child(cores, size, blur_prob, images, root):
    code = (f"import json, sys; sys.path.insert(0, {ROOT!r}); from benchmarks.blur_cost import child; "
            f"print(json.dumps(child({cores}, {tuple(size)}, {blur_prob}, {images}, {root!r})))")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="256x128,224x224", help="comma-separated HxW outputs")
    parser.add_argument("--cores", default="1,2", help="comma-separated core counts (at most the machine's)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each setting, alternating; best kept")
    parser.add_argument("--images", type=int, default=3000, help="timed images per run")
    parser.add_argument("--root", default=ROOT, help="the checkout whose msml_jax is measured (default: this one)")
    args = parser.parse_args(argv)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    print(f"{SOURCE[0]}x{SOURCE[1]} uint8 sources; flip, shift 0.1, zoom 0.1, blur sigma <= 1 output pixel; "
          f"CPU us per image (best of {args.rounds}); msml_jax from {os.path.abspath(args.root)}")
    print(f"{'output':>8} {'cores':>5} {'no blur':>9} {'all blurred':>12} {'blur per blurred image':>23}")
    for size in sizes:
        for cores in (int(c) for c in args.cores.split(",")):
            best = {0.0: float("inf"), 1.0: float("inf")}
            for _ in range(args.rounds):
                for p in best:
                    best[p] = min(best[p], run_child(cores, size, p, args.images, os.path.abspath(args.root)))
            plain, blurred = best[0.0] * 1e6, best[1.0] * 1e6
            print(f"{size[0]:>4}x{size[1]:<3} {cores:>5} {plain:9.1f} {blurred:12.1f} {blurred - plain:23.1f}",
                  flush=True)


if __name__ == "__main__":
    main()
