"""Files and folders the user asked for (--save_features, --visualize, --export, preview's --out): checked before
any work, written under a temporary name and renamed, so a refusal or a failure leaves nothing behind and a
reader never sees half a file. Only the standard library."""

import contextlib
import os
import secrets
import shutil

from msml_jax.errors import UserError


def check_file(path, flag, suffix=""):
    """UserError unless `path` (given as `flag`) can be written as a file: not a folder, in an existing folder,
    ending in `suffix`."""
    if not path:
        raise UserError(f"{flag} is empty: name the file to write{', e.g. out' + suffix if suffix else ''}")
    if os.path.isdir(path):
        raise UserError(f"{flag}={path} is a folder: name a file in it instead, e.g. "
                        f"{os.path.join(path, 'out' + suffix)}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        what = "is a file" if os.path.exists(folder) else "does not exist"
        raise UserError(f"{flag}={path}: the folder {folder} {what}: create it or choose another path")
    if not os.access(folder, os.W_OK):
        raise UserError(f"{flag}={path}: the folder {folder} is not writable: choose another path")
    if suffix and not path.endswith(suffix):
        raise UserError(f"{flag}={path}: the file name must end in {suffix}, e.g. "
                        f"{os.path.splitext(path)[0] + suffix}")


def check_folder(path, flag):
    """UserError unless `path` (given as `flag`) is a folder, or can be created as one in an existing folder."""
    if not path:
        raise UserError(f"{flag} is empty: name the folder to write into")
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"{flag}={path} is a file, not a folder: name a folder (it is created if missing)")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise UserError(f"{flag}={path}: its parent folder {parent} does not exist: create it first")
    if not os.access(path if os.path.isdir(path) else parent, os.W_OK):
        raise UserError(f"{flag}={path} is not writable: choose another folder")


def _temporary_beside(path):
    """A new name beside `path` (hidden, ending in .tmp): created there with open(..., "x") or os.mkdir, so that it
    gets the permissions of the user's umask (tempfile's mkstemp / mkdtemp make them private to the owner, and the
    rename would carry that onto the output)."""
    path = os.path.abspath(path)
    return os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


@contextlib.contextmanager
def atomic_file(path):
    """Yields a temporary path beside `path`; renamed to `path` when the block ends without error, removed else."""
    tmp = _temporary_beside(path)
    open(tmp, "x").close()
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def atomic_folder(path):
    """Yields a folder to write files into: a temporary folder beside `path` when `path` does not exist yet (renamed
    to it at the end, removed on error), else `path` itself (each file in it should then be written atomically)."""
    if os.path.isdir(path):
        yield path
        return
    tmp = _temporary_beside(path)
    os.mkdir(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
