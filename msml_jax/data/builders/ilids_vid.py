"""iLIDS-VID (Wang et al., ECCV 2014): 300 identities, one image sequence each in two non-overlapping cameras.

Release layout (`iLIDS-VID.tar` or its extracted folder; only `i-LIDS-VID/sequences/` is read):

    i-LIDS-VID/sequences/cam1/personNNN/cam1_personNNN_FFFFF.png   23..192 frames per sequence
    i-LIDS-VID/sequences/cam2/personNNN/cam2_personNNN_FFFFF.png   the same NNN is the same person
    (also i-LIDS-VID/images/, one still per person and camera, and `train-test people splits/`: not read)

Identity NNN (person001 .. person319, 300 of them) is pid NNN in both cameras; camid 0 for cam1, 1 for cam2, as
torchreid and fast-reid read them. Every frame is one example with `tracklet` (2 * pid + camid: one sequence per
person and camera) and `frame` (FFFFF), pooled per tracklet by the tracklet evaluation protocol, as MARS's.

Splits: `cam1`, `cam2` (every frame of each camera); each trial's train / query / gallery is drawn from them
when loaded (`protocol_splits`, VIPeR's draw: `viper.trial_split`). Protocol, trials 0..9: the 300 identities
are split at random into 150 for training (both cameras' sequences) and 150 for testing; the test identities'
cam1 sequences are the queries, their cam2 sequences the gallery (150-way ranking of sequences).
"""

import functools
import os
import re

import numpy as np
import tensorflow_datasets as tfds

from msml_jax.data.builders import common, viper
from msml_jax.errors import UserError

CAMERAS = ("cam1", "cam2")
PERSON_PATTERN = re.compile(r"^person(\d{3})$")
FRAME_PATTERN = re.compile(r"^(cam[12])_person(\d{3})_(\d+)\.png$")
EXPECTED_FRAME = "camC_personNNN_FFFFF.png in sequences/camC/personNNN/, e.g. cam1/person001/cam1_person001_00317.png"

# The cam1 sequences of a trial's test identities are its queries, their cam2 sequences its gallery.
protocol_splits = functools.partial(viper.protocol_splits, cameras=CAMERAS)


class IlidsVid(common.ReidBuilder):
    """iLIDS-VID: 600 sequences of 300 people in two airport-hall cameras; ten random 150 / 150 splits."""

    PROTOCOLS = {"ten_split": "tracklet"}  # sequences (frame features pooled per tracklet) on one random split
    TRIALS = viper.NUM_TRIALS
    RELEASE_MARKER = "sequences/cam1"
    ARCHIVE_NAMES = ("iLIDS-VID.tar",)
    EXTRA_FEATURES = {"tracklet": np.int64, "frame": np.int64}
    IMAGE_ENCODING = "png"
    HOMEPAGE = "https://xiatian-zhu.github.io/downloads_qmul_iLIDS-VID_ReID_dataset.html"
    CITATION = """@inproceedings{wang2014person,
  title={Person Re-Identification by Video Ranking},
  author={Wang, Taiqing and Gong, Shaogang and Zhu, Xiatian and Wang, Shengjin}, booktitle={ECCV}, year={2014}}"""
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Download iLIDS-VID.tar from the iLIDS-VID page
    (https://xiatian-zhu.github.io/downloads_qmul_iLIDS-VID_ReID_dataset.html, formerly
    http://www.eecs.qmul.ac.uk/~xiatian/iLIDS-VID/iLIDS-VID.tar) and place the tar as it is, or its
    extracted i-LIDS-VID/ folder (holding sequences/cam1/ and sequences/cam2/), in the manual directory
    (config.data.manual_dir, by default <data_dir>/downloads/manual).
    """

    VERSION = tfds.core.Version("1.0.0")

    def _release_splits(self, root):
        cams = {camera: self._items(root, camera, camid) for camid, camera in enumerate(CAMERAS)}
        persons = [{pid for _, pid, _, _ in items} for items in cams.values()]
        if persons[0] != persons[1]:
            only = sorted(persons[0] ^ persons[1])
            raise UserError(f"{root}/sequences: person{only[0]:03d} has a sequence in one camera only (persons "
                            f"{', '.join(f'{p:03d}' for p in only[:5])}{' ...' if len(only) > 5 else ''}): an "
                            "incomplete release; extract iLIDS-VID.tar again")
        return {camera: self.examples(items, root) for camera, items in cams.items()}

    def _items(self, root, camera, camid):
        """[(path, pid, camid, {"tracklet", "frame"})] of sequences/<camera>; UserError on a missing or bad part."""
        folder = os.path.join(root, "sequences", camera)
        persons = sorted(n for n in os.listdir(folder) if os.path.isdir(os.path.join(folder, n))) \
            if os.path.isdir(folder) else []
        if not persons:
            raise UserError(f"{folder} is missing or empty: an incomplete iLIDS-VID release; extract iLIDS-VID.tar "
                            f"again.\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
        items = []
        for person in persons:
            match = PERSON_PATTERN.match(person)
            if match is None:
                raise common.file_name_error(os.path.join(folder, person), "a sequence folder personNNN")
            pid = int(match.group(1))
            for path, m in self.parse_folder(root, os.path.join(folder, person), FRAME_PATTERN, EXPECTED_FRAME):
                if m.group(1) != camera or int(m.group(2)) != pid:
                    raise common.file_name_error(path, f"{camera}_{person}_FFFFF.png in that folder")
                items.append((path, pid, camid, {"tracklet": 2 * pid + camid, "frame": int(m.group(3))}))
        return items
