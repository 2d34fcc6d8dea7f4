"""Data: datasets as splits of numpy arrays, PK sampling, and tf.data pipelines.

A split is a dict of numpy arrays: `images` (uint8 [N, H, W, 3], or encoded JPEG/PNG
bytes object [N], or `source.EncodedImages` read by index from a prepared dataset's files),
`pids` int [N], `camids` int [N] (extras allowed).

The re-ID TFDS builders (`msml_jax.data.builders`: market1501, cuhk03, mars, cuhk_sysu,
viper, prid2011, folder) are registered with TFDS when that package is first imported,
which happens when a TFDS dataset is first loaded: importing this package (or
`msml_jax.data.sampling`) needs neither TensorFlow nor TFDS.

Each dataset declares how it is evaluated (`PROTOCOLS`): its protocols by name, the first
being the default, each with the ranking it uses (`msml_jax.evaluation.protocols`).
"""

import dataclasses

import numpy as np

from msml_jax.errors import UserError

BUILDERS = ("market1501", "cuhk03", "mars", "cuhk_sysu", "viper", "prid2011", "folder")
DATASETS = ("synthetic",) + BUILDERS

# dataset -> {protocol name: ranking}; the first protocol is the dataset's default.
#   image: each query image against the gallery images (Market-1501 rules: same pid and camera is junk);
#   tracklet: frame features pooled per tracklet, then ranked as images (MARS);
#   single_gallery_shot: each query against one random gallery image per identity, 10 draws averaged (CUHK03
#     classic); ten_split: image ranking on one of the 10 random splits (config.data.trial), summarised over
#     the ten by eval.py.
PROTOCOLS = {
    "synthetic": {"image": "image"},
    "market1501": {"image": "image"},
    "cuhk_sysu": {"image": "image"},
    "folder": {"image": "image"},
    "mars": {"tracklet": "tracklet"},
    "cuhk03": {"new": "image", "classic": "single_gallery_shot"},
    "viper": {"ten_split": "image"},
    "prid2011": {"ten_split": "image"},
}


def protocol_of(name, requested=""):
    """The protocol dataset `name` is evaluated with: `requested` if it has it, else its default.

    `requested` (config.data.protocol) applies to each dataset that has a protocol of that name;
    `check_protocol` refuses a name no evaluated dataset has.
    """
    protocols = PROTOCOLS[name]
    return requested if requested in protocols else next(iter(protocols))


def check_protocol(requested, names):
    """UserError unless `requested` is "" or a protocol of at least one of the datasets `names`."""
    if not requested or any(requested in PROTOCOLS.get(n, {}) for n in names):
        return
    offered = "; ".join(f"{n}: {', '.join(PROTOCOLS[n])}" for n in names if n in PROTOCOLS)
    raise UserError(
        f"config.data.protocol={requested!r} is not a protocol of the evaluated dataset(s) {', '.join(names)} "
        f"(they offer {offered}): pick one of those, or '' for each dataset's default"
    )


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
    from msml_jax.data import builders  # TFDS and TensorFlow: only when a TFDS dataset is loaded

    data_dir = data_config.get("data_dir") or "~/tensorflow_datasets"
    return builders.load(
        name,
        data_dir,
        manual_dir=data_config.get("manual_dir") or None,
        skip_corrupt=bool(data_config.get("skip_corrupt", False)),
        trial=int(data_config.get("trial", 0)),
        protocol=protocol_of(name, data_config.get("protocol", "")),
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
    `protocol` (its name), `ranking` (how `msml_jax.evaluation` ranks it, `PROTOCOLS`) and
    `trial` (the ten-split datasets' split, else None). `splits`: already loaded
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
        protocol = protocol_of(name, requested)
        eval_sets[name] = {
            "query": splits[name]["query"],
            "gallery": splits[name]["gallery"],
            "protocol": protocol,
            "ranking": PROTOCOLS[name][protocol],
            "trial": int(data_config.get("trial", 0)) if protocol == "ten_split" else None,
        }
    return eval_sets


def eval_datasets(data_config):
    """The names of the datasets evaluated: `config.data.eval` if set, else those trained on."""
    names = data_config.get("eval") or train_datasets(data_config)
    return (names,) if isinstance(names, str) else tuple(names)
