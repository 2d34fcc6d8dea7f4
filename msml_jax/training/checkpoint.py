"""Orbax checkpoints of a run: the train state, the input position and the config it was trained with.

Atomicity: Orbax writes each step into `<step>.orbax-checkpoint-tmp-<time>` and renames it to `<step>` only
once every item is written (and, on several hosts, every process has finished), so a process killed during a
write leaves a tmp directory that `latest_step()` never returns; the next run's manager deletes it.

Exact resume: the training batch of step s is a pure function of (config.seed, s) (see data.pipeline), so the
state and the step are the whole input position; `position` records (seed, step, epoch) for people and checks.
"""

import json
import os

import ml_collections
import orbax.checkpoint as ocp
from flax import serialization

from msml_jax.errors import UserError

# Fields a restarted run may change without --config.allow_config_change: they decide how long to train, how
# often to log / save / evaluate and how to batch evaluation, never what a step computes. Lengthening a run
# with num_train_steps continues the same schedule (the learning-rate boundaries are in steps).
CHANGEABLE_FIELDS = frozenset(
    {
        "num_train_steps",
        "log_every_steps",
        "checkpoint_every_steps",
        "eval_every_steps",
        "max_checkpoints",
        "eval_batch_size",
        "allow_config_change",
    }
)


def checkpoint_manager(workdir, max_to_keep=3, create=True):
    """An asynchronous CheckpointManager over `workdir/checkpoints` keeping the last `max_to_keep` steps.

    The trainer's manager (`create`) deletes tmp directories of interrupted writes; a reader's leaves them.
    """
    return ocp.CheckpointManager(
        os.path.join(os.path.abspath(workdir), "checkpoints"),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=create, cleanup_tmp_directories=create, enable_async_checkpointing=True
        ),
    )


def best_checkpoint_manager(workdir):
    """A manager over `workdir/best` keeping the single checkpoint of highest `mAP` (mean over evaluation sets)."""
    return ocp.CheckpointManager(
        os.path.join(os.path.abspath(workdir), "best"),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=1, best_fn=lambda metrics: metrics["mAP"], best_mode="max", cleanup_tmp_directories=True
        ),
    )


def save(manager, state, config, position=None, metrics=None, force=False):
    """Starts saving the train state, input position and config at the state's step (asynchronously)."""
    step = int(state.step)
    items = dict(
        state=ocp.args.StandardSave(serialization.to_state_dict(state)),
        config=ocp.args.JsonSave(config.to_dict()),
    )
    if position is not None:
        items["position"] = ocp.args.JsonSave(position)
    return manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=force)


def restore(manager, state, step=None):
    """Restores into the structure (and shardings) of `state`; returns (state, config ConfigDict) or (state, None)."""
    step = manager.latest_step() if step is None else step
    if step is None:
        return state, None
    restored = manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(serialization.to_state_dict(state)),
            config=ocp.args.JsonRestore(),
        ),
    )
    return serialization.from_state_dict(state, restored["state"]), ml_collections.ConfigDict(restored["config"])


def restore_config(manager, step):
    """The config dict saved with checkpoint `step` (nothing else is read)."""
    return manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]


def _flatten(tree, prefix=""):
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def config_differences(saved, config):
    """Dotted field names whose values differ between a saved config dict and `config`, with both values.

    Returns:
      list of (field, saved value, current value); a field absent on one side shows as "<absent>".
    """
    # JSON round trip: tuples and lists compare equal, as they are after saving.
    saved = _flatten(json.loads(json.dumps(saved)))
    current = _flatten(json.loads(json.dumps(config.to_dict())))
    absent = "<absent>"
    return [
        (field, saved.get(field, absent), current.get(field, absent))
        for field in sorted(set(saved) | set(current))
        if saved.get(field, absent) != current.get(field, absent)
    ]


def check_config_unchanged(saved, config, checkpoint_dir):
    """UserError naming every changed field unless it is changeable or config.allow_config_change is set."""
    if config.get("allow_config_change", False):
        return
    changed = [d for d in config_differences(saved, config) if d[0] not in CHANGEABLE_FIELDS]
    if changed:
        listing = "; ".join(f"config.{field}: {old!r} in the checkpoint, {new!r} now" for field, old, new in changed)
        raise UserError(
            f"the config differs from the one the checkpoint in {checkpoint_dir} was trained with ({listing}): "
            f"restore those values, use a new --workdir, or pass --config.allow_config_change=True to continue anyway"
        )


def existing_checkpoint_manager(workdir):
    """The manager of a trained run; a UserError naming the workdir when it holds no checkpoint."""
    directory = os.path.join(workdir, "checkpoints")
    manager = checkpoint_manager(workdir, create=False) if os.path.isdir(directory) else None
    if manager is None or manager.latest_step() is None:
        raise UserError(
            f"no checkpoint in {os.path.join(workdir, 'checkpoints')}: train first with "
            f"`python train.py --config CONFIG --workdir {workdir}`, or pass the --workdir of a trained run"
        )
    return manager
