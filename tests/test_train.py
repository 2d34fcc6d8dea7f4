"""The real trainer on a tiny synthetic run, and the command line as a user meets it."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from msml_jax.errors import UserError
from msml_jax.training import checkpoint
from msml_jax.training.loop import evaluate_checkpoint, train_and_evaluate
from msml_jax.training.validate import validate_config
from tests.conftest import ROOT, make_tiny_config

EVAL_KEYS = ("mAP", "rank1", "rank5", "rank10", "mINP")


def _records(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    config = make_tiny_config()
    workdir = str(tmp_path_factory.mktemp("run"))
    final = train_and_evaluate(config, workdir)
    return config, workdir, final


def test_a_run_logs_train_steps_and_evaluations(trained):
    config, workdir, final = trained
    records = _records(workdir)
    evals = [r for r in records if "dataset" in r]
    steps = [r for r in records if "dataset" not in r]
    assert [r["step"] for r in evals] == [0, 6]
    assert [r["step"] for r in steps] == [2, 4, 6]
    for r in steps:
        assert {"loss", "cls_loss", "metric_loss", "learning_rate", "hardest_pos", "hardest_neg"} <= set(r)
        assert np.isclose(r["loss"], config.cls_weight * r["cls_loss"] + r["metric_loss"], rtol=1e-5)
        assert np.isfinite(r["loss"])
    assert "images_per_sec" in steps[-1]
    # The step schedule: learning_rate, times 0.1 from step 4 on (logged at steps 2, 4, 6).
    lr = config.learning_rate
    assert np.allclose([r["learning_rate"] for r in steps], [lr, lr, 0.1 * lr])
    for r in evals:
        assert r["dataset"] == "synthetic"
        assert all(0.0 <= r[k] <= 1.0 for k in EVAL_KEYS)
    assert final == evals[-1]


def test_checkpoints_hold_state_and_config(trained):
    config, workdir, _ = trained
    manager = checkpoint.checkpoint_manager(workdir)
    assert manager.all_steps() == [3, 6]
    restored = manager.restore(6, args=checkpoint.ocp.args.Composite(config=checkpoint.ocp.args.JsonRestore()))
    assert restored["config"]["loss"] == config.loss and restored["config"]["P"] == config.P


def test_eval_on_the_workdir_reproduces_the_final_evaluation(trained):
    config, workdir, final = trained
    record = evaluate_checkpoint(config, workdir)
    for key in EVAL_KEYS:
        assert record[key] == pytest.approx(final[key], abs=1e-6)
    assert _records(workdir)[-1] == record


def test_restarting_a_finished_run_trains_no_further(trained):
    config, workdir, _ = trained
    longer = make_tiny_config()
    longer.num_train_steps = 8
    final = train_and_evaluate(longer, workdir)
    records = _records(workdir)
    new_steps = [r["step"] for r in records if "dataset" not in r][3:]
    assert new_steps == [8]  # resumed at 6: no evaluation at step 0 again, steps 7-8 trained
    assert final["step"] == 8


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"loss": "hinge"}, r"unknown loss 'hinge' in config.loss: valid names are cls, triplet, quadruplet, trihard, msml"),
        ({"batch_size": 10}, r"config.batch_size=10 must equal config.P \* config.K = 4 \* 2 = 8"),
        ({"K": 1, "batch_size": 4}, r"set config.P >= 2 and config.K >= 2"),
        ({"P": 1, "batch_size": 2}, r"set config.P >= 2 and config.K >= 2"),
        ({"num_train_steps": 0}, r"config.num_train_steps must be a positive integer"),
    ],
)
def test_config_mistakes_name_the_field(overrides, message):
    config = make_tiny_config()
    config.update(overrides)
    with pytest.raises(UserError, match=message):
        validate_config(config)


def test_classification_only_allows_K_of_1():
    config = make_tiny_config()
    config.update({"loss": "cls", "K": 1, "batch_size": 4})
    validate_config(config)


def _cli(script, *args):
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, script), "--config", os.path.join(ROOT, "configs/synthetic.py"), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--config.model.name=resnet9000"], "unknown model 'resnet9000' in config.model.name: valid names are"),
        (
            ["--config.data.synthetic.num_train_ids=12", "--config.P=20", "--config.batch_size=80"],
            "config.P=20 is larger than the number of training identities (12)",
        ),
    ],
)
def test_train_cli_mistakes_exit_2_with_one_message(tmp_path, args, message):
    result = _cli("train.py", "--workdir", str(tmp_path / "run"), *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not os.path.exists(tmp_path / "run")  # nothing written


def test_eval_cli_without_checkpoint_exits_2(tmp_path):
    result = _cli("eval.py", "--workdir", str(tmp_path))
    assert result.returncode == 2
    assert f"no checkpoint in {tmp_path}/checkpoints: train first" in result.stderr
    assert "Traceback" not in result.stderr
