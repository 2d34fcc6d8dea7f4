"""User mistakes and interruptions, turned into one message and an exit code at the CLI edge.

A UserError prints `error: <message>` and exits with code 2; Ctrl-C (KeyboardInterrupt, or an `Interrupted` that
says where the run can continue from) prints `interrupted: ...` and exits with 130 (128 + SIGINT), never a
traceback.
"""

import contextlib
import sys

INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT, what shells report for a Ctrl-C


class UserError(Exception):
    """A mistake the user can fix: a bad config value, a missing file, a wrong workdir.

    The message names the field, file or value and says how to fix it. Entry
    points catch it with `exit_on_user_error` and print it without a traceback.
    """


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, caught where the program knows what was kept: the message says it (and how to continue)."""


@contextlib.contextmanager
def exit_on_user_error():
    """Prints a UserError as one line on stderr and exits with code 2; Ctrl-C as one line, exit code 130."""
    try:
        yield
    except UserError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
    except KeyboardInterrupt as e:
        print(f"interrupted{': ' + str(e) if str(e) else ' (Ctrl-C)'}", file=sys.stderr, flush=True)
        sys.exit(INTERRUPTED_EXIT_CODE)


def warn(message):
    """One `warning:` line on stderr: legal, but likely not what the user meant."""
    print(f"warning: {message}", file=sys.stderr, flush=True)
