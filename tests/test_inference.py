"""The Embedder (msml_jax.inference) on a run evaluated with the flip test."""

import jax
import numpy as np

from msml_jax.evaluation.workdir import load_run
from msml_jax.inference import Embedder


def flip_embeddings(workdir, images):
    """The run's embeddings with the flip test, written out: the mean of an image's and its mirror's (float64)."""
    _, model, variables, _ = load_run(workdir)
    apply = jax.jit(model.apply, static_argnames="train")
    plain = np.asarray(apply(variables, images, train=False)["embeddings"], np.float64)
    mirrored = np.asarray(apply(variables, images[:, :, ::-1], train=False)["embeddings"], np.float64)
    return plain, (plain + mirrored) / 2


def test_the_embedder_applies_the_runs_flip_test(flip_run, tiny_splits):
    _, workdir = flip_run
    images = np.asarray(tiny_splits["gallery"]["images"][:10])
    plain, want = flip_embeddings(workdir, images)
    assert np.abs(plain - want).max() > 1e-2  # the flip test changes these embeddings
    embedder = Embedder.from_workdir(workdir, batch_size=4)
    assert embedder.step == 7
    np.testing.assert_allclose(embedder.embed(list(images)), want, rtol=1e-5, atol=1e-5)
