"""Evaluates a trained run: python eval.py --workdir runs/demo [--flip] [--checkpoint best] [--dataset market1501]

The run's config comes from its checkpoint; --config (with --config.FIELD=VALUE overrides) may replace it, e.g. to
point at another data_dir, as long as the fields deciding the network agree. Several workdirs (or globs) evaluate
each run; ten-split datasets (VIPeR, PRID2011) trained one run per split get a mean ± std row over the splits.
"""

import glob

from absl import flags, logging
from ml_collections import config_flags

from msml_jax import cli
from msml_jax.errors import UserError

config_flags.DEFINE_config_file("config", None, "Optional: a config to evaluate with instead of the checkpoint's.")
flags.DEFINE_list("workdir", None, "Run directory (or several, comma-separated; globs allowed) written by train.py.")
flags.DEFINE_list("dataset", None, "Datasets to evaluate (default: the run's config.data.eval).")
flags.DEFINE_string("protocol", None, "Protocol for the datasets that have it (e.g. classic for cuhk03; official for mars "
                    "and market1501: their MATLAB evaluations).")
flags.DEFINE_boolean("flip", None, "Flip test: average each image's embedding with its mirror's.")
flags.DEFINE_string("metric", None, "Distance to rank with, e.g. cosine: one of msml_jax.distances.RANKING_METRICS "
                    "(default: the run's config.eval.metric); checked with the config, so the flags load no JAX.")
flags.DEFINE_boolean("rerank", None, "k-reciprocal re-ranking (Zhong et al. 2017) of the query x gallery distances.")
flags.DEFINE_integer("rerank_k1", None, "Re-ranking k1 (default config.eval.k1 = 20), at most the gallery size.")
flags.DEFINE_integer("rerank_k2", None, "Re-ranking k2, local query expansion (default 6; 1: none), at most k1.")
flags.DEFINE_float("rerank_lambda", None, "Re-ranking weight of the original distance (default 0.3), in [0, 1].")
flags.DEFINE_string("checkpoint", "latest", "latest | best | STEP.")
flags.DEFINE_string("save_features", None, "Write the embeddings, pids, camids (tracklets, names) to this .npz.")
flags.DEFINE_string("visualize", None, "Folder for pictures: ranked lists, distance distributions, training curves.")
flags.DEFINE_string("export", None, "Export the embedder for serving to this file (jax.export; PATH.json beside it).")
flags.mark_flags_as_required(["workdir"])


def _workdirs(patterns):
    workdirs = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not matches:
            raise UserError(f"--workdir={pattern} matches no directory")
        workdirs += matches
    return workdirs


def main(argv):
    """Runs behind the gate (msml_jax.cli): flags parsed, the config file and overrides checked."""
    logging.set_verbosity(logging.WARNING)  # Orbax logs every restore at INFO
    from msml_jax.evaluation.report import format_table, ten_split_summaries
    from msml_jax.evaluation.workdir import evaluate_run

    FLAGS = flags.FLAGS
    if FLAGS.dataset:  # named as typed, before any run is read
        from msml_jax.data import check_dataset_names

        check_dataset_names(FLAGS.dataset, "--dataset")
    workdirs = _workdirs(FLAGS.workdir)
    for name in ("save_features", "visualize", "export"):
        if FLAGS[name].value and len(workdirs) > 1:
            raise UserError(f"--{name} takes one --workdir: evaluate the runs one at a time for it")
    rerank = {"rerank": FLAGS.rerank, "k1": FLAGS.rerank_k1, "k2": FLAGS.rerank_k2,
              "lambda_value": FLAGS.rerank_lambda}
    records = []
    for workdir in workdirs:
        records += evaluate_run(workdir, FLAGS.config, FLAGS.checkpoint, FLAGS.dataset, FLAGS.protocol,
                                FLAGS.flip, FLAGS.metric, FLAGS.save_features, FLAGS.visualize, FLAGS.export,
                                rerank)
    if len(workdirs) > 1 and ten_split_summaries(records):
        print("\nover the runs:\n" + format_table(records), flush=True)


if __name__ == "__main__":
    cli.run(main)
