"""One training per workdir: `WORKDIR/.lock` names the process that trains there (host, pid, since when).

A second training on the workdir is refused with a message naming the holder. A lock whose process is gone (killed,
the machine restarted) is recognized on the same host (the pid no longer runs, or runs another program started
later) and taken over with a warning; a lock from another host cannot be checked from here, so the message says
how to remove it once that run is known to be over. In a multi-process run process 0 holds the one lock for the
run. Only the standard library.
"""

import json
import os
import socket
import time

from msml_jax.errors import UserError, warn

LOCK_FILE = ".lock"


def _start_time(pid):
    """The start time of process `pid` in clock ticks since boot (Linux /proc), or None where unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _running(holder):
    """Whether the process named in `holder` still runs (True when that cannot be told from this host)."""
    if holder.get("host") != socket.gethostname():
        return True
    pid = holder.get("pid")
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    started = holder.get("start_time")
    return started is None or _start_time(pid) in (None, started)  # another program reusing the pid: gone


def _read(path):
    try:
        with open(path) as f:
            holder = json.load(f)
        return holder if isinstance(holder, dict) else {}
    except (OSError, ValueError):
        return {}


class WorkdirLock:
    """`with WorkdirLock(workdir):` holds the workdir's lock for the block (see the module docstring)."""

    def __init__(self, workdir):
        self.workdir, self.path = workdir, os.path.join(workdir, LOCK_FILE)
        self.mine = None

    def acquire(self):
        os.makedirs(self.workdir, exist_ok=True)
        pid = os.getpid()
        mine = {"host": socket.gethostname(), "pid": pid, "since": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                "start_time": _start_time(pid)}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _read(self.path)
                if not holder and time.time() - os.path.getmtime(self.path) < 5:
                    time.sleep(0.5)  # being written by its holder this very moment
                    continue
                if holder and _running(holder):
                    raise UserError(
                        f"{self.workdir} is in use by another training (host {holder.get('host')}, pid "
                        f"{holder.get('pid')}, since {holder.get('since')}): wait for it to end or train in another "
                        f"--workdir; if that process is known to be gone, delete {self.path}")
                warn(f"{self.workdir} was locked by a training that is no longer running (host "
                     f"{holder.get('host', '?')}, pid {holder.get('pid', '?')}, since {holder.get('since', '?')}): "
                     f"taking it over")
                os.remove(self.path)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(mine, f)
            self.mine = mine
            return self
        raise UserError(f"cannot take the lock {self.path}: another process keeps taking it; try again")

    def release(self):
        if self.mine is not None and _read(self.path).get("pid") == self.mine["pid"]:
            os.remove(self.path)
        self.mine = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
