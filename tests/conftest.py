"""Shared fixtures: a tiny synthetic benchmark and a tiny run config, built once per session."""

import os
import tempfile

import pytest

from msml_jax import config_files

# One persistent XLA compilation cache for the session, inherited by the train.py subprocesses the tests start:
# the resume, multi-device and multi-process tests compile the same tiny programs again in every process.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="msml-test-xla-cache-"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_SYNTHETIC = dict(num_train_ids=12, num_test_ids=6, num_distractors=3, num_cameras=3, image_size=(32, 16))


def load_config(name="synthetic", arg=None):
    """configs/`name`.py's config (with `arg`: get_config(arg))."""
    return config_files.load_config(os.path.join(ROOT, "configs", f"{name}.py"), arg)


@pytest.fixture(scope="session")
def tiny_splits():
    from msml_jax.data.synthetic import SyntheticSpec, make_synthetic

    return make_synthetic(0, SyntheticSpec(**TINY_SYNTHETIC))


def make_tiny_config():
    """configs/synthetic.py shrunk to seconds: 12 identities, 32x16 images, 6 steps."""
    config = load_config()
    config.data.synthetic.update(TINY_SYNTHETIC)
    config.data.image_size = (32, 16)
    config.model.embed_dim = 16
    config.P, config.K, config.batch_size = 4, 2, 8
    config.num_train_steps = 6
    config.lr_boundaries = (4,)
    config.log_every_steps = 2
    config.checkpoint_every_steps = 3
    config.eval_batch_size = 16
    return config


@pytest.fixture
def tiny_config():
    return make_tiny_config()


@pytest.fixture(scope="session")
def flip_run(tmp_path_factory):
    """A tiny run evaluated with the flip test, 7 steps saving every 3 (not a multiple): (config, workdir).

    Read it only; copy it to write to it.
    """
    from msml_jax.training.loop import train_and_evaluate

    config = make_tiny_config()
    config.num_train_steps = 7
    config.eval.flip = True
    workdir = str(tmp_path_factory.mktemp("flip_run"))
    train_and_evaluate(config, workdir, tensorboard=False)
    return config, workdir


@pytest.fixture(scope="session")
def tiny_flip_run(flip_run):
    """The workdir of `flip_run`."""
    return flip_run[1]
