"""MARS at full size: preparation time, peak memory of loading, training and tracklet evaluation, pipeline img/s.

    python benchmarks/data_scale.py                      # 509,914 + 681,089 frames (MARS's counts)
    python benchmarks/data_scale.py --scale 0.1          # a tenth of the frames (same tracklets and identities)
    python benchmarks/data_scale.py --workdir /big/disk  # where the release, the prepared data and the run go

Generates a release in MARS's official layout (bbox_train/PPPP/PPPPCcTttttFfff.jpg, bbox_test/, info/ with the
name lists, tracks_*_info.mat and query_IDX.mat): 625 training identities in 8,298 tracklets, 636 test
identities in 12,180 tracklets of which 1,980 are queries, MARS's frame counts times --scale spread over the
tracklets. Frames are small noisy JPEGs (--frame, default 32x16; 64 distinct files reused) to save time and
disk: what grows with the dataset is the count, which is what the pipeline's memory used to grow with.

Each phase runs in its own process, and its peak resident memory (ru_maxrss) is reported:
  prepare   the builder (common.prepare, ArrayRecord files), timed;
  load      load_datasets of configs/paper.py "mars" (the splits: images stay in the files);
  pipeline  the training pipeline (paper augmentation, P*K = 128, --image_size) img/s after 5 warm-up batches;
  train     --steps training steps of small_resnet at --image_size, then MARS's tracklet evaluation of the
            whole query and gallery (--eval off: skip it).
--eager additionally loads the splits the old way (every image's bytes in memory) for comparison.

Figures (quiet and loaded runs, machine and date): docs/benchmarks.md, "Data at MARS scale"; logs in docs/cpu/.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # this checkout's msml_jax
TRAIN_FRAMES, TEST_FRAMES = 509_914, 681_089
TRAIN_IDS, TEST_IDS = 625, 636
TRAIN_TRACKS, TEST_TRACKS, QUERY_TRACKS = 8_298, 12_180, 1_980


def _rss_peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_now_mb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def _tracks(num_tracks, num_ids, first_pid, frames):
    """(pid, camera, tracklet number, frames) rows: identities cycled, cameras cycled per round."""
    counts = [frames // num_tracks + (j < frames % num_tracks) for j in range(num_tracks)]
    return [(first_pid + j % num_ids, 1 + (j // num_ids) % 6, 1 + j // (num_ids * 6), c)
            for j, c in enumerate(counts) if c]


def generate(manual, scale, frame):
    """Writes the release into `manual`; returns the number of frames written."""
    import numpy as np
    import scipy.io
    import tensorflow as tf

    rng = np.random.default_rng(0)
    jpegs = [tf.io.encode_jpeg(rng.integers(0, 256, (*frame, 3)).astype(np.uint8), quality=90).numpy()
             for _ in range(64)]
    os.makedirs(os.path.join(manual, "info"), exist_ok=True)
    total = 0
    for part, tracks, key in (
        ("train", _tracks(TRAIN_TRACKS, TRAIN_IDS, 1, round(TRAIN_FRAMES * scale)), "track_train_info"),
        ("test", _tracks(TEST_TRACKS, TEST_IDS, TRAIN_IDS + 1, round(TEST_FRAMES * scale)), "track_test_info"),
    ):
        names, rows = [], []
        for pid, cam, tracklet, count in tracks:
            folder = os.path.join(manual, f"bbox_{part}", f"{pid:04d}")
            os.makedirs(folder, exist_ok=True)
            rows.append([len(names) + 1, len(names) + count, pid, cam])
            for f in range(1, count + 1):
                name = f"{pid:04d}C{cam}T{tracklet:04d}F{f:03d}.jpg"
                names.append(name)
                with open(os.path.join(folder, name), "wb") as out:
                    out.write(jpegs[len(names) % len(jpegs)])
        with open(os.path.join(manual, "info", f"{part}_name.txt"), "w") as out:
            out.write("\n".join(names) + "\n")
        scipy.io.savemat(os.path.join(manual, "info", f"tracks_{part}_info.mat"), {key: np.array(rows, float)})
        total += len(names)
        if part == "test":
            queries = np.arange(1, min(QUERY_TRACKS, len(rows)) + 1)
            scipy.io.savemat(os.path.join(manual, "info", "query_IDX.mat"), {"query_IDX": queries[None].astype(float)})
    return total


def _config(args, workdir):
    from msml_jax import config_files

    config = config_files.load_config(os.path.join(ROOT, "configs", "paper.py"), "mars,resnet50,msml")
    config.data.manual_dir = os.path.join(workdir, "manual")
    config.data.data_dir = os.path.join(workdir, "tfds")
    config.data.image_size = tuple(args.image_size)
    config.model.name, config.model.embed_dim = "small_resnet", 64
    config.P, config.K, config.batch_size = 32, 4, 128
    config.eval_batch_size = 256
    return config


def phase(name, args):
    """Runs phase `name` in this process; returns its figures."""
    workdir = args.workdir
    if name == "prepare":
        from msml_jax.data.builders import common

        start = time.perf_counter()
        builder = common.prepare("mars", os.path.join(workdir, "tfds"), os.path.join(workdir, "manual"),
                                 file_format="array_record")
        seconds = time.perf_counter() - start
        files = [os.path.join(builder.data_dir, f) for f in os.listdir(builder.data_dir)]
        return {"prepare_s": round(seconds, 1), "prepared_mb": round(sum(map(os.path.getsize, files)) / 2**20, 1),
                "examples": {s: v.num_examples for s, v in builder.info.splits.items()}}
    config = _config(args, workdir)
    import jax  # noqa: F401  (the baseline includes the frameworks)
    import tensorflow  # noqa: F401

    from msml_jax.data import load_datasets, pipeline  # noqa: F401

    before = _rss_now_mb()
    if name == "eager":
        from msml_jax.data import builders

        import tensorflow_datasets as tfds

        builder = tfds.builder("mars", data_dir=config.data.data_dir)
        start = time.perf_counter()
        splits = {s: builders.read_split(builder, s, lazy=False) for s in ("train", "query", "gallery")}
        return {"rss_before_mb": round(before), "load_s": round(time.perf_counter() - start, 1),
                "peak_rss_mb": round(_rss_peak_mb()),
                "images_mb": round(sum(len(b) for s in splits.values() for b in s["images"]) / 2**20, 1)}
    start = time.perf_counter()
    train, eval_sets = load_datasets(config.data)
    out = {"rss_before_mb": round(before), "load_s": round(time.perf_counter() - start, 1),
           "rss_loaded_mb": round(_rss_now_mb()), "peak_rss_mb": round(_rss_peak_mb()),
           "frames": {"train": len(train["pids"]), "query": len(eval_sets["mars"]["query"]["pids"]),
                      "gallery": len(eval_sets["mars"]["gallery"]["pids"])}}
    if name == "pipeline":
        from msml_jax.data.sampling import PKSampler

        sampler = PKSampler(train["pids"], P=config.P, K=config.K, seed=0)
        ds = pipeline.train_dataset_from_config(train, sampler, config.data, 0, 5 + args.batches).as_numpy_iterator()
        for _ in range(5):
            next(ds)
        start = time.perf_counter()
        for _ in range(args.batches):
            next(ds)
        out["pipeline_img_s"] = round(args.batches * config.P * config.K / (time.perf_counter() - start))
        out["peak_rss_mb"] = round(_rss_peak_mb())
    if name == "train":
        from msml_jax.training.loop import train_and_evaluate

        config.num_train_steps, config.lr_boundaries = args.steps, (args.steps // 2,)
        config.checkpoint_every_steps, config.eval_every_epochs, config.log_every_steps = args.steps, 0, 10
        run_dir = os.path.join(workdir, f"run_{time.time_ns()}")
        start = time.perf_counter()
        records = train_and_evaluate(config, run_dir, evaluate=args.eval, tensorboard=False)
        out["train_and_eval_s"] = round(time.perf_counter() - start, 1)
        rates = []
        for root, _, files in os.walk(run_dir):
            if "metrics.jsonl" in files:
                with open(os.path.join(root, "metrics.jsonl")) as f:
                    rates += [r["images_per_sec"] for r in map(json.loads, f) if "images_per_sec" in r]
        out["train_img_s_last"] = round(rates[-1]) if rates else None
        out["eval"] = [{k: r[k] for k in ("dataset", "protocol", "num_queries", "mAP") if k in r}
                       for r in records or []]
        out["peak_rss_mb"] = round(_rss_peak_mb())
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of MARS's frame counts")
    parser.add_argument("--workdir", default="/tmp/msml_data_scale")
    parser.add_argument("--frame", type=int, nargs=2, default=(32, 16), help="generated frame size (h w)")
    parser.add_argument("--image_size", type=int, nargs=2, default=(32, 16), help="network input (h w)")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batches", type=int, default=20, help="pipeline batches timed")
    parser.add_argument("--eval", type=int, default=1, help="1: evaluate MARS (tracklets) after training")
    parser.add_argument("--eager", action="store_true", help="also load every image into memory (the old way)")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print("PHASE " + json.dumps(phase(args.phase, args)), flush=True)
        return
    manual = os.path.join(args.workdir, "manual")
    figures = {"scale": args.scale, "cpus": len(os.sched_getaffinity(0))}
    if not os.path.exists(os.path.join(manual, "info", "query_IDX.mat")):
        start = time.perf_counter()
        figures["generated_frames"] = generate(manual, args.scale, tuple(args.frame))
        figures["generate_s"] = round(time.perf_counter() - start, 1)
    phases = (["prepare"] if not os.path.isdir(os.path.join(args.workdir, "tfds", "mars")) else [])
    phases += ["load", "pipeline", "train"] + (["eager"] if args.eager else [])
    for name in phases:
        command = [sys.executable, os.path.abspath(__file__), "--phase", name] + sys.argv[1:]
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        lines = [line for line in result.stdout.splitlines() if line.startswith("PHASE ")]
        if result.returncode or not lines:
            sys.exit(f"phase {name} failed:\n{result.stderr[-3000:]}")
        figures[name] = json.loads(lines[-1][6:])
        print(name, json.dumps(figures[name]), flush=True)
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
