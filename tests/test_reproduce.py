"""The reproduction driver: run keys and skipping, the table's means, stds and paired differences (worked by hand),
and one end-to-end run of two losses on the tiny benchmark, run again to show it skips and resumes."""

import json
import os

import pytest

from msml_jax import reproduce
from msml_jax.errors import UserError
from tests.conftest import make_tiny_config


def _entry(loss, index, records, table="t", steps=100, digest="abcd0123", rep="seed"):
    return {"table": table, "loss": loss, "rep": rep, "index": index, "steps": steps, "overrides_hash": digest,
            "overrides": {"config": "synthetic.py", "num_train_steps": steps}, "records": records}


def _record(mAP, rank1, auc=0.9, gap=0.1, **extra):
    return {"step": 100, "dataset": "synthetic", "protocol": "image", "mAP": mAP, "rank1": rank1, "rank5": rank1,
            "rank10": rank1, "rank20": rank1, "auc": auc, "neg_closer_than_median_pos": 0.0, "gap_p95_p5": gap,
            **extra}


def _row(text, first_cell):
    rows = [line for line in text.splitlines() if line.startswith(f"| {first_cell} |")]
    return [cell.strip() for cell in rows[0].strip("|").split("|")] if len(rows) == 1 else rows


def test_parse_indices_and_overrides():
    assert reproduce.parse_indices("0-2,5") == [0, 1, 2, 5]
    assert reproduce.parse_indices("3, 1,3") == [3, 1]
    assert reproduce.parse_override("data.image_size=(128, 64)") == ("data.image_size", (128, 64))
    assert reproduce.parse_override("model.name=resnet50") == ("model.name", "resnet50")
    with pytest.raises(reproduce.UserError, match="0,1,2"):
        reproduce.parse_indices("zero")


def test_hash_ignores_where_data_lies_but_not_what_is_trained():
    a = reproduce.overrides_hash({"config": "viper.py", "data.manual_dir": "/a", "model.name": "resnet50"})
    b = reproduce.overrides_hash({"config": "viper.py", "data.manual_dir": "/b", "model.name": "resnet50"})
    c = reproduce.overrides_hash({"config": "viper.py", "data.manual_dir": "/a", "model.name": "resnet18"})
    assert a == b != c


def test_pending_runs_skip_exactly_the_finished_keys():
    plan = reproduce.plan_runs("t", ["msml", "cls"], "seed", [0, 1], 100, {"config": "synthetic.py"})
    assert [(r["loss"], r["index"]) for r in plan] == [("msml", 0), ("cls", 0), ("msml", 1), ("cls", 1)]
    digest = plan[0]["overrides_hash"]
    entries = [_entry("msml", 1, [], digest=digest),
               _entry("cls", 0, [], digest=digest, steps=50),  # other steps: another run
               _entry("cls", 1, [], digest="ffffffff"),  # other overrides: another run
               _entry("cls", 1, [], digest=digest, table="other")]  # other table
    assert [(r["loss"], r["index"]) for r in reproduce.pending_runs(plan, entries)] == [
        ("msml", 0), ("cls", 0), ("cls", 1)]


def test_scale_schedule_keeps_the_fractions():
    config = make_tiny_config()
    config.num_train_steps, config.lr_boundaries, config.eval_every_steps = 700, (500, 650), 350
    reproduce.scale_schedule(config, 140)
    assert (config.num_train_steps, tuple(config.lr_boundaries), config.eval_every_steps) == (140, (100, 130), 70)


def test_table_means_stds_and_paired_differences_by_hand():
    entries = [
        _entry("msml", 0, [_record(0.50, 0.40, gap=0.10)]),
        _entry("msml", 1, [_record(0.70, 0.60, gap=0.30)]),
        _entry("trihard", 0, [_record(0.45, 0.40, gap=0.00)]),
        _entry("trihard", 1, [_record(0.55, 0.70, gap=0.10)]),
        _entry("cls", 1, [_record(0.30, 0.20)]),  # seed 1 only: one pair with msml
    ]
    text = reproduce.markdown_tables(entries)
    # msml: mAP (50, 70) -> 60.0 ± 10.0; rank-1 (40, 60) -> 50.0 ± 10.0; gap (0.1, 0.3) -> 0.200 ± 0.100.
    msml, trihard = _row(text.split("Difference")[0], "msml"), _row(text.split("Difference")[0], "trihard")
    assert msml[:4] == ["msml", "2", "60.0 ± 10.0", "50.0 ± 10.0"] and msml[-1] == "0.200 ± 0.100"
    # trihard: mAP (45, 55) -> 50.0 ± 5.0; rank-1 (40, 70) -> 55.0 ± 15.0.
    assert trihard[:4] == ["trihard", "2", "50.0 ± 5.0", "55.0 ± 15.0"]
    # Paired: mAP differences (45-50, 55-70) = (-5, -15) -> -10.0 ± 5.0; rank-1 (0, +10) -> +5.0 ± 5.0;
    # gap (0.0-0.1, 0.1-0.3) = (-0.1, -0.2) -> -0.150 ± 0.050. cls: one pair, 30-70 = -40.
    diff = text.split("Difference")[1]
    assert _row(diff, "trihard")[:4] == ["trihard", "2", "-10.0 ± 5.0", "+5.0 ± 5.0"]
    assert _row(diff, "trihard")[-1] == "-0.150 ± 0.050"
    assert _row(diff, "cls")[:3] == ["cls", "1", "-40.0 ± 0.0"]
    assert _row(diff, "msml") == []
    assert "| loss | seeds | mAP | rank-1 | rank-5 | rank-10 | AUC |" in text


def test_ten_split_tables_show_cmc_to_rank20_and_the_latest_entry_wins():
    entries = [_entry("msml", s, [_record(0.1, 0.1 * (s + 1), dataset="viper", protocol="ten_split", trial=s,
                                          rank20=0.5)], rep="split") for s in range(2)]
    entries.append(_entry("msml", 1, [_record(0.1, 0.4, dataset="viper", protocol="ten_split", trial=1,
                                              rank20=0.7)], rep="split"))  # a rerun of split 1 supersedes it
    text = reproduce.markdown_tables(entries)
    assert "### viper" in text and "| loss | splits | rank-1 | rank-5 | rank-10 | rank-20 | AUC |" in text
    # rank-1 (10, 40) -> 25.0 ± 15.0; rank-20 (50, 70) -> 60.0 ± 10.0
    assert _row(text, "msml")[:6] == ["msml", "2", "25.0 ± 15.0", "25.0 ± 15.0", "25.0 ± 15.0", "60.0 ± 10.0"]


def test_table_only_regenerates_from_the_file_and_user_mistakes_exit_2(tmp_path, capsys):
    path = tmp_path / "t.jsonl"
    entries = [_entry("msml", 0, [_record(0.5, 0.4)]), _entry("cls", 0, [_record(0.3, 0.2)])]
    path.write_text("".join(json.dumps(e) + "\n" for e in entries))
    reproduce.main(["--results", str(path), "--table_only"])
    assert (tmp_path / "t.md").read_text() == reproduce.markdown_tables(entries)
    for argv, message in ((["--splits", "0-9", "--table", "x"], "--splits is for"),
                          (["--set", "no_such_field=1"], "no field 'no_such_field'"),
                          (["--losses", "msml,arcface"], "valid losses")):
        with pytest.raises(SystemExit) as e:
            reproduce.main(argv + ["--results", str(tmp_path / "x.jsonl"), "--root", str(tmp_path)])
        assert e.value.code == 2 and message in capsys.readouterr().err


def test_end_to_end_runs_skips_and_resumes(tmp_path):
    base = make_tiny_config()
    results, root = str(tmp_path / "tiny.jsonl"), str(tmp_path / "runs")
    args = (base, {"config": "tiny"}, "tiny", ["trihard", "msml"], "seed", [0], root, results)
    logs = []
    entries = reproduce.reproduce(*args, log=logs.append)
    assert [(e["loss"], e["index"], e["resumed"]) for e in entries] == [("trihard", 0, False), ("msml", 0, False)]
    assert [r["step"] for e in entries for r in e["records"]] == [6, 6]
    workdirs = sorted(os.listdir(os.path.join(root, "tiny")))
    assert workdirs == sorted(f"{loss}-seed0-{entries[0]['overrides_hash']}" for loss in ("msml", "trihard"))
    # Run again: both finished, nothing trains, the file is unchanged.
    logs.clear()
    assert reproduce.reproduce(*args, log=logs.append) == entries
    assert "0 to go" in logs[0] and len(logs) == 1
    # A run with a workdir but no final record (stopped after its last checkpoint) is continued from it: the
    # restored step-6 model gives the same final figures without training again.
    with open(results, "w") as f:
        f.write(json.dumps(entries[0]) + "\n")
    logs.clear()
    again = reproduce.reproduce(*args, log=logs.append)
    assert "(resuming)" in logs[1] and again[1]["resumed"] and again[1]["loss"] == "msml"
    assert again[1]["records"][0]["mAP"] == pytest.approx(entries[1]["records"][0]["mAP"], abs=1e-6)


def test_steps_refused_for_a_schedule_in_epochs():
    config = make_tiny_config()
    config.num_train_steps, config.lr_boundaries = 0, ()
    config.num_train_epochs, config.lr_boundary_epochs = 250, (50, 200)
    with pytest.raises(UserError, match=r"--steps 100: the config gives its schedule in epochs "
                                        r"\(config\.num_train_epochs=250, config\.lr_boundary_epochs=\(50, 200\)\)"):
        reproduce.scale_schedule(config, 100)
