"""DukeMTMC-VideoReID (Wu et al., CVPR 2018; from Ristani et al.'s DukeMTMC): video re-id, 8 cameras.

Release layout (`DukeMTMC-VideoReID.zip` or its extracted `DukeMTMC-VideoReID/` folder):

    train/PPPP/TTTT/*.jpg     2,196 tracklets of 702 identities                             -> split `train`
    query/PPPP/TTTT/*.jpg     702 tracklets, one per test identity                          -> `query`
    gallery/PPPP/TTTT/*.jpg   2,636 tracklets: the 702 test identities + 408 distractors    -> `gallery`

PPPP is the identity, TTTT the tracklet (numbered within the identity). Frames are named
`PPPP_CC_FFFF_XNNNNN.jpg`, e.g. `0001_C6_F0099_X30823.jpg` (identity, camera C 1..8, frame F within the
tracklet, frame X of the camera's video); torchreid also accepts the older `0001C6F0099X30823.jpg`, and so
does this builder. camid = C - 1 (torchreid reads the camera from the tracklet's frame names the same way).

Every frame is one example: pid (PPPP), camid, `tracklet` (0-based, numbered over train, then query, then
gallery: one number per PPPP/TTTT folder, for tracklet-level evaluation: pool features by `tracklet`), `frame`
(the F number) and file_name (<split>/PPPP/TTTT/name).
"""

import os
import re

import numpy as np

from msml_jax.data.builders import common
from msml_jax.errors import UserError

SPLITS = ("train", "query", "gallery")  # each a folder of the release
NAME_PATTERN = re.compile(r"^(\d{4})_?C([1-8])_?F(\d{4})_?X(\d+)\.jpg$")
EXPECTED_NAME = "PPPP_CC_FFFF_XNNNNN.jpg (camera C in 1..8), e.g. 0001_C6_F0099_X30823.jpg"
FOLDER_PATTERN = re.compile(r"^\d{4}$")


def _subfolders(folder):
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


class DukemtmcVideo(common.ReidBuilder):
    """DukeMTMC-VideoReID: tracklets of 702 training and 702 test identities (+ 408 distractors), 8 cameras."""

    PROTOCOLS = {"tracklet": "tracklet"}  # frame features pooled per tracklet, ranked as images
    RELEASE_MARKER = "gallery"
    ARCHIVE_NAMES = ("DukeMTMC-VideoReID.zip",)
    EXTRA_FEATURES = {"tracklet": np.int64, "frame": np.int64}
    HOMEPAGE = "https://github.com/Yu-Wu/DukeMTMC-VideoReID"
    CITATION = """@inproceedings{wu2018cvpr_oneshot,
  title={Exploit the Unknown Gradually: One-Shot Video-Based Person Re-Identification by Stepwise Learning},
  author={Wu, Yu and Lin, Yutian and Dong, Xuanyi and Yan, Yan and Ouyang, Wanli and Yang, Yi},
  booktitle={CVPR}, year={2018}}"""
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Download DukeMTMC-VideoReID.zip (linked from https://github.com/Yu-Wu/DukeMTMC-VideoReID; mirrored by the
    re-ID toolkits) and place the zip as it is, or its extracted DukeMTMC-VideoReID/ folder (holding train/,
    query/ and gallery/), in the manual directory (config.data.manual_dir, by default
    <data_dir>/downloads/manual).
    """

    def _release_splits(self, root):
        items, tracklets = {}, 0
        for split in SPLITS:  # all parsed first: the tracklet numbers run on across the splits
            items[split], tracklets = self._items(root, split, tracklets)
        return {split: self.examples(split_items, root) for split, split_items in items.items()}

    def _items(self, root, split, first_tracklet):
        """([(path, pid, camid, {"tracklet", "frame"})] of <split>/PPPP/TTTT/*.jpg, the next tracklet number):
        tracklets numbered from `first_tracklet`; UserError on a missing folder or a name that does not parse."""
        folder = os.path.join(root, split)
        persons = _subfolders(folder) if os.path.isdir(folder) else []
        if not persons:
            raise UserError(f"{folder} is missing or empty: an incomplete DukeMTMC-VideoReID release; extract "
                            f"DukeMTMC-VideoReID.zip again.\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
        items, tracklet = [], first_tracklet
        for person in persons:
            if FOLDER_PATTERN.match(person) is None:
                raise common.file_name_error(os.path.join(folder, person), "an identity folder PPPP, e.g. 0001")
            for track in _subfolders(os.path.join(folder, person)):
                track_folder = os.path.join(folder, person, track)
                if FOLDER_PATTERN.match(track) is None:
                    raise common.file_name_error(track_folder, "a tracklet folder TTTT, e.g. 0001")
                for path, m in self.parse_folder(root, track_folder, NAME_PATTERN, EXPECTED_NAME):
                    if m.group(1) != person:
                        raise common.file_name_error(path, f"a frame of identity {person} (it lies in {person}/)")
                    items.append((path, int(person), int(m.group(2)) - 1,
                                  {"tracklet": tracklet, "frame": int(m.group(3))}))
                tracklet += 1
        return items, tracklet
