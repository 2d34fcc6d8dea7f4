"""The train step against independent computations: the metric loss's gradient, and Adam on the step schedule.

A linear "model" stands in for the network (embeddings = x W, logits = embeddings V), so the expected values are
a few lines of numpy: a brute-force loss in float64 and its finite differences, and Adam's first-step rule.
"""

import functools
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from msml_jax.training import steps
from tests.conftest import make_tiny_config

LABELS = np.array([0, 0, 1, 1, 2, 2, 3, 3])


def _linear_apply(variables, images, train, mutable, rngs):
    """A model without BatchNorm: embeddings [B, 4] = images [B, 6] @ w, logits [B, 4] = embeddings @ v."""
    embeddings = images @ variables["params"]["w"]
    outputs = {"embeddings": embeddings, "logits": embeddings @ variables["params"]["v"]}
    return outputs, {"batch_stats": variables["batch_stats"]}


def _normalized_distances(e):
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    n = len(e)
    return np.array([[np.sqrt(np.sum((e[i] - e[j]) ** 2)) for j in range(n)] for i in range(n)])


def _reference_loss(name, e, labels, margin):
    """MSML (eq. 5: one hinge over the batch's hardest positive and negative pairs) or TriHard (eq. 4: the mean
    over anchors of the hinge over that anchor's hardest pairs), by loops, on l2-normalised embeddings."""
    d = _normalized_distances(e)
    n = len(e)
    pos = [[d[a, j] for j in range(n) if j != a and labels[j] == labels[a]] for a in range(n)]
    neg = [[d[a, j] for j in range(n) if labels[j] != labels[a]] for a in range(n)]
    if name == "msml":
        return max(0.0, max(max(p) for p in pos) - min(min(q) for q in neg) + margin)
    return float(np.mean([max(0.0, max(p) - min(q) + margin) for p, q in zip(pos, neg)]))


@pytest.mark.parametrize("loss", ["msml", "trihard"])
def test_metric_loss_gradient_reaches_the_parameters_and_matches_finite_differences(loss):
    config = make_tiny_config()
    config.update(dict(loss=loss, cls_weight=0.0, normalize=True, soft_margin=False, margin=0.3))
    rng = np.random.default_rng(0)
    images = rng.normal(size=(8, 6))
    w, v = rng.normal(size=(6, 4)), rng.normal(size=(4, 4))
    # Plain SGD with rate 1: the parameters move by exactly minus the step's gradient.
    state = steps.TrainState.create(
        apply_fn=_linear_apply, params={"w": jnp.asarray(w, jnp.float32), "v": jnp.asarray(v, jnp.float32)},
        batch_stats={}, tx=optax.sgd(1.0),
    )
    settings = steps.StepSettings.from_config(config)
    train_step = jax.jit(functools.partial(steps.train_step, settings=settings))  # one compile, not one per op
    new, metrics = train_step(state, jnp.asarray(images, jnp.float32), jnp.asarray(LABELS))
    grad_w = w - np.asarray(new.params["w"], np.float64)

    def loss_of(w):
        return _reference_loss(loss, images @ w, LABELS, 0.3)

    assert loss_of(w) > 0.1  # the hinge is active: the loss has a gradient to give
    assert float(metrics["metric_loss"]) == pytest.approx(loss_of(w), rel=1e-4)
    eps = 1e-6
    numeric = np.zeros_like(w)
    for index in np.ndindex(*w.shape):
        step = np.zeros_like(w)
        step[index] = eps
        numeric[index] = (loss_of(w + step) - loss_of(w - step)) / (2 * eps)
    assert np.abs(numeric).max() > 1e-2
    np.testing.assert_allclose(grad_w, numeric, atol=1e-4 * np.abs(numeric).max() + 1e-6, rtol=1e-3)
    # cls_weight 0: the classifier, which only the classification loss reaches, gets no gradient.
    np.testing.assert_array_equal(np.asarray(new.params["v"]), np.asarray(v, np.float32))

    # The logged metrics, each by hand: softmax cross-entropy and accuracy of the logits, each anchor's hardest
    # positive / negative distance (normalised embeddings) averaged, the gradient's norm, step 0's rate.
    logits = images @ w @ v
    log_softmax = logits - logits.max(1, keepdims=True)
    log_softmax -= np.log(np.exp(log_softmax).sum(1, keepdims=True))
    d = _normalized_distances(images @ w)
    same = LABELS[:, None] == LABELS[None, :]
    expected = {
        "cls_loss": -np.mean(log_softmax[np.arange(8), LABELS]),
        "accuracy": np.mean(logits.argmax(1) == LABELS),
        "hardest_pos": np.mean([max(d[a][same[a] & (np.arange(8) != a)]) for a in range(8)]),
        "hardest_neg": np.mean([min(d[a][~same[a]]) for a in range(8)]),
        "grad_norm": np.linalg.norm(numeric),
        "learning_rate": config.learning_rate,
        "loss": loss_of(w),
    }
    for key, value in expected.items():
        assert float(metrics[key]) == pytest.approx(value, rel=1e-3, abs=1e-6), key


@pytest.mark.parametrize(
    "schedule, expected",
    [
        # learning_rate 0.01, times lr_decay 0.1 from step 1 on (boundary 1).
        (dict(lr_boundaries=(1,), warmup_steps=0), [0.01, 0.001, 0.001]),
        # Warmup over 4 steps, boundary far away: 1/4, 2/4, 3/4 of the rate.
        (dict(lr_boundaries=(100,), warmup_steps=4), [0.0025, 0.005, 0.0075]),
    ],
)
def test_adam_moves_each_parameter_by_the_scheduled_rate(schedule, expected):
    config = make_tiny_config()
    config.update(dict(learning_rate=0.01, lr_decay=0.1, **schedule))
    params = {"w": jnp.zeros(5, jnp.float32)}
    state = steps.create_train_state(types.SimpleNamespace(apply=None), config, {"params": params, "batch_stats": {}})
    grads = {"w": jnp.array([1.0, -2.0, 0.5, -0.25, 3.0])}
    # Adam on a constant gradient g: the bias-corrected moments are exactly g and g^2 at every step, so each step
    # moves every parameter by rate * g / (|g| + 1e-8), i.e. by the step's rate against the gradient's sign.
    for rate in expected:
        new = state.apply_gradients(grads=grads)
        move = np.asarray(new.params["w"] - state.params["w"])
        np.testing.assert_allclose(move, -rate * np.sign(grads["w"]), rtol=1e-4)  # float32 rounding
        state = new


def test_step_settings_are_small_frozen_and_hashable():
    config = make_tiny_config()
    settings = steps.StepSettings.from_config(config)
    assert hash(settings) == hash(steps.StepSettings.from_config(config))
    assert settings.lr_boundaries == tuple(config.lr_boundaries) and settings.loss == config.loss
    with pytest.raises(AttributeError):
        settings.margin = 1.0
    rates = [float(steps.learning_rate_schedule(settings)(t)) for t in range(6)]
    assert rates == [float(steps.learning_rate_schedule(config)(t)) for t in range(6)]
