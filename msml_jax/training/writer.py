"""A run's record, written by process 0 alone: `WORKDIR/metrics.jsonl` (through `msml_jax.records`) and TensorBoard.

TensorBoard scalars go through `summaries.SummaryWriter` (TensorFlow's summary ops; the kept alternatives,
flax.metrics.tensorboard and clu.metric_writers, need TensorFlow as well, and clu is not a dependency). Without
TensorFlow installed (e.g. an accelerator host that only trains), metrics.jsonl is still written.
"""

import importlib.util
import os

from msml_jax import records
from msml_jax.training.summaries import SummaryWriter


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
        records.append(self.workdir, record)
        numbers = {k: v for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
                   and k not in ("step", "trial")}
        if "dataset" in record:
            self._tb.scalars(record["step"], numbers, f"eval/{record['dataset']}/")
        else:
            self._tb.scalars(record["step"], numbers, "train/")

    def rewind(self, step, final_step):
        """`records.rewind` on process 0; the number of records dropped (0 elsewhere)."""
        return records.rewind(self.workdir, step, final_step) if self.enabled else 0

    def flush(self):
        self._tb.flush()

    def close(self):
        self._tb.close()
