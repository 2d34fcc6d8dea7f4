"""Checks of a run's config that catch user mistakes before anything is loaded or compiled."""

from msml_jax.errors import UserError
from msml_jax.models import BACKBONES
from msml_jax.training.steps import METRIC_LOSSES


def validate_config(config):
    """Raises UserError naming the field and the fix for the first mistake found."""
    if config.loss not in METRIC_LOSSES:
        raise UserError(f"unknown loss {config.loss!r} in config.loss: valid names are {', '.join(METRIC_LOSSES)}")
    if config.model.name not in BACKBONES:
        raise UserError(
            f"unknown model {config.model.name!r} in config.model.name: valid names are {', '.join(sorted(BACKBONES))}"
        )
    from msml_jax.training.schedule import EPOCH_FIELDS

    in_epochs = {steps for epochs, steps in EPOCH_FIELDS if config.get(epochs)}  # set from the data, later
    for field in ("P", "K", "batch_size", "num_train_steps", "checkpoint_every_steps", "log_every_steps", "eval_batch_size"):
        value = config[field]
        if field in in_epochs and value == 0:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UserError(f"config.{field} must be a positive integer, got {value!r}")
    for field in ("eval_every_steps", "warmup_steps"):  # 0 turns them off
        value = config.get(field, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise UserError(f"config.{field} must be a non-negative integer (0: off), got {value!r}")
    if config.loss != "cls" and (config.P < 2 or config.K < 2):
        raise UserError(
            f"config.loss={config.loss!r} needs positive and negative pairs in every batch: "
            f"set config.P >= 2 and config.K >= 2 (got P={config.P}, K={config.K})"
        )
    if config.P * config.K != config.batch_size:
        raise UserError(
            f"config.batch_size={config.batch_size} must equal config.P * config.K = {config.P} * {config.K} "
            f"= {config.P * config.K}: change config.batch_size, config.P or config.K"
        )
    if config.dtype not in ("float32", "bfloat16"):
        raise UserError(f"config.dtype must be 'float32' or 'bfloat16', got {config.dtype!r}")

