import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from msml_jax.errors import UserError
from msml_jax.models import get_model


def _count(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _abstract_init(model, shape):
    return jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), jnp.zeros(shape, jnp.uint8))


def test_outputs_and_shapes():
    model = get_model("small_resnet", num_classes=7, embed_dim=12)
    images = jnp.asarray(np.random.default_rng(0).integers(0, 255, (3, 32, 16, 3), np.uint8))
    variables = model.init(jax.random.key(0), images, train=False)
    out = model.apply(variables, images, train=False)
    assert out["features"].shape == (3, 128)
    assert out["embeddings"].shape == (3, 12)
    assert out["logits"].shape == (3, 7)
    # The embedding is the FC of the pooled features; the logits the classifier of the embedding.
    head = variables["params"]["head"]
    np.testing.assert_allclose(
        out["embeddings"], out["features"] @ head["embedding"]["kernel"] + head["embedding"]["bias"], rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(
        out["logits"], out["embeddings"] @ head["classifier"]["kernel"] + head["classifier"]["bias"], rtol=1e-5, atol=1e-5
    )


def test_train_mode_updates_batchnorm_statistics_and_eval_mode_uses_them():
    model = get_model("small_resnet", num_classes=3, embed_dim=4)
    images = jnp.asarray(np.random.default_rng(1).integers(0, 255, (4, 32, 16, 3), np.uint8))
    variables = model.init(jax.random.key(0), images, train=False)
    _, updates = model.apply(variables, images, train=True, mutable=["batch_stats"])
    before = jax.tree.leaves(variables["batch_stats"])
    after = jax.tree.leaves(updates["batch_stats"])
    assert any(not np.allclose(a, b) for a, b in zip(before, after))
    # Inference is per-image: an image's embedding does not depend on the rest of the batch.
    single = model.apply(variables, images[:1], train=False)["embeddings"]
    batch = model.apply(variables, images, train=False)["embeddings"]
    np.testing.assert_allclose(single[0], batch[0], rtol=1e-4, atol=1e-5)


def test_resnet18_backbone_has_torchvisions_parameter_count():
    # torchvision.models.resnet18(): 11,689,512 parameters, of which fc holds 512 * 1000 + 1000.
    variables = _abstract_init(get_model("resnet18", num_classes=10, embed_dim=8), (1, 64, 32, 3))
    assert _count(variables["params"]["backbone"]) == 11_689_512 - 513_000


def test_bfloat16_computes_in_bf16_with_float32_parameters():
    model = get_model("small_resnet", num_classes=3, embed_dim=4, dtype="bfloat16")
    images = jnp.zeros((2, 32, 16, 3), jnp.uint8)
    variables = model.init(jax.random.key(0), images, train=False)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(variables))
    out = model.apply(variables, images, train=False)
    assert out["embeddings"].dtype == jnp.float32
    hlo = jax.jit(functools.partial(model.apply, train=False)).lower(variables, images).as_text()
    assert "bf16" in hlo


def test_unknown_model_lists_the_valid_names():
    with pytest.raises(UserError, match=r"unknown model 'resnet9000'.*small_resnet"):
        get_model("resnet9000", num_classes=3)
