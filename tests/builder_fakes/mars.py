"""A dummy MARS release: bbox_train/, bbox_test/ (a folder per identity) and the info/ files.

Frames are named PPPPCcTttttFfff.jpg (identity PPPP, '00-1' for junk; camera c 1..6; tracklet tttt of that
identity in that camera; frame fff) and lie in bbox_*/PPPP/. info/train_name.txt and test_name.txt list the
frame names, one per line, tracklet after tracklet; tracks_{train,test}_info.mat hold
track_{train,test}_info: rows [start, end, pid, camera] (1-based, inclusive, into the name list);
query_IDX.mat holds query_IDX: 1-based rows of tracks_test_info that are queries.
"""

import os

import numpy as np
import scipy.io

from tests.builder_fakes import tiny_jpeg, write

# (pid, camera, tracklet number, number of frames)
TRAIN_TRACKS = [(1, 1, 1, 3), (1, 2, 1, 2), (2, 3, 1, 2), (2, 3, 2, 2), (3, 6, 1, 3)]
TEST_TRACKS = [(4, 1, 1, 2), (4, 2, 1, 3), (4, 2, 2, 2), (5, 3, 1, 2), (5, 4, 1, 2), (0, 1, 1, 2), (-1, 2, 1, 2)]
QUERY_ROWS = [1, 4]  # 1-based rows of TEST_TRACKS: pid 4 camera 1, pid 5 camera 3


def frame_name(pid, cam, tracklet, frame):
    pid_text = "00-1" if pid == -1 else f"{pid:04d}"
    return f"{pid_text}C{cam}T{tracklet:04d}F{frame:03d}.jpg"


def _write_part(manual_dir, folder, tracks, info_key, seed):
    names, rows, expected = [], [], []
    for row, (pid, cam, tracklet, frames) in enumerate(tracks):
        start = len(names) + 1
        for frame in range(1, frames + 1):
            name = frame_name(pid, cam, tracklet, frame)
            names.append(name)
            write(os.path.join(manual_dir, folder, name[:4], name), tiny_jpeg(seed + len(names)))
            expected.append((f"{folder}/{name[:4]}/{name}", pid, cam - 1, row, frame))
        rows.append([start, len(names), pid, cam])
    write(os.path.join(manual_dir, "info", f"{folder.split('_')[1]}_name.txt"), ("\n".join(names) + "\n").encode())
    scipy.io.savemat(os.path.join(manual_dir, "info", f"tracks_{folder.split('_')[1]}_info.mat"),
                     {info_key: np.array(rows, np.float64)})
    return expected


def make(manual_dir):
    """Writes the release into manual_dir; returns {split: sorted [(file_name, pid, camid, tracklet, frame)]}."""
    train = _write_part(manual_dir, "bbox_train", TRAIN_TRACKS, "track_train_info", 0)
    test = _write_part(manual_dir, "bbox_test", TEST_TRACKS, "track_test_info", 1000)
    scipy.io.savemat(os.path.join(manual_dir, "info", "query_IDX.mat"), {"query_IDX": np.array([QUERY_ROWS], float)})
    query_rows = {r - 1 for r in QUERY_ROWS}
    return {
        "train": sorted(train),
        "query": sorted(e for e in test if e[3] in query_rows),
        "gallery": sorted(e for e in test if e[3] not in query_rows and e[1] != -1),
    }
