"""viper builder on a dummy release in the official layout (cam_a/, cam_b/, NNN_ANGLE.bmp), generated here."""

import os
import shutil
import struct

import numpy as np
import pytest

from msml_jax.data import builders
from msml_jax.data.builders import viper
from tests.builder_fakes import zip_folder
from tests.builder_fakes.testing import build, check_like_tfds, read_split, triples

# (identity NNN, angle in cam_a, angle in cam_b): numbers as sparse as the real 000..873.
PEOPLE = [(0, 45, 90), (3, 0, 0), (5, 90, 135), (12, 0, 45), (100, 315, 0), (873, 45, 90)]


def pixels(pid, camid, height=8, width=4):
    return np.random.default_rng([pid, camid]).integers(0, 256, (height, width, 3), dtype=np.uint8)


def bmp(image, trailing=b"\0\0"):
    """A 24-bit bottom-up BMP of uint8 [H, W, 3] RGB, with the 2 trailing bytes VIPeR's files carry."""
    h, w, _ = image.shape
    row = (w * 3 + 3) // 4 * 4
    rows = b"".join(image[y, :, ::-1].tobytes().ljust(row, b"\0") for y in range(h - 1, -1, -1))
    header = struct.pack("<2sIHHI", b"BM", 54 + len(rows) + len(trailing), 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, len(rows) + len(trailing), 2834, 2834, 0, 0)
    return header + info + rows + trailing


def make(manual_dir, people=PEOPLE):
    """Writes VIPeR/cam_a, VIPeR/cam_b under manual_dir; returns the release root."""
    root = os.path.join(manual_dir, "VIPeR")
    for camid, camera in enumerate(("cam_a", "cam_b")):
        os.makedirs(os.path.join(root, camera))
        for person in people:
            with open(os.path.join(root, camera, f"{person[0]:03d}_{person[1 + camid]}.bmp"), "wb") as f:
                f.write(bmp(pixels(person[0], camid)))
    with open(os.path.join(root, "cam_a", "Thumbs.db"), "wb") as f:  # Windows leaves these in the release
        f.write(b"junk")
    return root


def expected(camid):
    camera = ("cam_a", "cam_b")[camid]
    return sorted((f"{camera}/{p[0]:03d}_{p[1 + camid]}.bmp", p[0], camid) for p in PEOPLE)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("viper")
    make(str(tmp / "manual"))
    sizes = {"cam_a": 6, "cam_b": 6}
    builder = check_like_tfds(viper.Viper, str(tmp / "manual"), str(tmp / "data"), sizes,
                              groups=[("cam_a", "cam_b")])
    return builder


def test_cameras_hold_every_image_with_its_pixels(built):
    for camid, camera in enumerate(("cam_a", "cam_b")):
        examples = read_split(built, camera)
        assert triples(examples) == expected(camid)
        for ex in examples:
            np.testing.assert_array_equal(ex["image"], pixels(int(ex["pid"]), camid))
            angle = int(os.path.basename(ex["file_name"]).split("_")[1].split(".")[0])
            assert int(ex["angle"]) == angle


def test_protocol_trials_split_identities_in_halves(built):
    read = lambda split: builders.read_split(built, split)  # noqa: E731
    pids = sorted(p[0] for p in PEOPLE)
    seen = set()
    for trial in range(viper.NUM_TRIALS):
        s = viper.protocol_splits(read, trial)
        train_ids, query_ids = set(s["train"]["pids"]), set(s["query"]["pids"])
        assert len(train_ids) == 3 and train_ids.isdisjoint(query_ids) and sorted(train_ids | query_ids) == pids
        assert sorted(s["gallery"]["pids"]) == sorted(s["query"]["pids"])  # one image each, single-shot
        assert set(s["query"]["camids"]) == {0} and set(s["gallery"]["camids"]) == {1}
        assert sorted(s["train"]["camids"]) == [0, 0, 0, 1, 1, 1]
        seen.add(tuple(sorted(train_ids)))
    assert len(seen) > 3  # the trials are different random splits


def test_the_official_zip_gives_the_same_dataset(tmp_path, built):
    root = make(str(tmp_path / "manual"))
    zip_folder(root, str(tmp_path / "manual" / "VIPeR.v1.0.zip"))
    shutil.rmtree(root)
    builder = build(viper.Viper, str(tmp_path / "manual"), str(tmp_path / "data"))
    assert triples(read_split(builder, "cam_b")) == expected(1)
