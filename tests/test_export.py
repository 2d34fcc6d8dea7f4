"""The exported embedder, deserialized with jax alone, against the live model."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from msml_jax.export import export_embedder, load_exported
from msml_jax.models import get_model


@pytest.fixture(scope="module")
def tiny_model():
    model = get_model("small_resnet", 5, embed_dim=16)
    # Jitted: one compile instead of one per op.
    variables = jax.jit(model.init, static_argnames="train")(
        jax.random.key(0), jnp.zeros((1, 32, 16, 3), jnp.uint8), train=False)
    return model, variables


def _live(model, variables, images, flip):
    """The live model's embeddings, flip written out in numpy (the file never normalizes)."""
    apply = jax.jit(model.apply, static_argnames="train")
    emb = np.asarray(apply(variables, images, train=False)["embeddings"], np.float64)
    if flip:
        emb = 0.5 * (emb + np.asarray(apply(variables, images[:, :, ::-1], train=False)["embeddings"]))
    return emb


def test_exported_matches_live_model(tmp_path, tiny_model):
    model, variables = tiny_model
    flip, normalize = True, True  # the path with every option: one export compiles in seconds on a loaded CPU
    path = str(tmp_path / "embedder.jaxexport")
    info = export_embedder(path, model.apply, variables, (32, 16),
                           metadata={"flip": flip, "normalize": normalize, "step": 7})

    # Serving needs only jax: the two lines of the module docstring.
    with open(path, "rb") as f:
        exported = jax.export.deserialize(bytearray(f.read()))
    rng = np.random.default_rng(0)
    for batch in (1, 3):  # the batch dimension is symbolic: both sizes run from the one file
        images = rng.integers(0, 256, size=(batch, 32, 16, 3), dtype=np.uint8)
        got = np.asarray(exported.call(images))
        assert got.dtype == np.float32 and got.shape == (batch, 16)
        # float32 model, same ops: differences are rounding only.
        np.testing.assert_allclose(got, _live(model, variables, images, flip), atol=1e-5, rtol=1e-5)

    with open(path + ".json") as f:
        written = json.load(f)
    assert written == info
    assert written["input_shape"] == [None, 32, 16, 3] and written["input_dtype"] == "uint8"
    assert written["embedding_dim"] == 16 and written["output_dtype"] == "float32"
    assert (written["flip"], written["normalize"], written["distance"], written["step"]) == (
        flip, normalize, "euclidean", 7)
    assert set(written["platforms"]) == {"cpu", "cuda", "tpu"}

    fn, loaded_info = load_exported(path)
    assert loaded_info == info
    np.testing.assert_array_equal(np.asarray(fn(images)), got)


def test_modules_import_without_tensorflow():
    # The evaluation layer, the Embedder and the checkpoints never import training; nothing below the data
    # pipeline imports TensorFlow, so the trainer, the Embedder and the export run on a host that has JAX alone.
    code = ("import sys; import msml_jax.export, msml_jax.evaluation.evaluator, msml_jax.evaluation.separation, "
            "msml_jax.evaluation.visualize, msml_jax.evaluation.rerank, msml_jax.evaluation.search, "
            "msml_jax.evaluation.workdir, msml_jax.inference, msml_jax.checkpoint, msml_jax.records; "
            "bad = [m for m in ('tensorflow', 'msml_jax.training') if m in sys.modules]; "
            "assert not bad, bad; "
            "import msml_jax.data, msml_jax.data.sampling, msml_jax.training.loop; "
            "bad = [m for m in ('tensorflow', 'tensorflow_datasets') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_embedder_the_evaluation_and_the_export_give_the_same_embeddings(tiny_flip_run, tmp_path, tiny_splits):
    # One function (evaluation.retrieval.embed_step) behind all three: raw embeddings, the run's flip test.
    import shutil

    from msml_jax.evaluation.workdir import evaluate_run
    from msml_jax.inference import Embedder

    workdir = str(tmp_path / "run")
    shutil.copytree(tiny_flip_run, workdir)
    features = str(tmp_path / "features.npz")
    evaluate_run(workdir, features_path=features)
    evaluated = np.load(features)["synthetic/gallery/embeddings"]  # through the tf.data evaluation pipeline
    images = tiny_splits["gallery"]["images"]

    embedded = Embedder.from_workdir(workdir, batch_size=5).embed(images)

    path = str(tmp_path / "model.bin")
    assert evaluate_run(workdir, export_path=path) == []  # --export alone: exported without evaluating
    serve, info = load_exported(path)
    exported = np.asarray(serve(np.asarray(images)))

    assert (info["flip"], info["normalize"], info["distance"]) == (True, True, "euclidean")
    assert np.linalg.norm(evaluated, axis=1).std() > 1e-3  # raw: not unit rows
    np.testing.assert_allclose(embedded, evaluated, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(exported, evaluated, rtol=1e-5, atol=1e-5)


def test_eval_export_of_a_run_evaluated_with_flip(flip_run, tiny_splits, tmp_path):
    # eval.py --export: the exported embedder computes what the evaluation ranks with, the run's flip test included
    # (raw embeddings; the JSON says to l2-normalize them before euclidean distances).
    import shutil

    from msml_jax.evaluation.workdir import evaluate_run
    from tests.test_inference import flip_embeddings

    workdir = str(tmp_path / "run")
    shutil.copytree(flip_run[1], workdir)
    path, features = str(tmp_path / "embedder.jaxexport"), str(tmp_path / "features.npz")
    (record,) = evaluate_run(workdir, export_path=path, features_path=features)
    assert record["flip"] is True
    fn, info = load_exported(path)
    assert (info["flip"], info["normalize"], info["distance"], info["step"]) == (True, True, "euclidean", 7)
    images = np.asarray(tiny_splits["gallery"]["images"][:10])
    _, want = flip_embeddings(workdir, images)
    np.testing.assert_allclose(np.asarray(fn(images)), want, rtol=1e-5, atol=1e-5)
    evaluated = np.load(features)["synthetic/gallery/embeddings"][:10]
    np.testing.assert_allclose(np.asarray(fn(images)), evaluated, rtol=1e-5, atol=1e-5)
