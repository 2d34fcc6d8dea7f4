"""metrics.jsonl after a resume reads as an uninterrupted run's: hand-written files, each resume case by hand.

The run: 6 steps, every step logged, evaluations (two datasets) at steps 0, 3 and 6 (eval_every_steps=3).
"""

import json

import pytest

from msml_jax.records import rewind as _rewind_metrics


def T(step):
    return {"step": step, "loss": 1.0 / step}


def E(step):
    return [{"step": step, "dataset": "a", "mAP": 0.1 * step}, {"step": step, "dataset": "b", "mAP": 0.2 * step}]


UNINTERRUPTED = [*E(0), T(1), T(2), T(3), *E(3), T(4), T(5), T(6), *E(6)]


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def _read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize(
    "written, checkpoint, kept, resumed_writes",
    [
        # Killed after step 5, resumed at checkpoint 3: step 3's evaluation stays (the resumed run does not
        # evaluate step 3 again), step 4 and 5 are dropped.
        (UNINTERRUPTED[:9], 3, [*E(0), T(1), T(2), T(3), *E(3)], [T(4), T(5), T(6), *E(6)]),
        # Killed in the middle of step 3's evaluation (one dataset written), before checkpoint 3 (saved after
        # the evaluation): resumed at 2, the partial evaluation goes.
        (UNINTERRUPTED[:6], 2, [*E(0), T(1), T(2)], [T(3), *E(3), T(4), T(5), T(6), *E(6)]),
        # Resumed at checkpoint 2, which has no evaluation: step 3's records go, to be written again.
        (UNINTERRUPTED[:10], 2, [*E(0), T(1), T(2)], [T(3), *E(3), T(4), T(5), T(6), *E(6)]),
        # A finished run restarted (or killed during its final evaluation): the checkpoint is the final step, the
        # resumed run evaluates it again, so the final evaluation goes and the train records stay.
        (UNINTERRUPTED, 6, UNINTERRUPTED[:-2], E(6)),
        (UNINTERRUPTED[:-1], 6, UNINTERRUPTED[:-2], E(6)),
        (UNINTERRUPTED[:-2], 6, UNINTERRUPTED[:-2], E(6)),
        # Killed before the first checkpoint (after step 2, or in the middle of step 0's evaluation): the run
        # starts over and evaluates step 0 first, so everything the training wrote goes.
        (UNINTERRUPTED[:4], 0, [], UNINTERRUPTED),
        (UNINTERRUPTED[:1], 0, [], UNINTERRUPTED),
    ],
)
def test_rewind_keeps_what_an_uninterrupted_run_wrote_before_the_checkpoint(tmp_path, written, checkpoint, kept,
                                                                            resumed_writes):
    path = tmp_path / "metrics.jsonl"
    _write(path, written)
    _rewind_metrics(str(tmp_path), checkpoint, 6)
    assert _read(path) == kept
    assert _read(path) + resumed_writes == UNINTERRUPTED
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]  # no temporary file left


def test_rewind_without_metrics_file_writes_none(tmp_path):
    _rewind_metrics(str(tmp_path), 3, 6)
    assert list(tmp_path.iterdir()) == []


def test_a_line_cut_short_by_a_kill_is_dropped_with_a_warning_naming_it(tmp_path, capsys):
    path = tmp_path / "metrics.jsonl"
    text = "".join(json.dumps(r) + "\n" for r in [*E(0), T(1), T(2), T(3), *E(3), T(4)])
    path.write_text(text + json.dumps(T(5))[:9])  # the process died in the middle of writing step 5
    _rewind_metrics(str(tmp_path), 3, 6)
    assert _read(path) == [*E(0), T(1), T(2), T(3), *E(3)]
    assert f"{path} line 9 is not valid JSON" in capsys.readouterr().err
