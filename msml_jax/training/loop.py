"""The trainer, top to bottom: data -> model -> jitted, data-parallel steps -> metrics.jsonl, TensorBoard, Orbax.

Each process of a run executes this same code; process 0 alone writes metrics, TensorBoard and the progress bar,
while every process takes part in checkpoints (Orbax coordinates them) and in the jitted computations.
"""

import collections
import functools
import json
import math
import os
import signal
import time

import jax
import numpy as np
import tqdm

from msml_jax.data import load_datasets
from msml_jax.data.pipeline import train_dataset_from_config
from msml_jax.data.sampling import PKSampler
from msml_jax.errors import UserError
from msml_jax.inference import embed_split, retrieval_metrics
from msml_jax.models import load_pretrained, model_from_config
from msml_jax.training import checkpoint, parallel, steps
from msml_jax.training.summaries import SummaryWriter
from msml_jax.training.validate import check_paths, validate_config

EVAL_COLUMNS = (("mAP", "mAP"), ("rank1", "rank-1"), ("rank5", "rank-5"), ("rank10", "rank-10"), ("mINP", "mINP"))
PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM, what schedulers expect of a process stopped by SIGTERM


class Preempted(Exception):
    """The run stopped on SIGTERM after committing a checkpoint; the same command continues it."""


def append_metrics(workdir, record):
    """Appends one JSON object as a line of `workdir/metrics.jsonl`."""
    with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
        f.write(json.dumps(record) + "\n")


def _rewind_metrics(workdir, step, final_step):
    """Drops the records written after checkpoint `step` (they will be written again), atomically.

    Kept: train records up to `step`, evaluations before `step`, and the evaluation at `step` unless it is the
    final one (a resumed run repeats the final evaluation). The file then reads as an uninterrupted run's.
    """
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return
    with open(path) as f:
        records = [json.loads(line) for line in f if line.strip()]

    def keep(r):
        if "dataset" in r:
            return r["step"] < step or (r["step"] == step and step < final_step)
        return r["step"] <= step

    with open(path + ".tmp", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records if keep(r))
    os.replace(path + ".tmp", path)


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
    train, eval_sets = load_datasets(config.data)
    num_classes = len(np.unique(train["pids"]))
    model = model_from_config(config, num_classes)
    return train, eval_sets, model


def evaluate(embed_fn, variables, eval_sets, config, step, mesh):
    """Embeds each evaluation set's query and gallery over `mesh`; returns one record per dataset.

    The evaluation batch is config.eval_batch_size rounded up to a multiple of the device count.
    """
    devices = mesh.devices.size
    batch_size = -(-config.eval_batch_size // devices) * devices
    kwargs = dict(batch_size=batch_size, image_size=tuple(config.data.image_size), mesh=mesh)
    records = []
    for name, sets in eval_sets.items():
        query = embed_split(embed_fn, variables, sets["query"], **kwargs)
        gallery = embed_split(embed_fn, variables, sets["gallery"], **kwargs)
        metrics = retrieval_metrics(query, gallery, sets["query"], sets["gallery"], normalize=config.normalize)
        records.append({"step": int(step), "dataset": name, **metrics})
    return records


def jit_embed_step(model, mesh):
    """`steps.embed_step` jitted over `mesh`: variables replicated, images sharded on "data", embeddings replicated.

    Returns fn(variables, images) -> float32 [B, D], the whole batch's embeddings on every device and process.
    """
    repl = parallel.replicated(mesh)
    return jax.jit(
        functools.partial(steps.embed_step, model.apply),
        in_shardings=(repl, parallel.batch_sharding(mesh)),
        out_shardings=repl,
    )


def jit_train_step(config, mesh):
    """`steps.train_step` jitted over `mesh`: state replicated, images / labels sharded on "data".

    Returns fn(state, images, labels) -> (state, metrics) with replicated outputs; the state is donated.
    """
    repl, data = parallel.replicated(mesh), parallel.batch_sharding(mesh)
    return jax.jit(
        functools.partial(steps.train_step, config=config),
        in_shardings=(repl, data, data),
        out_shardings=(repl, repl),
        donate_argnums=0,
    )


def steps_per_epoch(num_train_ids, config):
    """One epoch = every training identity drawn once: num_train_ids // P steps (at least 1)."""
    return max(1, num_train_ids // config.P)


class _StopSignal:
    """Remembers a SIGTERM (a preemption notice) until the loop reaches a step boundary."""

    def __init__(self):
        self.received = False
        self._previous = None

    def __enter__(self):
        if jax.process_count() > 1:  # JAX's preemption service catches SIGTERM and syncs the hosts itself
            return self
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: no handler, SIGTERM keeps its default
            self._previous = None
        return self

    def _handle(self, signum, frame):
        self.received = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

    def should_stop(self, step):
        if jax.process_count() > 1:  # every process must stop at the same step: JAX's preemption sync point
            from jax.experimental import multihost_utils

            return multihost_utils.reached_preemption_sync_point(step)
        return self.received


class _Progress:
    """A tqdm bar per epoch (process 0 only): step, loss, images/s over the last 20 steps, and the run's ETA."""

    def __init__(self, start_step, num_steps, per_epoch, batch_size, enabled):
        self.num_steps, self.per_epoch, self.batch_size, self.enabled = num_steps, per_epoch, batch_size, enabled
        self.bar, self.loss = None, float("nan")
        self.recent = collections.deque(maxlen=21)  # (time, step) at the end of the last steps
        self._open(start_step)

    def _open(self, step):
        if not self.enabled or step >= self.num_steps:
            return
        epoch = step // self.per_epoch
        first, last = epoch * self.per_epoch, min((epoch + 1) * self.per_epoch, self.num_steps)
        num_epochs = -(-self.num_steps // self.per_epoch)
        self.bar = tqdm.tqdm(
            total=last - first, initial=step - first, desc=f"epoch {epoch + 1}/{num_epochs}", unit="step",
            dynamic_ncols=True, mininterval=0.5,
        )

    def pause(self):
        """Forgets the step times: what comes next (an evaluation) is not training time."""
        self.recent.clear()

    def update(self, step, loss):
        if not self.enabled:
            return
        self.loss = loss
        self.recent.append((time.perf_counter(), step))
        postfix = {"step": step, "loss": f"{self.loss:.3f}"}
        (t0, s0), (t1, s1) = self.recent[0], self.recent[-1]
        if s1 > s0 and t1 > t0:  # from the second step on: the first one's time is mostly compiling
            rate = (s1 - s0) * self.batch_size / (t1 - t0)
            eta = (self.num_steps - step) * self.batch_size / rate
            postfix.update(img_s=f"{rate:.0f}", eta=time.strftime("%H:%M:%S", time.gmtime(eta)))
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(1)
        if step % self.per_epoch == 0 or step == self.num_steps:
            self.close()
            self._open(step)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _check_finite(metrics, step, manager, workdir):
    """UserError naming `step` when the loss or gradient is NaN/Inf; pending checkpoints commit first."""
    if math.isfinite(metrics["loss"]) and math.isfinite(metrics["grad_norm"]):
        return
    manager.wait_until_finished()
    good = manager.latest_step()
    where = f"step {good} in {os.path.join(workdir, 'checkpoints')}" if good is not None else "none"
    raise UserError(
        f"the loss became {metrics['loss']} (gradient norm {metrics['grad_norm']}) at step {step}; training stopped "
        f"and nothing of step {step} was saved; the latest good checkpoint is {where}: lower config.learning_rate, "
        f"check the data, or restart from it with --config.allow_config_change=True and a changed config"
    )


def train_and_evaluate(config, workdir):
    """Trains `config` in `workdir`, resuming from its latest checkpoint; returns the final evaluation records.

    Raises UserError on a config mistake, on a config different from the checkpoint's, and on a NaN/Inf loss;
    Preempted after saving a checkpoint on SIGTERM.
    """
    check_paths(config, workdir)
    train, eval_sets, model = _setup(config)
    mesh = parallel.make_mesh()
    parallel.check_batch_size(config.batch_size, mesh)
    is_main = jax.process_index() == 0
    checkpoint_dir = os.path.join(workdir, "checkpoints")
    # Refuse a changed config before writing anything. Every process looks before any creates the directory.
    resuming = os.path.isdir(checkpoint_dir)
    parallel.barrier("msml: looked for checkpoints")
    if resuming:
        reader = checkpoint.checkpoint_manager(workdir, create=False)
        saved = checkpoint.latest_readable_config(reader)
        if saved is not None:
            checkpoint.check_config_unchanged(saved, config, checkpoint_dir)
        reader.close()

    sampler = PKSampler(train["pids"], config.P, config.K, config.seed)
    per_epoch = steps_per_epoch(len(sampler.identities), config)
    # A bad weights file is a user mistake too: load it before anything is written.
    variables = steps.init_variables(model, tuple(config.data.image_size), jax.random.PRNGKey(config.seed))
    variables = load_pretrained(variables, config.model)
    os.makedirs(workdir, exist_ok=True)
    manager = checkpoint.checkpoint_manager(workdir, config.max_checkpoints)
    best = checkpoint.best_checkpoint_manager(workdir)
    state = parallel.replicate(steps.create_train_state(model, config, variables), mesh)
    state, start_step = checkpoint.restore_latest_intact(manager, state, config)  # damaged steps moved aside
    start_step = start_step or 0
    # Image size and every augmentation field of config.data (flip, shift, zoom, blur, erasing); this process
    # decodes and augments only its own rows of each global batch.
    rows = parallel.local_rows(config.batch_size, mesh)
    dataset = train_dataset_from_config(train, sampler, config.data, start_step, config.num_train_steps, rows)
    if start_step:
        if is_main:
            _rewind_metrics(workdir, start_step, config.num_train_steps)
            print(f"resuming from the checkpoint of step {start_step} in {workdir}", flush=True)
    train_step = jit_train_step(config, mesh)
    embed_fn = jit_embed_step(model, mesh)
    variables = lambda: {"params": state.params, "batch_stats": state.batch_stats}  # noqa: E731
    writer = SummaryWriter(os.path.join(workdir, "tensorboard"), enabled=is_main)
    eval_every = config.get("eval_every_steps", 0)

    def position(step):
        return {"step": int(step), "seed": int(config.seed), "epoch": int(step // per_epoch),
                "steps_per_epoch": int(per_epoch)}

    def run_evaluation(step):
        records = evaluate(embed_fn, variables(), eval_sets, config, step, mesh)
        if is_main:
            for record in records:
                append_metrics(workdir, record)
            writer.scalars(step, {f"{r['dataset']}/{k}": r[k] for r in records for k, _ in EVAL_COLUMNS}, "eval/")
            writer.flush()
        if step > 0 and step not in best.all_steps():
            mean_map = float(np.mean([r["mAP"] for r in records]))
            checkpoint.save(best, state, config, position(step), metrics={"mAP": mean_map})
        return records

    records = []
    if start_step == 0:
        records += run_evaluation(0)
        if is_main:
            print(format_table(records), flush=True)

    progress = _Progress(start_step, config.num_train_steps, per_epoch, config.batch_size, enabled=is_main)
    tick, tick_step = None, start_step
    try:
        with _StopSignal() as stop:
            for batch in dataset.as_numpy_iterator():
                local = {"images": batch["images"], "labels": batch["labels"]}
                inputs = parallel.global_batch(local, config.batch_size, mesh)
                state, metrics = train_step(state, inputs["images"], inputs["labels"])
                step = int(batch["step"]) + 1
                # One small fetch per step: it keeps the bar and images/s honest, and no NaN reaches a checkpoint.
                loss, grad_norm = (float(x) for x in jax.device_get((metrics["loss"], metrics["grad_norm"])))
                _check_finite({"loss": loss, "grad_norm": grad_norm}, step, manager, workdir)
                if tick is None:  # the first step compiles: start the clock after it
                    tick, tick_step = time.perf_counter(), step
                logged = step % config.log_every_steps == 0 or step == config.num_train_steps
                if logged:
                    metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
                    now = time.perf_counter()
                    if step > tick_step:
                        metrics["images_per_sec"] = (step - tick_step) * config.batch_size / (now - tick)
                    tick, tick_step = now, step
                    if is_main:
                        append_metrics(workdir, {"step": step, **metrics})
                        writer.scalars(step, metrics, "train/")
                        writer.flush()
                progress.update(step, loss)
                if eval_every and step % eval_every == 0 and step < config.num_train_steps:
                    run_evaluation(step)
                    tick, tick_step = time.perf_counter(), step  # images/s counts training time only
                    progress.pause()
                preempted = stop.should_stop(step)
                if step % config.checkpoint_every_steps == 0 or step == config.num_train_steps or preempted:
                    checkpoint.save(manager, state, config, position(step), force=preempted)
                if preempted:
                    manager.wait_until_finished()
                    raise Preempted(
                        f"stopped by SIGTERM after step {step}; its checkpoint is in {checkpoint_dir}: "
                        f"run the same command again to continue"
                    )
    finally:
        progress.close()
        manager.wait_until_finished()
        best.wait_until_finished()
        writer.flush()

    final = run_evaluation(int(state.step))
    if is_main:
        print(format_table(records + final), flush=True)
    best.wait_until_finished()
    best.close()
    manager.close()
    writer.close()
    return final


def evaluate_checkpoint(config, workdir, step=None):
    """Restores the latest checkpoint of `workdir` (or step `step`), evaluates it, appends and returns the records."""
    manager = checkpoint.existing_checkpoint_manager(workdir)
    _, eval_sets, model = _setup(config)
    mesh = parallel.make_mesh()
    variables = steps.init_variables(model, tuple(config.data.image_size), jax.random.PRNGKey(config.seed))
    state = parallel.replicate(steps.create_train_state(model, config, variables), mesh)
    state, _ = checkpoint.restore_latest_intact(manager, state, config, step=step, move_damaged=False)
    manager.close()
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    records = evaluate(jit_embed_step(model, mesh), variables, eval_sets, config, int(state.step), mesh)
    if jax.process_index() == 0:
        for record in records:
            append_metrics(workdir, record)
        print(format_table(records), flush=True)
    return records
