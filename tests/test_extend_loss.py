"""A new loss is one registration: a toy loss written here runs through validation, train.py, eval.py and the
reproduction driver without any other file knowing its name."""

import copy
import json
import os

import pytest

from msml_jax.errors import UserError
from msml_jax.config import validate_config
from tests.conftest import TINY_SYNTHETIC, make_tiny_config
from tests.extension import run_with_registered

# A contrastive loss (Hadsell et al. 2006) on l2-normalized embeddings, plus 1000: no built-in loss comes near
# that value (distances are at most 2), so a logged metric_loss above 1000 proves this function ran.
REGISTER_TOY_LOSS = """
import jax.numpy as jnp
from msml_jax.losses import l2_normalize, pairwise_distance, register_loss

@register_loss("toy", hyperparameters={"margin": "margin"})
def toy_contrastive_loss(embeddings, labels, margin):
    d = pairwise_distance(l2_normalize(embeddings))
    same = labels[:, None] == labels[None, :]
    pos = same & ~jnp.eye(labels.shape[0], dtype=bool)
    pull = jnp.sum(jnp.where(pos, d * d, 0.0)) / jnp.maximum(jnp.sum(pos), 1)
    push = jnp.sum(jnp.where(same, 0.0, jnp.maximum(margin - d, 0.0) ** 2)) / jnp.maximum(jnp.sum(~same), 1)
    return 1000.0 + pull + push
"""

TINY_FLAGS = [
    *(f"--config.data.synthetic.{k}={v}" for k, v in TINY_SYNTHETIC.items() if k != "image_size"),
    "--config.data.synthetic.image_size=(32, 16)", "--config.data.image_size=(32, 16)",
    "--config.model.embed_dim=16", "--config.P=4", "--config.K=2", "--config.batch_size=8",
    "--config.num_train_steps=4", "--config.lr_boundaries=(2,)", "--config.log_every_steps=2",
    "--config.checkpoint_every_steps=4", "--config.eval_every_steps=0", "--config.eval_batch_size=16",
]


def _records(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_validation_accepts_a_loss_once_registered():
    from msml_jax import losses

    config = make_tiny_config()
    config.loss = "toy"
    with pytest.raises(UserError, match="unknown loss 'toy'"):
        validate_config(config)
    namespace = {}
    exec(REGISTER_TOY_LOSS, namespace)
    try:
        validate_config(config)
        soft = copy.deepcopy(config)
        soft.soft_margin = True  # the toy declares no soft-margin form
        with pytest.raises(UserError, match="config.loss='toy' has no soft-margin form"):
            validate_config(soft)
    finally:
        del losses.LOSSES["toy"]


def _check(result):
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_a_registered_loss_trains_evaluates_and_reproduces(tmp_path):
    workdir = str(tmp_path / "run")
    _check(run_with_registered(REGISTER_TOY_LOSS, "train.py", "--config", "configs/synthetic.py",
                               "--workdir", workdir, "--config.loss=toy", *TINY_FLAGS))
    train = [r for r in _records(os.path.join(workdir, "metrics.jsonl")) if "metric_loss" in r]
    assert [r["step"] for r in train] == [2, 4]
    assert all(1000.0 < r["metric_loss"] < 1010.0 for r in train)

    _check(run_with_registered(REGISTER_TOY_LOSS, "eval.py", "--workdir", workdir))

    results, root = str(tmp_path / "toy.jsonl"), str(tmp_path / "runs")
    sets = [f"--set={flag[len('--config.'):]}" for flag in TINY_FLAGS if "num_train_steps" not in flag]
    _check(run_with_registered(REGISTER_TOY_LOSS, "-m msml_jax.reproduce", "--losses", "toy", "--seeds", "0",
                               "--steps", "4", "--results", results, "--root", root, *sets))
    (entry,) = _records(results)
    assert entry["loss"] == "toy" and entry["records"]
    (run,) = os.listdir(os.path.join(root, "toy"))
    reproduced = [r for r in _records(os.path.join(root, "toy", run, "metrics.jsonl")) if "metric_loss" in r]
    assert reproduced and all(r["metric_loss"] > 1000.0 for r in reproduced)
