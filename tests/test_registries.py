"""Each component is declared once: its name is a string in exactly one library module, the one registering it.

Read from the registries themselves (losses, backbones, datasets and their protocols, evaluation protocols,
distance metrics), so a component added later is checked too. A name counts where it is a string constant in code
(docstrings and comments are prose); the dataset modules (msml_jax/data/builders/, msml_jax/data/synthetic.py) may
name the evaluation protocols they offer.
"""

import ast
import inspect
import os

import pytest

from tests.conftest import ROOT

LIBRARY = os.path.join(ROOT, "msml_jax")
DATASET_MODULES = (os.path.join("msml_jax", "data", "builders") + os.sep, os.path.join("msml_jax", "data", "synthetic.py"))
# Strings equal to a component name that mean something else there (checked to stay the only ones).
OTHER_MEANINGS = {("image", os.path.join("msml_jax", "data", "source.py")): "the TFDS feature key of an example",
                  ("official", os.path.join("msml_jax", "evaluation", "ranking.py")): "an AP rule (ranking.AP_MODES)"}


def _code_strings(path):
    """The string constants of a module's code (docstrings excluded)."""
    with open(path) as f:
        tree = ast.parse(f.read())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return {node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings}


@pytest.fixture(scope="module")
def strings_by_module():
    out = {}
    for folder, _, files in os.walk(LIBRARY):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                out[os.path.relpath(path, ROOT)] = _code_strings(path)
    return out


def _modules_naming(name, strings_by_module, dataset_modules_too=False):
    return sorted(m for m, strings in strings_by_module.items() if name in strings
                  and (dataset_modules_too or not m.startswith(DATASET_MODULES))
                  and (name, m) not in OTHER_MEANINGS)


def _module_of(fn):
    return os.path.relpath(inspect.getsourcefile(fn), ROOT)


def _components():
    """(kind, name, the one module allowed to name it) of every registered component."""
    import msml_jax.data.builders  # noqa: F401  (registers every TFDS dataset)
    from msml_jax import distances, losses
    from msml_jax.data import DATASETS
    from msml_jax.evaluation import protocols
    from msml_jax.models import BACKBONES

    out = [("loss", name, _module_of(losses.register_loss)) for name in losses.LOSSES]
    out += [("backbone", name, _module_of(b.build)) for name, b in BACKBONES.items()]
    out += [("evaluation protocol", name, _module_of(protocols.register_protocol)) for name in protocols.PROTOCOLS]
    out += [("metric", name, _module_of(distances.check_metric)) for name in distances.METRICS]
    out += [("dataset", name, None) for name in DATASETS]  # named by its own module only
    # A dataset's own protocol names ("classic", "ten_split") are its module's; those that are also an evaluation
    # protocol's name ("image") are that protocol's.
    out += [("dataset protocol", p, _module_of(protocols.register_protocol) if p in protocols.PROTOCOLS else None)
            for d in DATASETS.values() for p in d.protocols]
    return sorted(set(out), key=str)


def test_each_component_name_is_written_in_one_library_module(strings_by_module):
    components = _components()
    assert {kind for kind, _, _ in components} == {"loss", "backbone", "evaluation protocol", "metric", "dataset",
                                                  "dataset protocol"}
    wrong = []
    for kind, name, home in components:
        found = _modules_naming(name, strings_by_module)
        expected = [home] if home else []
        if found != expected:
            wrong.append(f"{kind} {name!r}: named in {found}, expected {expected}")
    assert not wrong, "\n".join(wrong)


def test_the_other_meanings_are_still_there(strings_by_module):
    """An exemption that no longer applies is removed rather than left to hide a new duplicate."""
    for (name, module), _ in OTHER_MEANINGS.items():
        assert name in strings_by_module[module]


def test_the_check_sees_a_duplicate(strings_by_module):
    """The checker itself: a loss name written into another module is found (seen, not assumed)."""
    from msml_jax import losses

    name = next(iter(losses.LOSSES))
    doctored = {**strings_by_module, "msml_jax/training/steps.py": strings_by_module[
        os.path.join("msml_jax", "training", "steps.py")] | {name}}
    assert _modules_naming(name, doctored) == sorted([_module_of(losses.register_loss), "msml_jax/training/steps.py"])


def test_importing_the_builders_package_registers_them_with_tfds(tmp_path):
    """The documented way (msml_jax/data/builders/__init__.py): after `import msml_jax.data.builders`,
    `tfds.builder(NAME)` knows every builder module of this checkout, in a fresh process."""
    import subprocess
    import sys

    from msml_jax.data.registry import builder_modules

    code = ("import sys, msml_jax.data.builders, tensorflow_datasets as tfds; "
            "[tfds.builder(name, data_dir=sys.argv[1]) for name in sys.argv[2:]]; print('ok')")
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path), *builder_modules()], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
    assert len(builder_modules()) >= 7
