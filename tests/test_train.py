"""The real trainer on a tiny synthetic run, and the command line as a user meets it."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from msml_jax.errors import UserError
from msml_jax import checkpoint
from msml_jax.evaluation.workdir import evaluate_run
from msml_jax.training.loop import train_and_evaluate
from msml_jax.config import validate_config
from tests.conftest import ROOT, load_config, make_tiny_config

EVAL_KEYS = ("mAP", "rank1", "rank5", "rank10", "mINP")


def _records(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The shared tiny run: read it only; a test that writes to a run works on `_copy_of(trained, tmp_path)`."""
    config = make_tiny_config()
    workdir = str(tmp_path_factory.mktemp("run"))
    final = train_and_evaluate(config, workdir)
    return config, workdir, final


def _copy_of(trained, tmp_path):
    workdir = str(tmp_path / "run")
    shutil.copytree(trained[1], workdir)
    return workdir


def _files(workdir):
    return sorted(os.path.relpath(os.path.join(d, f), workdir) for d, _, names in os.walk(workdir) for f in names)


def test_a_run_logs_train_steps_and_evaluations(trained):
    config, workdir, final = trained
    records = _records(workdir)
    evals = [r for r in records if "dataset" in r]
    steps = [r for r in records if "dataset" not in r]
    assert [r["step"] for r in evals] == [0, 6]
    assert [r["step"] for r in steps] == [2, 4, 6]
    for r in steps:
        assert {"loss", "cls_loss", "metric_loss", "learning_rate", "hardest_pos", "hardest_neg"} <= set(r)
        assert np.isclose(r["loss"], config.cls_weight * r["cls_loss"] + r["metric_loss"], rtol=1e-5)
        assert np.isfinite(r["loss"])
    assert "images_per_sec" in steps[-1]
    # The step schedule: learning_rate, times 0.1 from step 4 on (logged at steps 2, 4, 6).
    lr = config.learning_rate
    assert np.allclose([r["learning_rate"] for r in steps], [lr, lr, 0.1 * lr])
    for r in evals:
        assert r["dataset"] == "synthetic"
        assert all(0.0 <= r[k] <= 1.0 for k in EVAL_KEYS)
    assert final == evals[-1:]


def test_checkpoints_hold_state_and_config(trained):
    config, workdir, _ = trained
    manager = checkpoint.checkpoint_manager(workdir)
    assert manager.all_steps() == [3, 6]
    restored = manager.restore(6, args=checkpoint.ocp.args.Composite(config=checkpoint.ocp.args.JsonRestore()))
    assert restored["config"]["loss"] == config.loss and restored["config"]["P"] == config.P


def test_a_run_whose_length_is_no_multiple_of_the_checkpoint_interval_saves_its_last_step(flip_run):
    # 7 steps, a checkpoint every 3: 3 and 6, then the final step 7 (the run's end is always saved).
    config, workdir = flip_run
    assert (config.num_train_steps, config.checkpoint_every_steps) == (7, 3)
    assert checkpoint.checkpoint_manager(workdir, create=False).all_steps() == [3, 6, 7]


def test_eval_on_the_workdir_reproduces_the_final_evaluation(trained, tmp_path):
    config, _, final = trained
    workdir = _copy_of(trained, tmp_path)
    before = _records(workdir)
    (record,) = evaluate_run(workdir)  # the checkpoint's own config
    for key in EVAL_KEYS:
        assert record[key] == pytest.approx(final[0][key], abs=1e-6)
    assert _records(workdir) == before + [record]


def test_eval_with_flip_saves_features_that_load_with_numpy(trained, tmp_path, tiny_splits):
    _, workdir, final = trained
    workdir = _copy_of(trained, tmp_path)
    path = str(tmp_path / "features.npz")
    (record,) = evaluate_run(workdir, flip=True, metric="cosine", features_path=path)
    assert (record["flip"], record["metric"], record["step"], record["checkpoint"]) == (True, "cosine", 6, "latest")
    assert _records(workdir)[-1] == record
    saved = np.load(path)
    for part in ("query", "gallery"):
        np.testing.assert_array_equal(saved[f"synthetic/{part}/pids"], tiny_splits[part]["pids"])
        np.testing.assert_array_equal(saved[f"synthetic/{part}/camids"], tiny_splits[part]["camids"])
        assert saved[f"synthetic/{part}/embeddings"].shape == (len(tiny_splits[part]["pids"]), 16)
    # The saved features rank to the record's figures (cosine, independent of the evaluator's own scoring).
    from msml_jax.evaluation import evaluate_ranking

    q, g = saved["synthetic/query/embeddings"], saved["synthetic/gallery/embeddings"]
    q, g = q / np.linalg.norm(q, axis=1, keepdims=True), g / np.linalg.norm(g, axis=1, keepdims=True)
    result = evaluate_ranking(1 - q @ g.T, saved["synthetic/query/pids"], saved["synthetic/gallery/pids"],
                              saved["synthetic/query/camids"], saved["synthetic/gallery/camids"])
    assert record["mAP"] == pytest.approx(result["mAP"], abs=1e-5)


@pytest.mark.parametrize("kwargs, message", [
    (dict(protocol="classic"), r"--protocol='classic' is not a protocol of the evaluated dataset"),
    (dict(checkpoint="5"), r"--checkpoint=5: .* holds the steps 3, 6: pass one of those, latest or best"),
    (dict(features_path="/nonexistent-folder/f.npz"), r"the folder /nonexistent-folder does not exist"),
    (dict(datasets=["nosuch"]), r"unknown dataset 'nosuch'"),
])
def test_eval_refuses_bad_options_and_writes_nothing(trained, tmp_path, kwargs, message):
    _, workdir, _ = trained
    workdir = _copy_of(trained, tmp_path)
    before = _records(workdir)
    with pytest.raises(UserError, match=message):
        evaluate_run(workdir, **kwargs)
    assert _records(workdir) == before


def test_eval_cli_from_the_workdir_alone(trained, tmp_path):
    _, workdir, final = trained
    workdir = _copy_of(trained, tmp_path)
    ok = subprocess.run([sys.executable, "eval.py", f"--workdir={workdir}", "--checkpoint=3", "--flip"], cwd=ROOT,
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "synthetic" in ok.stdout and "rank-20" in ok.stdout
    assert _records(workdir)[-1]["step"] == 3 and _records(workdir)[-1]["flip"] is True
    bad = subprocess.run([sys.executable, "eval.py", f"--workdir={workdir}", "--checkpoint=4"], cwd=ROOT,
                         capture_output=True, text=True)
    errors = [line for line in bad.stderr.splitlines() if line.startswith("error:")]
    assert bad.returncode == 2 and len(errors) == 1, bad.stderr
    assert "--checkpoint=4" in errors[0] and "holds the steps 3, 6" in errors[0]


def test_restarting_a_finished_run_with_the_same_command_writes_nothing_new(trained, tmp_path):
    config, _, final = trained
    workdir = _copy_of(trained, tmp_path)
    records, files = _records(workdir), _files(workdir)
    again = train_and_evaluate(make_tiny_config(), workdir)
    # The final evaluation is repeated in place of the old one (not appended to it): the file reads the same.
    after = _records(workdir)
    assert [(r["step"], r.get("dataset")) for r in after] == [(r["step"], r.get("dataset")) for r in records]
    for old, new in zip(records, after):
        assert new == pytest.approx(old, abs=1e-6)
    assert again[0] == pytest.approx(final[0], abs=1e-6)
    # No checkpoint saved, none removed (the TensorBoard events file gets the evaluation again, in place).
    is_checkpoint = lambda name: not name.startswith("tensorboard")  # noqa: E731
    assert [f for f in _files(workdir) if is_checkpoint(f)] == [f for f in files if is_checkpoint(f)]
    assert checkpoint.checkpoint_manager(workdir, create=False).all_steps() == [3, 6]


def test_lengthening_a_finished_run_trains_only_the_new_steps(trained, tmp_path):
    workdir = _copy_of(trained, tmp_path)
    longer = make_tiny_config()
    longer.num_train_steps = 8
    final = train_and_evaluate(longer, workdir)
    records = _records(workdir)
    # Resumed at 6: no evaluation at step 0 again, step 6's evaluation kept (no longer the final one), 7-8 trained.
    assert [(r["step"], "dataset" in r) for r in records] == [
        (0, True), (2, False), (4, False), (6, False), (6, True), (8, False), (8, True)
    ]
    assert final == records[-1:]


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"loss": "hinge"}, r"unknown loss 'hinge' in config.loss: valid names are cls, triplet, quadruplet, trihard, msml"),
        ({"batch_size": 10}, r"config.batch_size=10 must equal config.P \* config.K = 4 \* 2 = 8"),
        ({"K": 1, "batch_size": 4}, r"set config.P >= 2 and config.K >= 2"),
        ({"P": 1, "batch_size": 2}, r"set config.P >= 2 and config.K >= 2"),
        ({"num_train_steps": 0}, r"config.num_train_steps=0: set it to a positive number of steps"),
    ],
)
def test_config_mistakes_name_the_field(overrides, message):
    config = make_tiny_config()
    config.update(overrides)
    with pytest.raises(UserError, match=message):
        validate_config(config)


def test_classification_only_allows_K_of_1():
    config = make_tiny_config()
    config.update({"loss": "cls", "K": 1, "batch_size": 4})
    validate_config(config)


def _cli(script, *args):
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, script), "--config", os.path.join(ROOT, "configs/synthetic.py"), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--config.model.name=resnet9000"], "unknown model 'resnet9000' in config.model.name: valid names are"),
        (
            ["--config.data.synthetic.num_train_ids=12", "--config.P=20", "--config.batch_size=80"],
            "config.P=20 is larger than the number of training identities (12)",
        ),
    ],
)
def test_train_cli_mistakes_exit_2_with_one_message(tmp_path, args, message):
    result = _cli("train.py", "--workdir", str(tmp_path / "run"), *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not os.path.exists(tmp_path / "run")  # nothing written


def test_eval_cli_without_checkpoint_exits_2(tmp_path):
    result = _cli("eval.py", "--workdir", str(tmp_path))
    assert result.returncode == 2
    assert f"no checkpoint in {tmp_path}/checkpoints: train first" in result.stderr
    assert "Traceback" not in result.stderr


PAPER_GRID = [
    (dataset, backbone, loss)
    for dataset in ("market1501", "mars", "cuhk03", "cuhk_sysu", "all")
    for backbone in ("resnet50", "inception_v2", "resnet50x")
    for loss in ("cls", "triplet", "quadruplet", "trihard", "msml")
]


def _paper_config(arg):
    return load_config("paper", arg)


def test_every_point_of_the_paper_grid_builds_and_validates():
    for arg in PAPER_GRID:
        config = _paper_config(",".join(arg))
        validate_config(config)
        dataset, backbone, loss = arg
        assert (config.model.name, config.loss) == (backbone, loss)
        assert (config.P, config.K, config.batch_size, tuple(config.data.image_size)) == (32, 4, 128, (224, 224))
        assert (config.margin, config.beta, config.learning_rate, config.lr_decay) == (0.3, 0.2, 1e-3, 0.1)
        assert len(config.data.train) == (4 if dataset == "all" else 1)


@pytest.mark.parametrize(
    "dataset, boundaries, total",
    [  # epochs 50 / 200 / 250 times num_train_ids // 32, worked by hand, with the official releases' id counts
        ("market1501", (50 * 23, 200 * 23), 250 * 23),  # 751 ids
        ("mars", (50 * 19, 200 * 19), 250 * 19),  # 625 ids
        ("cuhk03", (50 * 42, 200 * 42), 250 * 42),  # 1367 ids
        ("cuhk_sysu", (50 * 172, 200 * 172), 250 * 172),  # 5532 ids
        ("all", (50 * 258, 200 * 258), 250 * 258),  # 8275 ids
        ("dukemtmc_reid", (50 * 21, 200 * 21), 250 * 21),  # 702 ids
        ("msmt17", (50 * 32, 200 * 32), 250 * 32),  # 1041 ids (list_train + list_val)
    ],
)
def test_paper_schedule_in_steps(dataset, boundaries, total):
    from msml_jax.training.schedule import resolve_epochs
    from msml_jax.training.steps import learning_rate_schedule

    ids = {"market1501": 751, "mars": 625, "cuhk03": 1367, "cuhk_sysu": 5532}
    num_ids = sum(ids.values()) if dataset == "all" else {**ids, "dukemtmc_reid": 702, "msmt17": 1041}[dataset]
    config = resolve_epochs(_paper_config(f"{dataset},resnet50,msml"), num_ids // 32)
    assert tuple(config.lr_boundaries) == boundaries and config.num_train_steps == total
    assert config.checkpoint_every_steps == total // 25 and config.eval_every_steps == total // 10
    schedule = learning_rate_schedule(config)
    rates = [float(schedule(t)) for t in (0, boundaries[0] - 1, boundaries[0], boundaries[1] - 1, boundaries[1])]
    assert np.allclose(rates, [1e-3, 1e-3, 1e-4, 1e-4, 1e-5])


def test_a_bad_paper_grid_point_names_the_choices():
    with pytest.raises(ValueError, match=r"unknown backbone 'vgg16': valid are resnet50, inception_v2, resnet50x"):
        _paper_config("market1501,vgg16,msml")


def test_warmup_ramps_the_first_steps_linearly():
    from msml_jax.training.steps import learning_rate_schedule

    config = make_tiny_config()
    config.warmup_steps = 4
    rates = [float(learning_rate_schedule(config)(t)) for t in range(6)]
    lr = config.learning_rate  # boundary at step 4: x 0.1 from t = 4 on
    assert np.allclose(rates, [lr / 4, lr / 2, 3 * lr / 4, lr, 0.1 * lr, 0.1 * lr])


def _loss_trajectory(config, num_steps):
    import jax

    from msml_jax.data import load_datasets
    from msml_jax.data.pipeline import train_dataset
    from msml_jax.data.sampling import PKSampler
    from msml_jax.models import model_from_config
    from msml_jax import sharding
    from msml_jax.models import init_variables
    from msml_jax.training import steps as train_steps
    from msml_jax.training.trainer import jit_train_step

    train, _ = load_datasets(config.data)
    model = model_from_config(config, len(np.unique(train["pids"])))
    sampler = PKSampler(train["pids"], config.P, config.K, config.seed)
    mesh = sharding.make_mesh(jax.devices()[:1])
    variables = init_variables(model, tuple(config.data.image_size), jax.random.PRNGKey(config.seed))
    state = sharding.replicate(train_steps.create_train_state(model, config, variables), mesh)
    step_fn = jit_train_step(config, mesh)
    losses = []
    for b in train_dataset(train, sampler, start_step=0, end_step=num_steps, image_size=config.data.image_size,
                           flip=config.data.flip, shift=config.data.shift).as_numpy_iterator():
        state, metrics = step_fn(state, b["images"], b["labels"])
        losses.append(float(metrics["loss"]))
    return np.array(losses)


def test_bfloat16_follows_the_float32_loss_trajectory():
    config = make_tiny_config()
    config.learning_rate = 1e-3  # batches of 8 at 3e-3 are chaotic: any rounding sends the runs apart
    full = _loss_trajectory(config, 6)
    config.dtype = "bfloat16"
    half = _loss_trajectory(config, 6)
    # Step 1 sees the same parameters: only bf16 rounding (8 mantissa bits, 2^-8 = 0.4%) differs, and MSML's
    # max / min over the pair distances passes a single rounded distance straight into the loss: measured 0.42%
    # with this pipeline's batches (1e-4 with the earlier one). Over Adam steps the differences compound (measured
    # 0.7% and 2.9% at steps 2 and 3, up to 4.3% by step 6): compared over the first 3 steps, at 5%, while the
    # loss itself moves by more than 5% of its value over these steps (so a broken bf16 path cannot pass).
    assert np.all(np.isfinite(half))
    np.testing.assert_allclose(half[0], full[0], rtol=1e-2)
    np.testing.assert_allclose(half[:3], full[:3], rtol=0.05)
    assert np.ptp(full) > 0.05 * np.mean(full)


# Log every 2 steps, save every 3: step 5 is neither a log nor a checkpoint step, step 3 is a checkpoint step only
# (the NaN/Inf watch must be read before that save too, or NaN parameters are saved as step 3).
@pytest.mark.parametrize("bad_step, kept, latest, last_logged", [(5, [3], "step 3 in ", 4), (3, [], "none", 2)])
def test_a_nan_loss_stops_the_run_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, bad_step,
                                                                                     kept, latest, last_logged):
    import jax.numpy as jnp

    from msml_jax.training import steps as train_steps

    real_step = train_steps.train_step

    def poisoned(state, images, labels, augment=None, *, settings):  # the bad step's update makes every parameter NaN
        state, metrics = real_step(state, images, labels, augment, settings=settings)
        bad = state.step == bad_step
        params = __import__("jax").tree_util.tree_map(lambda p: jnp.where(bad, jnp.nan, p), state.params)
        metrics["loss"] = jnp.where(bad, jnp.nan, metrics["loss"])
        return state.replace(params=params), metrics

    monkeypatch.setattr(train_steps, "train_step", poisoned)
    config = make_tiny_config()
    workdir = str(tmp_path / "run")
    with pytest.raises(UserError, match=rf"the loss became nan .* at step {bad_step}; training stopped .* latest good "
                                        rf"checkpoint is {latest}"):
        train_and_evaluate(config, workdir, evaluate=False, tensorboard=False)
    manager = checkpoint.checkpoint_manager(workdir, create=False)
    assert manager.all_steps() == kept
    assert max(r["step"] for r in _records(workdir)) == last_logged  # nothing logged of the bad step


def test_tensorboard_holds_the_logged_scalars(trained):
    import tensorflow as tf
    from tensorflow.core.util import event_pb2

    _, workdir, _ = trained
    logdir = os.path.join(workdir, "tensorboard")
    scalars = {}
    for name in os.listdir(logdir):
        for raw in tf.data.TFRecordDataset(os.path.join(logdir, name)):
            event = event_pb2.Event.FromString(raw.numpy())
            for value in event.summary.value:
                assert value.metadata.plugin_data.plugin_name == "scalars"
                scalars[(value.tag, event.step)] = float(tf.make_ndarray(value.tensor))
    records = _records(workdir)
    for r in records:
        if "dataset" in r:
            assert scalars[(f"eval/{r['dataset']}/mAP", r["step"])] == pytest.approx(r["mAP"], rel=1e-6)
        else:
            for key in ("loss", "learning_rate", "hardest_pos", "hardest_neg", "grad_norm"):
                assert scalars[(f"train/{key}", r["step"])] == pytest.approx(r[key], rel=1e-6)


def test_the_embedder_gives_the_evaluation_embeddings_of_a_split_from_its_files(trained, tmp_path, tiny_splits):
    import tensorflow as tf

    from msml_jax.inference import Embedder

    workdir = _copy_of(trained, tmp_path)
    features = str(tmp_path / "features.npz")
    evaluate_run(workdir, features_path=features)
    paths = []
    for i, image in enumerate(tiny_splits["gallery"]["images"]):
        paths.append(str(tmp_path / f"g{i}.png"))
        tf.io.write_file(paths[-1], tf.io.encode_png(image))
    embedder = Embedder.from_workdir(workdir, batch_size=5)  # batches of another size than evaluation's
    embedded = embedder.embed(paths)
    expected = np.load(features)["synthetic/gallery/embeddings"]
    np.testing.assert_allclose(embedded, expected, rtol=1e-5, atol=1e-5)  # float32, other batch composition
    # search: the k nearest of each query, as a brute-force sort of l2-normalized Euclidean distances.
    query = np.load(features)["synthetic/query/embeddings"]
    indices, distances = embedder.search(query, embedded, k=4)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    full = np.linalg.norm(unit(query)[:, None] - unit(embedded)[None], axis=-1)
    np.testing.assert_array_equal(indices, np.argsort(full, axis=1, kind="stable")[:, :4])
    np.testing.assert_allclose(distances, np.sort(full, axis=1)[:, :4], atol=1e-5)


def test_the_embedder_resizes_like_the_evaluation_pipeline(trained, tmp_path):
    import tensorflow as tf

    from msml_jax.inference import Embedder

    embedder = Embedder.from_workdir(_copy_of(trained, tmp_path))
    image = np.random.default_rng(0).integers(0, 256, (75, 41, 3), np.uint8)
    expected = tf.cast(tf.clip_by_value(tf.round(tf.image.resize(image, (32, 16))), 0, 255), tf.uint8).numpy()
    got = embedder._load(image)
    assert got.shape == (32, 16, 3) and np.abs(got.astype(int) - expected).max() <= 1  # float rounding at .5
    with pytest.raises(UserError, match="cannot read .* as an image"):
        embedder.embed([str(tmp_path / "missing.png")])
