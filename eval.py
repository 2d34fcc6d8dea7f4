"""Evaluates the latest checkpoint of a run: python eval.py --config configs/synthetic.py --workdir runs/demo"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from msml_jax.errors import exit_on_user_error
from msml_jax.training.loop import evaluate_checkpoint
from msml_jax.training.validate import check_config_flags

config_flags.DEFINE_config_file("config", None, "The config the run was trained with.")
flags.DEFINE_string("workdir", None, "Run directory holding checkpoints/ (written by train.py).")
flags.DEFINE_integer("checkpoint", None, "Step of the checkpoint to evaluate (default: the latest).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.WARNING)  # Orbax logs every restore at INFO
    with exit_on_user_error():
        evaluate_checkpoint(flags.FLAGS.config, flags.FLAGS.workdir, step=flags.FLAGS.checkpoint)


if __name__ == "__main__":
    with exit_on_user_error():
        check_config_flags(sys.argv)  # an unknown --config.FIELD is an ml_collections traceback in app.run
    app.run(main)
