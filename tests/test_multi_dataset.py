"""Several datasets in one run: disjoint relabelling, the union for PK sampling, each eval set in its protocol."""

import numpy as np
import pytest
import tensorflow as tf

from msml_jax.data import load_datasets, union
from msml_jax.data.pipeline import train_dataset_from_config
from msml_jax.data.sampling import PKSampler
from msml_jax.data.synthetic import SyntheticSpec, make_synthetic
from msml_jax.errors import UserError
from tests import test_builder_viper as fake_viper
from tests.conftest import TINY_SYNTHETIC, make_tiny_config


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("multi")
    fake_viper.make(str(tmp / "manual"))
    config = make_tiny_config()
    config.data.train = ("synthetic", "viper")
    config.data.data_dir = str(tmp / "data")
    config.data.manual_dir = str(tmp / "manual")
    config.data.trial = 2
    return config


@pytest.fixture(scope="module")
def loaded(config):
    return load_datasets(config.data)


def test_identities_are_relabelled_disjointly(loaded):
    train, _ = loaded
    synthetic = make_synthetic(0, SyntheticSpec(**TINY_SYNTHETIC))["train"]
    n_syn = len(np.unique(synthetic["pids"]))
    assert n_syn == 12 and len(train["pids"]) == len(synthetic["pids"]) + 6  # 3 VIPeR identities x 2 cameras
    assert sorted(set(train["pids"].tolist())) == list(range(n_syn + 3))
    pairs = set(zip(train["dataset"].tolist(), train["source_pids"].tolist(), train["pids"].tolist()))
    # (dataset, original pid) <-> new pid is one-to-one.
    assert len({(d, s) for d, s, _ in pairs}) == len({p for _, _, p in pairs}) == len(pairs)
    assert set(train["pids"][train["dataset"] == 0]) == set(range(n_syn))
    # The synthetic images went into the union (PNG, lossless) unchanged and in order.
    decoded = np.stack([tf.io.decode_png(b).numpy() for b in train["images"][train["dataset"] == 0]])
    np.testing.assert_array_equal(decoded, synthetic["images"])
    np.testing.assert_array_equal(train["source_pids"][train["dataset"] == 0], synthetic["pids"])


def test_each_eval_set_keeps_its_own_protocol(loaded):
    train, evals = loaded
    assert list(evals) == ["synthetic", "viper"]
    viper = evals["viper"]
    viper_train = set(train["source_pids"][train["dataset"] == 1].tolist())
    # Trial 2 of the VIPeR protocol: test identities are disjoint from the training ones, cam_a vs cam_b.
    train_ids, test_ids = fake_viper.viper.trial_split([p[0] for p in fake_viper.PEOPLE], 2)
    assert viper_train == set(train_ids.tolist())
    assert sorted(viper["query"]["pids"]) == sorted(viper["gallery"]["pids"]) == sorted(test_ids.tolist())
    assert set(viper["query"]["camids"]) == {0} and set(viper["gallery"]["camids"]) == {1}
    synthetic = make_synthetic(0, SyntheticSpec(**TINY_SYNTHETIC))
    np.testing.assert_array_equal(evals["synthetic"]["gallery"]["pids"], synthetic["gallery"]["pids"])


def test_pk_batches_over_the_union_mix_image_sizes(config, loaded):
    train, _ = loaded
    sampler = PKSampler(train["pids"], P=15, K=2, seed=0)  # every identity of both datasets in one batch
    batch = next(train_dataset_from_config(train, sampler, config.data, 0, 1).as_numpy_iterator())
    assert batch["images"].shape == (30, *config.data.image_size, 3)
    labels = sampler.identities[batch["labels"]]
    assert set(train["dataset"][np.isin(train["pids"], labels)].tolist()) == {0, 1}  # both datasets in the batch


def test_one_dataset_alone_and_bad_names(config):
    single = config.copy_and_resolve_references()
    single.data.train = ()
    single.data.name = "viper"
    train, evals = load_datasets(single.data)
    assert list(evals) == ["viper"] and len(train["pids"]) == 6 and "source_pids" not in train
    bad = config.copy_and_resolve_references()
    bad.data.train = ("synthetic", "market")
    with pytest.raises(UserError, match="'market'.*market1501"):
        load_datasets(bad.data)


def test_union_of_one_split_is_that_split():
    split = {"images": np.zeros((2, 4, 2, 3), np.uint8), "pids": np.array([5, 9]), "camids": np.array([0, 1])}
    assert union([split]) is split
