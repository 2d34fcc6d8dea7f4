"""Generators of dummy releases in the exact folder layout and file names of the official re-id datasets.

Nothing binary is stored in the repository: each function writes a tiny release (a few identities, 8x4
JPEGs) into a folder the test gives, and returns what a correct builder must produce from it, computed from
the fake's own description (not by the builders' parsers).
"""

import os
import zipfile

import numpy as np


def tiny_jpeg(seed, height=8, width=4):
    """A small random JPEG (bytes); each seed gives a different image."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    return tf.io.encode_jpeg(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).numpy()


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def zip_folder(folder, zip_path):
    """Zips `folder` (the folder itself as the top-level member, as the official archives do)."""
    parent = os.path.dirname(folder)
    with zipfile.ZipFile(zip_path, "w") as z:
        for dirpath, _, names in os.walk(folder):
            for name in sorted(names):
                full = os.path.join(dirpath, name)
                z.write(full, os.path.relpath(full, parent))
    return zip_path
