"""Data: datasets as splits of numpy arrays, PK sampling, and tf.data pipelines.

A split is a dict of numpy arrays: `images` (uint8 [N, H, W, 3], or encoded JPEG/PNG
bytes object [N]), `pids` int [N], `camids` int [N] (extras allowed).

Importing this package registers the re-ID TFDS builders (`msml_jax.data.builders`:
market1501, cuhk03, mars, cuhk_sysu, viper, prid2011, folder) when tensorflow_datasets
is installed, so `tfds.builder("viper", data_dir=...)` works afterwards. That imports
TensorFlow (a few seconds); the trainer imports it anyway for its pipeline.
`msml_jax.data.sampling` alone stays numpy-only on a machine without TF.
"""

import dataclasses
import importlib.util

import numpy as np

from msml_jax.errors import UserError

if importlib.util.find_spec("tensorflow_datasets") is not None:
    from msml_jax.data import builders  # noqa: F401  (registers the TFDS builders)

    DATASETS = ("synthetic",) + builders.BUILDERS
else:
    DATASETS = ("synthetic",)


def load_splits(name, seed=0, options=None):
    """Returns the {"train", "query", "gallery"} splits of the built-in dataset `name` ("synthetic").

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


def _dataset_splits(name, data_config):
    """{"train", "query", "gallery"} of one dataset named in config.data, in its own protocol."""
    if name == "synthetic":
        options = data_config.get("synthetic")
        return load_splits(name, data_config.seed, options.to_dict() if options is not None else None)
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r} in config.data: valid names are {', '.join(DATASETS)}")
    data_dir = data_config.get("data_dir") or "~/tensorflow_datasets"
    return builders.load(
        name,
        data_dir,
        manual_dir=data_config.get("manual_dir") or None,
        skip_corrupt=bool(data_config.get("skip_corrupt", False)),
        trial=int(data_config.get("trial", 0)),
    )


def train_datasets(data_config):
    """The names of the datasets trained on: `config.data.train` if set, else (`config.data.name`,)."""
    names = data_config.get("train") or (data_config.name,)
    names = (names,) if isinstance(names, str) else tuple(names)
    if len(set(names)) != len(names):
        raise UserError(f"config.data.train={names} names a dataset twice: list each once")
    return names


def union(train_splits):
    """One training split from several, identities relabelled disjointly.

    Dataset i's identities become `offset_i + rank of the pid among that dataset's pids`,
    offset_i = number of identities of datasets 0..i-1, so pids are 0..total-1 and never
    collide across datasets. `dataset` int32 [N] says where each image came from; `source_pids`
    keeps the original pids. Images are encoded bytes as soon as one dataset has encoded
    images (raw uint8 images are PNG-encoded then; sizes may differ, the pipeline resizes).
    """
    if len(train_splits) == 1:
        return train_splits[0]
    encoded = any(np.asarray(s["images"]).dtype.kind in "SO" for s in train_splits)
    parts, offset = [], 0
    for i, split in enumerate(train_splits):
        identities, relabelled = np.unique(split["pids"], return_inverse=True)
        images = split["images"]
        if encoded and np.asarray(images).dtype.kind not in "SO":
            import tensorflow as tf

            images = np.array([tf.io.encode_png(im).numpy() for im in images], dtype=object)
        parts.append({
            "images": np.asarray(images, dtype=object) if encoded else images,
            "pids": (offset + relabelled).astype(np.int64),
            "camids": np.asarray(split["camids"]).astype(np.int64),
            "source_pids": np.asarray(split["pids"]).astype(np.int64),
            "dataset": np.full(len(relabelled), i, np.int32),
        })
        offset += len(identities)
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def load_datasets(data_config):
    """The training split and the evaluation sets of a run's `config.data`.

    Fields read: `name` (one dataset) or `train` (a tuple trained on together), `eval`
    (datasets evaluated; default: those trained on), `seed`, `synthetic`, and for TFDS
    datasets `data_dir`, `manual_dir`, `skip_corrupt`, `trial`.

    Returns:
      (train split, {dataset name: {"query": split, "gallery": split}}); the training split
      is the union of the training datasets with pids relabelled disjointly (`union`); each
      evaluation set keeps its own pids / camids and is ranked in its own protocol.
    """
    names = train_datasets(data_config)
    eval_names = data_config.get("eval") or names
    eval_names = (eval_names,) if isinstance(eval_names, str) else tuple(eval_names)
    splits = {name: _dataset_splits(name, data_config) for name in dict.fromkeys(names + eval_names)}
    train = union([splits[name]["train"] for name in names])
    return train, {name: {"query": splits[name]["query"], "gallery": splits[name]["gallery"]} for name in eval_names}
