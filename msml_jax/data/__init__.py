"""Data: datasets as splits of numpy arrays, PK sampling, and tf.data pipelines.

`load_splits` is numpy-only; the tf.data pipelines live in `msml_jax.data.pipeline`
so that importing the datasets does not import TensorFlow.
"""

import dataclasses

from msml_jax.errors import UserError

DATASETS = ("synthetic",)


def load_splits(name, seed=0, options=None):
    """Returns the {"train", "query", "gallery"} splits of dataset `name`.

    Each split is a dict of numpy arrays: `images` uint8 [N, H, W, 3], `pids` [N], `camids` [N].
    `options` are the dataset's own settings (for "synthetic": SyntheticSpec fields).
    """
    if name == "synthetic":
        from msml_jax.data import synthetic

        options = dict(options or {})
        valid = {f.name for f in dataclasses.fields(synthetic.SyntheticSpec)}
        unknown = sorted(set(options) - valid)
        if unknown:
            raise UserError(f"unknown field(s) {unknown} in config.data.synthetic: valid fields are {sorted(valid)}")
        spec = synthetic.SyntheticSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in options.items()})
        return synthetic.make_synthetic(seed, spec)
    raise UserError(f"unknown dataset {name!r} in config.data.name: valid names are {', '.join(DATASETS)}")
