"""Data: datasets as splits of numpy arrays, PK sampling, and tf.data pipelines.

A split is a dict of numpy arrays: `images` (uint8 [N, H, W, 3], or encoded JPEG/PNG
bytes object [N], or `source.EncodedImages` read by index from a prepared dataset's files),
`pids` int [N], `camids` int [N] (extras allowed).

Each dataset declares itself in its own module (`registry.register_dataset`): how it loads, its
protocols by name (the first being the default), each with the evaluation protocol that ranks it,
and how many random splits it has. The TFDS builders (`msml_jax.data.builders`, one module per
dataset) are imported, and registered with TFDS, the first time one is named; `import
msml_jax.data.builders` registers them all (`tfds.builder("viper")` works after it). Importing
this package (or `msml_jax.data.sampling`) needs neither TensorFlow nor TFDS.
"""

import os

import numpy as np

# TensorFlow, which only the builders and the pipeline import, below this package: its C++ start-up chatter.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from msml_jax.data import synthetic  # noqa: F401  (registers the synthetic benchmark)
from msml_jax.data.registry import DATASETS, Dataset, dataset_names, find_dataset, get_dataset, register_dataset  # noqa: F401
from msml_jax.errors import UserError


def check_dataset_names(names, field):
    """UserError naming `field` (e.g. "config.data.train") and the valid names unless each of `names` is a dataset.

    Reads the names only: no builder module (nor TensorFlow) is imported."""
    valid = dataset_names()
    for name in names:
        if name not in valid:
            raise UserError(f"unknown dataset {name!r} in {field}: valid names are {', '.join(valid)}")


def _dataset(name, field="config.data"):
    """The registered dataset `name`, or a UserError naming `field` and the valid names."""
    check_dataset_names([name], field)
    return find_dataset(name)


def check_protocol(requested, names):
    """UserError unless `requested` is "" or a protocol of at least one of the datasets `names`."""
    if not requested:  # nothing to check: no builder module (TensorFlow) imported
        return
    datasets = [_dataset(n) for n in names]
    if any(requested in d.protocols for d in datasets):
        return
    offered = "; ".join(f"{d.name}: {', '.join(d.protocols)}" for d in datasets)
    raise UserError(
        f"config.data.protocol={requested!r} is not a protocol of the evaluated dataset(s) {', '.join(names)} "
        f"(they offer {offered}): pick one of those, or '' for each dataset's default"
    )


def _dataset_splits(name, data_config):
    """{"train", "query", "gallery"} of one dataset named in config.data, in its own protocol."""
    dataset = _dataset(name)
    return dataset.load(data_config, dataset.protocol(data_config.get("protocol", "")))


def train_datasets(data_config):
    """The names of the datasets trained on: `config.data.train` if set, else (`config.data.name`,)."""
    names = data_config.get("train") or (data_config.get("name"),)
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
    images (raw uint8 images are PNG-encoded then; sizes may differ, the pipeline resizes);
    lazily read images stay where they are (`source.concatenate` maps a global index to a
    dataset and its own index), so the union holds no dataset's bytes.
    """
    from msml_jax.data import source

    if len(train_splits) == 1:
        return train_splits[0]
    encoded = any(source.is_encoded(s["images"]) for s in train_splits)
    parts, offset = [], 0
    for i, split in enumerate(train_splits):
        identities, relabelled = np.unique(split["pids"], return_inverse=True)
        images = split["images"]
        if encoded and not source.is_encoded(images):
            import tensorflow as tf

            images = np.array([tf.io.encode_png(im).numpy() for im in images], dtype=object)
        parts.append({
            "images": images,
            "pids": (offset + relabelled).astype(np.int64),
            "camids": np.asarray(split["camids"]).astype(np.int64),
            "source_pids": np.asarray(split["pids"]).astype(np.int64),
            "dataset": np.full(len(relabelled), i, np.int32),
        })
        offset += len(identities)
    images = [p["images"] for p in parts]
    out = {"images": source.concatenate(images) if encoded else np.concatenate(images)}
    out.update({k: np.concatenate([p[k] for p in parts]) for k in parts[0] if k != "images"})
    return out


def load_datasets(data_config):
    """The training split and the evaluation sets of a run's `config.data`.

    Fields read: `name` (one dataset) or `train` (a tuple trained on together), `eval`
    (datasets evaluated; default: those trained on), `protocol` ("" = each dataset's default),
    `seed`, `synthetic`, and for TFDS datasets `data_dir`, `manual_dir`, `skip_corrupt`, `trial`.
    The protocol also picks a dataset's training split where protocols differ (CUHK03 classic
    trains on its 1,367 identities, new on 767).

    Returns:
      (train split, eval sets): the training split is the union of the training datasets with
      pids relabelled disjointly (`union`); the eval sets are `load_eval_sets`'.
    """
    names = train_datasets(data_config)
    eval_names = eval_datasets(data_config)
    check_protocol(data_config.get("protocol", ""), eval_names)
    splits = {name: _dataset_splits(name, data_config) for name in dict.fromkeys(names + eval_names)}
    train = union([splits[name]["train"] for name in names])
    return train, load_eval_sets(data_config, splits)


def load_eval_sets(data_config, splits=None):
    """{dataset: eval set} of the datasets `config.data` evaluates, each in its protocol.

    An eval set is a dict with `query`, `gallery` (splits keeping their own pids / camids),
    `protocol` (its name), `ranking` (the evaluation protocol that ranks it, `Dataset.protocols`) and
    `trial` (the split of a dataset with several random ones, else None). `splits`: already loaded
    {dataset: {"train", "query", "gallery"}} to reuse.
    """
    eval_names = eval_datasets(data_config)
    requested = data_config.get("protocol", "")
    check_protocol(requested, eval_names)
    splits = dict(splits or {})
    eval_sets = {}
    for name in eval_names:
        if name not in splits:
            splits[name] = _dataset_splits(name, data_config)
        dataset = _dataset(name)
        protocol = dataset.protocol(requested)
        eval_sets[name] = {
            "query": splits[name]["query"],
            "gallery": splits[name]["gallery"],
            "protocol": protocol,
            "ranking": dataset.protocols[protocol],
            "trial": int(data_config.get("trial", 0)) if dataset.trials > 1 else None,
        }
    return eval_sets


def eval_datasets(data_config):
    """The names of the datasets evaluated: `config.data.eval` if set, else those trained on."""
    names = data_config.get("eval") or train_datasets(data_config)
    return (names,) if isinstance(names, str) else tuple(names)
