"""User mistakes and interruptions, turned into one message and an exit code at the CLI edge.

A UserError prints `error: <message>` and exits with code 2; Ctrl-C (KeyboardInterrupt, or an `Interrupted` that
says where the run can continue from) prints `interrupted: ...` and exits with 130 (128 + SIGINT), never a
traceback.
"""

import _thread
import atexit
import contextlib
import functools
import os
import signal
import sys
import threading

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
    """Prints a UserError as one line on stderr and exits with code 2; Ctrl-C as one line, exit code 130.

    A Ctrl-C that Python would swallow (see `_redeliver_swallowed_ctrl_c`) is delivered again meanwhile.
    """
    previous_hook = sys.unraisablehook
    sys.unraisablehook = functools.partial(_redeliver_swallowed_ctrl_c, previous=previous_hook)
    try:
        yield
    except UserError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
    except KeyboardInterrupt as e:
        print(f"interrupted{': ' + str(e) if str(e) else ' (Ctrl-C)'}", file=sys.stderr, flush=True)
        _exit_without_teardown(INTERRUPTED_EXIT_CODE)
    finally:
        sys.unraisablehook = previous_hook


def _exit_without_teardown(code):
    """Runs the atexit handlers (logging's flush, JAX's clean-up), then exits with `code`, skipping the interpreter's
    teardown: an XLA compilation cut short by Ctrl-C leaves compiler threads running that crash it (a segmentation
    fault and exit code -11 after the `interrupted` line; jaxlib 0.10 on a CPU). By the time a KeyboardInterrupt
    reaches the edge, our own writes are committed and closed (`with` blocks, `finally`, the training loop's wait).
    """
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _redeliver_swallowed_ctrl_c(unraisable, previous):
    """A KeyboardInterrupt raised where Python ignores exceptions (a garbage-collector callback such as JAX's,
    a __del__) is printed as "Exception ignored in ..." with a traceback, and the program goes on as if no
    Ctrl-C came: seen in eval.py. Instead, the main thread gets it again a moment later, from another thread
    (from here it would land in this hook), back in ordinary code; should that land in such a place too, this
    runs again."""
    if issubclass(unraisable.exc_type, KeyboardInterrupt):
        threading.Timer(0.001, _thread.interrupt_main).start()
        return
    previous(unraisable)


@contextlib.contextmanager
def ctrl_c_deferred():
    """Holds a Ctrl-C (SIGINT) until the block ends, then acts on it as the handler before would have.

    For work that must not be cut in half: starting a checkpoint write hands steps to background threads,
    and a KeyboardInterrupt between two of them leaves a thread waiting for a signal that never comes (the
    process then hangs at exit, or prints the threads' tracebacks). Off the main thread, no handler can be
    set and the block runs as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(frame))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received and callable(previous):  # Python's own handler raises KeyboardInterrupt here
        previous(signal.SIGINT, received[0])
    elif received and previous == signal.SIG_DFL:
        signal.raise_signal(signal.SIGINT)


def warn(message):
    """One `warning:` line on stderr: legal, but likely not what the user meant."""
    print(f"warning: {message}", file=sys.stderr, flush=True)
