"""A run's records, `WORKDIR/metrics.jsonl`: the one reader and writer of that file.

One JSON object per line (`json.dumps` defaults: insertion order, repr floats), written by process 0 alone: a
train record per log step, an evaluation record (it has a `dataset`) per evaluated dataset. Only the standard
library (and errors / outputs) is imported.
"""

import json
import os

from msml_jax.errors import warn
from msml_jax.outputs import atomic_file

METRICS_FILE = "metrics.jsonl"


def metrics_path(workdir):
    return os.path.join(workdir, METRICS_FILE)


def append(workdir, record):
    """Appends `record` (a dict of JSON values) as one line of `workdir`'s metrics.jsonl."""
    with open(metrics_path(workdir), "a") as f:
        f.write(json.dumps(record) + "\n")


def read(path):
    """(records, bad lines) of a metrics.jsonl: its records in file order, and the lines that are not a JSON
    object with a `step` (e.g. the half-written last line of a run killed mid-write) as (line number, first 60
    characters)."""
    records, bad = [], []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            if not isinstance(record, dict) or "step" not in record:
                bad.append((number, line.strip()[:60]))
                continue
            records.append(record)
    return records, bad


def training_evaluations(workdir):
    """The evaluation records the training itself wrote (those of eval.py, which carry `checkpoint`, left out), in
    file order; [] when there is no metrics.jsonl."""
    path = metrics_path(workdir)
    if not os.path.exists(path):
        return []
    return [r for r in read(path)[0] if "dataset" in r and "checkpoint" not in r]


def rewind(workdir, step, final_step):
    """Drops the records written after checkpoint `step` (they will be written again), atomically; `step` 0: a run
    starting over (it kept no checkpoint). Returns how many records were dropped.

    Kept: every record eval.py wrote (it has a `checkpoint`), train records up to `step`, evaluations before `step`,
    and the evaluation at `step` unless the run evaluates that step again: the first (a run starting over evaluates
    step 0 first) and the final one (a resumed run repeats the final evaluation). The file then reads as an
    uninterrupted run's. An unreadable line (a write cut short) is dropped with a warning.
    """
    path = metrics_path(workdir)
    if not os.path.exists(path):
        return 0

    def keep(r):
        if "checkpoint" in r:  # eval.py's: the trainer did not write it and never writes it again
            return True
        if "dataset" in r:
            return r["step"] < step or (r["step"] == step and 0 < step < final_step)
        return r["step"] <= step

    records, bad = read(path)
    for number, _ in bad:
        warn(f"{path} line {number} is not valid JSON (a write cut short?): skipped")
    kept = [r for r in records if keep(r)]
    with atomic_file(path) as tmp, open(tmp, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in kept)
    return len(records) - len(kept)
