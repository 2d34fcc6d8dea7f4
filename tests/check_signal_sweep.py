"""SIGTERM and Ctrl-C at chosen moments of a demo run, each restarted: do all end as the uninterrupted run?

    python tests/check_signal_sweep.py            (from the repository root, installed; ~6 min on 2 CPU cores)
    python tests/check_signal_sweep.py 3 12 30    (seconds after the start at which each signal is sent)

200 steps of configs/synthetic.py, a checkpoint every 50, evaluations every 100: a signal can land in the
start-up, the compilations, before the first checkpoint, between checkpoints or in an evaluation. For each signal
and moment, one line: the exit code, the run's last line, whether a traceback was printed, and whether the
restart's metrics.jsonl equals the uninterrupted run's (wall-clock images/s aside). tests/test_resume.py and
tests/test_ctrl_c.py check the same on tiny data at fixed moments.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = ["--config.num_train_steps=200", "--config.checkpoint_every_steps=50", "--config.eval_every_steps=100"]
RUNS = os.path.join(ROOT, "runs", "signal_sweep")


def _command(workdir):
    return [sys.executable, "train.py", "--config", "configs/synthetic.py", "--workdir", workdir, *FLAGS]


def _records(workdir):
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return [{k: v for k, v in json.loads(line).items() if k != "images_per_sec"} for line in f]


def main(delays):
    shutil.rmtree(RUNS, ignore_errors=True)
    os.makedirs(RUNS)
    whole = os.path.join(RUNS, "whole")
    started = time.perf_counter()
    subprocess.run(_command(whole), cwd=ROOT, capture_output=True, check=True)
    print(f"uninterrupted run: {time.perf_counter() - started:.0f} s", flush=True)
    expected = _records(whole)
    for sig in (signal.SIGTERM, signal.SIGINT):
        for delay in delays:
            workdir = os.path.join(RUNS, f"{sig.name}_{delay:g}")
            with open(workdir + ".log", "w") as out:  # a file, not a pipe; Popen: a shell's `&` job ignores SIGINT
                process = subprocess.Popen(_command(workdir), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
                time.sleep(delay)
                process.send_signal(sig)
                process.wait(timeout=600)
            with open(workdir + ".log") as f:
                text = f.read()
            lines = [line for line in text.replace("\r", "\n").splitlines() if line.strip()]
            restart = subprocess.run(_command(workdir), cwd=ROOT, capture_output=True, text=True)
            same = restart.returncode == 0 and _records(workdir) == expected
            print(f"{sig.name} at {delay:g} s: exit {process.returncode}, traceback: {'Traceback' in text}, "
                  f"last line: {(lines or [''])[-1][:100]!r}; restart exit {restart.returncode}, "
                  f"metrics.jsonl {'equal to' if same else 'DIFFERENT from'} the uninterrupted run's", flush=True)


if __name__ == "__main__":
    main([float(arg) for arg in sys.argv[1:]] or [4.5, 9, 14, 21])
