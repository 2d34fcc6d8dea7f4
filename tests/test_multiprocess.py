"""Two processes on localhost (CPU, gloo collectives) train as one process does.

`train.py` runs twice with --coordinator_address / --num_processes=2 / --process_id on one workdir: one CPU
device each, so the global batch of 8 is split 4 + 4 over the processes, each feeding only its own rows. A plain
1-process run of the same config is the reference: its logged losses and final parameters must match to float
tolerance, and metrics.jsonl must hold each step once (process 0 alone writes).
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import orbax.checkpoint as ocp
import pytest

from msml_jax.training import checkpoint
from tests.conftest import ROOT
from tests.test_resume import TINY_FLAGS

NUM_STEPS = 4
FLAGS = [f for f in TINY_FLAGS if not f.startswith(("--config.num_train_steps", "--config.checkpoint_every_steps"))]
FLAGS += [f"--config.num_train_steps={NUM_STEPS}", "--config.checkpoint_every_steps=2", "--config.eval_every_steps=0"]


def _command(workdir, *extra):
    return [sys.executable, "train.py", "--config", "configs/synthetic.py", "--workdir", workdir, *FLAGS, *extra]


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _train_records(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if "dataset" not in r]


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


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("multiprocess")
    one, two = str(base / "one"), str(base / "two")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    address = f"localhost:{_free_port()}"
    workers = [
        subprocess.Popen(
            _command(two, f"--coordinator_address={address}", "--num_processes=2", f"--process_id={i}"),
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i in range(2)
    ]
    single = subprocess.run(_command(one), cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    outputs = [w.communicate(timeout=400) for w in workers]
    for worker, (_, stderr) in zip(workers, outputs):
        assert worker.returncode == 0, stderr[-3000:]
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
