"""The trainer, top to bottom: data -> model -> jitted steps -> metrics.jsonl and Orbax checkpoints."""

import functools
import json
import math
import os
import time

import jax
import numpy as np
import tqdm

from msml_jax.data import load_splits
from msml_jax.data.pipeline import train_dataset
from msml_jax.data.sampling import PKSampler
from msml_jax.errors import UserError
from msml_jax.inference import embed_split, retrieval_metrics
from msml_jax.models import get_model
from msml_jax.training import checkpoint, steps
from msml_jax.training.validate import validate_config

EVAL_COLUMNS = (("mAP", "mAP"), ("rank1", "rank-1"), ("rank5", "rank-5"), ("rank10", "rank-10"), ("mINP", "mINP"))


def append_metrics(workdir, record):
    """Appends one JSON object as a line of `workdir/metrics.jsonl`."""
    with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
        f.write(json.dumps(record) + "\n")


def format_table(records):
    """Evaluation records as a fixed-width table, metrics in percent."""
    header = f"{'dataset':<12}{'step':>8}" + "".join(f"{title:>9}" for _, title in EVAL_COLUMNS)
    rows = [
        f"{r['dataset']:<12}{r['step']:>8}" + "".join(f"{100 * r[key]:>9.1f}" for key, _ in EVAL_COLUMNS)
        for r in records
    ]
    return "\n".join([header, *rows])


def _setup(config):
    """Data and model of a run, before any compile or write; user mistakes surface here."""
    validate_config(config)
    splits = load_splits(config.data.name, config.data.seed, config.data.synthetic.to_dict())
    num_classes = len(np.unique(splits["train"]["pids"]))
    model = get_model(
        config.model.name,
        num_classes,
        embed_dim=config.model.embed_dim,
        dtype=config.dtype,
        last_stride=config.model.last_stride,
    )
    return splits, model


def evaluate(embed_fn, variables, splits, config, step):
    """Embeds query and gallery and returns one evaluation record."""
    kwargs = dict(batch_size=config.eval_batch_size, image_size=tuple(config.data.image_size))
    query = embed_split(embed_fn, variables, splits["query"], **kwargs)
    gallery = embed_split(embed_fn, variables, splits["gallery"], **kwargs)
    metrics = retrieval_metrics(query, gallery, splits["query"], splits["gallery"], normalize=config.normalize)
    return {"step": int(step), "dataset": config.data.name, **metrics}


def _embed_fn(model):
    return jax.jit(functools.partial(steps.embed_step, model.apply))


def train_and_evaluate(config, workdir):
    """Trains `config` in `workdir`, resuming from its latest checkpoint; returns the final evaluation record."""
    splits, model = _setup(config)
    sampler = PKSampler(splits["train"]["pids"], config.P, config.K, config.seed)
    os.makedirs(workdir, exist_ok=True)
    manager = checkpoint.checkpoint_manager(workdir, config.max_checkpoints)
    start_step = manager.latest_step() or 0
    dataset = train_dataset(
        splits["train"],
        sampler,
        start_step=start_step,
        end_step=config.num_train_steps,
        image_size=config.data.image_size,
        flip=config.data.flip,
        shift=config.data.shift,
    )
    state = steps.create_train_state(model, config, tuple(config.data.image_size), jax.random.PRNGKey(config.seed))
    if start_step:
        state, _ = checkpoint.restore(manager, state)
        print(f"resuming from the checkpoint of step {start_step} in {workdir}", flush=True)
    train_step = jax.jit(functools.partial(steps.train_step, config=config), donate_argnums=0)
    embed_fn = _embed_fn(model)
    variables = lambda: {"params": state.params, "batch_stats": state.batch_stats}  # noqa: E731

    records = []
    if start_step == 0:
        records.append(evaluate(embed_fn, variables(), splits, config, step=0))
        append_metrics(workdir, records[-1])
        print(format_table(records), flush=True)

    bar = tqdm.tqdm(total=config.num_train_steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True)
    tick, tick_step = None, start_step
    for batch in dataset.as_numpy_iterator():
        state, metrics = train_step(state, batch["images"], batch["labels"])
        step = int(batch["step"]) + 1
        # Waiting for each step keeps the bar and images/s honest; tf.data still prefetches meanwhile.
        jax.block_until_ready(metrics["loss"])
        bar.update(1)
        if tick is None:  # the first step compiles: start the clock after it
            tick, tick_step = time.perf_counter(), step
        if step % config.log_every_steps == 0 or step == config.num_train_steps:
            metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
            if not math.isfinite(metrics["loss"]):
                bar.close()
                manager.wait_until_finished()
                raise UserError(
                    f"the loss became {metrics['loss']} at step {step}; the latest good checkpoint is step "
                    f"{manager.latest_step()} in {workdir}: lower config.learning_rate or check the data"
                )
            now = time.perf_counter()
            if step > tick_step:
                metrics["images_per_sec"] = (step - tick_step) * config.batch_size / (now - tick)
            tick, tick_step = now, step
            append_metrics(workdir, {"step": step, **metrics})
            bar.set_postfix(loss=f"{metrics['loss']:.3f}", img_s=f"{metrics.get('images_per_sec', 0):.0f}")
        if step % config.checkpoint_every_steps == 0 or step == config.num_train_steps:
            checkpoint.save(manager, state, config)
    bar.close()
    manager.wait_until_finished()

    records.append(evaluate(embed_fn, variables(), splits, config, step=int(state.step)))
    append_metrics(workdir, records[-1])
    print(format_table(records), flush=True)
    manager.close()
    return records[-1]


def evaluate_checkpoint(config, workdir):
    """Restores the latest checkpoint of `workdir`, evaluates it, appends and returns the record."""
    manager = checkpoint.existing_checkpoint_manager(workdir)
    splits, model = _setup(config)
    state = steps.create_train_state(model, config, tuple(config.data.image_size), jax.random.PRNGKey(config.seed))
    state, _ = checkpoint.restore(manager, state)
    manager.close()
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    record = evaluate(_embed_fn(model), variables, splits, config, step=int(state.step))
    append_metrics(workdir, record)
    print(format_table([record]), flush=True)
    return record
