"""A dummy iLIDS-VID release: i-LIDS-VID/sequences/cam{1,2}/personNNN/camC_personNNN_FFFFF.png (and images/).

Person numbers as sparse as the real person001 .. person319 (300 of them); 2..4 frames per sequence.
"""

import os

import numpy as np

from tests.builder_fakes import write

TOP = "i-LIDS-VID"
# person -> (frames in cam1, frames in cam2), each a list of frame numbers
PERSONS = {1: ([317, 318, 319], [12, 13]), 2: ([5, 6], [100, 101, 102, 103]), 4: ([40, 41], [7, 8]),
           9: ([1, 2, 3], [1, 2]), 12: ([88, 89], [90, 91]), 150: ([10, 11], [20, 21, 22]),
           200: ([3, 4], [5, 6]), 319: ([70, 71, 72], [80, 81])}


def tiny_png(seed, height=8, width=4):
    import tensorflow as tf

    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return tf.io.encode_png(pixels).numpy()


def frame_path(cam, person, frame):
    """The frame's path under i-LIDS-VID/, cam 1 or 2."""
    return f"sequences/cam{cam}/person{person:03d}/cam{cam}_person{person:03d}_{frame:05d}.png"


def make(manual_dir):
    """Writes manual_dir/i-LIDS-VID; returns (root, {"cam1", "cam2": sorted [(file_name, pid, camid, tracklet,
    frame)]})."""
    root = os.path.join(manual_dir, TOP)
    expected = {"cam1": [], "cam2": []}
    for person, cams in PERSONS.items():
        for camid, frames in enumerate(cams):
            for frame in frames:
                rel = frame_path(camid + 1, person, frame)
                write(os.path.join(root, rel), tiny_png([person, camid, frame]))
                expected[f"cam{camid + 1}"].append((rel, person, camid, 2 * person + camid, frame))
            write(os.path.join(root, "images", f"cam{camid + 1}", f"person{person:03d}",
                               f"cam{camid + 1}_person{person:03d}.png"), tiny_png([person, camid]))
    return root, {k: sorted(v) for k, v in expected.items()}
