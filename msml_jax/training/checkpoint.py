"""Orbax checkpoints of a run: the train state and the config it was trained with."""

import os

import ml_collections
import orbax.checkpoint as ocp
from flax import serialization

from msml_jax.errors import UserError


def checkpoint_manager(workdir, max_to_keep=3, create=True):
    """A CheckpointManager over `workdir/checkpoints`."""
    return ocp.CheckpointManager(
        os.path.join(os.path.abspath(workdir), "checkpoints"),
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=create),
    )


def save(manager, state, config):
    """Saves the train state and config at the state's step (asynchronously)."""
    step = int(state.step)
    manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(serialization.to_state_dict(state)),
            config=ocp.args.JsonSave(config.to_dict()),
        ),
    )


def restore(manager, state, step=None):
    """Restores into the structure of `state`; returns (state, config ConfigDict) or (state, None) when none."""
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
