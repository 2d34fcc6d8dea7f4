"""The re-ID TFDS builders, one module per dataset (module name == TFDS name == dataset name).

`import msml_jax.data.builders` imports every builder module, which registers each builder with TFDS (so
`tfds.builder("viper", data_dir=...)` works after it) and as a dataset of this library (`common.ReidBuilder`
declares it from the class's PROTOCOLS and TRIALS). Naming a dataset in a config imports its module the same way.
Use `common.prepare` to build one from its manual directory leaving `data_dir` clean on failure.
"""

import functools
import importlib
import importlib.util
import os

from msml_jax.data.registry import builder_modules, find_dataset

for _name in builder_modules():
    importlib.import_module(f"{__name__}.{_name}")


def random_access(builder):
    """Whether `builder`'s prepared files can be read by index (ArrayRecord) rather than only streamed (TFRecord)."""
    import tensorflow_datasets as tfds

    formats = tfds.core.file_adapters.FileFormat.with_random_access()
    return builder.info.file_format in formats and importlib.util.find_spec("array_record") is not None


def _convert(key, value, out):
    import numpy as np

    value = np.asarray(value)
    if key in ("pid", "camid"):
        out[key + "s"] = value.astype(np.int64)
    elif value.dtype.kind in "SO":
        out[key] = np.array([v.decode() for v in value], dtype=object)
    else:
        out[key] = value


# Serialized examples (images included) read at once when collecting a split's small features: the memory
# this takes is bounded at any dataset size (4096 MARS frames of about 10 KB: 40 MB).
_METADATA_BATCH = 4096


def read_split(builder, split, lazy=None):
    """A prepared split as a dict: `images` (encoded bytes [N]), `pids`, `camids` int64 [N], the extras.

    Images stay encoded (the tf.data pipeline decodes them per batch); text features become str.
    Data prepared as ArrayRecord (`random_access`): `images` is a `source.RecordImages` reading each image
    from the split's files when asked, so memory holds only the small features (lazy=False: read them all
    into a numpy object array instead). Data prepared as TFRecord: the whole split's bytes are read into a
    numpy object array (lazy=True refuses).
    """
    import numpy as np
    import tensorflow_datasets as tfds

    from msml_jax.data import source

    skip = {"image": tfds.decode.SkipDecoding()}
    if not random_access(builder):
        if lazy:
            raise ValueError(f"{builder.name} in {builder.data_dir} is not prepared as ArrayRecord: it is read whole")
        arrays = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1, shuffle_files=False, decoders=skip))
        out = {}
        for key, value in arrays.items():
            if key == "image":
                out["images"] = np.asarray(value).astype(object)
            else:
                _convert(key, value, out)
        return out
    # The small features, parsed from the serialized examples a chunk at a time (TFDS has no as_dataset for
    # ArrayRecord files): memory holds them and one chunk's records, never all the images.
    import tensorflow as tf

    serialized = builder.as_data_source(split, deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
    spec = {k: tf.io.FixedLenFeature(v.shape, v.tf_dtype)
            for k, v in builder.info.features.get_serialized_info().items() if k != "image"}
    n, chunks = len(serialized), []
    for start in range(0, n, _METADATA_BATCH):
        chunks.append(tf.io.parse_example(serialized.__getitems__(list(range(start, min(start + _METADATA_BATCH, n)))),
                                          spec))
    out = {"images": source.RecordImages(builder.as_data_source(split, decoders=skip))}
    for key in spec:
        values = [c[key].numpy() for c in chunks]
        _convert(key, np.concatenate(values) if values else np.zeros((0, *spec[key].shape), np.int64), out)
    if len(out["images"]) != len(out["pids"]):
        raise ValueError(f"{builder.name} {split}: {len(out['images'])} images but {len(out['pids'])} examples")
    if lazy is False:
        out["images"] = np.array(list(out["images"]), dtype=object)
    return out


def _missing_folders(path):
    """`path` and its ancestors that do not exist yet, deepest first."""
    missing = []
    while path and not os.path.exists(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return missing


def load(name, data_dir, manual_dir=None, skip_corrupt=False, trial=0, protocol=None):
    """{"train", "query", "gallery"} of TFDS dataset `name` in its own protocol, built first if needed.

    Args:
      data_dir: where TFDS keeps prepared datasets.
      manual_dir: where the official release lies (None: TFDS's `<data_dir>/downloads/manual`).
      skip_corrupt: skip unreadable images when building instead of failing.
      trial: which of the protocol's random splits (VIPeR, PRID2011: 0..9); ignored by others.
      protocol: the dataset's protocol (`Dataset.protocols`; None: its default), for datasets
        whose protocols use different splits (CUHK03: new or classic).
    """
    import tensorflow_datasets as tfds
    from absl import logging

    from msml_jax.data.builders import common
    from msml_jax.errors import UserError

    dataset = find_dataset(name)
    if dataset is None or not dataset.reads_files:
        raise UserError(f"{name!r} is not a TFDS dataset of msml_jax.data.builders: valid names are "
                        f"{', '.join(builder_modules())}")
    data_dir = os.path.abspath(os.path.expanduser(data_dir))
    created = _missing_folders(data_dir)
    try:
        with common.quiet_tfds():
            builder = tfds.builder(name, data_dir=data_dir, skip_corrupt=skip_corrupt)
            if not builder.is_prepared():
                # ArrayRecord files so that images are read by index (read_split); ReidBuilder.download_and_prepare
                # removes what a failed build created inside data_dir.
                builder = tfds.builder(name, data_dir=data_dir, skip_corrupt=skip_corrupt,
                                       file_format=common.default_file_format())
                builder.download_and_prepare(
                    download_config=tfds.download.DownloadConfig(manual_dir=manual_dir or None))
    except BaseException:
        for folder in created:  # data_dir and the parents TFDS made for it, if the failed build left them empty
            if os.path.isdir(folder) and not os.listdir(folder):
                os.rmdir(folder)
        raise
    if builder.is_prepared() and not random_access(builder):
        logging.warning(
            "%s in %s was prepared as %s files, which are only read whole: its images are held in memory. To read "
            "them by index instead, delete %s and run again (it is prepared as ArrayRecord then)",
            name, data_dir, builder.info.file_format.value, builder.data_dir)
    module = importlib.import_module(f"{__name__}.{name}")
    read = functools.partial(read_split, builder)
    if hasattr(module, "protocol_splits"):  # datasets whose protocol picks or draws its splits
        return module.protocol_splits(read, trial=trial, protocol=protocol)
    return {split: read(split) for split in ("train", "query", "gallery")}
