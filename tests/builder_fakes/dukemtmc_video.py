"""A dummy DukeMTMC-VideoReID release: DukeMTMC-VideoReID/{train, query, gallery}/PPPP/TTTT/frames.

Frames are named PPPP_CC_FFFF_XNNNNN.jpg (identity, camera C 1..8, frame within the tracklet, frame of the
camera's video); tracklet folders are numbered within each identity.
"""

import os

from tests.builder_fakes import tiny_jpeg, write

TOP = "DukeMTMC-VideoReID"
# split -> [(pid, tracklet folder number, camera 1..8, number of frames)], in folder order
TRACKLETS = {
    "train": [(1, 1, 1, 3), (1, 2, 2, 2), (2, 1, 3, 2), (5, 1, 8, 2), (5, 2, 4, 3), (6, 1, 6, 2)],
    "query": [(7, 1, 1, 2), (8, 1, 5, 2)],
    "gallery": [(7, 2, 2, 3), (7, 3, 1, 2), (8, 2, 6, 2), (9, 1, 7, 2)],  # 9: a distractor identity
}


def frame_name(pid, cam, frame, video_frame):
    return f"{pid:04d}_C{cam}_F{frame:04d}_X{video_frame:05d}.jpg"


def make(manual_dir):
    """Writes manual_dir/DukeMTMC-VideoReID; returns (root, {split: sorted [(file_name, pid, camid, tracklet,
    frame)]}), tracklets numbered over train, query, gallery in folder order."""
    root = os.path.join(manual_dir, TOP)
    expected, tracklet, seed = {}, 0, 0
    for split, tracks in TRACKLETS.items():
        expected[split] = []
        for pid, number, cam, frames in tracks:
            for frame in range(1, frames + 1):
                seed += 1
                rel = f"{split}/{pid:04d}/{number:04d}/{frame_name(pid, cam, frame, 30000 + seed)}"
                write(os.path.join(root, rel), tiny_jpeg(seed))
                expected[split].append((rel, pid, cam - 1, tracklet, frame))
            tracklet += 1
        expected[split].sort()
    return root, expected
