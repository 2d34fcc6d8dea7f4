"""The paper's loss comparison in one command: train and evaluate every (loss, seed or split), write the table.

    python -m msml_jax.reproduce --table synthetic --seeds 0,1,2
    python -m msml_jax.reproduce --table viper --dataset viper --splits 0-9 \
        --manual_dir ../shared/data/VIPeR --data_dir /tmp/tfds
    python -m msml_jax.reproduce --results docs/results/synthetic.jsonl --table_only   # the table from the file

Every run trains through `training.loop.train_and_evaluate` (what train.py calls) in its own workdir
`<root>/<table>/<loss>-<seed|split><k>-<hash>`. A run's final evaluation records go, one JSON line per run, into
the results file (default docs/results/<table>.jsonl, meant to be committed); a run whose key (table, loss,
seed/split, steps, hash of the overrides) is in that file is finished and skipped, any other run is started or,
when its workdir holds a checkpoint, continued from it. So the same command, run again, completes a table over
several sittings; `--fresh` moves the results file and the workdirs aside and starts over. The Markdown table
(mean ± std over seeds or splits, and each loss's paired difference to MSML) is written next to the results file
as <table>.md and printed; it depends on the results file alone.

Standard deviations are population ones (ddof = 0), as `evaluation.report.ten_split_summaries`.
"""

import argparse
import ast
import datetime
import hashlib
import json
import os
import platform
import shutil
import sys
import time

from msml_jax.config import FIELDS
from msml_jax.errors import UserError, exit_on_user_error
from msml_jax.evaluation.report import dataset_label, mean_std

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
# Fields that say where data lies, not what is trained: left out of a run's key.
PATH_FIELDS = ("data.data_dir", "data.manual_dir")
# (record field, title, scale, decimals) of the table's columns.
IMAGE_COLUMNS = (("mAP", "mAP", 100, 1), ("rank1", "rank-1", 100, 1), ("rank5", "rank-5", 100, 1),
                 ("rank10", "rank-10", 100, 1))
SPLIT_COLUMNS = (("rank1", "rank-1", 100, 1), ("rank5", "rank-5", 100, 1), ("rank10", "rank-10", 100, 1),
                 ("rank20", "rank-20", 100, 1))
SEPARATION_COLUMNS = (("auc", "AUC", 100, 1), ("neg_closer_than_median_pos", "neg < median pos", 100, 1),
                      ("gap_p95_p5", "gap p5(neg) − p95(pos)", 1, 3))


# ----------------------------------------------------------------------------------------------- the plan (pure)


def parse_indices(text, flag=""):
    """"0,1,2" or "0-9" or "0-2,5" -> [int], in order, no repeats; a UserError names `flag` (e.g. "--seeds")."""
    out = []
    for part in filter(None, (p.strip() for p in str(text).split(","))):
        try:
            if "-" in part:
                lo, hi = part.split("-", 1)
                out += range(int(lo), int(hi) + 1)
            else:
                out.append(int(part))
        except (TypeError, ValueError):
            raise UserError(f"{flag + ' ' if flag else ''}{text!r}: not a list of integers such as 0,1,2 or "
                            f"0-9") from None
    if not out:
        raise UserError(f"{flag + ' ' if flag else ''}{text!r}: no index given: list some, e.g. 0,1,2 or 0-9")
    return list(dict.fromkeys(out))


def parse_override(text):
    """"FIELD=VALUE" -> (FIELD, value): a Python literal when it parses as one ("(128, 64)", "3e-3"), else text."""
    if "=" not in text:
        raise UserError(f"--set {text!r}: expected FIELD=VALUE, e.g. --set eval_every_steps=0")
    field, raw = text.split("=", 1)
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    return field.strip(), value


def overrides_hash(overrides):
    """8 hex digits naming a set of overrides {field: value} (path fields excluded): part of a run's key."""
    kept = {k: v for k, v in overrides.items() if k not in PATH_FIELDS}
    text = json.dumps(kept, sort_keys=True, default=list)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def run_key(entry):
    """What makes two runs the same run: (table, loss, seed|split, index, steps, overrides hash)."""
    return (entry["table"], entry["loss"], entry["rep"], int(entry["index"]), int(entry["steps"]),
            entry["overrides_hash"])


def plan_runs(table, losses, rep, indices, steps, overrides):
    """Every run of a table, seed (split) by seed: dicts with the key fields of `run_key` and a workdir name.

    All losses of one seed come before the next seed, so a table stopped half way holds complete pairs.
    """
    digest = overrides_hash(overrides)
    return [{"table": table, "loss": loss, "rep": rep, "index": int(i), "steps": int(steps), "overrides_hash": digest,
             "name": f"{loss}-{rep}{i}-{digest}"} for i in indices for loss in losses]


def pending_runs(plan, entries):
    """The runs of `plan` whose key has no entry in `entries` (the results file's lines)."""
    done = {run_key(e) for e in entries}
    return [run for run in plan if run_key(run) not in done]


def scale_schedule(config, steps):
    """Sets num_train_steps to `steps`, moving lr_boundaries and eval_every_steps to the same fractions of it.

    UserError when the config gives its schedule in epochs: those fields would still set the learning-rate
    decays (and saves, evaluations) from the epoch counts, past the shortened run.
    """
    from msml_jax.training.schedule import EPOCH_FIELDS

    in_epochs = [f"config.{field}={config.get(field)!r}" for field, _ in EPOCH_FIELDS if config.get(field)]
    if in_epochs:
        raise UserError(f"--steps {steps}: the config gives its schedule in epochs ({', '.join(in_epochs)}); "
                        f"shorten it in epochs instead, e.g. --set num_train_epochs=N (and --set lr_boundary_epochs=...)")
    base = int(config.num_train_steps)
    config.num_train_steps = int(steps)
    if base > 0 and steps != base:
        config.lr_boundaries = tuple(max(1, round(b * steps / base)) for b in config.lr_boundaries)
        if config.get("eval_every_steps", 0):
            config.eval_every_steps = max(1, round(config.eval_every_steps * steps / base))
    return config


# ------------------------------------------------------------------------------------------- the table (pure)


def latest_entries(entries):
    """The last entry of each run key (a later line, e.g. after --fresh, supersedes an earlier one)."""
    return list({run_key(e): e for e in entries}.values())


def collect(entries):
    """{dataset label: {loss: {index: record}}} of the entries' final records."""
    out = {}
    for e in latest_entries(entries):
        for r in e["records"]:
            out.setdefault(dataset_label(r), {}).setdefault(e["loss"], {})[int(e["index"])] = r
    return out


def paired_differences(by_index, reference_by_index, field):
    """[metric(loss) − metric(reference)] over the seeds/splits both have, in index order."""
    common = sorted(set(by_index) & set(reference_by_index))
    return [by_index[i][field] - reference_by_index[i][field] for i in common
            if field in by_index[i] and field in reference_by_index[i]]


def _cell(values, scale, decimals, signed=False):
    if not values:
        return "–"
    mean, std = mean_std([v * scale for v in values])
    sign = "+" if signed else ""
    return f"{mean:{sign}.{decimals}f} ± {std:.{decimals}f}"


def _columns(runs):
    ten_split = any(r.get("trial") is not None for by_index in runs.values() for r in by_index.values())
    return (SPLIT_COLUMNS if ten_split else IMAGE_COLUMNS), ("split" if ten_split else "seed")


def registered_losses():
    """(loss names in registry order, the paper's loss): msml_jax.losses' registry, imported when first needed."""
    from msml_jax.losses import LOSSES, PAPER_LOSS

    return tuple(LOSSES), PAPER_LOSS


def markdown_tables(entries, losses=None, reference=None):
    """Markdown of the entries' results: per table setting (table, steps, overrides) and evaluated dataset, one
    table of mean ± std per loss (ranking metrics in percent, then the separation figures) and one of each loss's
    paired difference to `reference` (the same seed or split). Defaults: the registered losses and the paper's."""
    if losses is None or reference is None:
        registered, paper = registered_losses()
        losses, reference = registered if losses is None else losses, paper if reference is None else reference
    settings = {}
    for e in latest_entries(entries):
        settings.setdefault((e["table"], int(e["steps"]), e["overrides_hash"]), []).append(e)
    parts = []
    for (table, steps, digest), group in settings.items():
        overrides = {k: v for k, v in group[-1].get("overrides", {}).items() if k not in PATH_FIELDS}
        shown = ", ".join(f"{k}={v!r}" for k, v in overrides.items())
        parts.append(f"## {table}: {steps} steps per run (overrides {digest}: {shown})")
        for label, runs in collect(group).items():
            parts.append(_dataset_tables(label, runs, losses, reference))
    return "\n\n".join(parts) + "\n"


def _dataset_tables(label, runs, losses, reference):
    columns, rep = _columns(runs)
    order = [loss for loss in losses if loss in runs] + sorted(set(runs) - set(losses))
    everything = columns + SEPARATION_COLUMNS
    titles = " | ".join(title for _, title, _, _ in everything)
    lines = [f"### {label}", "",
             f"Mean ± std over {rep}s (population std); ranking metrics and AUC in percent.", "",
             f"| loss | {rep}s | {titles} |", "|---|---:|" + "---:|" * len(everything)]
    for loss in order:
        by_index = runs[loss]
        cells = [_cell([r[k] for r in by_index.values() if k in r], s, d) for k, _, s, d in everything]
        lines.append(f"| {loss} | {len(by_index)} | " + " | ".join(cells) + " |")
    if reference in runs and len(order) > 1:
        lines += ["", f"Difference to {reference}, paired by {rep} (loss − {reference}; mean ± std of the "
                      f"per-{rep} differences):", "",
                  f"| loss | pairs | {titles} |", "|---|---:|" + "---:|" * len(everything)]
        for loss in order:
            if loss == reference:
                continue
            pairs = len(set(runs[loss]) & set(runs[reference]))
            cells = [_cell(paired_differences(runs[loss], runs[reference], k), s, d, signed=True)
                     for k, _, s, d in everything]
            lines.append(f"| {loss} | {pairs} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- files


def read_results(path):
    """The entries (one JSON object per line) of a results file; [] when it does not exist."""
    if not os.path.exists(path):
        return []
    entries = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                entries.append(json.loads(line))
            except ValueError:
                raise UserError(f"{path}, line {number}: not JSON (a line cut short? delete it, run again)") from None
    return entries


def append_result(path, entry):
    """Appends one entry as a line and flushes it to disk: the run counts as finished from then on."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(entry, sort_keys=True, default=float) + "\n")
        f.flush()
        os.fsync(f.fileno())


def write_markdown(results_path, entries, header=""):
    """Writes <results>.md (the tables of `entries`, after `header`) next to the results file; returns its text."""
    text = (header + "\n\n" if header else "") + markdown_tables(entries)
    with open(os.path.splitext(results_path)[0] + ".md", "w") as f:
        f.write(text)
    return text


# ---------------------------------------------------------------------------------------------- the runs


def _is_ten_split(name):
    """Whether dataset `name` is compared over random splits (its protocol's `trials`), not over seeds."""
    from msml_jax.data import find_dataset

    dataset = find_dataset(name) if name else None
    return dataset is not None and dataset.trials > 1


def _ten_split_names():
    from msml_jax.data import dataset_names

    return [name for name in dataset_names() if _is_ten_split(name)]


def build_config(args):
    """(base config with every override applied, {field: value} of the overrides) from the parsed flags."""
    from msml_jax.config import load_config_file

    config_path = args.config or os.path.join(CONFIGS, "viper.py" if _is_ten_split(args.dataset) else "synthetic.py")
    config = load_config_file(config_path)
    overrides = {"config": os.path.basename(config_path)}
    if args.dataset:
        overrides["data.name"] = args.dataset
    if args.backbone:
        overrides["model.name"] = args.backbone
    if args.image_size:
        try:
            overrides["data.image_size"] = tuple(int(x) for x in args.image_size.split(","))
        except ValueError:
            raise UserError(f"--image_size {args.image_size!r}: expected HEIGHT,WIDTH, e.g. 128,64") from None
    if args.data_dir:
        overrides["data.data_dir"] = args.data_dir
    if args.manual_dir:
        overrides["data.manual_dir"] = args.manual_dir
    for text in args.set:
        field, value = parse_override(text)
        overrides[field] = value
    for field, value in overrides.items():
        if field != "config":
            set_field(config, field, value)
    if args.steps:
        scale_schedule(config, args.steps)
        for field, value in overrides.items():  # an explicit --set of a schedule field wins over the scaling
            if field in ("lr_boundaries", "eval_every_steps"):
                set_field(config, field, value)
    overrides["num_train_steps"] = int(config.num_train_steps)
    return config, overrides


def set_field(config, field, value):
    """config.<field> = value for a dotted field name; UserError when the field does not exist."""
    *parents, leaf = field.split(".")
    node = config
    for name in parents:
        node = node.get(name) if hasattr(node, "get") else None
        if node is None:
            break
    if node is None or leaf not in node:
        raise UserError(f"--set {field}=...: the config has no field {field!r}")
    try:
        node[leaf] = value
    except (TypeError, ValueError) as e:
        raise UserError(f"--set {field}={value!r}: {e}") from None


def run_config(base, run):
    """The config of one run: the base with its loss and its seed (or its split, data.trial)."""
    config = base.copy_and_resolve_references()
    config.loss = run["loss"]
    if run["rep"] == "split":
        config.data.trial = run["index"]
    else:
        config.seed = run["index"]
    return config


def cpu_model():
    """The host CPU's model name (/proc/cpuinfo on Linux, else platform.processor()); "" when unknown.

    Recorded because CPU results depend on the instruction set XLA compiles for (AVX2, AVX-512...): the same seed
    gives the same numbers on one machine, slightly different ones on another CPU.
    """
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def machine():
    """One line naming where a run trained (device, host CPUs and their model)."""
    import jax

    device = jax.devices()[0]
    return f"{device.platform}:{device.device_kind} x{jax.device_count()}, {os.cpu_count()} host CPUs " \
           f"({cpu_model() or 'model unknown'}), {platform.machine()}, jax {jax.__version__}"


def reproduce(base, overrides, table, losses, rep, indices, root, results_path, log=print):
    """Trains and evaluates every pending run of the table, appending each finished one to `results_path`.

    Returns the entries of the results file afterwards (finished runs of every table in it).
    """
    from msml_jax.training.loop import train_and_evaluate
    from msml_jax.config import validate_config

    validate_config(base)
    plan = plan_runs(table, losses, rep, indices, base.num_train_steps, overrides)
    todo = pending_runs(plan, read_results(results_path))
    log(f"reproduce: table {table!r}, {len(plan)} runs, {len(plan) - len(todo)} finished in {results_path}, "
        f"{len(todo)} to go")
    for n, run in enumerate(todo, 1):
        workdir = os.path.join(root, table, run["name"])
        resuming = os.path.isdir(os.path.join(workdir, "checkpoints"))
        log(f"reproduce: run {n}/{len(todo)}: {run['name']} in {workdir}{' (resuming)' if resuming else ''}")
        start = time.perf_counter()
        records = train_and_evaluate(run_config(base, run), workdir)
        entry = {**{k: run[k] for k in ("table", "loss", "rep", "index", "steps", "overrides_hash")},
                 "overrides": overrides, "records": records, "wall_s": round(time.perf_counter() - start, 1),
                 "resumed": resuming, "machine": machine(),
                 "finished_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
        append_result(results_path, entry)
    return read_results(results_path)


def check_plan(args, base, table, losses, rep, indices):
    """UserError, before the first run trains, for any run of the plan that would be refused later: a split the
    dataset does not have, a seed out of range, a run config the schema refuses, a workdir that cannot be written.
    Messages name the flag the user typed."""
    from msml_jax.config import as_typed, check_paths, validate_config
    from msml_jax.data import get_dataset

    if args.steps < 0:
        raise UserError(f"--steps {args.steps}: give a positive number of training steps per run, or leave it out "
                        f"for the config's own schedule")
    if rep == "split":
        trials = get_dataset(base.data.name).trials
        bad = [i for i in indices if not 0 <= i < trials]
        if bad:
            raise UserError(f"--splits {args.splits}: {base.data.name} has the splits 0-{trials - 1}, not "
                            f"{', '.join(map(str, bad))}")
    else:
        bad = [i for i in indices if not 0 <= i < 2**32]
        if bad:
            raise UserError(f"--seeds {args.seeds}: a seed is an integer in [0, 2**32 - 1], not {bad[0]}")
    plan = plan_runs(table, losses, rep, indices, base.num_train_steps, {})
    for run in plan:
        try:
            validate_config(run_config(base, run))
        except UserError as e:
            raise as_typed(e, prefix="--set ") from None
    check_paths(base, os.path.join(args.root, table, plan[0]["name"]))


def _move_aside(path, stamp):
    if os.path.exists(path):
        shutil.move(path, f"{path}.{stamp}.old")


class _Parser(argparse.ArgumentParser):
    """argparse, its mistakes said as every entry point says them: one `error:` line, exit code 2."""

    def error(self, message):
        print(f"error: {message}: see {self.prog} --help", file=sys.stderr, flush=True)
        sys.exit(2)


def parse_args(argv):
    parser = _Parser(
        prog="python -m msml_jax.reproduce",
        description="Train and evaluate every (loss, seed or split) and write the paper-style comparison table.")
    parser.add_argument("--table", help="name of the table: workdirs <root>/<table>/..., results "
                                         "docs/results/<table>.jsonl (default: the dataset's name)")
    parser.add_argument("--dataset", default="", help="config.data.name (one whose protocol has random splits, "
                                                      "e.g. viper, is compared over --splits)")
    parser.add_argument("--config", default="", help="base config file (default: configs/viper.py for a dataset "
                                                     "with random splits, else configs/synthetic.py)")
    parser.add_argument("--backbone", default="", help="config.model.name")
    parser.add_argument("--image_size", default="", help="HEIGHT,WIDTH of the network input")
    parser.add_argument("--steps", type=int, default=0, help="training steps per run (lr_boundaries and "
                                                             "eval_every_steps move to the same fractions)")
    losses, _ = registered_losses()
    parser.add_argument("--losses", default=",".join(losses), help="comma-separated, of " + ", ".join(losses))
    parser.add_argument("--seeds", default="", help="training seeds, e.g. 0,1,2 or 0-2 (default 0,1,2)")
    parser.add_argument("--splits", default="", help="protocol splits (data.trial) of a dataset with random "
                                                     "splits, e.g. 0-9 (the default for those)")
    parser.add_argument("--data_dir", default="", help="config.data.data_dir (not part of a run's key)")
    parser.add_argument("--manual_dir", default="", help="config.data.manual_dir (not part of a run's key)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="any other config field, e.g. --set eval_every_steps=0 (repeatable)")
    parser.add_argument("--root", default="runs/reproduce", help="where the workdirs go")
    parser.add_argument("--results", default="", help="results file (default docs/results/<table>.jsonl)")
    parser.add_argument("--table_only", action="store_true", help="train nothing: write the table of --results")
    parser.add_argument("--fresh", action="store_true", help="move the results file and this table's workdirs "
                                                             "aside (*.<time>.old) and start every run from zero")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    with exit_on_user_error():
        table = args.table or args.dataset or (os.path.splitext(os.path.basename(args.results))[0]
                                               if args.results else FIELDS["data.name"].default)
        results_path = args.results or os.path.join("docs", "results", f"{table}.jsonl")
        if args.table_only:
            entries = read_results(results_path)
            if not entries:
                raise UserError(f"--results {results_path!r}: no results file (or an empty one) to make a table of")
            print(write_markdown(results_path, entries), end="")
            return
        losses = [loss.strip() for loss in args.losses.split(",") if loss.strip()]
        registered, _ = registered_losses()
        unknown = sorted(set(losses) - set(registered))
        if unknown or not losses:
            raise UserError(f"--losses {args.losses!r}: valid losses are {', '.join(registered)}")
        if args.dataset:
            from msml_jax.data import check_dataset_names

            check_dataset_names([args.dataset], "--dataset")
        base, overrides = build_config(args)
        ten_split = _is_ten_split(base.data.name)
        if args.splits and not ten_split:
            raise UserError(f"--splits is for {', '.join(_ten_split_names())}, not config.data.name="
                            f"{base.data.name!r}: use --seeds")
        if ten_split and args.seeds:
            raise UserError(f"{base.data.name} is compared over its ten splits: use --splits (e.g. 0-9), not --seeds")
        rep, indices = ("split", parse_indices(args.splits or "0-9", "--splits")) if ten_split else \
            ("seed", parse_indices(args.seeds or "0,1,2", "--seeds"))
        check_plan(args, base, table, losses, rep, indices)
        if args.fresh:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            _move_aside(results_path, stamp)
            _move_aside(os.path.join(args.root, table), stamp)
        entries = reproduce(base, overrides, table, losses, rep, indices, args.root, results_path)
        print(write_markdown(results_path, [e for e in entries if e["table"] == table]), end="")


if __name__ == "__main__":
    main()
