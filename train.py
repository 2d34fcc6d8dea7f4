"""Trains a re-ID model: python train.py --config configs/synthetic.py --workdir runs/demo"""

from absl import app, flags, logging
from ml_collections import config_flags

from msml_jax.errors import exit_on_user_error
from msml_jax.training.loop import train_and_evaluate

config_flags.DEFINE_config_file("config", None, "Config file (a get_config() module); override fields with --config.FIELD=VALUE.")
flags.DEFINE_string("workdir", None, "Run directory: checkpoints and metrics.jsonl. Restarting on it resumes.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO
    with exit_on_user_error():
        train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir)


if __name__ == "__main__":
    app.run(main)
