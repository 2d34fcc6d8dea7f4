"""Epochs and steps: a schedule given in epochs becomes steps from the training split actually loaded (its PK
sampler's `steps_per_epoch`: every training identity drawn once)."""

EPOCH_FIELDS = (  # field in epochs -> the step field it sets
    ("num_train_epochs", "num_train_steps"),
    ("lr_boundary_epochs", "lr_boundaries"),
    ("checkpoint_every_epochs", "checkpoint_every_steps"),
    ("eval_every_epochs", "eval_every_steps"),
)


def resolve_epochs(config, per_epoch):
    """A copy of `config` whose step fields are set from its epoch fields (`EPOCH_FIELDS`), `per_epoch` steps each.

    An epoch field applies when it is set (non-zero / non-empty) and its step field is not (0 / empty): a step
    value given explicitly, e.g. on the command line, wins. Without epoch fields the config comes back unchanged.
    """
    config = config.copy_and_resolve_references()
    with config.unlocked():
        for epochs_field, steps_field in EPOCH_FIELDS:
            epochs = config.get(epochs_field)
            if not epochs or config.get(steps_field):
                continue
            if isinstance(epochs, (tuple, list)):
                config[steps_field] = tuple(int(e * per_epoch) for e in epochs)
            else:
                config[steps_field] = int(epochs * per_epoch)
    return config
