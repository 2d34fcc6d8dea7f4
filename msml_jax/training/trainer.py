"""A trainer, ready to step: config, data, model, sampler, train state on the mesh and the jitted steps.

`create_trainer(config)` is what the loop, the tests and the benchmarks call instead of wiring these by hand. It
reads and checks everything but writes nothing: a user mistake (config, data, weights file) surfaces here.
"""

import dataclasses
import functools
from typing import Any

import jax
import numpy as np

from msml_jax import sharding
from msml_jax.data import load_datasets
from msml_jax.data.sampling import PKSampler
from msml_jax.evaluation.evaluator import EvalSettings, Evaluator
from msml_jax.models import init_variables, load_pretrained, model_from_config
from msml_jax.training import steps
from msml_jax.training.schedule import resolve_epochs
from msml_jax.config import validate_config


def setup(config, validated=False):
    """(config, train split, eval sets, model, sampler) of a run, before any compile or write; user mistakes
    surface here.

    The config is validated unless the caller already did (`validated`, train.py's gate). It comes back with its
    schedule in steps: epoch fields (`training.schedule`) resolved with the steps per epoch of the PK sampler of
    the training split actually loaded, and checked again only when that changed a field.
    """
    if not validated:
        validate_config(config)
    train, eval_sets = load_datasets(config.data)
    sampler = PKSampler(train["pids"], config.P, config.K, config.seed)
    resolved = resolve_epochs(config, sampler.steps_per_epoch)
    if resolved.to_dict() != config.to_dict():
        validate_config(resolved)
    model = model_from_config(resolved, len(sampler.identities))
    return resolved, train, eval_sets, model, sampler


def jit_train_step(config, mesh, watch=False):
    """`steps.train_step` with the `StepSettings` of `config`, jitted over `mesh`: state replicated, images /
    labels (and the augmentation draws, `augment`) sharded on "data".

    Returns fn(state, images, labels, augment=None) -> (state, metrics) with replicated outputs; the state is
    donated. With `watch`, fn(state, images, labels, guard, augment=None) -> (state, metrics, guard) also updates
    the NaN/Inf watch (`steps.watch_finite`) in the same program, so the loop dispatches one computation per step
    and never syncs. `augment`: the batch's `device_augment.KEYS` (config.data.augment_on_device), else None.
    """
    settings = steps.StepSettings.from_config(config)
    repl, data = sharding.replicated(mesh), sharding.batch_sharding(mesh)
    if not watch:
        step = jax.jit(
            functools.partial(steps.train_step, settings=settings),
            in_shardings=(repl, data, data, data),
            out_shardings=(repl, repl),
            donate_argnums=0,
        )
        return lambda state, images, labels, augment=None: step(state, images, labels, augment)

    def watched(state, images, labels, guard, augment):
        state, metrics = steps.train_step(state, images, labels, augment, settings=settings)
        return state, metrics, steps.watch_finite(guard, metrics, state.step)

    step = jax.jit(watched, in_shardings=(repl, data, data, repl, data), out_shardings=(repl, repl, repl),
                   donate_argnums=(0, 3))
    return lambda state, images, labels, guard, augment=None: step(state, images, labels, guard, augment)


def init_state(model, config, mesh):
    """The initial train state, replicated on `mesh`, created by a jitted function with output shardings.

    From scratch the parameters are initialized on the devices themselves; with `config.model.pretrained` they
    are initialized and overwritten on the host first (the weight mapping is numpy), then put on the mesh.
    """
    repl = sharding.replicated(mesh)
    key = jax.random.PRNGKey(config.seed)
    if not config.model.get("pretrained"):
        def create(key):
            return steps.create_train_state(model, config, init_variables(model, tuple(config.data.image_size),
                                                                                key))

        return jax.jit(create, out_shardings=repl)(key)
    variables = load_pretrained(init_variables(model, tuple(config.data.image_size), key), config.model)
    variables = sharding.replicate(jax.device_get(variables), mesh)
    return jax.jit(functools.partial(steps.create_train_state, model, config), out_shardings=repl)(variables)


@dataclasses.dataclass
class Trainer:
    """Everything a run steps with; `state` changes as it trains, the rest is fixed."""

    config: Any
    model: Any
    mesh: Any
    train: dict
    eval_sets: dict
    sampler: PKSampler
    state: Any
    train_step: Any  # fn(state, images, labels, guard, augment=None) -> (state, metrics, guard): jit_train_step(watch=True)
    evaluator: Evaluator

    @property
    def per_epoch(self):
        """Steps per epoch: the PK sampler's."""
        return self.sampler.steps_per_epoch

    def variables(self):
        """The model variables of the current state (what evaluation and export use)."""
        return {"params": self.state.params, "batch_stats": self.state.batch_stats}


def create_trainer(config, mesh=None, validated=False):
    """A `Trainer` for `config` over `mesh` (default: every device of every process), state at step 0.

    `validated`: the caller has validated `config` already (see `setup`)."""
    config, train, eval_sets, model, sampler = setup(config, validated)
    mesh = sharding.make_mesh() if mesh is None else mesh
    sharding.check_batch_size(config.batch_size, mesh)
    state = init_state(model, config, mesh)
    evaluator = Evaluator(model.apply, eval_sets, EvalSettings.from_config(config, mesh.devices.size), mesh)
    return Trainer(config, model, mesh, train, eval_sets, sampler, state,
                   jit_train_step(config, mesh, watch=True), evaluator)
