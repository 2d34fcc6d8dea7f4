"""The README is code: its Python snippets run as written against a tiny trained run, and every flag its shell
commands give exists for the script that gets it."""

import os
import re
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT

with open(os.path.join(ROOT, "README.md")) as f:
    README = f.read()


def _blocks(language):
    return re.findall(rf"^```{language}\n(.*?)^```", README, re.M | re.S)


def _commands():
    """Each shell command of the README's ```bash blocks as tokens (continuation lines joined, comments dropped)."""
    for block in _blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            tokens = shlex.split(line, comments=True)
            if tokens:
                yield line, tokens


def _script(tokens):
    """(script, its arguments) of a `python SCRIPT ...` or `python -m MODULE ...` command; None for others."""
    if "python" not in tokens:
        return None
    rest = tokens[tokens.index("python") + 1:]
    if rest[:1] == ["-m"]:
        return (None, []) if rest[1] == "pytest" else (rest[1], rest[2:])
    if not rest or rest[0] == "-c":
        return None
    return rest[0], rest[1:]


def _flags_of(script):
    """The flag names `script` accepts, read from its own --helpfull (absl) or --help (argparse)."""
    absl = script in ("train.py", "eval.py", "preview.py")
    command = [sys.executable] + (["-m", script] if script.startswith("msml_jax") else [script])
    out = subprocess.run(command + ["--helpfull" if absl else "--help"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    text = out.stdout + out.stderr
    names = set(re.findall(r"^\s+--(?:\[no\])?([A-Za-z_][\w.]*)", text, re.M) if absl else
                re.findall(r"--([A-Za-z_]\w*)", text))
    assert names, f"no flags read from {script}'s help:\n{text[-2000:]}"
    return names


def test_every_flag_of_the_shell_commands_exists():
    from msml_jax.config import all_fields

    fields = set(all_fields())
    uses = {}
    for line, tokens in _commands():
        found = _script(tokens)
        if found is None or found[0] is None:
            continue
        script, args = found
        if not script.startswith("msml_jax"):
            assert os.path.isfile(os.path.join(ROOT, script)), f"README runs {script}, which does not exist: {line}"
        for i, arg in enumerate(args):
            if not arg.startswith("--"):
                continue
            name, _, value = arg[2:].partition("=")
            if name.startswith("config."):
                assert name[len("config."):] in fields, f"README: --{name} is not a config field: {line}"
                continue
            uses.setdefault(script, {})[name] = line
            if name == "config" and script.endswith(".py"):  # the config file named exists
                path = (value or args[i + 1]).split(":")[0]
                assert os.path.isfile(os.path.join(ROOT, path)), f"README: no config file {path}: {line}"
    assert {"train.py", "eval.py", "preview.py", "msml_jax.reproduce"} <= set(uses)
    for script, names in uses.items():
        known = _flags_of(script)
        unknown = {name: line for name, line in names.items() if name not in known}
        assert not unknown, f"README gives {script} flags it does not have: {unknown}"


def test_the_shell_scripts_named_exist():
    for line, tokens in _commands():
        if tokens[0] == "bash":
            assert os.path.isfile(os.path.join(ROOT, tokens[1])), line


@pytest.fixture
def readme_dir(tmp_path, tiny_flip_run, monkeypatch):
    """A folder where the README's `runs/demo` is a tiny trained run and `model.bin` its export (as
    `python eval.py --workdir runs/demo --export model.bin` writes it)."""
    from msml_jax.evaluation.workdir import evaluate_run

    shutil.copytree(tiny_flip_run, tmp_path / "runs" / "demo")
    monkeypatch.chdir(tmp_path)
    assert "python eval.py --workdir runs/demo --export model.bin" in README
    assert evaluate_run("runs/demo", export_path="model.bin") == []
    return tmp_path


def test_every_python_snippet_runs_as_written(readme_dir):
    blocks = _blocks("python")
    assert len(blocks) >= 4
    spaces = []
    for block in blocks:  # in order, each on its own: a later one may read the files an earlier one wrote
        namespace = {"__name__": "__readme__"}
        exec(compile(block, "README.md", "exec"), namespace)
        spaces.append(namespace)
    files, search, served = spaces[0], spaces[1], spaces[2]
    assert len(os.listdir(readme_dir / "gallery")) == len(files["splits"]["gallery"]["images"][:50])
    assert search["indices"].shape == (1, 10) and search["gallery"].shape[1] == search["query"].shape[1]
    # The served file gives the Embedder's embeddings (the images are at the run's size: no resize on either side).
    unit = search["gallery"] / np.linalg.norm(search["gallery"], axis=1, keepdims=True)
    np.testing.assert_allclose(served["embeddings"], unit, rtol=1e-5, atol=1e-5)
