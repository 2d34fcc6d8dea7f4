"""A dummy CUHK-SYSU release: Image/SSM/sNNNN.jpg scene images and annotation/test/train_test/{Train,TestG50}.mat.

As MATLAB v5 (scipy.io.loadmat) sees them:
  Train.mat:   Train: (n_persons, 1) cell; each a 1x1 struct {idname 'pNNNN', nAppear, scene: 1 x nAppear struct
               {imname 'sNNNN.jpg', idlocate 1x4 [x, y, w, h], ishard}}
  TestG50.mat: TestG50: 1 x n_test struct {Query: 1x1 struct {imname, idlocate, ishard, idname},
               Gallery: 1x50 struct {imname, idlocate (empty where the person is absent), ishard}}
(the real release also has Images.mat, Person.mat, pool.mat and the other TestG*.mat, which the builder does not
need; Images.mat and pool.mat are written here too so that the layout is complete.)
"""

import os

import numpy as np
import scipy.io

from tests.builder_fakes import write

IMAGE_SHAPE = (40, 30)  # scene height, width
# person idname -> [(scene image, [x, y, w, h])]
TRAIN = {
    "p11": [("s101.jpg", [2, 3, 8, 12]), ("s102.jpg", [10, 5, 6, 14])],
    "p12": [("s101.jpg", [15, 10, 9, 20]), ("s103.jpg", [0, 0, 7, 9]), ("s104.jpg", [20, 25, 8, 10])],
    "p13": [("s105.jpg", [5, 5, 10, 10]), ("s102.jpg", [1, 20, 6, 15])],
}
# test person idname -> (query (image, box), [gallery positives (image, box)], [gallery negatives (image)])
TEST = {
    "p21": (("s201.jpg", [3, 4, 9, 15]), [("s202.jpg", [12, 6, 8, 18]), ("s203.jpg", [0, 10, 10, 20])],
            ["s101.jpg", "s204.jpg"]),
    "p22": (("s202.jpg", [1, 1, 7, 11]), [("s204.jpg", [18, 2, 9, 30])], ["s201.jpg", "s205.jpg"]),
}


def pid(idname):
    return int(idname[1:])


def scene(name):
    """The uint8 (H, W, 3) pixels of scene image `name` (deterministic per name)."""
    rng = np.random.default_rng(int(name[1:-4]))
    return rng.integers(0, 256, (*IMAGE_SHAPE, 3), dtype=np.uint8)


def _struct(rows, fields):
    """A 1 x len(rows) MATLAB struct array from dicts."""
    out = np.empty((1, len(rows)), dtype=[(f, object) for f in fields])
    for i, row in enumerate(rows):
        for f in fields:
            out[0, i][f] = row[f]
    return out


def _box(box):
    return np.array([box], np.float64) if box is not None else np.zeros((0, 0))


def make(manual_dir, query_idname=True):
    """Writes manual_dir/dataset/{Image/SSM, annotation}; returns (root, {split: sorted [(imname, pid, camid, box)]}).

    Scene images are JPEGs (lossy): a crop's expected pixels are those of the decoded file, not of `scene`.
    """
    import tensorflow as tf

    root = os.path.join(manual_dir, "dataset")
    names = sorted({n for apps in TRAIN.values() for n, _ in apps}
                   | {n for q, pos, neg in TEST.values() for n in [q[0], *(p for p, _ in pos), *neg]})
    for name in names:
        write(os.path.join(root, "Image", "SSM", name), tf.io.encode_jpeg(scene(name)).numpy())
    train = np.empty((len(TRAIN), 1), dtype=object)
    for i, (idname, apps) in enumerate(TRAIN.items()):
        scenes = _struct([{"imname": np.array([n]), "idlocate": _box(b), "ishard": np.zeros((1, 1))}
                          for n, b in apps], ("imname", "idlocate", "ishard"))
        train[i, 0] = _struct([{"idname": np.array([idname]), "nAppear": np.array([[len(apps)]], float),
                                "scene": scenes}], ("idname", "nAppear", "scene"))
    tests = []
    for idname, (query, positives, negatives) in TEST.items():
        q_fields = ("imname", "idlocate", "ishard") + (("idname",) if query_idname else ())
        q = _struct([{"imname": np.array([query[0]]), "idlocate": _box(query[1]), "ishard": np.zeros((1, 1)),
                      "idname": np.array([idname])}], q_fields)
        gallery = [(n, b) for n, b in positives] + [(n, None) for n in negatives]
        g = _struct([{"imname": np.array([n]), "idlocate": _box(b), "ishard": np.zeros((1, 1))} for n, b in gallery],
                    ("imname", "idlocate", "ishard"))
        tests.append({"Query": q, "Gallery": g})
    annotation = os.path.join(root, "annotation")
    os.makedirs(os.path.join(annotation, "test", "train_test"), exist_ok=True)
    scipy.io.savemat(os.path.join(annotation, "test", "train_test", "Train.mat"), {"Train": train})
    scipy.io.savemat(os.path.join(annotation, "test", "train_test", "TestG50.mat"),
                     {"TestG50": _struct(tests, ("Query", "Gallery"))})
    pool = np.empty((len(names), 1), dtype=object)
    for i, n in enumerate(names):
        pool[i, 0] = np.array([n])
    scipy.io.savemat(os.path.join(annotation, "pool.mat"), {"pool": pool})
    expected = {
        "train": sorted((n, pid(i), 0, tuple(b)) for i, apps in TRAIN.items() for n, b in apps),
        "query": sorted((q[0], pid(i), 0, tuple(q[1])) for i, (q, _, _) in TEST.items()),
        "gallery": sorted((n, pid(i), 1, tuple(b)) for i, (_, pos, _) in TEST.items() for n, b in pos),
    }
    return root, expected
