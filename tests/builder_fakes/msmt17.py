"""A dummy MSMT17 release, V1 (train/, test/) or V2 (mask_train_v2/, mask_test_v2/), with the four list files.

Images lie in <folder>/PPPP/PPPP_NNN_CC_DDDDtime_FFFF_K.jpg (identity, index, camera 01..15, date and time of
day, frame, box); list lines are `PPPP/name LABEL`. Training and test identities are both numbered from 0.
"""

import os

from tests.builder_fakes import tiny_jpeg, write

TOP_V2 = "MSMT17_V2"
FOLDERS = {"MSMT17_V1": ("train", "test"), "MSMT17_V2": ("mask_train_v2", "mask_test_v2")}
# list file -> [(pid, camera 1..15)]; list_val holds more images of the training identities.
LISTS = {
    "list_train.txt": [(0, 1), (0, 2), (1, 15), (1, 3), (2, 7), (3, 9), (3, 10)],
    "list_val.txt": [(2, 8), (0, 4)],
    "list_query.txt": [(0, 1), (1, 12), (2, 3)],
    "list_gallery.txt": [(0, 2), (0, 6), (1, 13), (2, 3), (2, 14), (3, 11)],
}
TRAIN_LISTS = ("list_train.txt", "list_val.txt")


def image_name(pid, index, cam):
    return f"{pid:04d}/{pid:04d}_{index:03d}_{cam:02d}_0303morning_{index * 7:04d}_{index % 3}.jpg"


def make(manual_dir, version=TOP_V2):
    """Writes manual_dir/<version>; returns (root, {split: sorted [(file_name, pid, camid)]})."""
    root = os.path.join(manual_dir, version)
    train_folder, test_folder = FOLDERS[version]
    expected = {"train": [], "query": [], "gallery": []}
    seed, index = 0, 0
    for list_name, records in LISTS.items():
        folder = train_folder if list_name in TRAIN_LISTS else test_folder
        split = "train" if list_name in TRAIN_LISTS else list_name[5:-4]
        lines = []
        for pid, cam in records:
            seed, index = seed + 1, index + 1
            rel = image_name(pid, index, cam)
            write(os.path.join(root, folder, rel), tiny_jpeg(seed))
            lines.append(f"{rel} {pid}")
            expected[split].append((f"{folder}/{rel}", pid, cam - 1))
        write(os.path.join(root, list_name), ("\n".join(lines) + "\n").encode())
    return root, {k: sorted(v) for k, v in expected.items()}
