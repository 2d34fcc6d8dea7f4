"""Shared test helpers for the builder tests: build from a manual dir, read splits back, check data_dir clean."""

import os

import numpy as np
import tensorflow_datasets as tfds


def build(builder_cls, manual_dir, data_dir, **kwargs):
    """Builds `builder_cls` from `manual_dir` into `data_dir`; returns the builder."""
    builder = builder_cls(data_dir=data_dir, **kwargs)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    return builder


def read_split(builder, split):
    """The examples of `split` as a list of dicts of numpy values (text decoded to str)."""
    out = []
    for ex in tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)):
        out.append({k: (v.decode() if isinstance(v, bytes) else v) for k, v in ex.items()})
    return out


def triples(examples):
    """Sorted (file_name, pid, camid) of the examples."""
    return sorted((ex["file_name"], int(ex["pid"]), int(ex["camid"])) for ex in examples)


def tracklet_records(examples):
    """Sorted (file_name, pid, camid, tracklet, frame) of a video dataset's examples."""
    return sorted((ex["file_name"], int(ex["pid"]), int(ex["camid"]), int(ex["tracklet"]), int(ex["frame"]))
                  for ex in examples)


def listing(data_dir):
    """Every path under data_dir (empty list when it holds nothing)."""
    if not os.path.exists(data_dir):
        return []
    return sorted(os.path.relpath(os.path.join(d, n), data_dir) for d, ds, fs in os.walk(data_dir) for n in ds + fs)


def decode(data):
    import tensorflow as tf

    return tf.io.decode_image(data, channels=3, expand_animations=False).numpy()


def truncate(path):
    """Cuts the file at `path` to half its length (a truncated download)."""
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])


__all__ = ["build", "read_split", "triples", "tracklet_records", "listing", "decode", "truncate", "np"]


def check_like_tfds(builder_cls, manual_dir, data_dir, sizes, groups=None, **kwargs):
    """The checks of tfds.testing.DatasetBuilderTestCase (which needs `dill`, not a dependency here).

    Registered under its name; builds; each split has `sizes[split]` examples whose values match the declared
    features; the splits within each of `groups` (default: all splits; one group per protocol) share no example; a builder reloaded from data_dir agrees.
    Returns the built builder.
    """
    import hashlib

    assert builder_cls.name in tfds.list_builders()
    builder = build(builder_cls, manual_dir, data_dir, **kwargs)
    assert builder.info.splits.keys() == set(sizes), (sorted(builder.info.splits.keys()), sorted(sizes))
    hashes = {}
    for split, size in sizes.items():
        examples = list(tfds.as_numpy(builder.as_dataset(split=split)))
        assert len(examples) == size, (split, len(examples), size)
        for ex in examples:
            assert set(ex) == set(builder.info.features), (set(ex), set(builder.info.features))
            assert ex["image"].dtype == np.uint8 and ex["image"].ndim == 3 and ex["image"].shape[-1] == 3
        hashes[split] = {hashlib.sha1(ex["image"].tobytes() + str(ex["file_name"]).encode()).hexdigest()
                         for ex in examples}
    for group in groups or [tuple(sizes)]:
        for a in group:
            for b in group:
                if a < b:
                    assert not hashes[a] & hashes[b], f"splits {a} and {b} overlap"
    config = kwargs.get("config")
    reloaded = tfds.builder(builder_cls.name + (f"/{config}" if config else ""), data_dir=data_dir)
    assert {s: reloaded.info.splits[s].num_examples for s in sizes} == sizes
    return builder


def build_release(builder_cls, root, expected, data_dir, archive=None, rows=triples):
    """(builder, {split: examples}) of `check_like_tfds` on the generated release at `root`, each split's `rows`
    checked to be `expected[split]`; with `archive` (a path), the release is zipped there first and its folder
    removed (the download as it is)."""
    import shutil

    from tests.builder_fakes import zip_folder

    if archive:
        zip_folder(root, archive)
        shutil.rmtree(root)
    sizes = {split: len(want) for split, want in expected.items()}
    builder = check_like_tfds(builder_cls, os.path.dirname(root), data_dir, sizes)
    splits = {split: read_split(builder, split) for split in expected}
    for split, want in expected.items():
        assert rows(splits[split]) == want, split
    return builder, splits


def values(splits, key):
    """{split: the set of its examples' int `key` values} (identities, cameras, tracklets)."""
    return {split: {int(ex[key]) for ex in examples} for split, examples in splits.items()}


def refused(builder_cls, manual_dir, data_dir, match):
    """Building from `manual_dir` raises the UserError matching `match` and leaves `data_dir` as it was."""
    import pytest

    from msml_jax.errors import UserError

    before = listing(data_dir)
    with pytest.raises(UserError, match=match):
        build(builder_cls, manual_dir, data_dir)
    assert listing(data_dir) == before


def refused_missing_and_incomplete(builder_cls, tmp_path, make, archive, part, match):
    """An empty manual dir is refused with instructions naming `archive`; a release from `make(manual dir)`
    (returning (root, ...)) without its `part` (a path under root) is refused with a message matching `match`.
    Returns the manual dir (holding that incomplete release) and the untouched data dir."""
    import shutil

    manual, data = tmp_path / "manual", str(tmp_path / "data")
    manual.mkdir()
    refused(builder_cls, str(manual), data, archive)
    root = make(str(manual))[0]
    shutil.rmtree(os.path.join(root, part))
    refused(builder_cls, str(manual), data, match)
    return manual, data


def refused_misnamed(builder_cls, manual_dir, data_dir, make, image, bad_name, match):
    """A fresh release from `make(manual_dir)` (returning (root, ...)) with a copy of its `image` (a path under
    root) named `bad_name` beside it is refused with a message matching `match`."""
    import shutil

    root = make(str(manual_dir))[0]
    source = os.path.join(root, image)
    shutil.copy(source, os.path.join(os.path.dirname(source), bad_name))
    refused(builder_cls, str(manual_dir), data_dir, match)
