"""Evaluation records as tables: one row per record, and mean ± std rows over the ten splits of a dataset."""

import numpy as np

from msml_jax.data import find_dataset

COLUMNS = (("mAP", "mAP"), ("rank1", "rank-1"), ("rank5", "rank-5"), ("rank10", "rank-10"), ("rank20", "rank-20"),
           ("mINP", "mINP"))


def dataset_label(record):
    """The record's dataset, with its protocol when the dataset has several (or is not registered here):
    "cuhk03 (classic)"."""
    label, protocol = record["dataset"], record.get("protocol")
    dataset = find_dataset(label)
    if protocol is not None and (dataset is None or len(dataset.protocols) > 1):
        label += f" ({protocol})"
    return label


def mean_std(values):
    """(mean, population std) of a list of numbers, in float64."""
    a = np.asarray(values, np.float64)
    return float(a.mean()), float(a.std())


def _label(record):
    label = dataset_label(record)
    if record.get("trial") is not None:
        label += f" #{record['trial']}"
    if record.get("rerank"):
        label += " re-ranked"
    return label


def format_table(records):
    """Fixed-width table of evaluation records, metrics in percent; ten-split datasets get a mean ± std row."""
    width = max([12] + [len(_label(r)) + 2 for r in records])
    header = f"{'dataset':<{width}}{'step':>8}" + "".join(f"{title:>13}" for _, title in COLUMNS)
    rows = [f"{_label(r):<{width}}{r['step']:>8}"
            + "".join(f"{100 * r[k]:>13.1f}" if k in r else f"{'-':>13}" for k, _ in COLUMNS) for r in records]
    for summary in ten_split_summaries(records):
        cells = "".join(f"{100 * summary[k]:>7.1f} ±{100 * summary[k + '_std']:>4.1f}" for k, _ in COLUMNS)
        label = f"{summary['dataset']} ({summary['num_trials']} splits)"
        rows.append(f"{label:<{width}}{'':>8}" + cells)
    return "\n".join([header, *rows])


def ten_split_summaries(records):
    """Mean and std (population, ddof=0) of each metric over the records of distinct trials of a dataset.

    Records with a `trial` are grouped by (dataset, protocol, flip, metric); a group of at least two distinct
    trials gives one summary dict: dataset, protocol, num_trials, trials, and `<metric>` / `<metric>_std` for each
    column. Of several records of one trial, the last one counts (its latest evaluation).
    """
    groups = {}
    for r in records:
        if r.get("trial") is None:
            continue
        key = (r["dataset"], r.get("protocol"), r.get("flip"), r.get("metric"), r.get("rerank"))
        groups.setdefault(key, {})[r["trial"]] = r
    summaries = []
    for (dataset, protocol, *_), by_trial in groups.items():
        if len(by_trial) < 2:
            continue
        summary = {"dataset": dataset, "protocol": protocol, "num_trials": len(by_trial), "trials": sorted(by_trial)}
        for key, _ in COLUMNS:
            summary[key], summary[key + "_std"] = mean_std([r[key] for r in by_trial.values()])
        summaries.append(summary)
    return summaries
