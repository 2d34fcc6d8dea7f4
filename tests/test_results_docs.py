"""The committed loss tables say what their committed results files say.

docs/results/<table>.jsonl holds one line per finished run of `python -m msml_jax.reproduce`; <table>.md and
docs/RESULTS.md show tables made from it. These tests regenerate the tables from the results files (no training)
and check the committed documents still hold them, so a re-run that changes a results file without its tables
(or an edited number) fails here.
"""

import glob
import os

import pytest

from msml_jax.reproduce import markdown_tables, read_results

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = sorted(glob.glob(os.path.join(ROOT, "docs", "results", "*.jsonl")))
# The tables docs/RESULTS.md reports in full, with the losses each compares (the others are linked from it).
ALL_LOSSES = {"cls", "triplet", "quadruplet", "trihard", "msml"}
REPORTED = {"synthetic": ALL_LOSSES, "viper": ALL_LOSSES, "viper_long": {"trihard", "msml"}}


def _rows(markdown):
    return [line for line in markdown.splitlines() if line.startswith("| ") and "---" not in line]


@pytest.mark.parametrize("path", RESULTS, ids=os.path.basename)
def test_each_table_file_is_its_results_file(path):
    entries = read_results(path)
    assert entries, f"{path} is empty"
    with open(os.path.splitext(path)[0] + ".md") as f:
        assert markdown_tables(entries) in f.read()


@pytest.mark.parametrize("table", sorted(REPORTED))
def test_results_md_holds_every_row(table):
    path = os.path.join(ROOT, "docs", "results", f"{table}.jsonl")
    entries = read_results(path)
    losses = {e["loss"] for e in entries}
    assert losses == REPORTED[table]
    with open(os.path.join(ROOT, "docs", "RESULTS.md")) as f:
        text = f.read()
    rows = _rows(markdown_tables(entries))
    assert len(rows) >= 2 * len(losses)  # a mean row per loss, a difference row per loss but MSML, two headers
    missing = [row for row in rows if row not in text]
    assert not missing, f"docs/RESULTS.md lacks rows of {table}: {missing[:2]}"
