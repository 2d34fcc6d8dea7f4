"""A dummy CUHK03 release: cuhk03_release/cuhk-03.mat (MATLAB v7.3 = HDF5) and the new-protocol config mats.

cuhk-03.mat as MATLAB writes it (seen through h5py, dimensions reversed from MATLAB's):
  labeled, detected: (1, 5) object references, one per camera pair, each to a (10, n_persons) array of
      references to the images: uint8 (3, W, H) (MATLAB H x W x 3), or an empty cell (uint64 [0, 0] with
      attribute MATLAB_empty) where a person has fewer than 10 images. Images 1-5: first camera, 6-10: second.
  testsets: (1, 20) references to (2, 100) doubles (MATLAB 100 x 2: [camera pair, person], 1-based).
cuhk03_new_protocol_config_{labeled,detected}.mat (MATLAB v5): train_idx, query_idx, gallery_idx (1-based
  indices into filelist), labels, camId (n x 1), filelist (n x 1 cell of names 'P_PPP_V_II.png').
"""

import os

import h5py
import numpy as np
import scipy.io

PERSONS_PER_PAIR = (4, 3, 2, 2, 2)  # 13 identities in 5 camera pairs
NUM_TESTSETS = 20
TEST_PER_SET = 3


def _image_counts(kind, pair, person):
    """Which of the 10 cells hold an image: all for 'labeled'; 'detected' misses some (as the real file does)."""
    present = np.ones(10, bool)
    if kind == "detected" and (pair + person) % 3 == 0:
        present[[4, 9]] = False  # images 5 and 10 missing
    return present


def image(kind, pair, person, index):
    """The (H, W, 3) uint8 pixels of cell (pair, person, index), all 1-based; different for each cell."""
    rng = np.random.default_rng([pair, person, index, kind == "detected"])
    return rng.integers(0, 256, (6 + index % 3, 4, 3), dtype=np.uint8)


def testsets():
    """NUM_TESTSETS lists of TEST_PER_SET distinct (pair, person), 1-based."""
    everyone = [(c + 1, p + 1) for c, n in enumerate(PERSONS_PER_PAIR) for p in range(n)]
    rng = np.random.default_rng(7)
    return [[everyone[i] for i in sorted(rng.choice(len(everyone), TEST_PER_SET, replace=False))]
            for _ in range(NUM_TESTSETS)]


def global_pid(pair, person):
    return sum(PERSONS_PER_PAIR[: pair - 1]) + person


def file_name(pair, person, index):
    return f"{pair}_{person:03d}_{1 if index <= 5 else 2}_{index:02d}.png"


def cells(kind):
    """[(pair, person, index)] of the non-empty cells, 1-based."""
    return [(c + 1, p + 1, i + 1) for c, n in enumerate(PERSONS_PER_PAIR) for p in range(n)
            for i in np.flatnonzero(_image_counts(kind, c + 1, p + 1))]


def _write_mat73(path):
    with h5py.File(path, "w") as f:
        refs = f.create_group("#refs#")
        counter = [0]

        def new(data, empty=False):
            counter[0] += 1
            ds = refs.create_dataset(f"r{counter[0]}", data=data)
            if empty:
                ds.attrs["MATLAB_class"] = np.bytes_("double")
                ds.attrs["MATLAB_empty"] = np.uint8(1)
            return ds.ref

        for kind in ("labeled", "detected"):
            pair_refs = []
            for c, n in enumerate(PERSONS_PER_PAIR):
                grid = np.empty((10, n), dtype=h5py.ref_dtype)
                for p in range(n):
                    present = _image_counts(kind, c + 1, p + 1)
                    for i in range(10):
                        if present[i]:
                            grid[i, p] = new(image(kind, c + 1, p + 1, i + 1).transpose(2, 1, 0))
                        else:
                            grid[i, p] = new(np.zeros(2, np.uint64), empty=True)
                pair_refs.append(new(grid))
            f.create_dataset(kind, data=np.array([pair_refs], dtype=h5py.ref_dtype))
        sets = [new(np.array(ts, np.float64).T) for ts in testsets()]
        f.create_dataset("testsets", data=np.array([sets], dtype=h5py.ref_dtype))


# New protocol on the fake: pairs 1-2 train, pairs 3-5 test; per test person one query per camera.
def new_protocol(kind):
    """{"train", "query", "gallery"}: sorted [(file_name, pid, camid)] expected from the new-protocol config."""
    out = {"train": [], "query": [], "gallery": []}
    seen = set()
    for pair, person, index in cells(kind):
        camid = 2 * (pair - 1) + (0 if index <= 5 else 1)
        entry = (file_name(pair, person, index), global_pid(pair, person), camid)
        if pair <= 2:
            out["train"].append(entry)
        elif (pair, person, camid) not in seen:
            seen.add((pair, person, camid))
            out["query"].append(entry)
        else:
            out["gallery"].append(entry)
    return {k: sorted(v) for k, v in out.items()}


def _write_new_protocol(path, kind):
    expected = new_protocol(kind)
    # filelist order as in the real file (by name), indices 1-based, as MATLAB column vectors.
    names = sorted(file_name(*c) for c in cells(kind))
    index = {n: i + 1 for i, n in enumerate(names)}
    labels = np.zeros((len(names), 1))
    cams = np.zeros((len(names), 1))
    for split in expected.values():
        for name, pid, camid in split:
            labels[index[name] - 1, 0] = pid
            cams[index[name] - 1, 0] = camid % 2 + 1
    filelist = np.empty((len(names), 1), dtype=object)
    for i, n in enumerate(names):
        filelist[i, 0] = n
    col = lambda split: np.array([[index[n]] for n, _, _ in expected[split]], np.float64)  # noqa: E731
    scipy.io.savemat(path, {"train_idx": col("train"), "query_idx": col("query"), "gallery_idx": col("gallery"),
                            "labels": labels, "camId": cams, "filelist": filelist})


def make(manual_dir):
    """Writes manual_dir/cuhk03_release/cuhk-03.mat and the two new-protocol mats; returns the release folder."""
    root = os.path.join(manual_dir, "cuhk03_release")
    os.makedirs(root, exist_ok=True)
    _write_mat73(os.path.join(root, "cuhk-03.mat"))
    for kind in ("labeled", "detected"):
        _write_new_protocol(os.path.join(manual_dir, f"cuhk03_new_protocol_config_{kind}.mat"), kind)
    return root
