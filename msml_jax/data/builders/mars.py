"""MARS (Zheng et al., ECCV 2016): video re-id, 1,261 identities, 6 cameras, 20,478 tracklets of DPM boxes.

Release (extracted folders or their zips, side by side in the manual dir):
    bbox_train/ (bbox_train.zip)   bbox_train/PPPP/PPPPCcTttttFfff.jpg: 8,298 tracklets of 625 identities
    bbox_test/  (bbox_test.zip)    bbox_test/PPPP/...: 12,180 tracklets of 636 identities + distractors (0000)
                                   + junk (00-1)
    info/       (from MARS-evaluation, or its zip)  train_name.txt, test_name.txt (frame names, one per line),
                tracks_train_info.mat, tracks_test_info.mat (rows [start, end, pid, camera], 1-based inclusive
                ranges of the name lists), query_IDX.mat (1-based rows of tracks_test_info used as queries)

Every frame is one example: pid, camid (camera - 1), `tracklet` (its 0-based row in tracks_*_info, the same
numbering for query and gallery, for tracklet-level evaluation: pool features by `tracklet`), `frame` (the F
number) and file_name (bbox_*/PPPP/name). Splits: train = the training tracklets' frames; query = the
query_IDX tracklets' frames (1,980 tracklets); gallery = the other test tracklets' frames (the official protocol
ranks against both: see Mars.PROTOCOLS). Junk tracklets (pid -1) are dropped; distractors (pid 0) stay in the
gallery.
"""

import os
import re

import numpy as np

from msml_jax.data.builders import common
from msml_jax.errors import UserError

NAME_PATTERN = re.compile(r"^(\d{4}|00-1)C(\d)T(\d{4})F(\d{3})\.jpg$")
EXPECTED_NAME = "PPPPCcTttttFfff.jpg, e.g. 0001C1T0001F001.jpg"
JUNK_PID = -1


def parse_name(name):
    """(pid, camera 1-based, tracklet number, frame) of a MARS frame name, or None when it does not parse."""
    match = NAME_PATTERN.match(name)
    if match is None:
        return None
    pid_text, cam, tracklet, frame = match.groups()
    return (-1 if pid_text == "00-1" else int(pid_text)), int(cam), int(tracklet), int(frame)


def _load_mat(path, key):
    return common.load_mat(path, key, f"it is not MARS's {os.path.basename(path)}: download MARS's info/ files again")


def _read_names(path):
    try:
        with open(path) as f:
            return [line.strip() for line in f if line.strip()]
    except OSError as e:
        raise UserError(f"cannot read {path} ({e}): download MARS's info/ files again") from e


class Mars(common.ReidBuilder):
    """MARS: frames of person tracklets from 6 cameras; tracklet ids kept for video re-id evaluation."""

    # tracklet (default, torchreid's rule): frame features pooled per tracklet (config.eval.pooling), each query
    # ranked against the non-query test tracklets. official (MARS-evaluation's evaluation_mars.m): max pooling,
    # each query against ALL test tracklets (itself removed as same identity and camera), trapezoid AP.
    PROTOCOLS = {"tracklet": "tracklet", "official": "tracklet_official"}
    RELEASE_MARKER = "info/tracks_test_info.mat"
    ARCHIVE_NAMES = ("MARS-evaluation-master.zip", "info.zip")
    EXTRA_FEATURES = {"tracklet": np.int64, "frame": np.int64}
    HOMEPAGE = "https://zheng-lab-anu.github.io/Project/project_mars.html"
    CITATION = """@inproceedings{zheng2016mars,
  title={MARS: A Video Benchmark for Large-Scale Person Re-identification},
  author={Zheng, Liang and Bie, Zhi and Sun, Yifan and Wang, Jingdong and Su, Chi and Wang, Shengjin and Tian, Qi},
  booktitle={ECCV}, year={2016}}"""
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    From the MARS page (https://zheng-lab-anu.github.io/Project/project_mars.html, Google Drive / Baidu links)
    download bbox_train.zip and bbox_test.zip, and the info/ folder of the MARS-evaluation code
    (https://github.com/liangzheng06/MARS-evaluation: train_name.txt, test_name.txt, tracks_train_info.mat,
    tracks_test_info.mat, query_IDX.mat). Place them side by side in the manual directory
    (config.data.manual_dir, by default <data_dir>/downloads/manual), zipped as downloaded or extracted:
    bbox_train/ (or bbox_train.zip), bbox_test/ (or bbox_test.zip), info/ (or MARS-evaluation-master.zip).
    """

    def _release_splits(self, root):
        raise NotImplementedError  # the three parts may lie in different places: see _split_generators

    def _split_generators(self, dl_manager):
        info = os.path.join(self.find_release(dl_manager), "info")
        train_root = self.find_release(dl_manager, "bbox_train", ("bbox_train.zip",))
        test_root = self.find_release(dl_manager, "bbox_test", ("bbox_test.zip",))
        train_names = _read_names(os.path.join(info, "train_name.txt"))
        test_names = _read_names(os.path.join(info, "test_name.txt"))
        train_tracks = _load_mat(os.path.join(info, "tracks_train_info.mat"), "track_train_info")
        test_tracks = _load_mat(os.path.join(info, "tracks_test_info.mat"), "track_test_info")
        query_rows = _load_mat(os.path.join(info, "query_IDX.mat"), "query_IDX").ravel().astype(np.int64) - 1
        if query_rows.size and (query_rows.min() < 0 or query_rows.max() >= len(test_tracks)):
            raise UserError(f"{info}/query_IDX.mat indexes rows outside tracks_test_info.mat (1..{len(test_tracks)})")
        is_query = np.zeros(len(test_tracks), bool)
        is_query[query_rows] = True
        train = self._items(train_root, "bbox_train", train_names, train_tracks, np.ones(len(train_tracks), bool),
                            info)
        query = self._items(test_root, "bbox_test", test_names, test_tracks, is_query, info)
        gallery = self._items(test_root, "bbox_test", test_names, test_tracks, ~is_query, info)
        return {"train": self._generate_examples(self.examples(train, train_root)),
                "query": self._generate_examples(self.examples(query, test_root)),
                "gallery": self._generate_examples(self.examples(gallery, test_root))}

    def _items(self, root, folder, names, tracks, keep_rows, info):
        """(path, pid, camid, extras) of the frames of the kept, non-junk tracklets."""
        tracks = np.asarray(tracks, np.int64).reshape(-1, 4)
        items = []
        for row in np.flatnonzero(keep_rows):
            start, end, pid, cam = (int(v) for v in tracks[row])
            if pid == JUNK_PID:
                continue
            if not 1 <= start <= end <= len(names):
                raise UserError(f"{info}: tracklet row {row + 1} [{start}, {end}] is outside the "
                                f"{len(names)} names of {folder.split('_')[1]}_name.txt")
            for name in names[start - 1:end]:
                parsed = parse_name(name)
                path = os.path.join(root, folder, name[:4], name)
                if parsed is None:
                    raise common.file_name_error(path, EXPECTED_NAME)
                if parsed[:2] != (pid, cam):
                    raise UserError(f"{path}: its name says identity {parsed[0]}, camera {parsed[1]} but its "
                                    f"tracklet (row {row + 1} of {info}) says {pid}, {cam}: the info files do "
                                    "not match this release")
                items.append((path, pid, cam - 1, {"tracklet": int(row), "frame": parsed[3]}))
        return items
