"""Trains a re-ID model: python train.py --config configs/synthetic.py --workdir runs/demo

Restarting the same command on the same workdir continues from the latest checkpoint. On several hosts, run it
on each with --coordinator_address=HOST:PORT --num_processes=N --process_id=I (or the MSML_* environment variables,
see msml_jax/sharding.py).
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from msml_jax.errors import exit_on_user_error
from msml_jax.config import check_config_flags, check_paths, validate_config

config_flags.DEFINE_config_file("config", None, "Config file (a get_config() module); override fields with --config.FIELD=VALUE.")
flags.DEFINE_string("workdir", None, "Run directory: checkpoints, metrics.jsonl, tensorboard/; restarting resumes.")
flags.DEFINE_string("coordinator_address", "", "host:port of process 0, for a run over several processes / hosts.")
flags.DEFINE_integer("num_processes", 0, "Number of processes of a multi-process run.")
flags.DEFINE_integer("process_id", -1, "This process's index in a multi-process run.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO
    with exit_on_user_error():
        validate_config(flags.FLAGS.config)  # before the heavy imports: a mistake costs a second
        check_paths(flags.FLAGS.config, flags.FLAGS.workdir)
        from msml_jax import sharding

        sharding.initialize_distributed(
            flags.FLAGS.coordinator_address, flags.FLAGS.num_processes, flags.FLAGS.process_id
        )
        from msml_jax.training.loop import PREEMPTED_EXIT_CODE, Preempted, train_and_evaluate

        try:
            train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir, validated=True)
        except Preempted as e:
            print(str(e), file=sys.stderr, flush=True)
            sys.exit(PREEMPTED_EXIT_CODE)


if __name__ == "__main__":
    with exit_on_user_error():
        check_config_flags(sys.argv)  # an unknown --config.FIELD is an ml_collections traceback in app.run
    app.run(main)
