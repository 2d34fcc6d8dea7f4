"""A new backbone, dataset or evaluation protocol is one registration: nothing else in the library changes.

Each is defined here, in the test, registered, and run through the config schema, `train.py` and `eval.py` (one
tiny training shared by the three, in fresh processes that register them first: `tests/extension.py`). A new loss
has its own test (`test_extend_loss.py`).
"""

import json
import os

import pytest

from msml_jax.config import validate_config
from msml_jax.errors import UserError
from tests.conftest import TINY_SYNTHETIC, make_tiny_config
from tests.extension import run_with_registered

REGISTER = f"""
import flax.linen as nn

from msml_jax.data import Dataset, register_dataset
from msml_jax.data.synthetic import SyntheticSpec, make_synthetic
from msml_jax.evaluation.protocols import rank_images, register_protocol
from msml_jax.models import register_backbone


class ToyNet(nn.Module):
    dtype: object = None

    @nn.compact
    def __call__(self, x, train):
        x = nn.Conv(8, (4, 4), strides=(4, 4), dtype=self.dtype, name="toy_conv")(x)
        return nn.relu(x)  # no BatchNorm: a model may have no batch_stats


@register_backbone("toy_net", stride=4)
def toy_net(dtype, last_stride, keras_style):
    print("toy_net built", flush=True)
    return ToyNet(dtype=dtype)


def load_toy(data_config, protocol):
    print("toy loaded for", protocol, flush=True)
    return make_synthetic(7, SyntheticSpec(**{TINY_SYNTHETIC!r}))


def toy_rank(query, gallery, **settings):
    return {{**rank_images(query, gallery, **settings), "toy_queries_seen": float(len(query["pids"]))}}


register_protocol("toy_rank", toy_rank)
register_dataset(Dataset("toy", load=load_toy, protocols={{"toy_protocol": "toy_rank"}}, reads_files=False))
"""

TINY_ARGS = ["--config", "configs/synthetic.py", "--config.data.name=toy", "--config.model.name=toy_net",
             "--config.data.protocol=toy_protocol", "--config.data.image_size=(32, 16)", "--config.model.embed_dim=16",
             "--config.P=4", "--config.K=2", "--config.batch_size=8", "--config.num_train_steps=4",
             "--config.lr_boundaries=(3,)", "--config.log_every_steps=2", "--config.checkpoint_every_steps=4",
             "--config.eval_batch_size=16"]


def _registered(namespace):
    exec(REGISTER, namespace)  # noqa: S102  (the test's own source, as the subprocesses run it)


@pytest.fixture
def registered():
    """The toy components registered in this process for one test, and removed after it."""
    from msml_jax.data import registry
    from msml_jax.evaluation import protocols
    from msml_jax.models import registry as models

    tables = (registry.DATASETS, protocols.PROTOCOLS, models.BACKBONES)
    saved = [dict(table) for table in tables]
    _registered({})
    yield
    for table, before in zip(tables, saved):
        table.clear()
        table.update(before)


def _toy_config():
    config = make_tiny_config()
    config.data.name, config.model.name, config.data.protocol = "toy", "toy_net", "toy_protocol"
    return config


def test_validation_refuses_unregistered_components():
    config = _toy_config()
    with pytest.raises(UserError, match="unknown dataset 'toy'"):
        validate_config(config)
    config.data.name = "synthetic"
    with pytest.raises(UserError, match="unknown model 'toy_net'"):
        validate_config(config)


def test_validation_reads_registered_components(registered):
    config = _toy_config()
    validate_config(config)  # accepted once registered
    config.data.image_size = (3, 16)  # smaller than the toy backbone's declared stride (4)
    with pytest.raises(UserError, match="total stride 4 of config.model.name='toy_net'"):
        validate_config(config)
    config.data.image_size, config.data.protocol = (32, 16), "classic"  # a protocol the toy dataset lacks
    with pytest.raises(UserError, match="toy: toy_protocol"):
        validate_config(config)


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("toy") / "run")
    train = run_with_registered(REGISTER, "train.py", *TINY_ARGS, "--workdir", workdir)
    assert train.returncode == 0, train.stderr[-3000:]
    evaluated = run_with_registered(REGISTER, "eval.py", "--workdir", workdir)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    return train, evaluated, records


def test_a_registered_backbone_trains_and_evaluates(toy_run):
    train, evaluated, records = toy_run
    assert "toy_net built" in train.stdout and "toy_net built" in evaluated.stdout
    logged = [r for r in records if "loss" in r]
    assert [r["step"] for r in logged] == [2, 4]


def test_a_registered_dataset_is_loaded_in_its_protocol(toy_run):
    train, evaluated, records = toy_run
    assert "toy loaded for toy_protocol" in train.stdout and "toy loaded for toy_protocol" in evaluated.stdout
    evaluations = [r for r in records if "mAP" in r]
    assert {(r["dataset"], r["protocol"]) for r in evaluations} == {("toy", "toy_protocol")}
    assert [r["step"] for r in evaluations] == [0, 4, 4]  # train.py at 0 and 4, eval.py at 4
    row = f"{100 * evaluations[-1]['mAP']:.1f}"  # eval.py's record, in its printed table (dataset, step, mAP...)
    assert any(line.split()[:3] == ["toy", "4", row] for line in evaluated.stdout.splitlines()), evaluated.stdout


def test_a_registered_protocol_ranks_the_evaluations(toy_run):
    _, _, records = toy_run
    from msml_jax.data.synthetic import SyntheticSpec, make_synthetic

    num_queries = len(make_synthetic(7, SyntheticSpec(**TINY_SYNTHETIC))["query"]["pids"])
    evaluations = [r for r in records if "mAP" in r]
    assert [r["toy_queries_seen"] for r in evaluations] == [num_queries] * 3
    assert all(0.0 <= r["mAP"] <= 1.0 for r in evaluations)
