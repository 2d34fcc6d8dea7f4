"""A dummy DukeMTMC-reID release: DukeMTMC-reID/{bounding_box_train, bounding_box_test, query}/PPPP_cC_fFFFFFFF.jpg.

The real archive also holds CITATION.txt, LICENSE_*.txt and README.md beside the folders (written here too).
"""

import os

from tests.builder_fakes import tiny_jpeg, write

TOP = "DukeMTMC-reID"
# (pid, camera 1..8, frame) of each image. Test ids 1, 3 are queried; 9 and 5000 are gallery-only distractors.
TRAIN = [(2, 1, 46182), (2, 2, 46200), (7, 3, 1201), (7, 5, 88), (11, 8, 12), (11, 1, 9000), (12, 6, 77),
         (12, 7, 5)]
QUERY = [(1, 1, 70), (3, 2, 80), (3, 5, 90)]
GALLERY = [(1, 2, 10), (1, 3, 20), (3, 1, 30), (3, 8, 40), (9, 4, 50), (5000, 7, 51)]
FOLDERS = {"train": ("bounding_box_train", TRAIN), "query": ("query", QUERY), "gallery": ("bounding_box_test", GALLERY)}


def name(pid, cam, frame):
    return f"{pid:04d}_c{cam}_f{frame:07d}.jpg"


def make(manual_dir):
    """Writes manual_dir/DukeMTMC-reID; returns (root, {split: sorted [(file_name, pid, camid)]})."""
    root = os.path.join(manual_dir, TOP)
    seed = 0
    for folder, records in FOLDERS.values():
        for record in records:
            seed += 1
            write(os.path.join(root, folder, name(*record)), tiny_jpeg(seed))
    for extra in ("CITATION.txt", "LICENSE_DukeMTMC-reID.txt", "README.md"):
        write(os.path.join(root, extra), b"text")
    expected = {split: sorted((f"{folder}/{name(*r)}", r[0], r[1] - 1) for r in records)
                for split, (folder, records) in FOLDERS.items()}
    return root, expected
