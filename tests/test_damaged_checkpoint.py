"""Damaged checkpoint files: each file of the latest checkpoint of a tiny run, truncated or with one bit flipped.

One uninterrupted tiny run (6 steps, checkpoints at 3 and 6) is the reference; each case damages a copy of it.
The outcome must be one of two, never a silently wrong state: the damage is detected (one warning naming the
checkpoint, moved aside, the state of step 3 restored bitwise) or the damaged file is one restoring does not
need (the state of step 6 restored bitwise, as the sha256 digests recorded at save time confirm). References are
read straight from the intact files with Orbax, not through the code under test.
"""

import json
import os
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from msml_jax.data import load_datasets
from msml_jax.errors import UserError
from msml_jax.models import init_variables, model_from_config
from msml_jax import sharding as parallel
from msml_jax import checkpoint
from msml_jax.training import steps
from msml_jax.training.loop import train_and_evaluate
from tests.conftest import make_tiny_config

# Orbax's abandoned reads of a damaged file raise again later, in threads and finalizers; checkpoint.py drops
# those from sys.unraisablehook, but pytest swaps its own hook in for every test.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
DAMAGES = ("truncate", "flip")
# Files whose damage must be detected whatever the byte hit; the others may hold nothing a restore reads.
MUST_DETECT = ("config/metadata", "position/metadata", "state/_METADATA")


def _damage(path, how):
    data = bytearray(open(path, "rb").read())
    if how == "truncate":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 2] ^= 0x10
    with open(path, "wb") as f:
        f.write(bytes(data))


def _raw_state(workdir, step):
    """The saved state of `step` as numpy leaves {path: array}, read by Orbax without a target."""
    path = os.path.join(workdir, "checkpoints", str(step), "state")
    tree = ocp.StandardCheckpointer().restore(path)
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _leaves(state):
    from flax import serialization

    tree = jax.device_get(serialization.to_state_dict(state))
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _bitwise_equal(a, b):
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes() for k in a)


def _train_records(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    return [{k: v for k, v in r.items() if k != "images_per_sec"} for r in records if "dataset" not in r]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(config, workdir of the uninterrupted run, template state, reference states {3: ..., 6: ...})."""
    config = make_tiny_config()
    workdir = str(tmp_path_factory.mktemp("damaged") / "reference")
    train_and_evaluate(config, workdir)
    train, _ = load_datasets(config.data)
    model = model_from_config(config, len(np.unique(train["pids"])))
    variables = init_variables(model, tuple(config.data.image_size), jax.random.PRNGKey(config.seed))
    template = parallel.replicate(steps.create_train_state(model, config, variables), parallel.make_mesh())
    return config, workdir, template, {step: _raw_state(workdir, step) for step in (3, 6)}


def _copy(workdir, tmp_path, name="copy", checkpoints_only=False):
    target = str(tmp_path / name)
    if checkpoints_only:
        shutil.copytree(os.path.join(workdir, "checkpoints"), os.path.join(target, "checkpoints"))
    else:
        shutil.copytree(workdir, target)
    return target


def _files(step_dir):
    out = []
    for root, _, names in os.walk(step_dir):
        out += [os.path.relpath(os.path.join(root, n), step_dir) for n in names]
    # One commit marker stands for all four: Orbax writes them and never reads them back.
    return sorted(f for f in out if not (f.endswith("commit_success.txt") and f != "commit_success.txt"))


def test_each_damaged_file_is_detected_or_harmless(run, tmp_path, capsys):
    config, workdir, template, reference = run
    outcomes = []
    for rel in _files(os.path.join(workdir, "checkpoints", "6")):
        for how in DAMAGES:
            copy = _copy(workdir, tmp_path, f"{len(outcomes)}", checkpoints_only=True)
            _damage(os.path.join(copy, "checkpoints", "6", rel), how)
            manager = checkpoint.checkpoint_manager(copy)
            capsys.readouterr()
            state, step = checkpoint.restore_latest_intact(manager, template, config)
            warned = [line for line in capsys.readouterr().err.splitlines() if "damaged" in line]
            manager.close()
            listing = sorted(os.listdir(os.path.join(copy, "checkpoints")))
            if step == 3:
                assert len(warned) == 1 and warned[0].startswith(f"warning: the checkpoint {copy}/checkpoints/6 is "
                                                                 "damaged ("), (rel, warned)
                assert listing[0] == "3" and listing[1].startswith("6.damaged-") and len(listing) == 2, listing
                assert _bitwise_equal(_leaves(state), reference[3]), rel
            else:
                assert step == 6 and not warned and listing == ["3", "6"], (rel, how, step)
                assert _bitwise_equal(_leaves(state), reference[6]), (rel, how)
                assert not rel.startswith(MUST_DETECT), (rel, how)
            outcomes.append((rel, how, "detected" if step == 3 else "harmless"))
            shutil.rmtree(copy)
    detected_data = [o for o in outcomes if o[0].startswith("state/ocdbt.process_0/d/") and o[2] == "detected"]
    assert {how for _, how, _ in detected_data} == set(DAMAGES)  # array data: truncation and bit flips both caught
    with capsys.disabled():
        print("\ndamaged checkpoint files:")
        for rel, how, outcome in outcomes:
            print(f"  {rel:58s} {how:9s} {outcome}")


def _damage_and_resume(run, tmp_path, capsys, rel, how):
    config, workdir, _, reference = run
    copy = _copy(workdir, tmp_path)
    _damage(os.path.join(copy, "checkpoints", "6", rel), how)
    capsys.readouterr()
    train_and_evaluate(make_tiny_config(), copy)
    warned = [line for line in capsys.readouterr().err.splitlines() if "damaged" in line]
    assert len(warned) == 1 and warned[0].startswith(f"warning: the checkpoint {copy}/checkpoints/6 is damaged ")
    assert warned[0].endswith("and resumed from step 3")
    assert _bitwise_equal(_raw_state(copy, 6), reference[6])  # the final state of the uninterrupted run
    assert _train_records(copy) == _train_records(workdir)
    assert any(name.startswith("6.damaged-") for name in os.listdir(os.path.join(copy, "checkpoints")))


def test_resuming_past_a_truncated_config_equals_the_uninterrupted_run(run, tmp_path, capsys):
    _damage_and_resume(run, tmp_path, capsys, "config/metadata", "truncate")


def test_resuming_past_a_bit_flip_in_array_data_equals_the_uninterrupted_run(run, tmp_path, capsys):
    data = os.path.join(run[1], "checkpoints", "6", "state", "ocdbt.process_0", "d")
    largest = max(os.listdir(data), key=lambda name: os.path.getsize(os.path.join(data, name)))
    _damage_and_resume(run, tmp_path, capsys, f"state/ocdbt.process_0/d/{largest}", "flip")


def test_no_intact_checkpoint_stops_with_one_message_and_moves_nothing(run, tmp_path):
    config, workdir, template, _ = run
    copy = _copy(workdir, tmp_path, checkpoints_only=True)
    for step in (3, 6):
        _damage(os.path.join(copy, "checkpoints", str(step), "config", "metadata"), "truncate")
    manager = checkpoint.checkpoint_manager(copy)
    with pytest.raises(UserError, match=rf"every checkpoint in {copy}/checkpoints is damaged \(step 6: .*; step 3: "
                                        r".*\): nothing was changed"):
        checkpoint.restore_latest_intact(manager, template, config)
    assert sorted(os.listdir(os.path.join(copy, "checkpoints"))) == ["3", "6"]


def test_eval_names_the_damaged_checkpoint_and_how_to_pick_another(run, tmp_path):
    _, workdir, _, reference = run
    copy = _copy(workdir, tmp_path, checkpoints_only=True)
    _damage(os.path.join(copy, "checkpoints", "6", "position", "metadata"), "flip")
    directory = os.path.join(copy, "checkpoints")
    with pytest.raises(UserError, match=rf"the checkpoint {copy}/checkpoints/6 is damaged: .*; evaluate another one "
                                        r"with --checkpoint 3 \(checkpoints present: 3\)$"):
        checkpoint.restore_checkpoint(directory, 6)
    _, variables = checkpoint.restore_checkpoint(directory, 3)
    saved = {k: v for k, v in reference[3].items() if k.startswith(("['params']", "['batch_stats']"))}
    assert _bitwise_equal(_leaves(variables), saved)
    assert sorted(os.listdir(os.path.join(copy, "checkpoints"))) == ["3", "6"]  # a reader moves nothing


@pytest.mark.parametrize("field, value, listing", [
    ("embed_dim", 64, "config.model.embed_dim: 16 in the checkpoint, 64 now"),
    ("name", "resnet18", "config.model.name: 'small_resnet' in the checkpoint, 'resnet18' now"),
])
def test_another_model_is_named_not_taken_for_damage(run, field, value, listing, tmp_path):
    # On a copy: the trainer's restore moves damaged steps aside, and the run is shared by this module's tests.
    workdir = _copy(run[1], tmp_path, checkpoints_only=True)
    other = make_tiny_config()
    other.model[field] = value
    model = model_from_config(other, 12)
    images = jax.numpy.zeros((2, *other.data.image_size, 3), jax.numpy.uint8)
    # Shapes only (no compile): the mismatch is found before any array is read.
    template = jax.eval_shape(
        lambda: steps.create_train_state(model, other, model.init(jax.random.PRNGKey(0), images, train=False))
    )
    manager = checkpoint.checkpoint_manager(workdir, create=False)
    with pytest.raises(UserError, match=rf"holds another model than the config describes \({listing}\): pass the "
                                        r"config it was trained with"):
        checkpoint.restore_latest_intact(manager, template, other)
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3", "6"]


def test_allow_config_change_to_another_backbone_is_refused_not_moved_aside(run, tmp_path):
    workdir = _copy(run[1], tmp_path, checkpoints_only=True)  # a copy, as above
    other = make_tiny_config()
    other.model.name, other.allow_config_change = "resnet18", True
    model = model_from_config(other, 12)
    images = jax.numpy.zeros((2, *other.data.image_size, 3), jax.numpy.uint8)
    template = jax.eval_shape(
        lambda: steps.create_train_state(model, other, model.init(jax.random.PRNGKey(0), images, train=False))
    )
    manager = checkpoint.checkpoint_manager(workdir, create=False)
    with pytest.raises(UserError, match=r"holds another model than the config describes \(\d+ array\(s\) differ"):
        checkpoint.restore_latest_intact(manager, template, other)  # the trainer's call: damage would be moved
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3", "6"]


def test_eval_py_path_names_the_damaged_checkpoint(run, tmp_path):
    from msml_jax.evaluation.workdir import evaluate_run

    _, workdir, _, _ = run
    copy = _copy(workdir, tmp_path, checkpoints_only=False)
    _damage(os.path.join(copy, "checkpoints", "6", "config", "metadata"), "truncate")
    with pytest.raises(UserError, match=rf"the checkpoint {copy}/checkpoints/6 is damaged: .*; evaluate another one "
                                        r"with --checkpoint 3 \(checkpoints present: 3\)$"):
        evaluate_run(copy)
    (record,) = evaluate_run(copy, checkpoint="3")
    assert record["step"] == 3
