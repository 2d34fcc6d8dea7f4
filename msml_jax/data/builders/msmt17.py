"""MSMT17 (Wei et al., CVPR 2018): 4,101 identities, 15 cameras (12 outdoor, 3 indoor), 126,441 Faster-RCNN boxes.

Either release, as its archive or its extracted folder (the builder finds which one the manual dir holds):

    MSMT17_V1/  train/PPPP/*.jpg, test/PPPP/*.jpg                  (the original release)
    MSMT17_V2/  mask_train_v2/PPPP/*.jpg, mask_test_v2/PPPP/*.jpg  (faces masked; the one distributed today)
    both with   list_train.txt, list_val.txt (images of train/), list_query.txt, list_gallery.txt (of test/)

List lines: `PPPP/PPPP_NNN_CC_DDDDtime_FFFF_K.jpg LABEL`, e.g. `0000/0000_000_01_0303morning_0015_0.jpg 0`: the
image's path in the train or test folder and its identity. As torchreid and fast-reid read them: pid = LABEL,
camera = the third underscore field of the name (1..15), camid = camera - 1.

Splits: train = list_train.txt + list_val.txt (the whole official training set: 32,621 images of 1,041 identities;
list_val.txt holds held-out images of the same identities, and the toolkits train on both when they report
MSMT17); query = list_query.txt (11,659 images), gallery = list_gallery.txt (82,161 images) of 3,060 test
identities. Test labels are numbered from 0 like the training ones; the splits never mix.
"""

import os
import re

from msml_jax.data.builders import common
from msml_jax.errors import UserError

# release -> (training images folder, test images folder)
VERSIONS = {"MSMT17_V2": ("mask_train_v2", "mask_test_v2"), "MSMT17_V1": ("train", "test")}
# split -> (list files, which folder of the release its paths are in: 0 train, 1 test)
SPLIT_LISTS = {"train": (("list_train.txt", "list_val.txt"), 0), "query": (("list_query.txt",), 1),
               "gallery": (("list_gallery.txt",), 1)}
NAME_PATTERN = re.compile(r"^(\d{4})_\d+_(\d{2})_[^/]*\.jpg$")
EXPECTED_LINE = "'PPPP/PPPP_NNN_CC_DDDDtime_FFFF_K.jpg LABEL', e.g. '0000/0000_000_01_0303morning_0015_0.jpg 0'"
NUM_CAMERAS = 15


def parse_line(line):
    """(relative path, pid, camid 0-based) of a list line, or None when it does not parse."""
    parts = line.split()
    if len(parts) != 2 or not parts[1].isdigit():
        return None
    match = NAME_PATTERN.match(os.path.basename(parts[0]))
    if match is None or not 1 <= int(match.group(2)) <= NUM_CAMERAS:
        return None
    return parts[0], int(parts[1]), int(match.group(2)) - 1


def release_version(root):
    """The release name ("MSMT17_V1" / "MSMT17_V2") whose image folders `root` holds, or None."""
    for version, (train, test) in VERSIONS.items():
        if os.path.isdir(os.path.join(root, train)) or os.path.isdir(os.path.join(root, test)):
            return version
    return None


class Msmt17(common.ReidBuilder):
    """MSMT17 (V1 or V2): 1,041 training and 3,060 test identities from 15 cameras."""

    RELEASE_MARKER = "list_gallery.txt"
    ARCHIVE_NAMES = ("MSMT17_V2.zip", "MSMT17_V2.tar.gz", "MSMT17_V1.tar.gz", "MSMT17_V1.zip")
    HOMEPAGE = "https://www.pkuvmc.com/dataset.html"
    CITATION = """@inproceedings{wei2018person,
  title={Person Transfer GAN to Bridge Domain Gap for Person Re-Identification},
  author={Wei, Longhui and Zhang, Shiliang and Gao, Wen and Tian, Qi}, booktitle={CVPR}, year={2018}}"""
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    MSMT17 is released on request (https://www.pkuvmc.com/dataset.html: sign the agreement, receive a link).
    Place the archive you received (MSMT17_V2 or MSMT17_V1, zip or tar.gz) as it is, or its extracted
    MSMT17_V2/ folder (mask_train_v2/, mask_test_v2/, list_train.txt, list_val.txt, list_query.txt,
    list_gallery.txt) or MSMT17_V1/ folder (train/, test/ and the same lists), in the manual directory
    (config.data.manual_dir, by default <data_dir>/downloads/manual).
    """

    def _release_splits(self, root):
        version = release_version(root)
        if version is None:
            raise UserError(f"{root} holds MSMT17's lists but neither mask_train_v2/ + mask_test_v2/ (MSMT17_V2) nor "
                            f"train/ + test/ (MSMT17_V1): extract the whole archive again.\n"
                            f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
        folders = VERSIONS[version]
        for folder in folders:
            if not os.path.isdir(os.path.join(root, folder)):
                raise UserError(f"{root} is an incomplete {version} release: {folder}/ is missing; extract the "
                                f"whole archive again.\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
        items = {split: [item for name in lists for item in self._items(root, name, folders[which])]
                 for split, (lists, which) in SPLIT_LISTS.items()}
        return {split: self.examples(split_items, root) for split, split_items in items.items()}

    def _items(self, root, list_name, folder):
        """[(path, pid, camid, {})] of the images listed in `list_name`, each checked to exist in `folder`."""
        list_path = os.path.join(root, list_name)
        try:
            with open(list_path) as f:
                lines = [line.strip() for line in f if line.strip()]
        except OSError as e:
            raise UserError(f"cannot read {list_path} ({e}): it is part of every MSMT17 release; extract the whole "
                            f"archive again.\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}") from e
        items = []
        for number, line in enumerate(lines, 1):
            parsed = parse_line(line)
            if parsed is None:
                raise UserError(f"{list_path} line {number} {line!r} does not parse: expected {EXPECTED_LINE} "
                                f"(camera CC in 01..{NUM_CAMERAS}); download the release again")
            rel, pid, camid = parsed
            path = os.path.join(root, folder, rel)
            if not os.path.isfile(path):
                raise UserError(f"{path}, listed in {list_name} line {number}, is missing: an incomplete release; "
                                "extract the whole archive again")
            items.append((path, pid, camid, {}))
        return items
