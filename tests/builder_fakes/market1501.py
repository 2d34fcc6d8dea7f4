"""A dummy Market-1501-v15.09.15 release: bounding_box_train/, bounding_box_test/, query/ (+ Thumbs.db)."""

import os

from tests.builder_fakes import tiny_jpeg, write

TOP = "Market-1501-v15.09.15"
# (pid, camera 1..6, sequence 1..6, frame, box) of each image; -1 = junk, 0 = distractor.
TRAIN = [(2, 1, 1, 451, 3), (2, 2, 1, 97, 1), (7, 3, 2, 1201, 2), (7, 5, 3, 88, 1), (11, 6, 6, 12, 1),
         (11, 1, 4, 9000, 4)]
GALLERY = [(1, 2, 1, 10, 1), (1, 3, 2, 20, 2), (3, 1, 1, 30, 1), (3, 6, 5, 40, 1), (0, 4, 3, 50, 1), (0, 5, 3, 51, 2)]
JUNK = [(-1, 1, 1, 60, 1), (-1, 2, 2, 61, 1)]
QUERY = [(1, 1, 1, 70, 1), (3, 2, 1, 80, 1), (3, 5, 2, 90, 1)]


def name(pid, cam, seq, frame, box):
    pid_text = "-1" if pid == -1 else f"{pid:04d}"
    return f"{pid_text}_c{cam}s{seq}_{frame:06d}_{box:02d}.jpg"


def make(manual_dir):
    """Writes the release under manual_dir/Market-1501-v15.09.15; returns {split: sorted [(name, pid, camid)]}."""
    root = os.path.join(manual_dir, TOP)
    folders = {"bounding_box_train": TRAIN, "bounding_box_test": GALLERY + JUNK, "query": QUERY}
    seed = 0
    for folder, records in folders.items():
        for record in records:
            seed += 1
            write(os.path.join(root, folder, name(*record)), tiny_jpeg(seed))
        write(os.path.join(root, folder, "Thumbs.db"), b"not an image")  # the real release has these
    expected = {}
    for split, folder, records in (("train", "bounding_box_train", TRAIN), ("query", "query", QUERY),
                                   ("gallery", "bounding_box_test", GALLERY)):
        expected[split] = sorted((f"{folder}/{name(*r)}", r[0], r[1] - 1) for r in records)
    return root, expected
