"""A run's record, written by process 0 alone: `WORKDIR/metrics.jsonl` (one JSON object per line) and TensorBoard.

TensorBoard scalars go through `summaries.SummaryWriter` (TensorFlow's summary ops; the kept alternatives,
flax.metrics.tensorboard and clu.metric_writers, need TensorFlow as well, and clu is not a dependency). Without
TensorFlow installed (e.g. an accelerator host that only trains), metrics.jsonl is still written.
"""

import importlib.util
import json
import os
import sys

from msml_jax.training.summaries import SummaryWriter

METRICS_FILE = "metrics.jsonl"


def read_records(path):
    """The JSON records of a metrics.jsonl; an unreadable line (a write cut short) is skipped with a warning."""
    records = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                print(f"warning: {path} line {number} is not valid JSON (a write cut short?): skipped", file=sys.stderr)
    return records


def rewind_metrics(workdir, step, final_step):
    """Drops the records written after checkpoint `step` (they will be written again), atomically.

    Kept: train records up to `step`, evaluations before `step`, and the evaluation at `step` unless it is the
    final one (a resumed run repeats the final evaluation). The file then reads as an uninterrupted run's.
    """
    path = os.path.join(workdir, METRICS_FILE)
    if not os.path.exists(path):
        return

    def keep(r):
        if "dataset" in r:
            return r["step"] < step or (r["step"] == step and step < final_step)
        return r["step"] <= step

    with open(path + ".tmp", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in read_records(path) if keep(r))
    os.replace(path + ".tmp", path)


class MetricWriter:
    """metrics.jsonl and TensorBoard of `workdir`; `enabled=False` (processes other than 0) writes nothing.

    `write(record)` appends the record and logs its numbers to TensorBoard: a train record's under `train/`,
    an evaluation record's (it has a `dataset`) under `eval/<dataset>/`.
    """

    def __init__(self, workdir, enabled=True, tensorboard=True):
        self.workdir, self.enabled = workdir, enabled
        tensorboard = tensorboard and enabled and importlib.util.find_spec("tensorflow") is not None
        self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"), enabled=tensorboard)

    def write(self, record):
        if not self.enabled:
            return
        with open(os.path.join(self.workdir, METRICS_FILE), "a") as f:
            f.write(json.dumps(record) + "\n")
        numbers = {k: v for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
                   and k not in ("step", "trial")}
        if "dataset" in record:
            self._tb.scalars(record["step"], numbers, f"eval/{record['dataset']}/")
        else:
            self._tb.scalars(record["step"], numbers, "train/")

    def rewind(self, step, final_step):
        if self.enabled:
            rewind_metrics(self.workdir, step, final_step)

    def flush(self):
        self._tb.flush()

    def close(self):
        self._tb.close()
