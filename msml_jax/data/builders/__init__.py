"""The re-ID TFDS builders, registered with TFDS when this package is imported.

`import msml_jax.data` imports this package (when tensorflow_datasets is installed), so
`tfds.builder("viper", data_dir=...)` works after it. Use `common.prepare` to build one
from its manual directory leaving `data_dir` clean on failure.
"""

import functools
import importlib
import importlib.util
import os

from msml_jax.data import BUILDERS  # Module name == TFDS name. A module not in this checkout is left out.

for _name in BUILDERS:
    if importlib.util.find_spec(f"{__name__}.{_name}") is not None:
        importlib.import_module(f"{__name__}.{_name}")


def read_split(builder, split):
    """A prepared split as a dict of numpy arrays: `images` encoded bytes object [N], `pids`, `camids`, ...

    Images stay encoded (the tf.data pipeline decodes them per batch); text features become str.
    """
    import numpy as np
    import tensorflow_datasets as tfds

    ds = builder.as_dataset(split=split, batch_size=-1, shuffle_files=False,
                            decoders={"image": tfds.decode.SkipDecoding()})
    arrays = tfds.as_numpy(ds)
    out = {}
    for key, value in arrays.items():
        value = np.asarray(value)
        if key == "image":
            out["images"] = value.astype(object)
        elif key in ("pid", "camid"):
            out[key + "s"] = value.astype(np.int64)
        elif value.dtype.kind in "SO":
            out[key] = np.array([v.decode() for v in value], dtype=object)
        else:
            out[key] = value
    return out


def load(name, data_dir, manual_dir=None, skip_corrupt=False, trial=0, protocol=None):
    """{"train", "query", "gallery"} of TFDS dataset `name` in its own protocol, built first if needed.

    Args:
      data_dir: where TFDS keeps prepared datasets.
      manual_dir: where the official release lies (None: TFDS's `<data_dir>/downloads/manual`).
      skip_corrupt: skip unreadable images when building instead of failing.
      trial: which of the protocol's random splits (VIPeR, PRID2011: 0..9); ignored by others.
      protocol: the dataset's protocol (`msml_jax.data.PROTOCOLS`; None: its default), for datasets
        whose protocols use different splits (CUHK03: new or classic).
    """
    import tensorflow_datasets as tfds

    from msml_jax.errors import UserError

    if name not in BUILDERS or importlib.util.find_spec(f"{__name__}.{name}") is None:
        raise UserError(f"unknown dataset {name!r} in config.data: valid names are synthetic, {', '.join(BUILDERS)}")
    data_dir = os.path.abspath(os.path.expanduser(data_dir))
    builder = tfds.builder(name, data_dir=data_dir, skip_corrupt=skip_corrupt)
    if not builder.is_prepared():
        # ReidBuilder.download_and_prepare removes what a failed build created in data_dir.
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir or None))
    module = importlib.import_module(f"{__name__}.{name}")
    read = functools.partial(read_split, builder)
    if hasattr(module, "protocol_splits"):  # datasets whose protocol picks or draws its splits
        return module.protocol_splits(read, trial=trial, protocol=protocol)
    return {split: read(split) for split in ("train", "query", "gallery")}
