"""Images/s of the training input pipeline (decode + resize + augment + PK batching) on 1 and on 2 cores.

    python benchmarks/input_pipeline.py                          # 3000 generated JPEGs in a temporary folder
    python benchmarks/input_pipeline.py --viper ../shared/data/VIPeR   # the real VIPeR BMPs
    python benchmarks/input_pipeline.py --train_step             # also the small model's CPU train step

Each measurement runs in its own process pinned to the first N cores (sched_setaffinity), with TF's
intra/inter-op pools and the tf.data private thread pool set to N. Images are read from disk into
encoded bytes (what a TFDS split hands the pipeline) and decoded per batch, with the paper's
augmentation on (flip, shift 0.1, zoom 0.1, blur p=0.5). The train step figure is the trainer's own
`images_per_sec` (metrics.jsonl) of configs/synthetic.py on the same cores, after its compile.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_jpegs(folder, n, size):
    """n smooth random person-sized JPEGs (quality 90, like the benchmarks' releases) in `folder`."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    for i in range(n):
        coarse = rng.integers(0, 256, (size[0] // 8, size[1] // 8, 3)).astype(np.float32)
        image = tf.cast(tf.image.resize(coarse[None], size, "bicubic")[0], tf.uint8)
        image = tf.clip_by_value(tf.cast(image, tf.int32) + rng.integers(-10, 10, (*size, 3)), 0, 255)
        with open(os.path.join(folder, f"{i // 4:04d}_c1_{i:05d}.jpg"), "wb") as f:
            f.write(tf.io.encode_jpeg(tf.cast(image, tf.uint8), quality=90).numpy())


def measure(cores, folder, image_size, steps, P, K):
    """Runs in a child pinned to `cores` cores: images/s of `steps` PK batches after 5 warm-up batches."""
    os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:cores]))
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(cores)
    tf.config.threading.set_inter_op_parallelism_threads(cores)
    from msml_jax.data.pipeline import train_dataset
    from msml_jax.data.sampling import PKSampler

    paths = []
    for d, _, names in sorted(os.walk(folder)):
        paths += [os.path.join(d, n) for n in sorted(names) if n.lower().endswith((".jpg", ".bmp", ".png"))]
    images, pids = [], []
    for path in paths:
        with open(path, "rb") as f:
            data = f.read()
        if data[:2] == b"BM":  # VIPeR: TF wants the BMP without its trailing padding
            from msml_jax.data.builders.viper import trim_bmp

            data = trim_bmp(data)
        images.append(data)
        pids.append(int(os.path.basename(path).split("_")[0]))
    split = {"images": np.array(images, dtype=object), "pids": np.array(pids), "camids": np.zeros(len(pids), int)}
    sampler = PKSampler(split["pids"], P, K, seed=0)
    ds = train_dataset(split, sampler, start_step=0, end_step=steps + 5, image_size=image_size, flip=True,
                       shift=0.1, zoom=0.1, blur_prob=0.5, blur_sigma=1.0, num_threads=cores)
    it = ds.as_numpy_iterator()
    for _ in range(5):
        next(it)
    start = time.perf_counter()
    for _ in range(steps):
        next(it)
    return steps * P * K / (time.perf_counter() - start)


def train_step_rate(cores):
    """The trainer's images/s on configs/synthetic.py pinned to `cores` cores (last logged record)."""
    with tempfile.TemporaryDirectory() as workdir:
        cmd = ["taskset", "-c", ",".join(str(c) for c in sorted(os.sched_getaffinity(0))[:cores]), sys.executable,
               "train.py", "--config", "configs/synthetic.py", "--workdir", workdir, "--config.num_train_steps=80",
               "--config.log_every_steps=20", "--config.checkpoint_every_steps=1000", "--config.lr_boundaries=(70,)"]
        env = dict(os.environ, XLA_FLAGS=f"--xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads={cores}")
        subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, env=env)
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
            rates = [r["images_per_sec"] for r in map(json.loads, f) if "images_per_sec" in r]
    return rates[-1]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--viper", help="VIPeR folder (cam_a/, cam_b/); default: generated JPEGs")
    parser.add_argument("--num_images", type=int, default=3000)
    parser.add_argument("--image_size", type=int, nargs=2, default=(64, 32), help="network input (height width)")
    parser.add_argument("--source_size", type=int, nargs=2, default=(128, 64), help="generated JPEG size")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--P", type=int, default=16)
    parser.add_argument("--K", type=int, default=4)
    parser.add_argument("--cores", type=int, nargs="+", default=(1, 2))
    parser.add_argument("--train_step", action="store_true", help="also run the trainer for its images/s")
    parser.add_argument("--_child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child:  # one measurement, in a fresh process so that the pinning and pool sizes hold
        cores, folder = int(args._child[0]), args._child[1]
        print(json.dumps(measure(cores, folder, tuple(args.image_size), args.steps, args.P, args.K)))
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.viper
        if folder is None:
            folder = tmp
            write_jpegs(folder, args.num_images, tuple(args.source_size))
            source = f"{args.num_images} generated JPEGs of {args.source_size[0]}x{args.source_size[1]}"
        else:
            source = f"VIPeR BMPs (48x128) in {folder}"
        print(f"input pipeline: {source} -> {args.image_size[0]}x{args.image_size[1]}, PK {args.P}x{args.K}, "
              "decode + flip/shift/zoom/blur")
        for cores in args.cores:
            child = [sys.executable, os.path.abspath(__file__), "--_child", str(cores), folder,
                     "--image_size", *map(str, args.image_size), "--steps", str(args.steps),
                     "--P", str(args.P), "--K", str(args.K)]
            out = subprocess.run(child, cwd=ROOT, check=True, capture_output=True, text=True,
                                 env=dict(os.environ, PYTHONPATH=ROOT))
            rate = json.loads(out.stdout.strip().splitlines()[-1])
            line = f"  {cores} core(s): pipeline {rate:8.0f} images/s"
            if args.train_step:
                line += f"   small-model train step (configs/synthetic.py): {train_step_rate(cores):6.0f} images/s"
            print(line, flush=True)


if __name__ == "__main__":
    main()
