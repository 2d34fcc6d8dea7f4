"""Config files: modules with `get_config(arg=None)`, loaded by path as train.py's --config loads them.

Configs are code: one config builds on another by loading it (`sibling_config(__file__, "synthetic")`) and
changing fields. Nothing here imports TensorFlow or JAX.
"""

import importlib.util
import os


def load_config(path, arg=None):
    """`get_config()` of the config file at `path`, or `get_config(arg)` (the text after `path:` on the CLI)."""
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config() if arg is None else module.get_config(arg)


def sibling_config(file, name, arg=None):
    """The config `name`.py in the folder of `file` (a config file's `__file__`)."""
    return load_config(os.path.join(os.path.dirname(os.path.abspath(file)), f"{name}.py"), arg)
