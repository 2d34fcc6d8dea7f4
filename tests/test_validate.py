"""The config sweep: every field of every config in configs/ (the paper grid included), set to each bad value that
applies, must be refused by validate_config with a UserError naming the field, before anything is written.

The expectations are this file's own table (RULES: what each field accepts, in words), not validate.FIELDS, so a
field validate.py forgets or checks wrongly shows up here. Validation only: no JAX compile, no TensorFlow.
"""

import copy
import functools
import math
import os
import subprocess
import sys

import pytest

from msml_jax.errors import UserError
from msml_jax.config import FIELDS, all_fields, check_config_flags, check_paths, validate_config
from tests.conftest import ROOT, load_config, make_tiny_config

NAN, INF = float("nan"), float("inf")
HUGE = 10**12
# Bad values of each kind of field: wrong type, zero, negative, NaN, inf, empty, far too large.
BAD = {
    "positive int": ["8", 2.5, True, None, 0, -1, NAN, INF, HUGE],
    "non-negative int": ["8", 2.5, True, None, -1, NAN, INF, HUGE],
    "seed": ["0", 0.5, None, -1, NAN, 2**64],
    "positive float": ["0.1", None, True, 0, 0.0, -0.1, NAN, INF, -INF, 1e12],
    "non-negative float": ["0.1", None, True, -0.1, NAN, INF, -INF, 1e12],
    "probability": ["0.5", None, True, -0.1, 1.5, NAN, INF],
    "fraction below 1": ["0.5", None, True, -0.1, 1.0, 1.5, NAN, INF],
    "bool": ["True", "", 1, 0, None, NAN],
    "choice": ["", "nonsense", None, 1, NAN],
    "string": [None, 1, ("a",), NAN],
    "image size": ["64x32", (), (64,), (64, 32, 3), (0, 0), (0, 32), (-64, 32), (64.0, 32), (NAN, 32), (HUGE, 32),
                   None],
    "range of ints": [(), (1,), (3, 1), (0, 2), (-1, 2), (1.5, 2), None, "1-3", (1, HUGE)],
    "range of fractions": [(), (0.4,), (0.4, 0.02), (0.0, 0.4), (-0.1, 0.4), (0.02, 1.5), (NAN, 0.4), None],
    "dataset names": [5, None, ("nonsense",), ("market1501", 3), "nonsense"],
    "boundaries": [(650, 500), (0,), (-1,), (2.5,), (NAN,), (HUGE,), (500, 500), None, "500", 500],
    "trial": ["0", -1, 10, 2.5, None, NAN],
    "last stride": [0, 3, "2", 2.0, None, True],
    "optional positive int": [0, -1, "4", 2.5, NAN, HUGE],
    "k": ["20", 0, -1, 2.5, None, NAN, HUGE],
}
RULES = {
    "seed": "seed", "data.seed": "seed", "dtype": "choice", "loss": "choice", "data.name": "choice",
    "model.name": "choice", "model.preprocessing": "choice", "model.eval_embedding": "choice",
    "eval.metric": "choice", "eval.pooling": "choice",
    "P": "positive int", "K": "positive int", "batch_size": "positive int",
    # 0 = counted from the epoch field (configs/paper.py); 0 without it is a combination error (COMBINATIONS)
    "num_train_steps": "non-negative int", "checkpoint_every_steps": "non-negative int",
    "num_train_epochs": "non-negative int", "checkpoint_every_epochs": "non-negative int",
    "eval_every_epochs": "non-negative int", "lr_boundary_epochs": "boundaries",
    "log_every_steps": "positive int", "max_checkpoints": "positive int",
    "eval_batch_size": "positive int", "model.embed_dim": "positive int",
    "data.synthetic.num_train_ids": "positive int", "data.synthetic.num_test_ids": "positive int",
    "data.synthetic.num_cameras": "positive int",
    "eval_every_steps": "non-negative int", "warmup_steps": "non-negative int",
    "data.synthetic.num_distractors": "non-negative int",
    "learning_rate": "positive float", "lr_decay": "positive float", "data.blur_sigma": "positive float",
    "margin": "non-negative float", "beta": "non-negative float", "cls_weight": "non-negative float",
    "data.blur_prob": "probability", "data.erase_prob": "probability", "data.synthetic.occlusion_prob": "probability",
    "eval.lambda_value": "probability",
    "label_smoothing": "fraction below 1", "data.shift": "fraction below 1", "data.zoom": "fraction below 1",
    "model.dropout": "fraction below 1",
    "soft_margin": "bool", "normalize": "bool", "allow_config_change": "bool", "data.flip": "bool",
    "data.skip_corrupt": "bool", "data.augment_on_device": "bool", "model.keras_style": "bool", "model.bnneck": "bool", "eval.flip": "bool",
    "eval.rerank": "bool",
    "data.data_dir": "string", "data.manual_dir": "string", "model.pretrained": "string", "data.protocol": "string",
    "data.image_size": "image size", "data.synthetic.image_size": "image size",
    "data.synthetic.images_per_camera": "range of ints", "data.erase_area": "range of fractions",
    "data.erase_aspect": "positive float",
    "data.train": "dataset names", "data.eval": "dataset names", "lr_boundaries": "boundaries",
    "data.trial": "trial", "model.last_stride": "last stride", "data.num_threads": "optional positive int",
    "eval.k1": "k", "eval.k2": "k",
}
# Values that are bad for the rule in general but fine for one field.
ALLOWED = {("model.preprocessing", "")}  # "" means "auto" there
NEW_FIELDS = {"data": {"protocol": ""},
              "eval": {"flip": False, "metric": "euclidean", "pooling": "avg", "rerank": False, "k1": 20, "k2": 6,
                       "lambda_value": 0.3}}


def _configs():
    """(label, nested dict) of every config in configs/, the whole paper grid, and the tiny test config."""
    from configs import paper

    configs = [(name, load_config(name)) for name in ("synthetic", "viper", "market_viper")]
    configs += [(f"paper:{d},{b},{l}", load_config("paper", f"{d},{b},{l}"))
                for d in paper.DATASETS for b in paper.BACKBONES for l in paper.LOSSES]
    configs.append(("tiny", make_tiny_config()))
    assert {f[:-3] for f in os.listdir(os.path.join(ROOT, "configs")) if f.endswith(".py")} == {
        "synthetic", "viper", "market_viper", "paper"}, "a new config file: add it to _configs"
    out = []
    for label, config in configs:
        tree = config.to_dict()
        for group, fields in NEW_FIELDS.items():  # the issue-9 fields, at their defaults where a config lacks them
            tree.setdefault(group, {})
            for key, value in fields.items():
                tree[group].setdefault(key, value)
        out.append((label, tree))
    return out


def _leaves(tree, prefix=""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def _set(tree, field, value):
    tree = copy.deepcopy(tree)
    node = tree
    *groups, leaf = field.split(".")
    for group in groups:
        node = node[group]
    node[leaf] = value
    return tree


def _delete(tree, field):
    tree = copy.deepcopy(tree)
    node = tree
    *groups, leaf = field.split(".")
    for group in groups:
        node = node[group]
    del node[leaf]
    return tree


CONFIGS = _configs()


def test_every_config_is_valid_and_every_field_has_a_rule():
    for label, tree in CONFIGS:
        validate_config(tree)
        missing = set(_leaves(tree)) - set(RULES)
        assert not missing, f"{label}: fields without a rule in this test: {missing}"
    assert set(RULES) == set(all_fields()), "validate.all_fields() and this test's RULES name different fields"


def test_every_bad_value_of_every_field_is_refused_naming_the_field(capsys):
    tried = 0
    for label, tree in CONFIGS:
        for field in _leaves(tree):
            for value in BAD[RULES[field]]:
                if (field, value) in ALLOWED:
                    continue
                *groups, leaf = field.split(".")
                node = functools.reduce(dict.__getitem__, groups, tree)
                good, node[leaf] = node[leaf], value  # in place (a deep copy per case would dominate the time)
                try:
                    validate_config(tree)
                except UserError as e:
                    assert f"config.{field}" in str(e), (label, field, value, str(e))
                    tried += 1
                    continue
                finally:
                    node[leaf] = good
                pytest.fail(f"{label}: config.{field}={value!r} was accepted")
    with capsys.disabled():
        print(f"\nconfig sweep: {tried} bad values refused over {len(CONFIGS)} configs")
    assert tried > 1000


COMBINATIONS = [
    ({"loss": "triplet", "soft_margin": True}, "config.soft_margin=True but config.loss='triplet'"),
    ({"loss": "quadruplet", "soft_margin": True}, "config.soft_margin=True but config.loss='quadruplet'"),
    ({"loss": "cls", "soft_margin": True}, "config.soft_margin=True but config.loss='cls'"),
    ({"batch_size": 10}, "config.batch_size=10 must equal config.P * config.K = 4 * 2 = 8"),
    ({"P": 1, "batch_size": 2}, "set config.P >= 2 and config.K >= 2"),
    ({"data.image_size": (8, 16)}, "config.data.image_size=(8, 16) is smaller than the total stride 16"),
    ({"data.image_size": (16, 16), "model.name": "resnet18"}, "config.data.image_size=(16, 16) is smaller than the "
                                                               "total stride 32 of config.model.name='resnet18'"),
    ({"model.eval_embedding": "bnneck"}, "config.model.eval_embedding='bnneck' needs config.model.bnneck=True"),
    ({"model.keras_style": True, "model.name": "resnet18", "data.image_size": (64, 32)}, "config.model.keras_style"),
    ({"data.protocol": "tracklet"}, "config.data.protocol='tracklet' is not a protocol of the evaluated dataset(s) "
                                    "synthetic"),
    ({"data.name": "viper", "data.protocol": "classic"}, "config.data.protocol='classic' is not a protocol of the "
                                                         "evaluated dataset(s) viper"),
    ({"data.train": ("market1501", "mars"), "data.protocol": "new"}, "offer market1501: image, official; "
                                                                      "mars: tracklet, official"),
    ({"num_train_steps": 0}, "config.num_train_steps=0: set it to a positive number of steps, or "
                             "config.num_train_epochs"),
    ({"checkpoint_every_steps": 0}, "config.checkpoint_every_steps=0"),
    ({"data.train": ("viper", "viper")}, "config.data.train=('viper', 'viper') names a dataset twice"),
    ({"data.eval": ("market",)}, "unknown dataset 'market' in config.data.eval: valid names are"),
    ({"eval.k1": 5, "eval.k2": 6}, "config.eval.k2=6 must be at most config.eval.k1=5"),
    # tiny: 32x16 images: at most 16 / 8 = 2 pixels, 16 * 0.5 / (8 * 1.5) = 0.667 with zoom 0.5
    ({"data.blur_prob": 0.5, "data.blur_sigma": 2.5}, "config.data.blur_sigma=2.5 is too wide for "
                                                       "config.data.image_size=(32, 16) with config.data.zoom=0: a "
                                                       "blur std may be at most 2 pixels"),
    ({"data.blur_prob": 0.5, "data.zoom": 0.5}, "at most 0.667 pixels there (an eighth of the shorter side, less "
                                                "with zoom): set e.g. --config.data.blur_sigma=0.66"),
]


@pytest.mark.parametrize("changes, message", COMBINATIONS)
def test_combinations_are_refused_naming_the_fields(changes, message):
    tree = dict(CONFIGS)["tiny"]
    for field, value in changes.items():
        tree = _set(tree, field, value)
    with pytest.raises(UserError) as e:
        validate_config(tree)
    assert message in str(e.value)


@pytest.mark.parametrize("changes", [{"data.name": "cuhk03", "data.protocol": "classic"},
                                     {"data.name": "mars", "data.protocol": "tracklet"},
                                     {"data.name": "mars", "data.protocol": "official"},
                                     # market1501's and mars's official protocols, cuhk03 in its default
                                     {"data.train": ("market1501", "mars", "cuhk03"), "data.protocol": "official"},
                                     # a protocol applies to the datasets that have it (cuhk03 here)
                                     {"data.train": ("cuhk03", "mars"), "data.protocol": "classic"},
                                     {"num_train_steps": 0, "num_train_epochs": 3},
                                     {"loss": "trihard", "soft_margin": True},
                                     {"model.bnneck": True, "model.eval_embedding": "bnneck"},
                                     {"data.blur_prob": 0.5, "data.blur_sigma": 2.0},  # the widest at 32x16
                                     {"data.blur_prob": 0.0, "data.blur_sigma": 50.0}])  # no blur: any std
def test_valid_combinations_pass(changes):
    tree = dict(CONFIGS)["tiny"]
    for field, value in changes.items():
        tree = _set(tree, field, value)
    validate_config(tree)


@pytest.mark.parametrize("field, typo, suggestion", [
    ("learning_rate", "lerning_rate", "config.learning_rate"),
    ("data.image_size", "data.imag_size", "config.data.image_size"),
    ("model.embed_dim", "model.embed_dimm", "config.model.embed_dim"),
])
def test_unknown_fields_name_the_closest_valid_one(field, typo, suggestion):
    tree = _set(dict(CONFIGS)["synthetic"], typo, 1)
    with pytest.raises(UserError, match=rf"unknown field config\.{typo} .*did you mean {suggestion}\?"):
        validate_config(tree)
    with pytest.raises(UserError, match=rf"did you mean {suggestion}\?"):
        check_config_flags(["train.py", "--config", os.path.join(ROOT, "configs/synthetic.py"), f"--config.{typo}=1"])


def test_a_missing_field_is_named():
    with pytest.raises(UserError, match=r"the config lacks config\.loss: add it"):
        validate_config(_delete(dict(CONFIGS)["synthetic"], "loss"))


def test_paths_that_cannot_be_written(tmp_path):
    config = dict(CONFIGS)["tiny"]
    afile = tmp_path / "a_file"
    afile.write_text("")
    with pytest.raises(UserError, match=rf"--workdir {afile} is a file, not a directory"):
        check_paths(config, str(afile))
    with pytest.raises(UserError, match=rf"--workdir {afile}/run cannot be created: {afile} is a file"):
        check_paths(config, str(afile / "run"))
    viper = _set(_set(config, "data.name", "viper"), "data.data_dir", str(afile / "tfds"))
    with pytest.raises(UserError, match=rf"config.data.data_dir='{afile}/tfds' cannot be created: {afile} is a file"):
        check_paths(viper, str(tmp_path / "run"))
    check_paths(config, str(tmp_path / "run"))  # synthetic data needs no data_dir
    assert sorted(os.listdir(tmp_path)) == ["a_file"]  # nothing created


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_workdir(tmp_path):
    readonly = tmp_path / "ro"
    readonly.mkdir()
    readonly.chmod(0o555)
    with pytest.raises(UserError, match="is not writable"):
        check_paths(dict(CONFIGS)["tiny"], str(readonly))
    with pytest.raises(UserError, match="cannot be created: .* is not writable"):
        check_paths(dict(CONFIGS)["tiny"], str(readonly / "run"))


def _train_cli(workdir, *args):
    return subprocess.run(
        [sys.executable, "train.py", "--config", "configs/synthetic.py", "--workdir", str(workdir), *args],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )


@pytest.mark.parametrize("args, message", [
    (["--config.lerning_rate=0.1"], "did you mean config.learning_rate?"),
    (["--config.data.image_size=(0, 0)"], "config.data.image_size must be (height, width)"),
    (["--config.loss=triplet", "--config.soft_margin=True"], "config.soft_margin=True but config.loss='triplet'"),
    (["--config.learning_rate=nan"], "config.learning_rate must be a number in (0.0, 10.0], got nan"),
    (["--config.data.name=viper", "--config.data.data_dir=WORKDIR/tfds"], "cannot be created: "),
])
def test_train_cli_refuses_with_one_line_and_exit_2(tmp_path, args, message):
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    args = [a.replace("WORKDIR", str(blocker)) for a in args]
    result = _train_cli(tmp_path / "run", *args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert not os.path.exists(tmp_path / "run")


def test_train_cli_refuses_a_workdir_that_is_a_file(tmp_path):
    afile = tmp_path / "run"
    afile.write_text("keep")
    result = _train_cli(afile)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: --workdir {afile} is a file, not a directory: pick another --workdir"
    assert afile.read_text() == "keep"


def test_validation_imports_neither_jax_nor_tensorflow():
    # Importing the schema stays light; validating reads the loss registry (JAX) but never TensorFlow.
    code = ("import sys; from msml_jax import config as validate; "
            "assert not {'jax', 'tensorflow'} & set(sys.modules), sorted(sys.modules); "
            "from tests.conftest import load_config; validate.validate_config(load_config()); "
            "assert 'tensorflow' not in sys.modules, sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)


def test_loss_choices_come_from_the_registry():
    """The loss choices, the soft-margin check and the P, K >= 2 check read msml_jax.losses.LOSSES."""
    from msml_jax.losses import LOSSES, PAPER_LOSS

    assert FIELDS["loss"].default == PAPER_LOSS in LOSSES
    base = make_tiny_config()
    for name, spec in LOSSES.items():
        config = copy.deepcopy(base)
        config.loss, config.soft_margin = name, spec.soft_margin
        validate_config(config)  # every registered loss is accepted, with its soft-margin form where it has one
        config.soft_margin = not spec.soft_margin
        if not spec.soft_margin:
            with pytest.raises(UserError, match=f"config.loss={name!r} has no soft-margin form"):
                validate_config(config)
        config.soft_margin = False
        config.P, config.K, config.batch_size = 8, 1, 8
        if spec.needs_pairs:
            with pytest.raises(UserError, match="needs positive and negative pairs"):
                validate_config(config)
        else:
            validate_config(config)
    config = copy.deepcopy(base)
    config.loss = "not_registered"
    with pytest.raises(UserError, match=r"unknown loss 'not_registered' in config.loss: valid names are "
                       + ", ".join(LOSSES)):
        validate_config(config)


def _ml_collections_accepts(argv):
    """Whether ml_collections' own flag parsing (what train.py runs after check_config_flags) takes these flags."""
    from absl import flags
    from ml_collections import config_flags

    values, argv = flags.FlagValues(), ["train.py", *argv]
    config_flags.DEFINE_config_file("config", flag_values=values, sys_argv=argv)
    try:
        values(argv)
        return True
    except flags.Error:
        return False


@pytest.mark.parametrize("flag, accepted, message", [
    ("--config.P=abc", False, r"config\.P must be an integer \(it is 16 in the config file\)"),
    ("--config.P=3.5", False, r"config\.P must be an integer"),
    ("--config.learning_rate=fast", False, r"config\.learning_rate must be a number"),
    ("--config.normalize=maybe", False, r"config\.normalize must be True or False"),
    ("--config.data.image_size=(64,32", False, r"config\.data\.image_size must be a tuple .*\"--config\.data\.image_"
                                               r"size=\(64, 32\)\""),
    ("--config.P=8", True, None),
    ("--config.learning_rate=1e-3", True, None),
    ("--config.normalize=false", True, None),
    ("--config.data.image_size=(128, 64)", True, None),
    ("--config.data.train=synthetic", True, None),  # one unquoted string: ml_collections makes it a 1-tuple
])
def test_flag_values_of_the_wrong_type_are_named(flag, accepted, message):
    argv = ["--config", os.path.join(ROOT, "configs/synthetic.py"), flag]
    assert _ml_collections_accepts(argv) == accepted  # the check agrees with the parser it runs before
    if accepted:
        check_config_flags(["train.py", *argv])
    else:
        with pytest.raises(UserError, match=message):
            check_config_flags(["train.py", *argv])


# The accepted side of every range: each field's edge values (the low end, and the high end where the range has a
# natural one) must validate. Written by hand from what each field means, not read from config.FIELDS, so a bound
# made strict by mistake (margin = 0 refused, a probability of 1 refused) fails here.
EDGES = {
    "positive int": [1], "non-negative int": [0], "seed": [0, 2**32 - 1],
    "positive float": [1e-9], "non-negative float": [0, 0.0], "probability": [0, 0.0, 1.0, 1],
    "fraction below 1": [0, 0.0, 0.999999], "bool": [False, True], "string": [""],
    "image size": [(16, 16), (4096, 4096)],  # small_resnet's stride is 16; 4096 the largest side accepted
    "range of ints": [(1, 1), (1, 1000)], "range of fractions": [(1e-9, 1.0), (0.5, 0.5)],
    "dataset names": [(), "synthetic", ("synthetic",)], "boundaries": [(), (1,), (1, 2)],
    "trial": [0, 9], "last stride": [1, 2], "optional positive int": [None, 1, 1024], "k": [1],
}
# Fields whose range differs from their rule's, or has another natural high end.
FIELD_EDGES = {
    "data.synthetic.num_cameras": [2],  # one query and one gallery camera at least
    "data.synthetic.image_size": [(1, 1), (4096, 4096)],
    "lr_decay": [1e-9, 1.0], "data.erase_aspect": [1e-9, 1.0],  # 1.0: no decay; a square erased patch
    "eval.k2": [1, 20],  # k2 = k1 (tiny config: k1 = 20)
    "margin": [0, 0.0, 100.0], "beta": [0, 0.0, 100.0],
}
# Other fields an edge value needs to form a valid combination.
COMPANIONS = {
    ("P", 1): {"loss": "cls", "batch_size": 2}, ("K", 1): {"loss": "cls", "batch_size": 4},
    ("batch_size", 1): {"loss": "cls", "P": 1, "K": 1},
    ("num_train_steps", 0): {"num_train_epochs": 1}, ("checkpoint_every_steps", 0): {"checkpoint_every_epochs": 1},
    ("eval.k1", 1): {"eval.k2": 1},
}
EDGE_CASES = [(field, value) for field in sorted(RULES) if RULES[field] != "choice"
              for value in FIELD_EDGES.get(field, EDGES[RULES[field]])]


def test_the_edge_tables_name_schema_fields():
    # EDGE_CASES covers every ranged field by construction; a misspelt key in the tables would be ignored.
    assert set(FIELD_EDGES) <= set(RULES)
    assert {field for field, _ in COMPANIONS} <= set(RULES)
    assert {f for companions in COMPANIONS.values() for f in companions} <= set(all_fields())


@pytest.mark.parametrize("field, value", EDGE_CASES, ids=[f"{f}={v!r}" for f, v in EDGE_CASES])
def test_edge_values_of_every_range_are_accepted(field, value):
    tree = _set(dict(CONFIGS)["tiny"], field, value)
    for other, companion in COMPANIONS.get((field, value), {}).items():
        tree = _set(tree, other, companion)
    validate_config(tree)
