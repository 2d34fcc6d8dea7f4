"""VIPeR (Gray, Brennan, Tao 2007): 632 identities, one image each in two cameras.

Release layout (`VIPeR.v1.0.zip` or its extracted `VIPeR/` folder):

    cam_a/NNN_ANGLE.bmp   NNN = identity (000..873, 632 of them), ANGLE = viewpoint in degrees
    cam_b/NNN_ANGLE.bmp   the same NNN is the same person

Splits: `cam_a` and `cam_b` (every image, camid 0 and 1); each trial's train / query / gallery
is drawn from them when loaded (`protocol_splits`). Protocol (`trial_split`): the 632 identities are split
at random into 316 for training (both cameras' images) and 316 for testing, cam_a images
as queries against the cam_b images as gallery (single-shot, 316-way ranking); trials
0..9 are the ten random splits, fixed by `np.random.default_rng([PROTOCOL_SEED, trial])`.
"""

import os
import re

import numpy as np

import tensorflow_datasets as tfds

from msml_jax.data.builders import common
from msml_jax.errors import UserError

NAME_PATTERN = re.compile(r"^(\d{3})_(\d{1,3})\.bmp$", re.IGNORECASE)
NUM_TRIALS = 10
PROTOCOL_SEED = 632


def trial_split(pids, trial):
    """(train pids, test pids) of protocol trial `trial`: a random half of the identities each.

    Args:
      pids: int [N] identities of the dataset (any order, repeats allowed).
      trial: 0..NUM_TRIALS-1.
    """
    if not 0 <= int(trial) < NUM_TRIALS:
        raise UserError(f"config.data.trial={trial} is not a VIPeR/PRID trial: use 0..{NUM_TRIALS - 1}")
    identities = np.unique(pids)
    order = np.random.default_rng([PROTOCOL_SEED, int(trial)]).permutation(len(identities))
    half = len(identities) // 2
    return np.sort(identities[order[:half]]), np.sort(identities[order[half:]])


def protocol_splits(read, trial, protocol=None, cameras=("cam_a", "cam_b")):
    """{"train", "query", "gallery"} of protocol trial `trial`, each a dict of numpy arrays.

    `read(split name)` returns a prepared split of this builder as a dict of arrays.
    Train: both cameras' images of the 316 training identities; query: cam_a images of
    the 316 test identities; gallery: their cam_b images. `cameras`: the names of the (query camera,
    gallery camera) splits (another two-camera dataset drawn the same way names its own).
    """
    first, second = cameras
    cams = {c: read(c) for c in cameras}
    train_ids, test_ids = trial_split(cams[first]["pids"], trial)

    def take(split, ids):
        keep = np.isin(split["pids"], ids)
        return {k: v[keep] for k, v in split.items()}

    a, b = take(cams[first], train_ids), take(cams[second], train_ids)
    train = {k: np.concatenate([a[k], b[k]]) for k in a}
    return {"train": train, "query": take(cams[first], test_ids), "gallery": take(cams[second], test_ids)}


def trim_bmp(data):
    """BMP bytes without the padding some writers (VIPeR's included) leave after the pixel rows.

    TF's BMP decoder insists on exactly header + rows (VIPeR's files carry 2 bytes more).
    """
    if data[:2] != b"BM" or len(data) < 54:
        return data
    offset = int.from_bytes(data[10:14], "little")
    width, height = (int.from_bytes(data[o : o + 4], "little", signed=True) for o in (18, 22))
    bits = int.from_bytes(data[28:30], "little")
    end = offset + (width * bits + 31) // 32 * 4 * abs(height)
    return data[:end] if len(data) > end else data


class Viper(common.ReidBuilder):
    """VIPeR: 632 pedestrians seen by two outdoor cameras, one image each (48x128)."""

    VERSION = tfds.core.Version("2.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release.", "2.0.0": "Only the cam_a / cam_b splits (trials are drawn at load)."}
    PROTOCOLS = {"ten_split": "image"}  # image ranking on one of the random splits (config.data.trial)
    TRIALS = NUM_TRIALS
    RELEASE_MARKER = "cam_a"
    ARCHIVE_NAMES = ("VIPeR.v1.0.zip", "VIPeR.zip")
    EXTRA_FEATURES = {"angle": np.int64}
    IMAGE_ENCODING = "png"  # the release's BMPs are stored losslessly as PNG
    HOMEPAGE = "https://vision.soe.ucsc.edu/node/178"
    CITATION = """@inproceedings{gray2007evaluating,
  title={Evaluating appearance models for recognition, reacquisition, and tracking},
  author={Gray, Douglas and Brennan, Shane and Tao, Hai}, booktitle={PETS}, year={2007}}"""
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Download VIPeR.v1.0.zip from the VIPeR page (https://vision.soe.ucsc.edu/node/178, mirrored by several
    re-ID repositories) and place the zip, or its extracted VIPeR/ folder holding cam_a/ and cam_b/,
    in the manual directory (config.data.manual_dir; TFDS's default is <data_dir>/downloads/manual).
    """

    def _release_splits(self, root):
        # The cameras only: protocol_splits draws each trial's train / query / gallery from them when loaded.
        cams = {camera: self._items(root, camera, camid) for camid, camera in enumerate(("cam_a", "cam_b"))}
        return {camera: self.examples(items, root) for camera, items in cams.items()}

    def _items(self, root, camera, camid):
        """[(path, pid, camid, {"angle"})] of one camera folder; UserError on a file name that does not parse."""
        parsed = self.parse_folder(
            root, os.path.join(root, camera), NAME_PATTERN, "VIPeR's NNN_ANGLE.bmp, e.g. cam_a/000_45.bmp"
        )
        return [(path, int(m.group(1)), camid, {"angle": int(m.group(2))}) for path, m in parsed]

    def read_bytes(self, path):
        return trim_bmp(super().read_bytes(path))

    def read_checked(self, path, name=None):
        """(uint8 [H, W, 3], same) of the BMP at `path` (stored as PNG), or None when corrupt and skipped."""
        checked = super().read_checked(path, name)
        return None if checked is None else (checked[1], checked[1])
