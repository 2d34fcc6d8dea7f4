"""Trains a re-ID model: python train.py --config configs/synthetic.py --workdir runs/demo

Restarting the same command on the same workdir continues from the latest checkpoint. On several hosts, run it
on each with --coordinator_address=HOST:PORT --num_processes=N --process_id=I (or the MSML_* environment variables,
see msml_jax/sharding.py).
"""

import sys

from absl import flags, logging
from ml_collections import config_flags

from msml_jax import cli
from msml_jax.config import check_paths, validate_config

config_flags.DEFINE_config_file("config", None, "Config file (a get_config() module); override fields with --config.FIELD=VALUE.")
flags.DEFINE_string("workdir", None, "Run directory: checkpoints, metrics.jsonl, tensorboard/; restarting resumes.")
flags.DEFINE_string("coordinator_address", "", "host:port of process 0, for a run over several processes / hosts.")
flags.DEFINE_integer("num_processes", 0, "Number of processes of a multi-process run.")
flags.DEFINE_integer("process_id", -1, "This process's index in a multi-process run.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    """Runs behind the gate (msml_jax.cli): flags parsed, the config file and overrides checked."""
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO
    validate_config(flags.FLAGS.config)  # before the heavy imports: a mistake costs a second
    check_paths(flags.FLAGS.config, flags.FLAGS.workdir)
    from msml_jax import sharding

    sharding.initialize_distributed(flags.FLAGS.coordinator_address, flags.FLAGS.num_processes,
                                    flags.FLAGS.process_id)
    from msml_jax.training.loop import PREEMPTED_EXIT_CODE, Preempted, train_and_evaluate

    try:
        train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir, validated=True)
    except Preempted as e:
        print(str(e), file=sys.stderr, flush=True)
        sys.exit(PREEMPTED_EXIT_CODE)


if __name__ == "__main__":
    cli.run(main)
