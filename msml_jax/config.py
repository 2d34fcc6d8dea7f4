"""The config schema, at the bottom of the library: the one place that knows what a valid config is: every field
a run reads, checked before anything is loaded, compiled or written.

`FIELDS` declares each field (type, range, default); `validate_config` checks the fields one by one, then their
combinations, then looks for fields nobody reads (a typo such as `lerning_rate` is named with the closest valid
field). `check_paths` looks at the directories a run will write; `check_config_flags` at the --config.FIELD
overrides of a command line, before ml_collections turns an unknown one into a traceback. Every mistake is a
UserError naming the field, the value and the fix. Imports neither JAX nor TensorFlow: a mistake costs a second.
"""

import difflib
import math
import numbers
import os

from msml_jax.errors import UserError

TRIALS = 10  # VIPeR / PRID2011 protocol splits
MAX_IMAGE_SIDE = 4096
MAX_STEPS = 10**9
MAX_SIZE = 1 << 20  # batch, identities, embedding: beyond this, surely a typo


# ---- Field kinds: each returns None when `value` is valid, else what the field must be. ----


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


class Int:
    def __init__(self, low=None, high=None, optional=False):
        self.low, self.high, self.optional = low, high, optional

    def problem(self, value):
        if value is None and self.optional:
            return None
        if _is_int(value) and (self.low is None or value >= self.low) and (self.high is None or value <= self.high):
            return None
        if self.low in (0, 1) and (self.high is None or self.high >= MAX_SIZE):
            want = f"{'a positive' if self.low == 1 else 'a non-negative'} integer"
            want += f" (at most {self.high})" if self.high is not None else ""
        elif self.low is not None and self.high is not None:
            want = f"an integer in [{self.low}, {self.high}]"
        else:
            want = "an integer"
        return want + (" or None" if self.optional else "")


class Float:
    def __init__(self, low=None, high=None, low_open=False, high_open=False):
        self.low, self.high, self.low_open, self.high_open = low, high, low_open, high_open

    def problem(self, value):
        if _is_real(value) and math.isfinite(value):
            above = self.low is None or (value > self.low if self.low_open else value >= self.low)
            below = self.high is None or (value < self.high if self.high_open else value <= self.high)
            if above and below:
                return None
        if self.low is None and self.high is None:
            return "a finite number"
        if self.high is None:
            return f"a finite number {'>' if self.low_open else '>='} {self.low}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"a number in {left}{self.low}, {self.high}{right}"


class Bool:
    def problem(self, value):
        return None if isinstance(value, bool) else "True or False"


class Str:
    def problem(self, value):
        return None if isinstance(value, str) else "a string"


class Choice:
    """One of `values`, or of what `registry()` returns when it is given (a registry's names, read when checked)."""

    def __init__(self, *values, registry=None):
        self._values, self.registry = values, registry

    @property
    def values(self):
        return tuple(self.registry()) + self._values if self.registry else self._values

    def problem(self, value):
        if any(type(value) is type(choice) and value == choice for choice in self.values):
            return None
        return f"one of {', '.join(map(repr, self.values))}"


def _dataset_names():
    from msml_jax.data import dataset_names

    return dataset_names()


def _smallest_backbone():
    """The registered backbone of smallest stride (the small CPU ResNet): the example of config.model.name."""
    return min(sorted(_backbones().values(), key=lambda b: b.name), key=lambda b: b.stride).name


def _backbones():
    from msml_jax import models

    return models.BACKBONES


def _eval_embeddings():
    from msml_jax.models import heads

    return heads.EVAL_EMBEDDINGS


def _preprocessings():
    from msml_jax import models

    return models.PREPROCESSING


def _ranking_metrics():
    from msml_jax.distances import RANKING_METRICS

    return RANKING_METRICS


def _losses():
    """msml_jax.losses' registry, imported when first needed: importing this module stays free of JAX."""
    from msml_jax.losses import LOSSES

    return LOSSES


class Pair:
    """Two values, each valid for `item` (and first <= second when `ordered`)."""

    def __init__(self, item, ordered=False, what="a pair"):
        self.item, self.ordered, self.what = item, ordered, what

    def problem(self, value):
        want = f"{self.what} of two values, each {self.item.problem(float('nan'))}"
        if not isinstance(value, (tuple, list)) or len(value) != 2 or any(self.item.problem(v) for v in value):
            return want
        if self.ordered and value[0] > value[1]:
            return f"{self.what} (low, high) with low <= high"
        return None


class Names:
    """Dataset names: a tuple of strings (or one string); which names exist is a combination check."""

    def problem(self, value):
        names = (value,) if isinstance(value, str) else value
        if not isinstance(names, (tuple, list)) or not all(isinstance(n, str) for n in names):
            return f"a tuple of dataset names among {', '.join(_dataset_names())}"
        return None


class Boundaries:
    def problem(self, value):
        if isinstance(value, (tuple, list)) and all(_is_int(b) and 0 < b <= MAX_STEPS for b in value):
            if all(a < b for a, b in zip(value, value[1:])):
                return None
        return "a tuple of increasing positive step numbers, e.g. (500, 650)"


class Field:
    """A field's kind, its default (a callable: computed when first read) and whether a config must set it."""

    def __init__(self, kind, default, required=False):
        self.kind, self._default, self.required = kind, default, required

    @property
    def default(self):
        return self._default() if callable(self._default) else self._default


def _paper_loss():
    from msml_jax.losses import PAPER_LOSS

    return PAPER_LOSS


PROB = Float(0.0, 1.0)
POSITIVE = Int(1, MAX_SIZE)
STEPS = Int(1, MAX_STEPS)
IMAGE_SIDE = Int(1, MAX_IMAGE_SIDE)

# Every field a run reads, dotted as on the command line; `default` is what an absent field means (and, for the
# required ones, the reference value of configs/synthetic.py, shown in fixes: the first registered dataset, the
# smallest backbone, the paper's loss). A dataset's own options (`Dataset.options`, e.g. the synthetic benchmark's
# sizes) are fields too, `data.<dataset>.<option>`: `all_fields()` has them all.
FIELDS = {
    "seed": Field(Int(0, 2**32 - 1), 0, True),
    "dtype": Field(Choice("float32", "bfloat16"), "float32", True),
    "data.name": Field(Choice(registry=_dataset_names), lambda: _dataset_names()[0], True),
    "data.seed": Field(Int(0, 2**32 - 1), 0, True),
    "data.image_size": Field(Pair(IMAGE_SIDE, what="(height, width)"), (64, 32), True),
    "data.flip": Field(Bool(), True),
    "data.shift": Field(Float(0.0, 1.0, high_open=True), 0.0),
    "data.zoom": Field(Float(0.0, 1.0, high_open=True), 0.0),
    "data.blur_prob": Field(PROB, 0.0),
    "data.blur_sigma": Field(Float(0.0, 100.0, low_open=True), 1.0),
    "data.erase_prob": Field(PROB, 0.0),
    "data.erase_area": Field(Pair(Float(0.0, 1.0, low_open=True), ordered=True, what="a range"), (0.02, 0.4)),
    "data.erase_aspect": Field(Float(0.0, 1.0, low_open=True), 0.3),
    "data.augment_on_device": Field(Bool(), False),
    "data.train": Field(Names(), ()),
    "data.eval": Field(Names(), ()),
    "data.data_dir": Field(Str(), "~/tensorflow_datasets"),
    "data.manual_dir": Field(Str(), ""),
    "data.skip_corrupt": Field(Bool(), False),
    "data.trial": Field(Int(0, TRIALS - 1), 0),
    "data.protocol": Field(Str(), ""),
    "data.num_threads": Field(Int(1, 1024, optional=True), None),
    "model.name": Field(Choice(registry=lambda: sorted(_backbones())), lambda: _smallest_backbone(), True),
    "model.embed_dim": Field(Int(1, 65536), 128, True),
    "model.last_stride": Field(Choice(1, 2), 2, True),
    "model.pretrained": Field(Str(), ""),
    "model.keras_style": Field(Bool(), False),
    "model.preprocessing": Field(Choice("auto", "", registry=_preprocessings), "auto"),
    "model.bnneck": Field(Bool(), False),
    "model.dropout": Field(Float(0.0, 1.0, high_open=True), 0.0),
    "model.eval_embedding": Field(Choice(registry=_eval_embeddings), "embedding"),
    "loss": Field(Choice(registry=lambda: tuple(_losses())), _paper_loss, True),
    "margin": Field(Float(0.0, 100.0), 0.3, True),
    "beta": Field(Float(0.0, 100.0), 0.2, True),
    "soft_margin": Field(Bool(), False, True),
    "normalize": Field(Bool(), True, True),
    "cls_weight": Field(Float(0.0, 1e6), 1.0, True),
    "label_smoothing": Field(Float(0.0, 1.0, high_open=True), 0.0, True),
    "P": Field(POSITIVE, 16, True),
    "K": Field(POSITIVE, 4, True),
    "batch_size": Field(POSITIVE, 64, True),
    "learning_rate": Field(Float(0.0, 10.0, low_open=True), 3e-3, True),
    "lr_boundaries": Field(Boundaries(), (500, 650), True),
    "lr_decay": Field(Float(0.0, 1.0, low_open=True), 0.1, True),
    "warmup_steps": Field(Int(0, MAX_STEPS), 0),
    "num_train_steps": Field(Int(0, MAX_STEPS), 700, True),  # 0: from num_train_epochs (checked below)
    "log_every_steps": Field(STEPS, 20, True),
    "checkpoint_every_steps": Field(Int(0, MAX_STEPS), 200, True),  # 0: from checkpoint_every_epochs
    "max_checkpoints": Field(Int(1, 1000), 3, True),
    "eval_every_steps": Field(Int(0, MAX_STEPS), 0),
    "allow_config_change": Field(Bool(), False),
    "eval_batch_size": Field(POSITIVE, 128, True),
    # A schedule in epochs (training/schedule.py): each sets its step field, when that is 0 / empty, from the
    # training split loaded.
    "num_train_epochs": Field(Int(0, MAX_STEPS), 0),
    "lr_boundary_epochs": Field(Boundaries(), ()),
    "checkpoint_every_epochs": Field(Int(0, MAX_STEPS), 0),
    "eval_every_epochs": Field(Int(0, MAX_STEPS), 0),
    "eval.flip": Field(Bool(), False),
    "eval.metric": Field(Choice(registry=_ranking_metrics), lambda: _ranking_metrics()[0]),
    "eval.pooling": Field(Choice("avg", "max"), "avg"),
    "eval.rerank": Field(Bool(), False),
    "eval.k1": Field(Int(1, 10000), 20),
    "eval.k2": Field(Int(1, 10000), 6),
    "eval.lambda_value": Field(PROB, 0.3),
}
GROUPS = frozenset({"data", "model", "eval"})


def _dataset_options():
    """{data.<dataset>.<option>: Field} of the registered datasets' own options."""
    from msml_jax.data import DATASETS

    return {f"data.{d.name}.{option}": field for d in DATASETS.values() for option, field in d.options.items()}


def all_fields():
    """FIELDS and the registered datasets' options: every field a config may set."""
    return {**FIELDS, **_dataset_options()}


def _groups():
    return GROUPS | {name.rsplit(".", 1)[0] for name in _dataset_options()}


# ---- Reading a config ----


def _as_dict(config):
    """A plain nested dict of a ConfigDict (or dict), FieldReferences resolved."""
    if hasattr(config, "to_dict"):
        config = config.to_dict()
    return {k: _as_dict(v) if isinstance(v, dict) or hasattr(v, "to_dict") else v for k, v in config.items()}


def _walk(tree, prefix=""):
    """(dotted name, value) of every leaf of a nested dict; a group given as a plain value is a leaf too."""
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and name in _groups():
            yield from _walk(value, name + ".")
        else:
            yield name, value


def _get(tree, name):
    node = tree
    for part in name.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


_MISSING = object()


def closest_fields(name, candidates=None):
    """Up to 3 valid dotted field names closest to `name` (difflib), best first."""
    candidates = sorted(all_fields()) if candidates is None else sorted(candidates)
    matches = difflib.get_close_matches(name, candidates, n=3, cutoff=0.6)
    if not matches:  # a typo in the last part only: compare the leaf names
        leaf = name.rsplit(".", 1)[-1]
        leaves = {c.rsplit(".", 1)[-1]: c for c in candidates}
        matches = [leaves[m] for m in difflib.get_close_matches(leaf, list(leaves), n=3, cutoff=0.6)]
    return matches


def _unknown(name, candidates=None, where="the config"):
    matches = closest_fields(name, candidates)
    if matches:
        return UserError(f"unknown field config.{name} in {where}: did you mean config.{matches[0]}?")
    group = name.rsplit(".", 1)[0] if "." in name else ""
    siblings = sorted(f.rsplit(".", 1)[-1] for f in (all_fields() if candidates is None else candidates)
                      if (f.rsplit(".", 1)[0] if "." in f else "") == group)
    return UserError(f"unknown field config.{name} in {where}: remove it; the fields of "
                     f"config{'.' + group if group else ''} are {', '.join(siblings)}")


def _fail(name, value, want):
    default = all_fields()[name].default
    if isinstance(default, tuple):
        example = f'--config.{name}="{default}"'
    elif isinstance(default, str):
        example = f'--config.{name}="{default}"' if default == "" else f"--config.{name}={default}"
    else:
        example = f"--config.{name}={default!r}"
    return UserError(f"config.{name} must be {want}, got {value!r}: set it, e.g. {example}")


# ---- Validation ----


def validate_config(config):
    """Raises UserError naming the field, the value and the fix for the first mistake found.

    Args:
      config: a run's ConfigDict (or the nested dict of one). Absent optional fields take their defaults.
    Checks, in order: unknown fields, each field's type and range, then combinations (batch = P x K, the soft
    margin only with msml / trihard, the image size against the backbone's stride, the protocol against the
    datasets, k2 <= k1, ...). Reads nothing from disk.
    """
    fields = all_fields()
    tree = _as_dict(config)
    for name, _ in _walk(tree):
        if name not in fields:
            if name in _groups():
                raise UserError(f"config.{name} must be a group of fields (a ConfigDict), got {_get(tree, name)!r}")
            raise _unknown(name)
    values = {}
    for name, field in fields.items():
        value = _get(tree, name)
        if value is _MISSING:
            if field.required:
                raise UserError(f"the config lacks config.{name}: add it (e.g. config.{name} = {field.default!r}, "
                                f"as in configs/synthetic.py)")
            value = field.default
        if name == "loss" and field.kind.problem(value):
            raise UserError(f"unknown loss {value!r} in config.loss: valid names are {', '.join(_losses())}")
        if name == "model.name" and field.kind.problem(value):
            raise UserError(f"unknown model {value!r} in config.model.name: valid names are "
                            f"{', '.join(sorted(_backbones()))}")
        if name == "data.name" and field.kind.problem(value) and isinstance(value, str):
            from msml_jax.data import check_dataset_names

            check_dataset_names([value], "config.data.name")
        want = field.kind.problem(value)
        if want:
            raise _fail(name, value, want)
        values[name] = value
    _check_combinations(values)


def _check_combinations(v):
    loss, P, K, batch = v["loss"], v["P"], v["K"], v["batch_size"]
    spec = _losses()[loss]
    if spec.needs_pairs and (P < 2 or K < 2):
        raise UserError(
            f"config.loss={loss!r} needs positive and negative pairs in every batch: "
            f"set config.P >= 2 and config.K >= 2 (got P={P}, K={K})"
        )
    if P * K != batch:
        raise UserError(
            f"config.batch_size={batch} must equal config.P * config.K = {P} * {K} = {P * K}: change "
            f"config.batch_size, config.P or config.K"
        )
    if v["soft_margin"] and not spec.soft_margin:
        soft = [name for name, other in _losses().items() if other.soft_margin]
        raise UserError(
            f"config.soft_margin=True but config.loss={loss!r} has no soft-margin form (only "
            f"{' and '.join(soft)} have one): set --config.soft_margin=False"
            + (f" or --config.loss={soft[0]}" if soft else "")
        )
    name, last_stride = v["model.name"], v["model.last_stride"]
    backbone = _backbones()[name]
    stride = backbone.stride // (2 if last_stride == 1 else 1)
    height, width = v["data.image_size"]
    if min(height, width) < stride:
        raise UserError(
            f"config.data.image_size={(height, width)} is smaller than the total stride {stride} of "
            f"config.model.name={name!r} (last_stride={last_stride}): use at least ({stride}, {stride}), "
            f"e.g. --config.data.image_size=\"(128, 64)\""
        )
    _check_blur(v)
    if v["model.eval_embedding"] == "bnneck" and not v["model.bnneck"]:
        raise UserError("config.model.eval_embedding='bnneck' needs config.model.bnneck=True: set it, or choose "
                        "config.model.eval_embedding='embedding'")
    if v["model.keras_style"] and not backbone.keras_style:
        keras = ", ".join(sorted(n for n, b in _backbones().items() if b.keras_style))
        raise UserError(f"config.model.keras_style=True is only for the backbones with Keras's layout ({keras}), "
                        f"not {name!r}: set --config.model.keras_style=False")
    from msml_jax.data import check_dataset_names, check_protocol, eval_datasets, train_datasets

    data = {"name": v["data.name"], "train": v["data.train"], "eval": v["data.eval"]}
    check_dataset_names(train_datasets(data), "config.data.train")
    evaluated = eval_datasets(data)
    check_dataset_names(evaluated, "config.data.eval")
    check_protocol(v["data.protocol"], evaluated)
    for steps, epochs in (("num_train_steps", "num_train_epochs"), ("checkpoint_every_steps", "checkpoint_every_epochs")):
        if v[steps] == 0 and not v[epochs]:
            raise UserError(f"config.{steps}=0: set it to a positive number of steps, or config.{epochs} to a "
                            f"positive number of epochs (steps are then counted from the training split)")
    if v["eval.k2"] > v["eval.k1"]:
        raise UserError(f"config.eval.k2={v['eval.k2']} must be at most config.eval.k1={v['eval.k1']}: "
                        f"lower k2 or raise k1 (the paper's values: k1=20, k2=6)")


def widest_blur(image_size, zoom):
    """The largest blur std (output pixels) for `image_size` and `zoom`: an eighth of the shorter side, shrunk by
    (1 - zoom) / (1 + zoom). Kernels reach 2 stds; on the source crop (augment.blur_radius) the radius is sized for
    the largest box and must stay below the smallest box's side, and on the batch (device_augment) below half the
    image's; this keeps both with room for rounding."""
    return min(image_size) * (1 - zoom) / (8 * (1 + zoom))


def _check_blur(v):
    sigma, zoom, size = v["data.blur_sigma"], v["data.zoom"], tuple(v["data.image_size"])
    widest = widest_blur(size, zoom)
    if v["data.blur_prob"] > 0 and sigma > widest:
        fix = math.floor(min(1.0, widest) * 100) / 100
        fix = f"--config.data.blur_sigma={fix:g}" if fix > 0 else "--config.data.blur_prob=0"
        raise UserError(f"config.data.blur_sigma={sigma:g} is too wide for config.data.image_size={size} with "
                        f"config.data.zoom={zoom:g}: a blur std may be at most {widest:.3g} pixels there (an eighth "
                        f"of the shorter side, less with zoom): set e.g. {fix}")


def as_typed(error, flags=None, prefix="--config."):
    """`error` (a UserError of `validate_config`) with its suggested fixes written as the entry point takes them:
    `--config.FIELD=` becomes `flags[FIELD]=` for the fields an entry point sets with its own flags (eval.py's
    --rerank_k1), else `prefix + FIELD=` (the reproduction driver's `--set FIELD=`)."""
    import re

    def rewrite(match):
        field = match.group(1)
        return f"{(flags or {}).get(field, prefix + field)}="

    text = re.sub(r"--config\.([A-Za-z_][\w.]*)=", rewrite, str(error))
    for field, flag in (flags or {}).items():  # "config.eval.k2=30 must be ...": the value as the user typed it
        text = re.sub(rf"(?<![\w.-])config\.{re.escape(field)}=", f"{flag}=", text)
    return UserError(text)


# ---- Paths ----


def _writable_dir_problem(path):
    """Why `path` cannot be (created and) written as a directory, or None."""
    if os.path.exists(path):
        if not os.path.isdir(path):
            return "is a file, not a directory"
        if not os.access(path, os.W_OK | os.X_OK):
            return "is not writable"
        return None
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        return f"cannot be created: {parent} is a file"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot be created: {parent} is not writable"
    return None


def check_paths(config, workdir):
    """UserError when `workdir`, or the TFDS data_dir a real dataset needs, cannot be created or written.

    Looks only (os.access): nothing is created.
    """
    if not isinstance(workdir, str) or not workdir:
        raise UserError("--workdir is empty: name the run's directory, e.g. --workdir runs/demo")
    problem = _writable_dir_problem(workdir)
    if problem:
        raise UserError(f"--workdir {workdir} {problem}: pick another --workdir")
    tree = _as_dict(config)
    data = tree.get("data", {})
    names = []
    for field in ("train", "eval"):
        value = data.get(field) or ()
        names += [value] if isinstance(value, str) else list(value)
    names = names or [data.get("name", FIELDS["data.name"].default)]
    from msml_jax.data import find_dataset

    # A builder module not imported yet reads files: no TensorFlow imported to find out.
    if not any(getattr(find_dataset(name, import_builder=False), "reads_files", True) for name in names):
        return
    data_dir = os.path.expanduser(data.get("data_dir") or "~/tensorflow_datasets")
    if os.path.isdir(data_dir):
        return  # reading a prepared dataset needs no write; building one reports its own errors
    problem = _writable_dir_problem(data_dir)
    if problem:
        raise UserError(f"config.data.data_dir={data_dir!r} {problem}: pass another --config.data.data_dir")


# ---- Command lines ----


def load_config_file(path):
    """The ConfigDict of `--config PATH[:ARG]`, or a UserError naming the file and what is wrong with it: missing,
    a folder, a syntax error, no get_config, an exception in it, or something other than a config returned."""
    import ml_collections

    file, _, arg = path.partition(":")
    example = "name a config file, e.g. --config configs/synthetic.py"
    if not os.path.exists(file):
        raise UserError(f"--config {path}: no such file: {example}")
    if not os.path.isfile(file) or not file.endswith(".py"):
        raise UserError(f"--config {path}: not a Python file: {example}")
    from msml_jax.config_files import load_config

    try:
        config = load_config(file, arg or None)
    except SyntaxError as e:
        raise UserError(f"--config {path}: Python syntax error at line {e.lineno}: {e.msg}: fix the file") from None
    except ValueError as e:  # a parameterized config's own message (configs/paper.py:DATASET,BACKBONE,LOSS)
        raise UserError(str(e)) from None
    except AttributeError as e:
        if "get_config" in str(e):
            raise UserError(f"--config {path}: the file has no get_config(): a config file defines get_config() "
                            f"returning an ml_collections.ConfigDict, as configs/synthetic.py does") from None
        raise UserError(f"--config {path}: get_config() failed: {type(e).__name__}: {e}: fix the file") from None
    except TypeError as e:
        raise UserError(f"--config {path}: get_config() failed: {e}"
                        + (": this config takes no argument after ':'" if arg else ": fix the file")) from None
    except Exception as e:  # the user's own code: any error it raises is theirs to fix
        raise UserError(f"--config {path}: get_config() failed: {type(e).__name__}: {e}: fix the file") from None
    if not isinstance(config, ml_collections.ConfigDict):
        raise UserError(f"--config {path}: get_config() returned {type(config).__name__}, not an "
                        f"ml_collections.ConfigDict: return the config, as configs/synthetic.py does")
    return config


def check_config_flags(argv):
    """UserError for a --config file that cannot be loaded (`load_config_file`), a --config.FIELD=VALUE override
    naming no field of it, a tuple field given twice, or a value that field's type cannot parse (--config.P=abc).

    ml_collections would stop on the first with an AttributeError traceback and on the second with absl's "FATAL
    Flags parsing error" (exit 1) while parsing flags, before any entry point runs; call this first (see train.py).
    """
    path, overrides, values = None, [], {}
    args = list(argv[1:])
    for i, arg in enumerate(args):
        if arg == "--config":
            path = args[i + 1] if i + 1 < len(args) else None
        elif arg.startswith("--config="):
            path = arg.split("=", 1)[1]
        elif arg.startswith(("--config.", "--noconfig.")):
            name, has_value, value = arg.split("config.", 1)[1].partition("=")
            overrides.append(name)
            if arg.startswith("--config.") and has_value:
                values[name] = value
            elif arg.startswith("--config.") and i + 1 < len(args) and not args[i + 1].startswith("--"):
                values[name] = args[i + 1]  # --config.P 8
    if not path:
        return
    config = load_config_file(path)
    if not overrides:
        return
    file = path.partition(":")[0]
    tree = _as_dict(config)
    present = {name for name, _ in _walk(tree)}
    for name in sorted({name for name in overrides if overrides.count(name) > 1}):
        if isinstance(_get(tree, name), (tuple, list)):  # ml_collections joins the two tuples (a scalar: last wins)
            raise UserError(f"--config.{name} is given twice: give it once (a tuple given twice is joined, not "
                            f"replaced)")
    for name in overrides:
        current = _get(tree, name)
        if current is _MISSING:
            raise _unknown(name, present, where=f"--config.{name} (fields of {file})")
        if name in values:
            _check_flag_value(name, values[name], current)


def _check_flag_value(name, text, current):
    """UserError when `text` does not parse as the type of the field's value in the config file, the way
    ml_collections' flag parsers read it (absl's integer / float / boolean parsers, its TupleParser)."""
    from absl import flags

    parsers = ((bool, flags.BooleanParser(), "True or False"), (int, flags.IntegerParser(), "an integer"),
               (float, flags.FloatParser(), "a number"))
    for kind, parser, wanted in parsers:
        if isinstance(current, kind):
            try:
                parser.parse(text)
            except ValueError:
                raise UserError(f"--config.{name}={text}: config.{name} must be {wanted} (it is {current!r} in the "
                                f"config file): e.g. --config.{name}={current!r}") from None
            return
    if isinstance(current, tuple):
        from ml_collections.config_flags.tuple_parser import TupleParser

        try:
            TupleParser().parse(text)
        except (ValueError, SyntaxError):
            raise UserError(f"--config.{name}={text}: config.{name} must be a tuple written as a Python literal "
                            f"(it is {current!r} in the config file): quote it for the shell, e.g. "
                            f"\"--config.{name}={current!r}\"") from None
