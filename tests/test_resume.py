"""Exact resume through the command line: SIGTERM and SIGKILL at random steps, restart, identical results.

Three `train.py` runs of the tiny config (60 steps, a checkpoint every 10, evaluations at 30 and 60, seed 3): an
uninterrupted one; one stopped by SIGTERM at a step drawn in 12..25 (it saves that step, which has no evaluation,
and exits 143), restarted, SIGKILLed at a step drawn in 32..38 and restarted to the end, from checkpoint 30: the
checkpoint of a step with an evaluation. The draws are seeded. The final parameters must be bitwise equal and
metrics.jsonl equal record for record (wall-clock images/s aside).
"""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from msml_jax import checkpoint
from tests.conftest import ROOT, TINY_SYNTHETIC

NUM_STEPS = 60
TINY_FLAGS = [
    *(f"--config.data.synthetic.{k}={v}" for k, v in TINY_SYNTHETIC.items() if k != "image_size"),
    "--config.data.synthetic.image_size=(32, 16)",
    "--config.data.image_size=(32, 16)",
    "--config.model.embed_dim=16",
    "--config.P=4",
    "--config.K=2",
    "--config.batch_size=8",
    f"--config.num_train_steps={NUM_STEPS}",
    "--config.lr_boundaries=(40,)",
    "--config.log_every_steps=1",
    "--config.checkpoint_every_steps=10",
    "--config.eval_every_steps=30",
    "--config.eval_batch_size=16",
    "--config.seed=3",
]


def _command(workdir, *extra):
    return [sys.executable, "train.py", "--config", "configs/synthetic.py", "--workdir", workdir, *TINY_FLAGS, *extra]


def _run(workdir, *extra):
    return subprocess.run(_command(workdir, *extra), capture_output=True, text=True, cwd=ROOT, timeout=900)


def _last_step(workdir):
    try:
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return 0
    steps = [json.loads(line)["step"] for line in lines[:-1] if "dataset" not in line]  # the last may be partial
    return max(steps, default=0)


def _interrupt(workdir, sig, after_step, after_checkpoint=None, extra=()):
    """Starts the run and sends `sig` once metrics.jsonl shows a step >= after_step (and checkpoint
    `after_checkpoint` is committed); returns (rc, stderr).

    Output goes to a file, not a pipe: nothing then waits on a pipe a killed process may leave open.
    """
    log = workdir + f".{int(sig)}.log"
    committed = os.path.join(workdir, "checkpoints", str(after_checkpoint))  # Orbax renames it there on commit
    with open(log, "w") as out:
        process = subprocess.Popen(_command(workdir, *extra), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, text=True)
        while process.poll() is None and (
            _last_step(workdir) < after_step or (after_checkpoint is not None and not os.path.isdir(committed))
        ):
            time.sleep(0.002)
        assert process.poll() is None, f"the run ended before step {after_step}; see {log}"
        process.send_signal(sig)
        process.wait(timeout=600)
    with open(log) as f:
        return process.returncode, f.read()


def _records(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [{k: v for k, v in json.loads(line).items() if k != "images_per_sec"} for line in f]


def _final_state(workdir):
    manager = checkpoint.checkpoint_manager(workdir, create=False)
    assert manager.latest_step() == NUM_STEPS
    state = manager.restore(NUM_STEPS, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
    manager.close()
    return state


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("resume")
    whole, broken = str(base / "whole"), str(base / "broken")
    result = _run(whole)
    assert result.returncode == 0, result.stderr[-3000:]

    draw = random.Random(15)
    term_step = draw.randint(12, 25)
    rc, stderr = _interrupt(broken, signal.SIGTERM, term_step)
    assert rc == 143, f"SIGTERM after step {term_step}: rc {rc}\n{stderr[-3000:]}"
    stopped = int(stderr.split("stopped by SIGTERM after step ")[1].split(";")[0])
    assert checkpoint.checkpoint_manager(broken, create=False).latest_step() == stopped  # saved at once

    kill_step = draw.randint(32, 38)
    rc, stderr = _interrupt(broken, signal.SIGKILL, kill_step, after_checkpoint=30)
    assert rc == -signal.SIGKILL, f"SIGKILL after step {kill_step}: rc {rc}\n{stderr[-3000:]}"
    # A loaded machine may have committed checkpoint 40 before the kill landed; a kill just before that commit
    # leaves it absent, which is the case meant here: the restart continues from 30, step 30's evaluation logged.
    for name in os.listdir(os.path.join(broken, "checkpoints")):
        if name.isdigit() and int(name) > 30:
            shutil.rmtree(os.path.join(broken, "checkpoints", name))
    assert any(r["step"] == 30 and "dataset" in r for r in _records(broken))
    result = _run(broken)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resuming from the checkpoint of step 30 in {broken}" in result.stdout
    return whole, broken, (stopped, kill_step)


def test_killed_and_restarted_run_ends_bitwise_equal(runs):
    whole, broken, where = runs
    a, b = _final_state(whole), _final_state(broken)
    leaves_a, leaves_b = (__import__("jax").tree_util.tree_leaves_with_path(s) for s in (a, b))
    assert len(leaves_a) == len(leaves_b)
    for (path, x), (_, y) in zip(leaves_a, leaves_b):
        assert np.array_equal(np.asarray(x), np.asarray(y)), f"{path} differs (interrupted at {where})"


def test_killed_and_restarted_run_logs_the_same_metrics(runs):
    whole, broken, where = runs
    a, b = _records(whole), _records(broken)
    assert [r["step"] for r in a if "dataset" not in r] == list(range(1, NUM_STEPS + 1))
    assert [r["step"] for r in a if "dataset" in r] == [0, 30, 60]
    assert a == b, f"interrupted at {where}"
    # TensorBoard event files, and the best checkpoint by mAP among the evaluations at 30 and 60.
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(os.path.join(broken, "tensorboard")))
    best_step = max((r for r in a if "dataset" in r and r["step"] > 0), key=lambda r: r["mAP"])["step"]
    assert checkpoint.best_checkpoint_manager(broken).all_steps() == [best_step]


def test_a_half_written_checkpoint_is_never_restored(runs, tmp_path):
    # What a kill during an Orbax write leaves: the step's files under a tmp name, not yet renamed.
    from orbax.checkpoint._src.path import atomicity

    whole, _, _ = runs
    workdir = str(tmp_path / "run")
    shutil.copytree(os.path.join(whole, "checkpoints"), os.path.join(workdir, "checkpoints"))
    partial = os.path.join(workdir, "checkpoints", f"{NUM_STEPS + 10}{atomicity.TMP_DIR_SUFFIX}-1795561234")
    shutil.copytree(os.path.join(workdir, "checkpoints", str(NUM_STEPS)), partial)
    for name in os.listdir(os.path.join(partial, "state")):  # and only some of them
        if name.startswith("_"):
            os.remove(os.path.join(partial, "state", name))
    reader = checkpoint.checkpoint_manager(workdir, create=False)
    assert reader.latest_step() == NUM_STEPS and os.path.isdir(partial)  # a reader ignores it and leaves it
    trainer = checkpoint.checkpoint_manager(workdir)  # the trainer's manager removes it (in the background)
    deadline = time.time() + 30
    while os.path.exists(partial) and time.time() < deadline:
        time.sleep(0.05)
    trainer.close()
    assert reader.latest_step() == NUM_STEPS and not os.path.exists(partial)


def test_restarting_with_another_config_is_refused_naming_the_fields(runs):
    from msml_jax.errors import UserError
    from msml_jax.training.loop import train_and_evaluate
    from tests.conftest import make_tiny_config

    whole, _, _ = runs
    config = make_tiny_config()  # what TINY_FLAGS set, and the fields changed below
    config.update(dict(num_train_steps=61, lr_boundaries=(40,), log_every_steps=1, checkpoint_every_steps=10,
                       eval_every_steps=30, seed=3, margin=0.5, loss="trihard"))
    before = sorted(os.listdir(whole))
    with pytest.raises(UserError) as error:
        train_and_evaluate(config, whole)
    message = str(error.value)
    listing = "(config.loss: 'msml' in the checkpoint, 'trihard' now; config.margin: 0.3 in the checkpoint, 0.5 now)"
    assert listing in message  # and nothing else: num_train_steps may change (lengthening a run)
    assert "--config.allow_config_change=True" in message
    assert sorted(os.listdir(whole)) == before


def test_ctrl_c_is_one_line_exit_130_and_the_resume_stays_exact(runs, tmp_path):
    """Ctrl-C (SIGINT) mid-run: the pending checkpoint is committed, one `interrupted:` line says where to continue,
    exit code 130, no traceback; the same command then ends bitwise equal to the uninterrupted run."""
    whole = runs[0]
    stopped = str(tmp_path / "ctrl_c")
    rc, output = _interrupt(stopped, signal.SIGINT, 15, after_checkpoint=10)
    assert rc == 130, output[-3000:]
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if line.startswith("interrupted")]
    assert len(lines) == 1 and "the latest checkpoint is step" in lines[0], output[-3000:]
    latest = int(lines[0].split("the latest checkpoint is step ")[1].split()[0])
    assert latest >= 10 and checkpoint.checkpoint_manager(stopped, create=False).latest_step() == latest
    result = _run(stopped)
    assert result.returncode == 0, result.stderr[-3000:]
    assert _records(stopped) == _records(whole)
    leaves = [jax.tree_util.tree_leaves(_final_state(w)) for w in (whole, stopped)]
    assert len(leaves[0]) == len(leaves[1])
    for x, y in zip(*leaves):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_a_run_stopped_before_its_first_checkpoint_starts_over_with_the_records_of_one_run(runs, tmp_path):
    """Ctrl-C before the first checkpoint, after the step-0 evaluation and some train records: the same command
    starts over, and metrics.jsonl reads as the uninterrupted run's (it kept the first start's records and
    appended the second start's: two step-0 evaluations, train records twice)."""
    whole = runs[0]
    stopped = str(tmp_path / "early")
    late = "--config.checkpoint_every_steps=50"  # the first checkpoint at step 50; records as with 10
    rc, output = _interrupt(stopped, signal.SIGINT, 15, extra=(late,))
    assert rc == 130 and "training stopped before its first checkpoint" in output, output[-3000:]
    assert not [name for name in os.listdir(os.path.join(stopped, "checkpoints")) if name.isdigit()]
    result = _run(stopped, late)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"starting over in {stopped}: it holds no checkpoint" in result.stdout
    assert _records(stopped) == _records(whole)
    for x, y in zip(*(jax.tree_util.tree_leaves(_final_state(w)) for w in (whole, stopped))):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
