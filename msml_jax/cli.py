"""The gate of every absl entry point (train.py, eval.py, preview.py): all of a command line checked before the
program runs, each mistake one `error:` line and exit code 2, Ctrl-C one line and exit code 130.

    if __name__ == "__main__":
        cli.run(main)

Before absl and ml_collections parse anything, the --config file and its --config.FIELD overrides are checked
(`config.check_config_flags`: a missing file, a syntax error, no get_config, an unknown field, a value its type
cannot parse, a field given twice); absl's flag errors (a required flag missing, an unknown flag, a value outside
an enum) become one line and exit 2 instead of absl's "FATAL Flags parsing error" and exit 1; `main` runs inside
`errors.exit_on_user_error`. Imports neither JAX nor TensorFlow.
"""

import os
import sys

from absl import app, flags

from msml_jax.config import check_config_flags
from msml_jax.errors import UserError, exit_on_user_error


def _program(argv):
    return os.path.basename(argv[0]) if argv else "the program"


def _parse_flags(argv):
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        print(f"error: {e}: see python {_program(argv)} --help", file=sys.stderr, flush=True)
        sys.exit(2)


def no_arguments(argv):
    """UserError for words left on the command line after the flags (a typo such as a missing `--`)."""
    if len(argv) > 1:
        raise UserError(f"unexpected argument(s) {' '.join(argv[1:])}: {_program(argv)} takes only flags "
                        f"(--name=value); see python {_program(argv)} --help")


def run(main, argv=None):
    """Runs `main(argv)` as an absl program behind the gate (see the module docstring)."""
    argv = list(sys.argv if argv is None else argv)
    with exit_on_user_error():
        check_config_flags(argv)

    def guarded(remaining):
        with exit_on_user_error():
            no_arguments(remaining)
            main(remaining)

    app.run(guarded, argv=argv, flags_parser=_parse_flags)
