"""A user's own re-ID images as a TFDS dataset: the manual directory is the folder of images.

Accepted layouts of the manual directory (checked in this order):

    labels.csv (or any one *.csv)  lines `path,pid[,camid]`, paths relative to the CSV; a header
                                   line starting with "path" is skipped
    0002_c1_anything.jpg ...       Market-style names directly in the folder: PID_cCAM..., PID >= 0
    0002/1/*.jpg ...               PID/CAM/ sub-folders
    0002/*.jpg ...                 PID/ sub-folders, no cameras

Without cameras each image gets its own camid (its index), so every query-gallery pair counts
as cross-camera and the same-camera junk rule of the evaluation removes nothing.

Split rule (fixed, so a folder always gives the same splits): identities sorted by pid are
shuffled with `np.random.default_rng(0)`; the first half (rounded down) is `train`, the rest
is the test set. For each test identity with at least two images, the first image in file-name
order of each of its cameras is a query (without cameras: its first image); every other test
image is in the gallery (single-image identities act as gallery distractors).

Different folders need different `data_dir`s (the TFDS name is always "folder").
"""

import csv
import os
import re

import numpy as np
import tensorflow_datasets as tfds

from msml_jax.data.builders import common
from msml_jax.errors import UserError

MARKET_NAME = re.compile(r"^(\d+)_c(\d+)")


def split_rule(pids, camids, names, has_cameras):
    """(train, query, gallery) boolean masks [N] of the folder split rule (see the module docstring)."""
    pids = np.asarray(pids)
    identities = np.unique(pids)
    order = np.random.default_rng(0).permutation(len(identities))
    train_ids = identities[order[: len(identities) // 2]]
    train = np.isin(pids, train_ids)
    query = np.zeros(len(pids), bool)
    counts = dict(zip(*np.unique(pids, return_counts=True)))
    first = {}
    for i in sorted(np.flatnonzero(~train), key=lambda i: names[i]):
        key = (pids[i], camids[i] if has_cameras else None)
        if counts[pids[i]] >= 2 and key not in first:
            first[key] = i
            query[i] = True
    return train, query, ~train & ~query


class Folder(common.ReidBuilder):
    """Your own person images, in one of the layouts of msml_jax/data/builders/folder.py."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    IMAGE_ENCODING = None  # JPEG and PNG are kept as they are; other formats are stored as PNG
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Point config.data.manual_dir at your folder of person images, laid out as Market-style names
    (PID_cCAM_anything.jpg), PID/CAM/*.jpg, PID/*.jpg (no cameras) or with a CSV file of path,pid[,camid]
    lines; see msml_jax/data/builders/folder.py. Use a separate config.data.data_dir per folder.
    """

    def _split_generators(self, dl_manager):
        root = self.manual_dir(dl_manager)
        if not root or not os.path.isdir(root) or not os.listdir(root):
            raise UserError(
                f"dataset 'folder': the manual directory {root} is missing or empty. "
                f"{' '.join(self.MANUAL_DOWNLOAD_INSTRUCTIONS.split())}"
            )
        items, has_cameras = self._items(root)
        if not items:
            raise UserError(f"dataset 'folder': found no images in {root}. "
                            f"{' '.join(self.MANUAL_DOWNLOAD_INSTRUCTIONS.split())}")
        if not has_cameras:
            items = [(path, pid, index, extras) for index, (path, pid, _, extras) in enumerate(items)]
        names = [os.path.relpath(it[0], root) for it in items]
        train, query, gallery = split_rule([it[1] for it in items], [it[2] for it in items], names, has_cameras)
        return {
            split: self.examples([it for it, m in zip(items, mask) if m], root)
            for split, mask in (("train", train), ("query", query), ("gallery", gallery))
        }

    def _release_splits(self, root):
        raise NotImplementedError

    def read_checked(self, path, name=None):
        """Like ReidBuilder.read_checked, but a non-JPEG/PNG image is stored decoded (then encoded as PNG)."""
        checked = super().read_checked(path, name)
        if checked is None:
            return None
        data, image = checked
        if data[:3] == b"\xff\xd8\xff" or data[:8] == b"\x89PNG\r\n\x1a\n":
            return checked
        return image, image

    def _items(self, root):
        """([(path, pid, camid, {})], whether the layout names cameras)."""
        csvs = sorted(n for n in os.listdir(root) if n.lower().endswith(".csv"))
        if csvs:
            return self._csv_items(root, os.path.join(root, csvs[0]))
        images = common.list_images(root)
        if images:
            items = []
            for path in images:
                match = MARKET_NAME.match(os.path.basename(path))
                if match is None:
                    raise common.file_name_error(path, "PID_cCAM_anything.jpg, e.g. 0002_c1_000451.jpg")
                items.append((path, int(match.group(1)), int(match.group(2)), {}))
            return items, True
        items, has_cameras = [], None
        for pid_dir in sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))):
            pid = self._number(os.path.join(root, pid_dir), "PID folder")
            folder = os.path.join(root, pid_dir)
            cam_dirs = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
            layout_cameras = bool(cam_dirs)
            if has_cameras is not None and layout_cameras != has_cameras:
                raise UserError(f"{folder} mixes the PID/CAM/*.jpg and PID/*.jpg layouts: use one for all identities")
            has_cameras = layout_cameras
            if cam_dirs:
                for cam_dir in cam_dirs:
                    camid = self._number(os.path.join(folder, cam_dir), "CAM folder")
                    items += [(p, pid, camid, {}) for p in common.list_images(os.path.join(folder, cam_dir))]
            else:
                items += [(p, pid, 0, {}) for p in common.list_images(folder)]
        return items, bool(has_cameras)

    @staticmethod
    def _number(path, what):
        name = os.path.basename(path)
        if not name.isdigit():
            raise common.file_name_error(path, f"a {what} named by a non-negative integer, e.g. 0002")
        return int(name)

    def _csv_items(self, root, csv_path):
        items, has_cameras = [], None
        with open(csv_path, newline="") as f:
            for line_number, row in enumerate(csv.reader(f), start=1):
                if not row or (line_number == 1 and row[0].strip().lower() == "path"):
                    continue
                if len(row) not in (2, 3) or not all(v.strip().lstrip("-").isdigit() for v in row[1:]):
                    raise UserError(f"{csv_path} line {line_number}: expected path,pid[,camid] with integer ids, "
                                    f"got {','.join(row)!r}")
                if has_cameras is not None and (len(row) == 3) != has_cameras:
                    raise UserError(f"{csv_path} line {line_number}: give a camid on every line or on none")
                has_cameras = len(row) == 3
                path = os.path.join(os.path.dirname(csv_path), row[0].strip())
                if not os.path.isfile(path):
                    raise UserError(f"{csv_path} line {line_number}: image {path} does not exist")
                items.append((path, int(row[1]), int(row[2]) if has_cameras else 0, {}))
        return items, bool(has_cameras)
