"""Train state and the pure train / embed steps. No TensorFlow, no I/O: jit them as you like.

A step reads a `StepSettings` (small, frozen, hashable: bind it with functools.partial or pass it as a static
argument), not the run's whole settings.
"""

import dataclasses
from typing import Any, Tuple

import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from msml_jax import losses
from msml_jax.data import device_augment
from msml_jax.distances import l2_normalize, pairwise_distance


@dataclasses.dataclass(frozen=True)
class StepSettings:
    """What a train step reads from the config: the loss and its hyperparameters (`losses.LOSSES` names the
    fields each loss uses), the classification term, the seed of the random losses and the learning-rate
    schedule (`learning_rate_schedule`)."""

    loss: str
    margin: float
    beta: float
    normalize: bool
    soft_margin: bool
    cls_weight: float
    label_smoothing: float
    seed: int
    learning_rate: float
    lr_decay: float
    lr_boundaries: Tuple[int, ...]
    warmup_steps: int = 0
    blur_radius: int = 0  # > 0: the batch's blur runs in the step (config.data.augment_on_device), kernels this wide

    @classmethod
    def from_config(cls, config):
        """The settings of a run's ConfigDict (absent optional fields take their defaults)."""
        return cls(
            loss=config.loss, margin=config.margin, beta=config.beta, normalize=config.normalize,
            soft_margin=config.soft_margin, cls_weight=config.cls_weight, label_smoothing=config.label_smoothing,
            seed=config.seed, learning_rate=config.learning_rate, lr_decay=config.lr_decay,
            lr_boundaries=tuple(int(b) for b in config.lr_boundaries),
            warmup_steps=int(config.get("warmup_steps", 0)),
            blur_radius=device_augment.step_blur_radius(config.get("data", {})),
        )


class TrainState(train_state.TrainState):
    """Flax TrainState plus BatchNorm statistics."""

    batch_stats: Any = None


def learning_rate_schedule(settings):
    """Adam's step schedule: `learning_rate`, multiplied by `lr_decay` at each of `lr_boundaries` (steps).

    With `warmup_steps` = W > 0 the rate of step t (0-based) is further scaled by min(1, (t + 1) / W).
    `settings`: a `StepSettings`, or a run's ConfigDict (read through `StepSettings.from_config`).
    """
    if not isinstance(settings, StepSettings):
        settings = StepSettings.from_config(settings)
    steps = optax.piecewise_constant_schedule(
        settings.learning_rate, {b: float(settings.lr_decay) for b in settings.lr_boundaries}
    )
    warmup = settings.warmup_steps
    if warmup <= 0:
        return steps
    return lambda t: steps(t) * jnp.minimum(1.0, (t + 1) / warmup)


def create_train_state(model, config, variables):
    """Train state with Adam on the step schedule, from initial `variables`; `config`: a ConfigDict or
    `StepSettings`."""
    return TrainState.create(
        apply_fn=model.apply,
        params=variables["params"],
        batch_stats=variables["batch_stats"],
        tx=optax.adam(learning_rate_schedule(config)),
    )


def network_input(images, augment, settings, step):
    """What the network sees of the uint8 `images` of global step `step` given their `augment` draws (see
    `train_step`): float32, blurred and erased (`device_augment.finish`); preview.py shows the same."""
    return device_augment.finish(images, augment, jax.random.fold_in(_step_key(settings, step), 2),
                                 settings.blur_radius)


def _step_key(settings, step):
    """The key of global step `step`: folded in for the random losses (as is), dropout (1), erasing noise (2)."""
    return jax.random.fold_in(jax.random.PRNGKey(settings.seed), step)


def loss_and_grads(state, images, labels, *, settings):
    """The forward and backward pass of a train step on the network input `images` (float32 or uint8 [B, h, w, 3]):
    ((loss, (outputs, BatchNorm updates, cls_loss, metric_loss)), gradients of the loss w.r.t. `state.params`).
    The random losses draw fresh pairs each step, reproducibly from (seed, step)."""
    key = _step_key(settings, state.step)

    def loss_fn(params):
        outputs, updates = state.apply_fn(
            {"params": params, "batch_stats": state.batch_stats},
            images,
            train=True,
            mutable=["batch_stats"],
            rngs={"dropout": jax.random.fold_in(key, 1)},  # used only by a head with dropout > 0
        )
        # Losses in float32 whatever the compute dtype: bf16 distances would round the margins away.
        outputs = {k: v.astype(jnp.float32) for k, v in outputs.items()}
        cls = losses.classification_loss(outputs["logits"], labels, label_smoothing=settings.label_smoothing)
        metric = losses.metric_loss(settings, outputs["embeddings"], labels, key)
        return settings.cls_weight * cls + metric, (outputs, updates, cls, metric)

    return jax.value_and_grad(loss_fn, has_aux=True)(state.params)


def train_step(state, images, labels, augment=None, *, settings):
    """One Adam step on classification + metric loss.

    Args:
      state: TrainState.
      images: uint8 [B, h, w, 3], a P x K batch in any order.
      labels: int32 [B] training-identity indices.
      augment: None, or the batch's blur and erasing draws (`device_augment.KEYS`) that the step applies to
        `images` first (config.data.augment_on_device); the erasing noise is drawn from (seed, step, row).
      settings: `StepSettings` (static: bind it with functools.partial before jit).
    Returns:
      (new state, dict of scalar metrics: loss, cls_loss, metric_loss, accuracy,
      hardest_pos / hardest_neg (mean mined distances), learning_rate, grad_norm).

    Under jit with the batch sharded over devices (msml_jax.sharding) every term, the mining included, is
    computed over the global batch.
    """
    if augment:
        images = network_input(images, augment, settings, state.step)
    (loss, (outputs, updates, cls, metric)), grads = loss_and_grads(state, images, labels, settings=settings)
    state = state.apply_gradients(grads=grads, batch_stats=updates.get("batch_stats", {}))  # {}: no BatchNorm

    embeddings = jax.lax.stop_gradient(outputs["embeddings"])
    if settings.normalize:
        embeddings = l2_normalize(embeddings)
    hardest_pos, hardest_neg, valid = losses.hardest_pairs(pairwise_distance(embeddings), labels)
    num_valid = jnp.maximum(valid.sum(), 1)
    metrics = {
        "loss": loss,
        "cls_loss": cls,
        "metric_loss": metric,
        "accuracy": jnp.mean(jnp.argmax(outputs["logits"], -1) == labels),
        "hardest_pos": jnp.sum(jnp.where(valid, hardest_pos, 0.0)) / num_valid,
        "hardest_neg": jnp.sum(jnp.where(valid, hardest_neg, 0.0)) / num_valid,
        "learning_rate": learning_rate_schedule(settings)(state.step - 1),
        "grad_norm": optax.tree.norm(grads),
    }
    return state, metrics


def no_bad_step():
    """The initial NaN/Inf watch: (first bad step, its loss, its gradient norm) = (-1, 0, 0)."""
    return (jnp.int32(-1), jnp.float32(0), jnp.float32(0))


def watch_finite(guard, metrics, step):
    """Updates the NaN/Inf watch `guard` with the `metrics` of `step`: the first step whose loss or gradient norm
    is not finite is kept with those two values; later steps leave it unchanged."""
    first, loss, grad_norm = guard
    bad = (first < 0) & ~(jnp.isfinite(metrics["loss"]) & jnp.isfinite(metrics["grad_norm"]))
    return (jnp.where(bad, step, first).astype(jnp.int32), jnp.where(bad, metrics["loss"], loss),
            jnp.where(bad, metrics["grad_norm"], grad_norm))
