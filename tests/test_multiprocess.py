"""Two processes on localhost (CPU, gloo collectives) train as one process does, through a preemption.

`train.py` runs twice with --coordinator_address / --num_processes=2 / --process_id on one workdir: one CPU
device each, so the global batch of 8 is split 4 + 4 over the processes, each building only its own rows.
Process 1 alone gets SIGTERM mid-run (a preemption notice reaching one host): JAX's preemption sync point must
stop both processes after the same step, with that step's checkpoint, exit code 143; the same two commands then
finish the run. A plain 1-process run of the same config is the reference: its logged losses and final
parameters must match to float tolerance, and metrics.jsonl must hold each step once (process 0 alone writes).
(Over more steps the two trajectories drift apart like any two float summation orders; a SIGTERMed and resumed
2-process run of 40 steps was bitwise equal to an uninterrupted one.)
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest

from msml_jax import checkpoint
from tests.conftest import ROOT
from tests.test_resume import TINY_FLAGS, _last_step

NUM_STEPS = 10
FLAGS = [f for f in TINY_FLAGS if not f.startswith(("--config.num_train_steps", "--config.checkpoint_every_steps"))]
FLAGS += [f"--config.num_train_steps={NUM_STEPS}", "--config.checkpoint_every_steps=5", "--config.eval_every_steps=0",
          # Adam's first steps move each parameter by about lr * sign(gradient): a gradient element near 0 whose
          # sign the summation order flips (1 process vs 2 over gloo) moves by 2 lr. A small lr keeps those
          # legitimate differences below the tolerance, while per-process mining or BatchNorm would still show.
          "--config.learning_rate=1e-5"]


def _command(workdir, *extra):
    return [sys.executable, "train.py", "--config", "configs/synthetic.py", "--workdir", workdir, *FLAGS, *extra]


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _records(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return list(map(json.loads, f))


def _train_records(workdir):
    return [r for r in _records(workdir) if "dataset" not in r]


def _final_params(workdir):
    """The parameters of the last checkpoint as numpy arrays (saved over 2 devices, read here on 1)."""
    import jax

    assert checkpoint.checkpoint_manager(workdir, create=False).latest_step() == NUM_STEPS
    path = os.path.join(workdir, "checkpoints", str(NUM_STEPS), "state")
    with ocp.PyTreeCheckpointer() as reader:
        metadata = reader.metadata(path)
        tree = getattr(getattr(metadata, "item_metadata", metadata), "tree", metadata)
        as_numpy = jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
        state = reader.restore(path, args=ocp.args.PyTreeRestore(restore_args=as_numpy))
    return jax.tree_util.tree_leaves(state["params"])


def _start_pair(workdir, address, logs):
    """Both processes of a 2-process run; output to files (a killed run must not leave a pipe open)."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    return [
        subprocess.Popen(
            _command(workdir, f"--coordinator_address={address}", "--num_processes=2", f"--process_id={i}"),
            cwd=ROOT, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, text=True,
        )
        for i, log in enumerate(logs)
    ]


def _finish(workers, logs):
    codes = [w.wait(timeout=400) for w in workers]
    outputs = []
    for log in logs:
        with open(log) as f:
            outputs.append(f.read())
    return codes, outputs


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("multiprocess")
    one, two = str(base / "one"), str(base / "two")
    logs = [str(base / f"process{i}.log") for i in range(2)]
    workers = _start_pair(two, f"localhost:{_free_port()}", logs)
    while workers[0].poll() is None and _last_step(two) < 2:
        time.sleep(0.005)
    workers[1].send_signal(signal.SIGTERM)  # one host's preemption notice
    codes, outputs = _finish(workers, logs)
    assert codes == [143, 143], "\n".join(o[-3000:] for o in outputs)
    stopped = {int(o.split("stopped by SIGTERM after step ")[1].split(";")[0]) for o in outputs}
    assert len(stopped) == 1 and 2 <= min(stopped) < NUM_STEPS, stopped  # both at the same step
    assert checkpoint.checkpoint_manager(two, create=False).latest_step() == min(stopped)

    workers = _start_pair(two, f"localhost:{_free_port()}", logs)  # the same two commands again
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    single = subprocess.run(_command(one), cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    codes, outputs = _finish(workers, logs)
    assert codes == [0, 0], "\n".join(o[-3000:] for o in outputs)
    assert f"resuming from the checkpoint of step {min(stopped)}" in outputs[0]
    assert single.returncode == 0, single.stderr[-3000:]
    return one, two


def test_two_processes_log_the_one_process_losses_once(runs):
    one, two = runs
    a, b = _train_records(one), _train_records(two)
    assert [r["step"] for r in b] == [r["step"] for r in a] == list(range(1, NUM_STEPS + 1))
    np.testing.assert_allclose([r["loss"] for r in b], [r["loss"] for r in a], rtol=1e-5)
    np.testing.assert_allclose([r["hardest_neg"] for r in b], [r["hardest_neg"] for r in a], rtol=1e-5)


def test_two_processes_end_with_the_one_process_parameters(runs):
    one, two = runs
    for x, y in zip(_final_params(two), _final_params(one)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-4)  # see test_parallel


def test_two_processes_evaluate_as_one(runs):
    # Each process embeds its half of every evaluation batch; the records (process 0's) are the 1-process ones.
    one, two = ([r for r in _records(w) if "dataset" in r] for w in runs)
    assert [r["step"] for r in two] == [r["step"] for r in one] == [0, NUM_STEPS]
    for a, b in zip(one, two):
        for key in ("mAP", "rank1", "rank5", "mINP", "num_queries"):
            np.testing.assert_allclose(b[key], a[key], atol=1e-6, err_msg=f"{key} at step {a['step']}")
