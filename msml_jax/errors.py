"""One exception type for user mistakes, turned into one message and exit code 2 at the CLI edge."""

import contextlib
import sys


class UserError(Exception):
    """A mistake the user can fix: a bad config value, a missing file, a wrong workdir.

    The message names the field, file or value and says how to fix it. Entry
    points catch it with `exit_on_user_error` and print it without a traceback.
    """


@contextlib.contextmanager
def exit_on_user_error():
    """Prints a UserError as one line on stderr and exits with code 2."""
    try:
        yield
    except UserError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
