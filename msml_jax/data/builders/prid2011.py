"""PRID 2011 single-shot (Hirzer et al. 2011): 385 persons in camera A, 749 in camera B, 200 in both.

Release layout (`prid_2011.zip` or its extracted `prid_2011/` folder; only `single_shot/` is read):

    single_shot/cam_a/person_0001.png ... person_0385.png
    single_shot/cam_b/person_0001.png ... person_0749.png    persons 0001-0200 appear in both

Identities: pid n for cam_a person n and for cam_b persons n <= 200 (the same people);
cam_b persons n > 200 are other people than cam_a's n, so they get pid 1000 + n.

Splits: `cam_a`, `cam_b` (every image, camid 0 and 1); each trial's train / query / gallery is drawn at load.
Protocol (`protocol_splits`, trials 0..9): the 200 persons seen by both cameras are split at random
into 100 for training (both cameras' images) and 100 for testing; the test persons' cam_a images
are the queries, and the gallery is their cam_b images plus every cam_b person above 200
(549 distractors): 100 queries against 649 gallery images.
"""

import os
import re

import numpy as np
import tensorflow_datasets as tfds

from msml_jax.data.builders import common
from msml_jax.data.builders.viper import NUM_TRIALS, trial_split

NAME_PATTERN = re.compile(r"^person_(\d{4})\.png$")
NUM_SHARED = 200  # persons 1..200 are seen by both cameras
CAM_B_OFFSET = 1000  # cam_b person n > 200 is another person than cam_a's n: pid 1000 + n


def protocol_splits(read, trial, protocol=None):
    """{"train", "query", "gallery"} of protocol trial `trial` from the `cam_a` / `cam_b` splits.

    `read(split name)` returns a prepared split of this builder as a dict of arrays.
    """
    cams = {c: read(c) for c in ("cam_a", "cam_b")}
    shared = np.intersect1d(cams["cam_a"]["pids"], cams["cam_b"]["pids"])
    train_ids, test_ids = trial_split(shared, trial)

    def take(split, keep):
        return {k: v[keep] for k, v in split.items()}

    a, b = cams["cam_a"], cams["cam_b"]
    train_a, train_b = take(a, np.isin(a["pids"], train_ids)), take(b, np.isin(b["pids"], train_ids))
    return {
        "train": {k: np.concatenate([train_a[k], train_b[k]]) for k in train_a},
        "query": take(a, np.isin(a["pids"], test_ids)),
        "gallery": take(b, np.isin(b["pids"], test_ids) | ~np.isin(b["pids"], shared)),
    }


class Prid2011(common.ReidBuilder):
    """PRID 2011 single-shot: two static outdoor cameras, one image per person and camera (64x128)."""

    VERSION = tfds.core.Version("2.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release.", "2.0.0": "Only the cam_a / cam_b splits (trials are drawn at load)."}
    PROTOCOLS = {"ten_split": "image"}  # image ranking on one of the random splits (config.data.trial)
    TRIALS = NUM_TRIALS
    RELEASE_MARKER = "single_shot/cam_a"
    ARCHIVE_NAMES = ("prid_2011.zip",)
    IMAGE_ENCODING = "png"
    HOMEPAGE = "https://www.tugraz.at/institute/icg/research/team-bischof/lrs/downloads/prid11"
    CITATION = """@inproceedings{hirzer2011person,
  title={Person Re-Identification by Descriptive and Discriminative Classification},
  author={Hirzer, Martin and Beleznai, Csaba and Roth, Peter M. and Bischof, Horst},
  booktitle={Scandinavian Conference on Image Analysis (SCIA)}, year={2011}}"""
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Download prid_2011.zip from the PRID 2011 page (TU Graz, ICG: "Person Re-ID (PRID) Dataset 2011",
    after accepting its terms) and place the zip, or its extracted prid_2011/ folder holding
    single_shot/cam_a and single_shot/cam_b, in the manual directory (config.data.manual_dir; TFDS's
    default is <data_dir>/downloads/manual).
    """

    def _release_splits(self, root):
        # The cameras only: protocol_splits draws each trial's train / query / gallery from them when loaded.
        cams = {camera: self._items(root, camera, camid) for camid, camera in enumerate(("cam_a", "cam_b"))}
        return {camera: self.examples(items, root) for camera, items in cams.items()}

    def _items(self, root, camera, camid):
        """[(path, pid, camid, {})] of single_shot/<camera>; UserError on a file name that does not parse."""
        expected = "PRID 2011's person_NNNN.png, e.g. single_shot/cam_a/person_0001.png"
        items = []
        for path, match in self.parse_folder(root, os.path.join(root, "single_shot", camera), NAME_PATTERN, expected):
            number = int(match.group(1))
            pid = number if camera == "cam_a" or number <= NUM_SHARED else CAM_B_OFFSET + number
            items.append((path, pid, camid, {}))
        return items
