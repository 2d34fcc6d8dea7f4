"""Running an entry point (train.py, eval.py, python -m msml_jax.reproduce) with components a test registers itself.

A registry is filled in the process that uses it, so the test's registration code runs first, in a fresh Python
process, and then the entry point's own `__main__`, exactly as the command line runs it:

    result = run_with_registered(REGISTER_TOY_LOSS, "train.py", "--config", "configs/synthetic.py", ...)
"""

import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_RUN = """
import runpy, sys
{setup}
sys.argv = {argv!r}
if {module!r}:
    runpy.run_module({module!r}, run_name="__main__", alter_sys=True)
else:
    runpy.run_path({script!r}, run_name="__main__")
"""


def run_with_registered(setup, entry_point, *args, timeout=600):
    """CompletedProcess of `entry_point` (a script path relative to the repository root, or `-m MODULE`) run with
    `args` after `setup` (Python source, e.g. a registration) in the same fresh process; cwd is the root."""
    if entry_point.startswith("-m "):
        module, script = entry_point[3:], ""
        argv = [module, *args]
    else:
        module, script = "", os.path.join(ROOT, entry_point)
        argv = [script, *args]
    code = _RUN.format(setup=textwrap.dedent(setup), argv=argv, module=module, script=script)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
