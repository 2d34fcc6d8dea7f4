"""Nothing the user made is lost: one training per workdir, eval.py's records and the best checkpoint survive
restarts and kills, a finished run restarted rewrites nothing."""

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

from msml_jax import checkpoint, lock
from msml_jax.evaluation import evaluator as evaluator_module
from msml_jax.training import loop
from msml_jax.training.loop import train_and_evaluate
from tests.conftest import ROOT, TINY_SYNTHETIC, make_tiny_config


def _snapshot(folder):
    """{relative path: bytes} of every file under `folder`."""
    out = {}
    for d, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(d, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = f.read()
    return out


def _lines(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny run (6 steps), read only: tests copy it."""
    workdir = str(tmp_path_factory.mktemp("finished") / "run")
    train_and_evaluate(make_tiny_config(), workdir, tensorboard=False)
    return workdir


def _copy(finished, tmp_path):
    workdir = str(tmp_path / "run")
    shutil.copytree(finished, workdir)
    return workdir


def test_a_second_training_on_a_workdir_is_refused_naming_the_holder(finished, tmp_path):
    workdir = _copy(finished, tmp_path)
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "since": "2026-12-05 10:00:00 UTC",
              "start_time": lock._start_time(os.getpid())}  # this very test process: alive
    with open(os.path.join(workdir, lock.LOCK_FILE), "w") as f:
        json.dump(holder, f)
    before = _snapshot(workdir)
    flags = [*(f"--config.data.synthetic.{k}={v}" for k, v in TINY_SYNTHETIC.items() if k != "image_size"),
             "--config.data.synthetic.image_size=(32, 16)", "--config.data.image_size=(32, 16)",
             "--config.model.embed_dim=16", "--config.P=4", "--config.K=2", "--config.batch_size=8",
             "--config.num_train_steps=12", "--config.lr_boundaries=(4,)", "--config.log_every_steps=2",
             "--config.checkpoint_every_steps=3", "--config.eval_batch_size=16"]
    result = subprocess.run([sys.executable, "train.py", "--config", "configs/synthetic.py", "--workdir", workdir,
                             *flags], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "is in use by another training" in errors[0], result.stderr[-3000:]
    assert f"pid {os.getpid()}" in errors[0] and "since 2026-12-05 10:00:00 UTC" in errors[0]
    assert _snapshot(workdir) == before  # nothing trained, nothing written


def test_a_lock_left_by_a_killed_training_is_taken_over(tmp_path, capsys):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    workdir = str(tmp_path / "run")
    os.makedirs(workdir)
    with open(os.path.join(workdir, lock.LOCK_FILE), "w") as f:
        json.dump({"host": socket.gethostname(), "pid": gone.pid, "since": "yesterday"}, f)
    with lock.WorkdirLock(workdir):
        with open(os.path.join(workdir, lock.LOCK_FILE)) as f:
            assert json.load(f)["pid"] == os.getpid()
        with pytest.raises(Exception, match="is in use by another training"):  # and it now holds it
            lock.WorkdirLock(workdir).acquire()
    assert not os.path.exists(os.path.join(workdir, lock.LOCK_FILE))  # released
    assert f"pid {gone.pid}" in capsys.readouterr().err


def test_tmp_directories_of_cut_writes_are_gone_once_the_managers_are_made(finished, tmp_path, monkeypatch):
    """Orbax deletes the `*.orbax-checkpoint-tmp` directories a kill left (here: copies of committed checkpoints
    under a tmp name, what a write holds before its rename) in a thread it waited for only at its first save: a
    process ending soon after making its managers (a mistake found then, a finished run restarted) could leave
    them, and printed that thread's traceback at exit. The deletion is slowed here so that the race is certain."""
    from orbax.checkpoint._src.path import async_path

    rmtree = async_path.rmtree

    async def slow_rmtree(path):
        await asyncio.sleep(0.5)
        return await rmtree(path)

    monkeypatch.setattr(async_path, "rmtree", slow_rmtree)
    workdir = _copy(finished, tmp_path)
    leftovers, steps = [], []
    for folder in ("checkpoints", "best"):
        steps.append(max(int(name) for name in os.listdir(os.path.join(workdir, folder)) if name.isdigit()))
        leftovers.append(os.path.join(workdir, folder, f"{steps[-1] + 1}.orbax-checkpoint-tmp"))
        shutil.copytree(os.path.join(workdir, folder, str(steps[-1])), leftovers[-1])
    managers = checkpoint.checkpoint_manager(workdir), checkpoint.best_checkpoint_manager(workdir)
    assert [os.path.exists(path) for path in leftovers] == [False, False]
    assert [manager.latest_step() for manager in managers] == steps  # the committed ones untouched
    for manager in managers:
        manager.close()


def test_rerunning_a_finished_training_keeps_eval_records_and_rewrites_nothing(finished, tmp_path, capsys):
    from msml_jax.evaluation.workdir import evaluate_run

    workdir = _copy(finished, tmp_path)
    flipped = evaluate_run(workdir, flip=True)  # eval.py --flip: a record of its own at the final step
    assert flipped and all(r["flip"] for r in flipped)
    before = _snapshot(workdir)
    train_and_evaluate(make_tiny_config(), workdir, tensorboard=False)  # the training's own command, again
    assert "nothing to train" in capsys.readouterr().err
    assert _snapshot(workdir) == before
    assert [r for r in _lines(workdir) if r.get("checkpoint")] == flipped


def test_a_resume_keeps_eval_records_written_after_the_checkpoint(finished, tmp_path):
    from msml_jax import records

    workdir = _copy(finished, tmp_path)
    eval_record = {"step": 6, "dataset": "synthetic", "protocol": "image", "mAP": 0.5, "checkpoint": "latest"}
    records.append(workdir, eval_record)
    records.rewind(workdir, 3, 6)  # a resume from checkpoint 3
    kept = _lines(workdir)
    assert eval_record in kept and all(r["step"] <= 3 for r in kept if "checkpoint" not in r)


def _fake_scores(step):
    """Evaluation records whose mAP peaks at step 4 (the loop's bookkeeping, not the model, is under test)."""
    value = 0.9 if step == 4 else 0.1 + 0.01 * step
    return [{"step": int(step), "dataset": "synthetic", "protocol": "image", "mAP": value, "rank1": value,
             "rank5": value, "rank10": value, "rank20": value, "mINP": value}]


def test_the_best_checkpoint_survives_a_kill_between_an_evaluation_and_its_save(tmp_path, monkeypatch):
    """The run evaluates every 2 steps (mAP peaks at 4) and checkpoints every 2; the write of best/ step 4 is lost
    (a kill before Orbax committed it) and the run is killed at step 5. The restart must end with best/ = step 4."""
    config = make_tiny_config()
    config.eval_every_steps, config.checkpoint_every_steps, config.lr_boundaries = 2, 2, (5,)
    workdir = str(tmp_path / "run")
    monkeypatch.setattr(evaluator_module.Evaluator, "__call__", lambda self, variables, step: _fake_scores(step))
    real_save = checkpoint.save

    def losing_save(manager, state, *args, **kwargs):
        if str(manager.directory).endswith("best") and int(state.step) == 4:
            return False  # never written: the process died before the asynchronous write was committed
        return real_save(manager, state, *args, **kwargs)

    def killed_at_5(trainer, start_step):
        for batch in loop._default_batches(trainer, start_step):
            if int(batch["step"]) == 5:
                raise RuntimeError("killed")
            yield batch

    monkeypatch.setattr(checkpoint, "save", losing_save)
    with pytest.raises(RuntimeError, match="killed"):
        train_and_evaluate(config, workdir, batches=killed_at_5, tensorboard=False)
    monkeypatch.setattr(checkpoint, "save", real_save)
    assert checkpoint.checkpoint_manager(workdir, create=False).latest_step() == 4
    train_and_evaluate(config, workdir, tensorboard=False)
    evaluated = {}
    for r in _lines(workdir):
        if "dataset" in r and r["step"] > 0:
            evaluated[r["step"]] = r["mAP"]
    assert max(evaluated, key=evaluated.get) == 4
    assert checkpoint.best_checkpoint_manager(workdir).all_steps() == [4]
    assert not os.path.exists(os.path.join(workdir, lock.LOCK_FILE))
    np.testing.assert_equal(sorted(evaluated), [2, 4, 6])


def test_a_run_starting_over_does_not_keep_an_earlier_starts_best_checkpoint(tmp_path, monkeypatch):
    """An earlier start evaluated at 2 and 4 (mAP peaks at 4: best/ step 4) and was killed at 5, before its first
    checkpoint (at 6). The user changes the learning rate and starts again: the new run's step 4 must reach best/;
    it was skipped ("step 4 is in best/ already") and best/ kept the earlier start's state and config."""
    config = make_tiny_config()
    config.eval_every_steps, config.checkpoint_every_steps = 2, 6
    workdir = str(tmp_path / "run")
    monkeypatch.setattr(evaluator_module.Evaluator, "__call__", lambda self, variables, step: _fake_scores(step))

    def killed_at_5(trainer, start_step):
        for batch in loop._default_batches(trainer, start_step):
            if int(batch["step"]) == 5:
                raise RuntimeError("killed")
            yield batch

    with pytest.raises(RuntimeError, match="killed"):
        train_and_evaluate(config, workdir, batches=killed_at_5, tensorboard=False)
    assert checkpoint.checkpoint_manager(workdir, create=False).latest_step() is None
    assert checkpoint.best_checkpoint_manager(workdir).all_steps() == [4]
    config.learning_rate *= 0.5
    train_and_evaluate(config, workdir, tensorboard=False)
    best = checkpoint.best_checkpoint_manager(workdir)
    assert best.all_steps() == [4]
    assert checkpoint.latest_readable_config(best)["learning_rate"] == config.learning_rate
    assert [name.split("-")[0] for name in os.listdir(os.path.join(workdir, "best")) if not name.isdigit()] == [
        "4.earlier"]  # the earlier start's, kept aside


def test_outputs_written_atomically_get_the_users_permissions(tmp_path):
    # The temporary name is renamed onto the output: it must be made as any new file is (umask), not private.
    from msml_jax import outputs

    umask = os.umask(0o022)
    try:
        with outputs.atomic_file(str(tmp_path / "features.npz")) as tmp:
            with open(tmp, "w") as f:
                f.write("x")
        with outputs.atomic_folder(str(tmp_path / "pictures")) as folder:
            open(os.path.join(folder, "a.png"), "w").close()
    finally:
        os.umask(umask)
    assert os.stat(tmp_path / "features.npz").st_mode & 0o777 == 0o644
    assert os.stat(tmp_path / "pictures").st_mode & 0o777 == 0o755
    assert sorted(os.listdir(tmp_path)) == ["features.npz", "pictures"]  # no temporary left
