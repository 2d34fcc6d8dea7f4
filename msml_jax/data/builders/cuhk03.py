"""CUHK03 (Li et al., CVPR 2014): 1,467 identities from 5 pairs of cameras, hand-labeled and DPM-detected boxes.

Release: `cuhk03_release.zip` (or its extracted `cuhk03_release/` folder) holding `cuhk-03.mat`, a MATLAB v7.3
(HDF5) file read with h5py:
  labeled, detected: 5 cells, one per camera pair (843, 440, 77, 58, 49 persons), each a persons x 10 cell array
      of uint8 H x W x 3 images; images 1-5 from the pair's first camera, 6-10 from its second; empty cells
      where a person has fewer images.
  testsets: 20 cells of 100 x 2 [camera pair, person] (1-based): the paper's 20 random test sets.
and the new protocol's `cuhk03_new_protocol_config_labeled.mat` / `..._detected.mat` (Zhong et al., CVPR 2017;
MATLAB v5): train_idx, query_idx, gallery_idx (1-based indices into filelist), labels, camId, filelist (names
`P_PPP_V_II.png`: camera pair, person in pair, view 1/2, image 1..10).

Configs `labeled` and `detected` (which boxes). Every image gets pid = the person's 1-based index over the five
pairs in order (1..1467, the same in both protocols), camid = 2 * (pair - 1) + (view - 1) (0..9: each pair has
its own two cameras) and file_name `P_PPP_V_II.png`.

Splits:
  train / query / gallery: the new protocol (767 training identities; 700 test identities, one query per
      camera, the rest in the gallery).
  classic_train / classic_test: the paper's protocol: 1,367 training identities and 100 test identities, the
      test set being official set CLASSIC_SPLIT (drawn once from the 20 with seed 0). Evaluate classic_test
      against itself: query = gallery, same-camera matches (the query itself included) are skipped.
"""

import os
import re

import numpy as np
import tensorflow_datasets as tfds

from msml_jax.data.builders import common
from msml_jax.errors import UserError

MAT_NAME = "cuhk-03.mat"
NEW_PROTOCOL_NAME = "cuhk03_new_protocol_config_{}.mat"
FILE_PATTERN = re.compile(r"^(\d)_(\d{3})_([12])_(\d{2})\.png$")
EXPECTED_NAME = "P_PPP_V_II.png, e.g. 1_001_1_01.png"
NUM_OFFICIAL_TESTSETS = 20
CLASSIC_SPLIT = int(np.random.default_rng(0).integers(NUM_OFFICIAL_TESTSETS))  # the one drawn split: 17


def camid_of(pair, index):
    """0-based camera of image `index` (1..10) of a person in camera pair `pair` (1..5)."""
    return 2 * (pair - 1) + (0 if index <= 5 else 1)


def protocol_splits(read, trial=0, protocol=None):
    """{"train", "query", "gallery"} of `protocol`: "new" (default) or "classic".

    new: the 767 / 700 identity splits of Zhong et al. as prepared. classic (the paper's): train on
    `classic_train` (1,367 identities); `classic_test`'s 100 identities give the queries (each person's
    images from the first camera of its pair, images 1-5) and the gallery (the second camera, 6-10), which
    the single-gallery-shot ranking samples one image per identity from. `read(split)` returns a
    prepared split; `trial` is unused (one classic split, CLASSIC_SPLIT).
    """
    if protocol in (None, "new"):
        return {split: read(split) for split in ("train", "query", "gallery")}
    if protocol != "classic":
        raise ValueError(f"unknown CUHK03 protocol {protocol!r}: new or classic")
    test = read("classic_test")
    first_camera = np.asarray(test["camids"]) % 2 == 0  # camid_of: 2 * (pair - 1) + (0 | 1)

    def take(keep):
        return {k: v[keep] for k, v in test.items()}

    return {"train": read("classic_train"), "query": take(first_camera), "gallery": take(~first_camera)}


def file_name(pair, person, index):
    return f"{pair}_{person:03d}_{1 if index <= 5 else 2}_{index:02d}.png"


class _Cells:
    """The images of one box type ('labeled' or 'detected') of cuhk-03.mat, by (pair, person, index), 1-based."""

    def __init__(self, mat, kind, path):
        import h5py

        self._mat, self._path, self._kind = mat, path, kind
        if kind not in mat or "testsets" not in mat:
            raise UserError(f"{path} has no {kind!r} or 'testsets' entry: it is not CUHK03's cuhk-03.mat")
        # HDF5 stores MATLAB arrays with dimensions reversed: each pair is (10, persons) here.
        self.grids = [mat[ref][()] for ref in mat[kind][()].ravel()]
        self.persons = [g.shape[1] for g in self.grids]
        self.offsets = np.concatenate([[0], np.cumsum(self.persons)])
        self._h5py = h5py

    def pid(self, pair, person):
        return int(self.offsets[pair - 1] + person)

    def image(self, pair, person, index):
        """uint8 (H, W, 3), or None for an empty cell; UserError for a cell outside the file."""
        if not (1 <= pair <= len(self.grids) and 1 <= person <= self.persons[pair - 1] and 1 <= index <= 10):
            raise UserError(f"{self._kind} image {file_name(pair, person, index)} is not in {self._path}")
        data = self._mat[self.grids[pair - 1][index - 1, person - 1]]
        if data.ndim != 3:  # MATLAB's empty cell: a [0, 0] uint64 vector
            return None
        array = data[()]
        if array.dtype != np.uint8 or array.shape[0] != 3 or array.size == 0:
            raise UserError(f"{self._kind} image {file_name(pair, person, index)} in {self._path} is not an "
                            f"H x W x 3 uint8 image (stored shape {array.shape}, {array.dtype}): re-download it")
        return np.ascontiguousarray(array.transpose(2, 1, 0))

    def present(self):
        """[(pair, person, index)] of every non-empty cell, in file order."""
        out = []
        for pair, grid in enumerate(self.grids, start=1):
            for person in range(1, grid.shape[1] + 1):
                for index in range(1, 11):
                    if self._mat[grid[index - 1, person - 1]].ndim == 3:
                        out.append((pair, person, index))
        return out

    def testset(self, which):
        """[(pair, person)] of official test set `which`."""
        refs = self._mat["testsets"][()].ravel()
        if len(refs) <= which:
            raise UserError(f"{self._path} holds {len(refs)} test sets; the classic protocol uses set {which}")
        pairs = self._mat[refs[which]][()].T  # (100, 2) after undoing HDF5's reversed dimensions
        return [(int(c), int(p)) for c, p in pairs]


def read_new_protocol(path):
    """{"train", "query", "gallery"}: [(pair, person, index)] of the new protocol's config mat at `path`."""
    import scipy.io

    try:
        mat = scipy.io.loadmat(path)
    except Exception as e:  # scipy raises several types for a damaged file
        raise UserError(f"cannot read {path} ({e}): download it again") from e
    missing = [k for k in ("train_idx", "query_idx", "gallery_idx", "filelist") if k not in mat]
    if missing:
        raise UserError(f"{path} lacks {missing}: it is not a CUHK03 new-protocol config file")
    names = [str(np.asarray(entry).ravel()[0]) for entry in mat["filelist"].ravel()]
    out = {}
    for split in ("train", "query", "gallery"):
        cells = []
        for idx in mat[f"{split}_idx"].ravel().astype(np.int64):
            if not 1 <= idx <= len(names):
                raise UserError(f"{path}: {split}_idx {idx} is outside filelist (1..{len(names)})")
            name = names[idx - 1]
            match = FILE_PATTERN.match(name)
            if match is None:
                raise common.file_name_error(f"{name} (filelist of {path})", EXPECTED_NAME)
            pair, person, view, index = (int(g) for g in match.groups())
            if view != (1 if index <= 5 else 2):
                raise common.file_name_error(f"{name} (filelist of {path})", "view 1 for images 01-05, 2 for 06-10")
            cells.append((pair, person, index))
        out[split] = cells
    return out


class Cuhk03Config(tfds.core.BuilderConfig):
    """Which boxes: 'labeled' (hand-drawn) or 'detected' (DPM)."""


class Cuhk03(common.ReidBuilder):
    """CUHK03: 1,467 identities, 5 camera pairs; labeled and detected boxes; new and classic protocols."""

    BUILDER_CONFIGS = [
        Cuhk03Config(name="labeled", description="Hand-labeled bounding boxes."),
        Cuhk03Config(name="detected", description="DPM-detected bounding boxes."),
    ]
    PROTOCOLS = {"new": "image", "classic": "single_gallery_shot"}  # Zhong et al.'s split; the paper's
    RELEASE_MARKER = MAT_NAME
    ARCHIVE_NAMES = ("cuhk03_release.zip",)
    IMAGE_ENCODING = "png"  # the release holds raw pixels; PNG keeps them exactly
    HOMEPAGE = "https://www.ee.cuhk.edu.hk/~xgwang/CUHK_identification.html"
    CITATION = """@inproceedings{li2014deepreid,
  title={DeepReID: Deep Filter Pairing Neural Network for Person Re-identification},
  author={Li, Wei and Zhao, Rui and Xiao, Tong and Wang, Xiaogang}, booktitle={CVPR}, year={2014}}
@inproceedings{zhong2017rerank,
  title={Re-ranking Person Re-identification with k-reciprocal Encoding},
  author={Zhong, Zhun and Zheng, Liang and Cao, Donglin and Li, Shaozi}, booktitle={CVPR}, year={2017}}"""
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    1. Request cuhk03_release.zip from the CUHK03 page (https://www.ee.cuhk.edu.hk/~xgwang/CUHK_identification.html)
       and place the zip as it is, or its extracted cuhk03_release/ folder holding cuhk-03.mat, in the manual
       directory (config.data.manual_dir, by default <data_dir>/downloads/manual).
    2. Download cuhk03_new_protocol_config_labeled.mat and cuhk03_new_protocol_config_detected.mat (the 767/700
       protocol, from https://github.com/zhunzhong07/person-re-ranking/tree/master/evaluation/data/CUHK03) and
       place them in the manual directory too (or next to cuhk-03.mat).
    """

    def _release_splits(self, root):
        raise NotImplementedError  # _split_generators needs the manual dir for the protocol files too

    def _split_generators(self, dl_manager):
        import h5py

        root = self.find_release(dl_manager)
        mat_path = os.path.join(root, MAT_NAME)
        kind = self.builder_config.name
        protocol_name = NEW_PROTOCOL_NAME.format(kind)
        protocol_path = None
        for folder in (root, os.path.dirname(root), self.manual_dir(dl_manager)):
            if folder and os.path.isfile(os.path.join(folder, protocol_name)):
                protocol_path = os.path.join(folder, protocol_name)
                break
        if protocol_path is None:
            protocol_path = os.path.join(self.find_release(dl_manager, protocol_name, ()), protocol_name)
        new = read_new_protocol(protocol_path)
        try:
            mat = h5py.File(mat_path, "r")
        except OSError as e:
            raise UserError(f"cannot read {mat_path} as MATLAB v7.3 (HDF5) ({e}): download cuhk03_release.zip "
                            "again") from e
        self._mat = mat  # closed after the build, in download_and_prepare
        cells = _Cells(mat, kind, mat_path)
        test_ids = set(cells.testset(CLASSIC_SPLIT))
        present = cells.present()
        classic_train = [c for c in present if c[:2] not in test_ids]
        classic_test = [c for c in present if c[:2] in test_ids]
        splits = {**new, "classic_train": classic_train, "classic_test": classic_test}
        return {split: self._generate_examples((cells, items)) for split, items in splits.items()}

    def _generate_examples(self, cells_items):
        cells, items = cells_items
        for pair, person, index in items:
            pixels = cells.image(pair, person, index)
            if pixels is None:
                raise UserError(f"the new protocol lists {file_name(pair, person, index)} but that {cells._kind} "
                                "cell of cuhk-03.mat is empty: the config file does not match this release")
            name = file_name(pair, person, index)
            yield name, {"image": pixels, "pid": cells.pid(pair, person), "camid": camid_of(pair, index),
                         "file_name": name}

    def download_and_prepare(self, *args, **kwargs):
        try:
            return super().download_and_prepare(*args, **kwargs)
        finally:
            mat = getattr(self, "_mat", None)
            if mat is not None:
                mat.close()
                self._mat = None
