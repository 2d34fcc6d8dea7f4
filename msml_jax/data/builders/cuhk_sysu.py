"""CUHK-SYSU (Xiao et al., CVPR 2017): a person-search set; the builder crops its annotated persons for re-id.

Release (the `dataset/` folder of the official archive, or the archive itself):
    Image/SSM/sNNNN.jpg                         18,184 scene images (street snaps and movie frames)
    annotation/test/train_test/Train.mat        Train: (5,532 x 1) cell of structs {idname 'pNNNN', nAppear,
                                                scene: 1 x nAppear struct {imname, idlocate [x y w h], ishard}}
    annotation/test/train_test/TestG50.mat      TestG50: 1 x 2,900 struct {Query: {imname, idlocate, ishard,
                                                idname}, Gallery: 1 x 50 struct {imname, idlocate (empty when
                                                the person is not in that image), ishard}}
    (also annotation/Images.mat, Person.mat, pool.mat, TestG100..4000.mat: not needed here)

Splits (boxes [x, y, w, h] in pixels, 0-based top-left, cropped from the scene and stored as PNG):
    train:   every appearance of the 5,532 training persons (15,080 boxes in 11,206 images).
    query:   each of the 2,900 test persons' query box.
    gallery: the other boxes of the test persons (their non-empty TestG50 gallery entries).
pid = the number in idname (pNNNN; a test person whose Query lacks idname gets TEST_PID_OFFSET + its
index). There are no cameras: train and query get camid 0 and gallery camid 1, so
every query-gallery pair counts as cross-camera (a query is never its own gallery box). Extras: `bbox` and
file_name (the scene image's name).
"""

import os
import re

import numpy as np
import tensorflow_datasets as tfds

from msml_jax.data.builders import common
from msml_jax.errors import UserError

TRAIN_MAT = "annotation/test/train_test/Train.mat"
TEST_MAT = "annotation/test/train_test/TestG50.mat"
IMAGE_DIR = "Image/SSM"
IDNAME_PATTERN = re.compile(r"^p(\d+)$")
IMAGE_PATTERN = re.compile(r"^s\d+\.jpg$")
QUERY_CAMID, GALLERY_CAMID = 0, 1
TEST_PID_OFFSET = 1_000_000  # test persons' pids when TestG50's Query has no idname (above every pNNNN)


def _text(value):
    """The string in a MATLAB char cell as loadmat returns it (array(['s1.jpg']) in any nesting)."""
    flat = np.asarray(value).ravel()
    return str(flat[0]) if flat.size else ""


def _box(value):
    """[x, y, w, h] int of a MATLAB idlocate, or None when the cell is empty."""
    flat = np.asarray(value, np.float64).ravel()
    if flat.size == 0:
        return None
    if flat.size != 4:
        raise ValueError(f"a box has {flat.size} numbers, not 4")
    return [int(round(v)) for v in flat]


def _records(struct):
    """The records of a MATLAB struct array (any shape) as a flat list."""
    return list(np.asarray(struct).ravel())


def _loadmat(path, key):
    return common.load_mat(
        path, key, f"it is not CUHK-SYSU's {os.path.basename(path)}: extract the CUHK-SYSU release again"
    )


def _pid(idname, where):
    match = IDNAME_PATTERN.match(idname)
    if match is None:
        raise UserError(f"person name {idname!r} in {where} does not parse: expected pNNNN, e.g. p1234")
    return int(match.group(1))


def read_annotations(root):
    """{"train", "query", "gallery"}: [(image name, pid, camid, [x, y, w, h])] from Train.mat and TestG50.mat."""
    train_path, test_path = os.path.join(root, TRAIN_MAT), os.path.join(root, TEST_MAT)
    out = {"train": [], "query": [], "gallery": []}
    try:
        for cell in np.asarray(_loadmat(train_path, "Train")).ravel():
            person = _records(cell)[0]
            pid = _pid(_text(person["idname"]), train_path)
            for appearance in _records(person["scene"]):
                out["train"].append((_text(appearance["imname"]), pid, QUERY_CAMID, _box(appearance["idlocate"])))
        for index, entry in enumerate(_records(_loadmat(test_path, "TestG50"))):
            query = _records(entry["Query"])[0]
            if "idname" in (query.dtype.names or ()):
                pid = _pid(_text(query["idname"]), test_path)
            else:  # a copy without idname: number the test persons apart (they are only matched to each other)
                pid = TEST_PID_OFFSET + index
            out["query"].append((_text(query["imname"]), pid, QUERY_CAMID, _box(query["idlocate"])))
            for appearance in _records(entry["Gallery"]):
                box = _box(appearance["idlocate"])
                if box is not None:  # an empty box: the person is not in that gallery image
                    out["gallery"].append((_text(appearance["imname"]), pid, GALLERY_CAMID, box))
    except (ValueError, KeyError, IndexError) as e:
        raise UserError(f"unexpected layout in {train_path} or {test_path} ({e!r}): extract the release again") from e
    for split, items in out.items():
        for name, _, _, box in items:
            if not IMAGE_PATTERN.match(name):
                raise common.file_name_error(f"{name} (annotation of {split})", "sNNNN.jpg, e.g. s15533.jpg")
            if box is None:
                raise UserError(f"a {split} box of {name} is empty in the annotation: extract the release again")
    return out


class CuhkSysu(common.ReidBuilder):
    """CUHK-SYSU: persons cropped from 18,184 scenes; 5,532 training and 2,900 test identities."""

    RELEASE_MARKER = TRAIN_MAT
    ARCHIVE_NAMES = ("cuhk_sysu.zip", "CUHK-SYSU.zip", "dataset.zip")
    IMAGE_ENCODING = "png"  # crops of JPEG scenes: stored losslessly, not compressed twice
    EXTRA_FEATURES = {"bbox": tfds.features.Tensor(shape=(4,), dtype=np.int64)}
    HOMEPAGE = "https://www.ee.cuhk.edu.hk/~xgwang/PS/dataset.html"
    CITATION = """@inproceedings{xiao2017joint,
  title={Joint Detection and Identification Feature Learning for Person Search},
  author={Xiao, Tong and Li, Shuang and Wang, Bochao and Lin, Liang and Wang, Xiaogang},
  booktitle={CVPR}, year={2017}}"""
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Request the CUHK-SYSU person search dataset from https://www.ee.cuhk.edu.hk/~xgwang/PS/dataset.html
    (the archive's dataset/ folder holds Image/SSM/*.jpg and annotation/). Place the archive as downloaded, or
    the extracted folder holding Image/SSM/ and annotation/test/train_test/Train.mat, in the manual directory
    (config.data.manual_dir, by default <data_dir>/downloads/manual).
    """

    def _release_splits(self, root):
        if not os.path.isdir(os.path.join(root, IMAGE_DIR)):
            raise self.missing_release_error(root)
        return {split: self._crops(root, items) for split, items in read_annotations(root).items()}

    def _crops(self, root, items):
        """(key, example) of each box, decoding each scene once (items sorted by image)."""
        name, pixels = None, None
        for image_name, pid, camid, box in sorted(items, key=lambda it: it[0]):
            if image_name != name:
                name = image_name
                rel = f"{IMAGE_DIR}/{image_name}"
                if not os.path.isfile(os.path.join(root, rel)):
                    raise UserError(f"missing scene image {os.path.join(root, rel)} named in the annotation: "
                                    "extract the release again")
                checked = self.read_checked(os.path.join(root, rel), rel)
                pixels = None if checked is None else checked[1]
            if pixels is None:  # a corrupt scene skipped under skip_corrupt
                continue
            x, y, w, h = box
            height, width = pixels.shape[:2]
            x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
            if x1 <= x0 or y1 <= y0:
                raise UserError(f"box {box} of person {pid} lies outside {image_name} ({width}x{height}): "
                                "the annotation does not match the image")
            yield f"{image_name}_{pid}_{x}_{y}_{w}_{h}", {
                "image": np.ascontiguousarray(pixels[y0:y1, x0:x1]), "pid": pid, "camid": camid,
                "file_name": image_name, "bbox": np.asarray(box, np.int64)}
