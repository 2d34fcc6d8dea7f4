"""The benchmarks of issue 20 through `train.py`: a tiny model trains and evaluates on a generated release of each.

Every fake release has 4 training identities and the run shares one image size, so the four runs compile the same
programs (the session's XLA cache, tests/conftest.py, serves the later ones).
"""

import json
import subprocess
import sys

from tests.builder_fakes import dukemtmc_reid, dukemtmc_video, ilids_vid, msmt17
from tests.conftest import ROOT

TINY_ARGS = ["--config", "configs/synthetic.py", "--config.data.image_size=(32, 16)", "--config.model.embed_dim=16",
             "--config.P=4", "--config.K=2", "--config.batch_size=8", "--config.num_train_steps=2",
             "--config.lr_boundaries=(1,)", "--config.log_every_steps=1", "--config.checkpoint_every_steps=2",
             "--config.eval_every_steps=0", "--config.eval_batch_size=16"]
# dataset -> (its generator, its protocol, the queries it ranks: images, or tracklets for the video datasets)
BENCHMARKS = {
    "dukemtmc_reid": (dukemtmc_reid.make, "image", len(dukemtmc_reid.QUERY)),
    "msmt17": (msmt17.make, "image", len(msmt17.LISTS["list_query.txt"])),
    "ilids_vid": (ilids_vid.make, "ten_split", len(ilids_vid.PERSONS) // 2),  # trial 0: 4 test persons' cam1
    "dukemtmc_video": (dukemtmc_video.make, "tracklet", len(dukemtmc_video.TRACKLETS["query"])),
}


def _start(name, tmp_path):
    make = BENCHMARKS[name][0]
    manual = tmp_path / name / "manual"
    make(str(manual))
    cmd = [sys.executable, "train.py", *TINY_ARGS, f"--config.data.name={name}", f"--workdir={tmp_path / name / 'run'}",
           f"--config.data.manual_dir={manual}", f"--config.data.data_dir={tmp_path / name / 'data'}"]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _finished(process):
    try:
        _, stderr = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    return process.returncode, stderr


def test_a_model_trains_and_evaluates_on_each_new_benchmark(tmp_path):
    first, *others = BENCHMARKS
    results = {first: _finished(_start(first, tmp_path))}  # compiles alone; the others then read the XLA cache
    started = {name: _start(name, tmp_path) for name in others}
    results.update({name: _finished(process) for name, process in started.items()})
    for name, (_, protocol, num_queries) in BENCHMARKS.items():
        returncode, stderr = results[name]
        assert returncode == 0, (name, stderr[-3000:])
        with open(tmp_path / name / "run" / "metrics.jsonl") as f:
            records = [json.loads(line) for line in f]
        evals = [r for r in records if "dataset" in r]
        assert [r["step"] for r in evals] == [0, 2], name
        assert all(r["dataset"] == name and r["protocol"] == protocol for r in evals), evals
        assert evals[-1]["num_queries"] == num_queries, (name, evals[-1])
        assert all(0.0 <= evals[-1][k] <= 1.0 for k in ("mAP", "rank1")), evals[-1]
        assert [r["step"] for r in records if "loss" in r] == [1, 2], name
