"""The trainer, top to bottom: data -> model -> jitted, data-parallel steps -> metrics.jsonl, TensorBoard, Orbax.

Each process of a run executes this same code; process 0 alone writes metrics, TensorBoard and the progress bar,
while every process takes part in checkpoints (Orbax coordinates them) and in the jitted computations.
"""

import collections
import contextlib
import os
import signal
import time

import jax
import numpy as np
import tqdm

from msml_jax import checkpoint, records, sharding
from msml_jax.config import check_paths
from msml_jax.data import device_augment
from msml_jax.errors import Interrupted, UserError, warn
from msml_jax.evaluation.report import format_table
from msml_jax.lock import WorkdirLock
from msml_jax.training import steps
from msml_jax.training.trainer import create_trainer
from msml_jax.training.writer import MetricWriter

# What the train step reads from a batch: images, labels and the draws of augmentation left to it.
BATCH_KEYS = ("images", "labels", *device_augment.KEYS)
PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM, what schedulers expect of a process stopped by SIGTERM


class Preempted(Exception):
    """The run stopped on SIGTERM after committing a checkpoint; the same command continues it."""


class _StopSignal:
    """Remembers a SIGTERM (a preemption notice), and a first Ctrl-C, until the loop reaches a step boundary.

    A KeyboardInterrupt raised while TensorFlow's C++ runs (a tf.data read, a TensorBoard write) can crash the
    process (exit -6 or -11 instead of 130; seen about once in 12 Ctrl-Cs of tests/test_resume.py's on a loaded
    machine), so the first Ctrl-C only sets `ctrl_c`; a second one raises at once, as Python would.
    """

    def __init__(self):
        self.received = False
        self.ctrl_c = False
        self._previous = {}

    def __enter__(self):
        if jax.process_count() > 1:  # JAX's preemption service catches SIGTERM and syncs the hosts itself
            return self
        for signum, handler in ((signal.SIGTERM, self._handle), (signal.SIGINT, self._handle_ctrl_c)):
            try:
                self._previous[signum] = signal.signal(signum, handler)
            except ValueError:  # not the main thread: no handler, the signal keeps its default
                pass
        return self

    def _handle(self, signum, frame):
        self.received = True

    def _handle_ctrl_c(self, signum, frame):
        if self.ctrl_c:
            raise KeyboardInterrupt
        self.ctrl_c = True

    def __exit__(self, *exc):
        for signum, previous in self._previous.items():
            if previous is not None:  # None: a handler set outside Python, which cannot be put back
                signal.signal(signum, previous)

    def should_stop(self, step):
        if jax.process_count() > 1:  # every process must stop at the same step: JAX's preemption sync point
            from jax.experimental import multihost_utils

            return multihost_utils.reached_preemption_sync_point(step)
        return self.received


class _Progress:
    """One tqdm bar for the whole run (process 0 only): epoch, step, images/s over the last 20 steps, ETA, and
    the loss of the latest log step (the loop fetches metrics only there)."""

    def __init__(self, start_step, num_steps, per_epoch, batch_size, enabled):
        self.num_steps, self.per_epoch, self.batch_size = num_steps, per_epoch, batch_size
        self.num_epochs = -(-num_steps // per_epoch)
        self.recent = collections.deque(maxlen=21)  # (time, step) at the end of the last steps
        self.postfix = {}
        self.bar = None
        if enabled and start_step < num_steps:
            self.bar = tqdm.tqdm(total=num_steps, initial=start_step, unit="step", dynamic_ncols=True,
                                 mininterval=0.5, desc=self._epoch(start_step))

    def _epoch(self, step):
        return f"epoch {min(step // self.per_epoch + 1, self.num_epochs)}/{self.num_epochs}"

    def pause(self):
        """Forgets the step times: what comes next (an evaluation) is not training time."""
        self.recent.clear()

    def update(self, step, loss=None):
        if self.bar is None:
            return
        self.recent.append((time.perf_counter(), step))
        if loss is not None:
            self.postfix["loss"] = f"{loss:.3f}"
        (t0, s0), (t1, s1) = self.recent[0], self.recent[-1]
        if s1 > s0 and t1 > t0:  # from the second step on: the first one's time is mostly compiling
            rate = (s1 - s0) * self.batch_size / (t1 - t0)
            eta = (self.num_steps - step) * self.batch_size / rate
            self.postfix.update(img_s=f"{rate:.0f}", eta=time.strftime("%H:%M:%S", time.gmtime(eta)))
        self.bar.set_description(self._epoch(step), refresh=False)
        self.bar.set_postfix(self.postfix, refresh=False)
        self.bar.update(1)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _check_finite(guard, manager, workdir):
    """UserError naming the first step whose loss or gradient was NaN/Inf; pending checkpoints commit first.

    Called where the loop syncs anyway (log steps, before every save), so no non-finite state is ever saved and
    the stop comes at most log_every_steps after the first bad step, which the message names exactly.
    """
    first, loss, grad_norm = (x.item() for x in jax.device_get(guard))
    if first < 0:
        return
    manager.wait_until_finished()
    good = manager.latest_step()
    where = f"step {good} in {os.path.join(workdir, 'checkpoints')}" if good is not None else "none"
    raise UserError(
        f"the loss became {loss} (gradient norm {grad_norm}) at step {first}; training stopped "
        f"and nothing of step {first} or after was saved; the latest good checkpoint is {where}: lower "
        f"config.learning_rate, check the data, or restart from it with --config.allow_config_change=True and "
        f"a changed config"
    )


def _default_batches(trainer, start_step):
    """This process's rows of every training batch from `start_step` on, from the tf.data pipeline."""
    from msml_jax.data.pipeline import train_dataset_from_config  # TensorFlow: only when it feeds the run

    config = trainer.config
    rows = sharding.local_rows(config.batch_size, trainer.mesh)
    return train_dataset_from_config(trainer.train, trainer.sampler, config.data, start_step, config.num_train_steps,
                                     rows).as_numpy_iterator()


def train_and_evaluate(config, workdir, batches=None, evaluate=True, tensorboard=True, validated=False):
    """Trains `config` in `workdir`, resuming from its latest checkpoint; returns the final evaluation records.

    `batches(trainer, start_step)`: an iterable of this process's rows of each training batch from `start_step`
    on, dicts of numpy `images`, `labels` and `step` (default: the tf.data pipeline); `evaluate=False` skips the
    evaluations (benchmarks); `tensorboard=False` writes metrics.jsonl only; `validated`: the caller has validated
    `config` and checked `workdir` already (train.py's gate), so they are not checked twice.

    One training at a time holds the workdir (`lock.WorkdirLock`). A finished run restarted trains nothing.

    Raises UserError on a config mistake, on a config different from the checkpoint's, on a workdir in use and on a
    NaN/Inf loss; Preempted after saving a checkpoint on SIGTERM; errors.Interrupted on Ctrl-C (after the pending
    checkpoint is committed).
    """
    if not validated:
        check_paths(config, workdir)
    trainer = create_trainer(config, validated=validated)
    checkpoint_dir = os.path.join(workdir, "checkpoints")
    # Refuse a changed config before writing anything. Every process looks before any creates the directory.
    resuming = os.path.isdir(checkpoint_dir)
    sharding.barrier("msml: looked for checkpoints")
    if resuming:
        reader = checkpoint.checkpoint_manager(workdir, create=False)
        saved = checkpoint.latest_readable_config(reader)
        if saved is not None:
            checkpoint.check_config_unchanged(saved, trainer.config, checkpoint_dir)
        reader.close()
    if jax.process_index() == 0:
        _warn_if_likely_wrong(trainer)
    with _workdir_lock(workdir):
        return _train(trainer, workdir, batches, evaluate, tensorboard)


def _warn_if_likely_wrong(trainer):
    """One warning line for each legal setting that is probably not what the user meant."""
    config = trainer.config
    late = [int(b) for b in config.lr_boundaries if int(b) >= config.num_train_steps]
    if late:
        warn(f"config.lr_boundaries={tuple(config.lr_boundaries)} has {late} at or past config.num_train_steps="
             f"{config.num_train_steps}: the learning rate never decays there; scale the boundaries with the run")
    if device_augment.step_blur_radius(config.data) and jax.default_backend() == "cpu":
        warn("config.data.augment_on_device=True but JAX trains on the CPU: the step's blur costs several times the "
             "input pipeline's there (docs/accelerators.md); set --config.data.augment_on_device=False unless a GPU "
             "or TPU trains")
    counts = trainer.sampler.counts
    few = int(np.sum(counts < config.K))
    if few:
        warn(f"{few} of {len(counts)} training identities have fewer than config.K={config.K} images (the fewest: "
             f"{counts.min()}): their images are drawn with replacement, so a batch repeats some")


@contextlib.contextmanager
def _workdir_lock(workdir):
    """Holds `workdir`'s lock for the run (process 0 takes it; every process learns whether it got it)."""
    lock, refused = WorkdirLock(workdir), None
    if jax.process_index() == 0:
        try:
            lock.acquire()
        except UserError as e:
            refused = e
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        held = int(multihost_utils.broadcast_one_to_all(np.int32(refused is None)))
        if not held and refused is None:
            refused = UserError(f"{workdir} is in use by another training (process 0 says by whom)")
    if refused is not None:
        raise refused
    try:
        yield
    finally:
        lock.release()


def _best_evaluated_step(workdir, upto):
    """The training-evaluated step in (0, upto] of highest mean mAP in the run's records (None: none)."""
    by_step = collections.defaultdict(list)
    for r in records.training_evaluations(workdir):
        if "mAP" in r and 0 < r["step"] <= upto:
            by_step[r["step"]].append(r["mAP"])
    return max(by_step, key=lambda s: (float(np.mean(by_step[s])), -s)) if by_step else None


def _evaluations_at(workdir, step):
    """The training's own evaluation records at `step`, in file order."""
    return [r for r in records.training_evaluations(workdir) if r["step"] == step]


def _train(trainer, workdir, batches, evaluate, tensorboard):
    config, mesh, per_epoch = trainer.config, trainer.mesh, trainer.per_epoch
    is_main = jax.process_index() == 0
    checkpoint_dir = os.path.join(workdir, "checkpoints")
    manager = checkpoint.checkpoint_manager(workdir, config.max_checkpoints)
    best = checkpoint.best_checkpoint_manager(workdir)
    writer = MetricWriter(workdir, enabled=is_main, tensorboard=tensorboard)
    # The newest intact checkpoint; damaged newer ones are moved aside with a warning.
    trainer.state, start_step = checkpoint.restore_latest_intact(manager, trainer.state, config)
    start_step = start_step or 0

    def position(step):
        return {"step": int(step), "seed": int(config.seed), "epoch": int(step // per_epoch),
                "steps_per_epoch": int(per_epoch)}

    def close():
        best.wait_until_finished()
        best.close()
        manager.close()
        writer.close()

    if start_step >= config.num_train_steps:  # a finished run: nothing to train, nothing rewritten
        final = _evaluations_at(workdir, start_step) if evaluate else []
        if is_main:
            more = "" if start_step == config.num_train_steps else f" (more than config.num_train_steps=" \
                f"{config.num_train_steps}: raise it to train further)"
            warn(f"the run in {workdir} has trained to step {start_step}{more}: nothing to train"
                 + ("; its final evaluation is run now (it had none)" if evaluate and not final else
                    f"; evaluate it again with python eval.py --workdir {workdir}"))
        if evaluate and not final:
            final = _evaluate(trainer, writer, best, position, start_step)
            if is_main:
                print(format_table(final), flush=True)
        close()
        return final
    dropped = writer.rewind(start_step, config.num_train_steps)
    if start_step == 0:  # what an earlier start that kept no checkpoint left goes: records, best/
        if dropped and is_main:
            print(f"starting over in {workdir}: it holds no checkpoint; the {dropped} records an earlier start wrote "
                  f"to {records.metrics_path(workdir)} are dropped (eval.py's are kept)", flush=True)
        aside = [checkpoint.move_aside(best, step, why="earlier-start") for step in best.all_steps()]
        if aside and is_main:
            warn(f"starting over: {', '.join(aside)} (the best evaluation of an earlier start, which kept no "
                 f"checkpoint) moved aside; best/ will hold this run's")
    else:
        if is_main:
            print(f"resuming from the checkpoint of step {start_step} in {workdir}", flush=True)
        if evaluate:
            _keep_best(trainer, manager, best, workdir, start_step, position)
    eval_every = config.get("eval_every_steps", 0)

    def run_evaluation(step):
        return _evaluate(trainer, writer, best, position, step) if evaluate else []

    initial = []
    if start_step == 0:
        initial += run_evaluation(0)
        if is_main and initial:
            print(format_table(initial), flush=True)

    batches = (batches or _default_batches)(trainer, start_step)
    progress = _Progress(start_step, config.num_train_steps, per_epoch, config.batch_size, enabled=is_main)
    repl = sharding.replicated(mesh)
    guard = jax.device_put(steps.no_bad_step(), repl)
    tick, tick_step = None, start_step
    state = trainer.state
    try:
        with _StopSignal() as stop:
            # No host sync per step: the host runs ahead, the next batch is on the devices before it is needed,
            # and metrics are fetched at log steps only.
            for batch in sharding.prefetch(batches, config.batch_size, mesh, keys=BATCH_KEYS):
                augment = device_augment.draws_in(batch) or None
                state, metrics, guard = trainer.train_step(state, batch["images"], batch["labels"], guard, augment)
                step = int(batch["step"]) + 1
                logged = step % config.log_every_steps == 0 or step == config.num_train_steps
                preempted = stop.should_stop(step)
                saving = step % config.checkpoint_every_steps == 0 or step == config.num_train_steps or preempted
                loss = None
                if logged or saving:
                    _check_finite(guard, manager, workdir)
                if logged:
                    metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
                    now, loss = time.perf_counter(), metrics["loss"]
                    if tick is not None and step > tick_step:
                        metrics["images_per_sec"] = (step - tick_step) * config.batch_size / (now - tick)
                    tick, tick_step = now, step
                    writer.write({"step": step, **metrics})
                    writer.flush()
                elif tick is None:  # the first step compiles: start the clock after it
                    jax.block_until_ready(metrics)
                    tick, tick_step = time.perf_counter(), step
                progress.update(step, loss)
                trainer.state = state
                if evaluate and eval_every and step % eval_every == 0 and step < config.num_train_steps:
                    run_evaluation(step)
                    tick, tick_step = time.perf_counter(), step  # images/s counts training time only
                    progress.pause()
                if saving:
                    checkpoint.save(manager, state, config, position(step), force=preempted)
                if preempted:
                    manager.wait_until_finished()
                    raise Preempted(
                        f"stopped by SIGTERM after step {step}; its checkpoint is in {checkpoint_dir}: "
                        f"run the same command again to continue"
                    )
                if stop.ctrl_c:
                    raise KeyboardInterrupt
    except KeyboardInterrupt:
        manager.wait_until_finished()  # a checkpoint being written is committed, not cut in half
        latest = manager.latest_step()
        raise Interrupted(f"training stopped; the latest checkpoint is step {latest} in {checkpoint_dir}: run the "
                          f"same command again to continue from it" if latest is not None else
                          "training stopped before its first checkpoint: run the same command again to start over")
    finally:
        progress.close()
        manager.wait_until_finished()
        best.wait_until_finished()
        writer.flush()

    final = run_evaluation(int(jax.device_get(trainer.state.step)))
    if is_main and final:
        print(format_table(initial + final), flush=True)
    close()
    return final


def _evaluate(trainer, writer, best, position, step):
    """Evaluates the current state at `step`: a new best is committed to best/ before the records are written, so
    records never name an evaluation that best/ did not take into account (whenever the run is killed)."""
    results = trainer.evaluator(trainer.variables(), step)
    if step > 0 and step not in best.all_steps():
        mean_map = float(np.mean([r["mAP"] for r in results]))
        checkpoint.save(best, trainer.state, trainer.config, position(step), metrics={"mAP": mean_map})
        best.wait_until_finished()
    for record in results:
        writer.write(record)
    writer.flush()
    return results


def _keep_best(trainer, manager, best, workdir, start_step, position):
    """On resume: the evaluated step of highest mAP in the records goes to best/ if a kill left it out (a run of
    the code before records waited for best/, or a lost write), from its checkpoint when one is kept."""
    step = _best_evaluated_step(workdir, start_step)
    if step is None or step in best.all_steps() or any(s > step for s in best.all_steps()):
        return
    if step == start_step:
        state = trainer.state
    elif step in manager.all_steps():
        state, _ = checkpoint.restore_step(manager, step, trainer.state, trainer.config)
    else:
        warn(f"the best evaluation in {records.metrics_path(workdir)} (step {step}) is not in "
             f"{os.path.join(workdir, 'best')} and its checkpoint is gone: best/ keeps the best of the others")
        return
    results = _evaluations_at(workdir, step)
    mean_map = float(np.mean([r["mAP"] for r in results]))
    checkpoint.save(best, state, trainer.config, position(step), metrics={"mAP": mean_map}, force=True)
    best.wait_until_finished()
