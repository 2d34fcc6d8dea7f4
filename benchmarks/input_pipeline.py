"""Images/s of the training input pipeline next to plain tf.data, per output size, on 1 and on 2 cores.

    python benchmarks/input_pipeline.py                  # 3000 generated 128x64 JPEGs to 256x128 and 224x224
    python benchmarks/input_pipeline.py --parts          # also the pipeline with its augmentations added one by one
    python benchmarks/input_pipeline.py --viper ../shared/data/VIPeR --image_sizes 128x48   # the real VIPeR BMPs
    python benchmarks/input_pipeline.py --train_step     # also the small model's CPU train step
    python benchmarks/input_pipeline.py --device_blur    # also the train step's blur (augment_on_device), this CPU

Two pipelines read the same encoded files (what a TFDS split hands the pipeline) and make batches of
P*K = 64 images:
  plain:   tf.data as anyone would write it: per file decode (decode_jpeg for JPEGs), resize, random
           flip, pad 10% + random crop (a shift), batch; float32 images.
  project: msml_jax.data.pipeline.train_dataset with the paper's augmentation (flip, shift 0.1, zoom 0.1,
           blur p=0.5 sigma <= 1): PK batches, every draw a pure function of (seed, step, row); uint8 images.
Each measurement runs in its own process pinned to the first N cores (sched_setaffinity), with TF's
intra/inter-op pools and the tf.data private thread pool set to N; the pipelines take turns (`--rounds`
processes each) and the figure is the best of their runs of `--steps` batches, each after 5 warm-up
batches. Images per CPU-second (the process's CPU time, all its threads) are printed too: on a machine
shared with other work they move far less than images/s do. The train step figure is the trainer's own
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
PAPER = dict(flip=True, shift=0.1, zoom=0.1, blur_prob=0.5, blur_sigma=1.0)
# --parts: the project's pipeline with the paper's augmentations added one at a time.
PARTS = {
    "decode + resize": dict(flip=False),
    "+ flip": dict(flip=True),
    "+ shift 0.1": dict(flip=True, shift=0.1),
    "+ zoom 0.1": dict(flip=True, shift=0.1, zoom=0.1),
    "+ blur p=0.5 (paper)": PAPER,
    "paper, blur on device": dict(PAPER, augment_on_device=True),  # the blur left to the train step
}


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


def read_split(folder):
    """The folder's images as a split: encoded bytes (BMPs trimmed as the VIPeR builder does), pids."""
    import numpy as np

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
    return {"images": np.array(images, dtype=object), "pids": np.array(pids), "camids": np.zeros(len(pids), int)}


def plain_dataset(encoded, size, batch, threads):
    """The anchor: per-file decode, resize, random flip, pad + random crop (shift 0.1), batch."""
    import tensorflow as tf

    pad = [size[0] // 10, size[1] // 10]
    jpegs = all(data[:2] == b"\xff\xd8" for data in encoded)

    def prepare(data):
        if jpegs:
            image = tf.io.decode_jpeg(data, channels=3)
        else:
            image = tf.io.decode_image(data, channels=3, expand_animations=False)
        image = tf.image.resize(image, size)
        image = tf.image.random_flip_left_right(image)
        image = tf.pad(image, [[pad[0], pad[0]], [pad[1], pad[1]], [0, 0]])
        return tf.image.random_crop(image, [*size, 3])

    ds = tf.data.Dataset.from_tensor_slices(encoded).repeat()
    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).batch(batch)
    options = tf.data.Options()
    options.threading.private_threadpool_size = threads
    return ds.with_options(options).prefetch(2)


def pin(cores, tensorflow=True):
    """Pins this process to the first `cores` of the cores it may use; with `tensorflow`, TF's intra- and inter-op
    pools to `cores` threads too (before TF runs anything)."""
    os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:cores]))
    if tensorflow:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(cores)
        tf.config.threading.set_inter_op_parallelism_threads(cores)


def measure(cores, folder, image_size, steps, P, K, which):
    """Runs in a child pinned to `cores` cores: images/s of the `which` pipeline (best of 3 runs of `steps`)."""
    pin(cores)
    from msml_jax.data.pipeline import train_dataset
    from msml_jax.data.sampling import PKSampler

    split = read_split(folder)
    if which == "plain":
        ds = plain_dataset(split["images"].astype(object).tolist(), image_size, P * K, cores)
    else:
        settings = PAPER if which == "project" else PARTS[which]
        sampler = PKSampler(split["pids"], P, K, seed=0)
        ds = train_dataset(split, sampler, start_step=0, end_step=3 * steps + 5, image_size=image_size,
                           num_threads=cores, **settings)
    it = iter(ds)
    for _ in range(5):
        next(it)
    best, best_cpu = 0.0, 0.0
    for _ in range(3):
        start, start_cpu = time.perf_counter(), time.process_time()
        for _ in range(steps):
            next(it)
        best = max(best, steps * P * K / (time.perf_counter() - start))
        best_cpu = max(best_cpu, steps * P * K / (time.process_time() - start_cpu))
    return best, best_cpu


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


def device_blur_cost(cores, size, batch):
    """Runs in a child pinned to `cores` cores: the train step's blur (`device_augment.finish`, jitted, JAX's
    default device) of a uint8 batch with half its images blurred (the paper's p = 0.5, stds in [0.1, 1]):
    (wall, CPU) microseconds per image of the batch, best of 3 runs of 50 calls, and the device's kind. On a CPU, JAX's intra-op
    threads follow the pinning only roughly (XLA sizes its pool from the machine's cores)."""
    pin(cores, tensorflow=False)
    import jax
    import jax.numpy as jnp
    import numpy as np

    from msml_jax.data import device_augment

    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.integers(0, 256, (batch, *size, 3)).astype(np.uint8))
    sigmas = np.where(rng.uniform(size=batch) < 0.5, rng.uniform(0.1, 1.0, batch), 0.0).astype(np.float32)
    radius = device_augment.kernel_radius(1.0)
    fn = jax.jit(lambda x, s: device_augment.finish(x, {"blur_sigma": s}, None, radius))
    sigmas = jnp.asarray(sigmas)
    fn(images, sigmas).block_until_ready()
    best, best_cpu = float("inf"), float("inf")
    for _ in range(3):
        start, start_cpu = time.perf_counter(), time.process_time()
        for _ in range(50):
            out = fn(images, sigmas)
        out.block_until_ready()
        best = min(best, (time.perf_counter() - start) / 50 / batch * 1e6)
        best_cpu = min(best_cpu, (time.process_time() - start_cpu) / 50 / batch * 1e6)
    return best, best_cpu, jax.devices()[0].device_kind


def tf_version():
    import tensorflow as tf

    return tf.__version__


def run_child(cores, folder, size, args, which):
    child = [sys.executable, os.path.abspath(__file__), "--_child", str(cores), folder, which,
             "--image_sizes", f"{size[0]}x{size[1]}", "--steps", str(args.steps),
             "--P", str(args.P), "--K", str(args.K)]
    out = subprocess.run(child, cwd=ROOT, check=True, capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=ROOT))
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--viper", help="VIPeR folder (cam_a/, cam_b/); default: generated JPEGs")
    parser.add_argument("--num_images", type=int, default=3000)
    parser.add_argument("--image_sizes", nargs="+", default=["256x128", "224x224"], help="network inputs, HxW")
    parser.add_argument("--source_size", type=int, nargs=2, default=(128, 64), help="generated JPEG size")
    parser.add_argument("--steps", type=int, default=20, help="batches per timed run")
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs of each pipeline (best is kept)")
    parser.add_argument("--P", type=int, default=16)
    parser.add_argument("--K", type=int, default=4)
    parser.add_argument("--cores", type=int, nargs="+", default=(1, 2))
    parser.add_argument("--parts", action="store_true", help="also the pipeline with each augmentation added")
    parser.add_argument("--train_step", action="store_true", help="also run the trainer for its images/s")
    parser.add_argument("--device_blur", action="store_true",
                        help="also the train step's blur (config.data.augment_on_device) on JAX's device, per image")
    parser.add_argument("--_child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = [tuple(int(n) for n in s.split("x")) for s in args.image_sizes]
    if args._child:  # one measurement, in a fresh process so that the pinning and pool sizes hold
        cores, folder, which = int(args._child[0]), args._child[1], args._child[2]
        if which == "device_blur":
            print(json.dumps(device_blur_cost(cores, sizes[0], args.P * args.K)))
        else:
            print(json.dumps(measure(cores, folder, sizes[0], args.steps, args.P, args.K, which)))
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.viper
        if folder is None:
            folder = tmp
            write_jpegs(folder, args.num_images, tuple(args.source_size))
            source = f"{args.num_images} generated JPEGs of {args.source_size[0]}x{args.source_size[1]} (quality 90)"
        else:
            source = f"VIPeR BMPs (128x48) in {folder}"
        from msml_jax.reproduce import cpu_model

        print(f"input pipeline: {source}, PK {args.P}x{args.K}; {cpu_model() or 'unknown CPU'}, {os.cpu_count()} CPUs, "
              f"load {os.getloadavg()[0]:.1f} (1-min average); TensorFlow {tf_version()}")
        print("project = train_dataset with flip, shift 0.1, zoom 0.1, blur p=0.5; plain = decode, resize, flip, "
              "pad + crop")
        for size in sizes:
            for cores in args.cores:
                # Alternating short runs, best of each: the load of other work on the machine comes and goes.
                names = ["plain", "project"] + (list(PARTS) if args.parts else [])
                rates = {name: (0.0, 0.0) for name in names}
                for _ in range(args.rounds):
                    for name in names:
                        wall, cpu = run_child(cores, folder, size, args, name)
                        rates[name] = (max(rates[name][0], wall), max(rates[name][1], cpu))
                (plain, plain_cpu), (project, project_cpu) = rates["plain"], rates["project"]
                line = (f"  {size[0]}x{size[1]}, {cores} core(s): plain tf.data {plain:5.0f} images/s   "
                        f"project {project:5.0f} images/s ({project / plain:4.2f}x plain)   per CPU-second: "
                        f"plain {plain_cpu:5.0f}, project {project_cpu:5.0f} ({project_cpu / plain_cpu:4.2f}x)")
                if args.train_step:
                    line += f"   small-model train step (configs/synthetic.py): {train_step_rate(cores):6.0f} images/s"
                print(line, flush=True)
                for name in PARTS if args.parts else ():
                    wall, cpu = rates[name]
                    print(f"      project, {name:22s} {wall:5.0f} images/s, {cpu:5.0f} per CPU-second", flush=True)
                if args.parts:
                    # The blur's cost per blurred image (p = 0.5): the CPU time it adds to an image, over 0.5.
                    zoom, blur = rates["+ zoom 0.1"][1], rates["+ blur p=0.5 (paper)"][1]
                    print(f"      blur in the pipeline: {(1 / blur - 1 / zoom) / 0.5 * 1e6:5.1f} us of CPU per blurred "
                          f"image", flush=True)
                if args.device_blur:
                    wall, cpu, device = run_child(cores, folder, size, args, "device_blur")
                    # Every image of the batch is convolved (std 0 is the identity kernel): the cost is per image.
                    print(f"      blur in the train step (JAX, {device}): {wall:5.1f} us per image of the "
                          f"batch ({cpu:5.1f} us of CPU)", flush=True)
        print(f"load after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
