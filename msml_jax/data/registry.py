"""The dataset registry: each dataset declares itself once, in its own module, with how it is evaluated.

    register_dataset(Dataset("market1501", load=..., protocols={"image": "image"}))

The TFDS builders (`msml_jax.data.builders`) register when their module is imported (`common.ReidBuilder` does it
for every builder class from its `PROTOCOLS` and `TRIALS`); the synthetic benchmark in `msml_jax.data.synthetic`.
A builder module is imported the first time its name is asked for, so listing and checking the names needs no
TensorFlow until a TFDS dataset is actually named. The config schema, the loader and the reproduction driver read
this registry; none of them names a dataset. Imports neither TensorFlow nor JAX.
"""

import dataclasses
import importlib
import importlib.util
import pkgutil
from typing import Callable, Mapping

_BUILDERS_PACKAGE = "msml_jax.data.builders"
_NOT_BUILDERS = ("common",)  # modules of the builders package that declare no dataset


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A dataset as the rest of the library sees it.

    load: fn(data_config, protocol) -> {"train", "query", "gallery"} splits (dicts of numpy arrays: `images`,
      `pids`, `camids`, extras) in `protocol`, one of `protocols` (a protocol may pick its own splits).
    protocols: {the dataset's protocol name: the evaluation protocol that ranks it
      (`msml_jax.evaluation.protocols.PROTOCOLS`)}; the first is the dataset's default.
    trials: random splits its protocol has (VIPeR, PRID2011: 10; `config.data.trial` picks one, the records name
      it, eval.py summarises several); 1: one fixed split.
    reads_files: whether it reads prepared files from `config.data.data_dir` (False: made in memory).
    options: {option: msml_jax.config.Field} of its own settings, read from `config.data.<name>.<option>` and
      checked with the rest of the config (the synthetic benchmark's sizes).
    """

    name: str
    load: Callable
    protocols: Mapping[str, str]
    trials: int = 1
    reads_files: bool = True
    options: Mapping[str, object] = dataclasses.field(default_factory=dict)

    @property
    def default_protocol(self):
        return next(iter(self.protocols))

    def protocol(self, requested=""):
        """The protocol this dataset is evaluated with: `requested` if it has it, else its default."""
        return requested if requested in self.protocols else self.default_protocol


DATASETS = {}


def register_dataset(dataset):
    """Declares `dataset` (a `Dataset`); returns it. A name registered twice is a mistake (ValueError)."""
    if dataset.name in DATASETS and DATASETS[dataset.name] != dataset:
        raise ValueError(f"dataset {dataset.name!r} is registered twice")
    if not dataset.protocols:
        raise ValueError(f"dataset {dataset.name!r} declares no protocol")
    DATASETS[dataset.name] = dataset
    return dataset


def builder_modules():
    """Names of the TFDS builder modules in this checkout (module name == dataset name), without importing them."""
    spec = importlib.util.find_spec(_BUILDERS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return []
    return [m.name for m in pkgutil.iter_modules(spec.submodule_search_locations)
            if m.name not in _NOT_BUILDERS and not m.name.startswith("_")]


def dataset_names():
    """Every dataset name: those registered, then the builder modules not imported yet."""
    return tuple(DATASETS) + tuple(n for n in builder_modules() if n not in DATASETS)


def find_dataset(name, import_builder=True):
    """The `Dataset` called `name`, importing its builder module when needed (and `import_builder`); None when
    there is none (or it is a builder module not imported yet and not `import_builder`)."""
    if import_builder and name not in DATASETS and name in builder_modules():
        importlib.import_module(f"{_BUILDERS_PACKAGE}.{name}")
    return DATASETS.get(name)


def get_dataset(name):
    """The `Dataset` called `name`; ValueError naming the valid names otherwise."""
    dataset = find_dataset(name)
    if dataset is None:
        raise ValueError(f"unknown dataset {name!r}: valid names are {', '.join(dataset_names())}")
    return dataset
