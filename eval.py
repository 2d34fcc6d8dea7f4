"""Evaluates the latest checkpoint of a run: python eval.py --config configs/synthetic.py --workdir runs/demo"""

from absl import app, flags, logging
from ml_collections import config_flags

from msml_jax.errors import exit_on_user_error
from msml_jax.training.loop import evaluate_checkpoint

config_flags.DEFINE_config_file("config", None, "The config the run was trained with.")
flags.DEFINE_string("workdir", None, "Run directory holding checkpoints/ (written by train.py).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.WARNING)  # Orbax logs every restore at INFO
    with exit_on_user_error():
        evaluate_checkpoint(flags.FLAGS.config, flags.FLAGS.workdir)


if __name__ == "__main__":
    app.run(main)
