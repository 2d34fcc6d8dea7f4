"""Runs many command lines of one entry point in this one process and reports what each did, as JSON on stdout.

    python tests/mistakes_driver.py CASES.json

CASES.json: {"entry": "train.py" | "eval.py" | "preview.py" | "reproduce", "cases": [{"argv": [...], "watch":
[paths]}]}. Per case: the exit code (SystemExit's; "exception: ..." for anything else escaping), what was printed on
stderr, and whether any watched path changed (every file's bytes, and which paths exist). absl's flags are reset
between cases; the entry point is loaded once, as its `__main__` block runs it (`cli.run(main)`).
"""

import contextlib
import hashlib
import io
import json
import os
import runpy
import sys
import traceback


def snapshot(paths):
    out = {}
    for root in paths:
        if not os.path.exists(root):
            out[root] = None
        elif os.path.isfile(root):
            with open(root, "rb") as f:
                out[root] = hashlib.sha256(f.read()).hexdigest()
        else:
            for folder, dirs, files in os.walk(root):
                out[folder] = "dir"
                for name in files:
                    path = os.path.join(folder, name)
                    with open(path, "rb") as f:
                        out[path] = hashlib.sha256(f.read()).hexdigest()
    return out


def main():
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    entry = spec["entry"]
    if entry == "reproduce":
        from msml_jax import reproduce

        def run(argv):
            reproduce.main(argv)
    else:
        from absl import flags

        module = runpy.run_path(entry, run_name="entry_point")

        def run(argv):
            for name in [n for n in list(flags.FLAGS) if n.startswith("config.")]:  # the last case's overrides
                delattr(flags.FLAGS, name)
            flags.FLAGS.unparse_flags()
            sys.argv = [entry, *argv]  # ml_collections reads the overrides from sys.argv
            module["cli"].run(module["main"], argv=sys.argv)
    results = []
    for case in spec["cases"]:
        before = snapshot(case["watch"])
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                run(case["argv"])
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except BaseException:  # noqa: BLE001  (reported, not raised: the test names the case)
                code = "exception: " + traceback.format_exc()[-2000:]
        results.append({"code": code, "stderr": err.getvalue(), "changed": snapshot(case["watch"]) != before})
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
