"""Market-1501 (Zheng et al., ICCV 2015): 1,501 identities seen by 6 cameras, DPM-detected boxes.

Release layout (`Market-1501-v15.09.15.zip` or its extracted `Market-1501-v15.09.15/` folder):

    bounding_box_train/  12,936 images of 751 identities            -> split `train`
    bounding_box_test/   19,732 images: 750 test identities, 0000 (distractors) and -1 (junk)  -> `gallery`
    query/               3,368 images, one per test identity and camera                        -> `query`

Names: `PPPP_cCsS_FFFFFF_BB.jpg`, e.g. `0002_c1s1_000451_03.jpg`: identity PPPP (4 digits, `-1` for junk),
camera C (1..6), sequence S (1..6), frame FFFFFF in that sequence, box BB in that frame. Junk images (-1)
are dropped (the protocol ignores them); distractors (pid 0) stay in the gallery. camid = C - 1.
"""

import os
import re

import numpy as np

from msml_jax.data.builders import common

NAME_PATTERN = re.compile(r"^(-1|\d{4})_c(\d)s(\d)_(\d{6})_(\d{2})\.jpg$")
EXPECTED_NAME = "PPPP_cCsS_FFFFFF_BB.jpg, e.g. 0002_c1s1_000451_03.jpg"
SPLIT_FOLDERS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
JUNK_PID = -1


def parse_name(name):
    """(pid, camid 0-based, sequence, frame, box) of a Market-1501 file name, or None when it does not parse."""
    match = NAME_PATTERN.match(name)
    if match is None:
        return None
    pid, cam, seq, frame, box = (int(g) for g in match.groups())
    if not 1 <= cam <= 6:
        return None
    return pid, cam - 1, seq, frame, box


class Market1501(common.ReidBuilder):
    """Market-1501: 751 training and 750 test identities from 6 cameras, plus distractors."""

    # image (default, torchreid's rule): AP = mean precision at the hits; official (the release's evaluation.m /
    # compute_AP.m): the same ranking, AP by the trapezoid rule, every query averaged.
    PROTOCOLS = {"image": "image", "official": "image_official"}
    RELEASE_MARKER = "bounding_box_train"
    ARCHIVE_NAMES = ("Market-1501-v15.09.15.zip",)
    EXTRA_FEATURES = {"sequence": np.int64, "frame": np.int64}
    HOMEPAGE = "https://zheng-lab-anu.github.io/Project/project_reid.html"
    CITATION = """@inproceedings{zheng2015scalable,
  title={Scalable Person Re-identification: A Benchmark},
  author={Zheng, Liang and Shen, Liyue and Tian, Lu and Wang, Shengjin and Wang, Jingdong and Tian, Qi},
  booktitle={ICCV}, year={2015}}"""
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Download Market-1501-v15.09.15.zip from the Market-1501 page
    (https://zheng-lab-anu.github.io/Project/project_reid.html, linked to Google Drive / Baidu) and place the
    zip as it is, or its extracted Market-1501-v15.09.15/ folder (holding bounding_box_train/,
    bounding_box_test/ and query/), in the manual directory (config.data.manual_dir, by default
    <data_dir>/downloads/manual).
    """

    def _release_splits(self, root):
        return {split: self.examples(self._items(root, folder), root) for split, folder in SPLIT_FOLDERS.items()}

    def _items(self, root, folder):
        path = os.path.join(root, folder)
        if not os.path.isdir(path):
            raise self.missing_release_error(root)
        items = []
        for image_path in common.list_images(path):
            parsed = parse_name(os.path.basename(image_path))
            if parsed is None:
                raise common.file_name_error(image_path, EXPECTED_NAME)
            pid, camid, seq, frame, _ = parsed
            if pid == JUNK_PID:
                continue
            items.append((image_path, pid, camid, {"sequence": seq, "frame": frame}))
        return items
