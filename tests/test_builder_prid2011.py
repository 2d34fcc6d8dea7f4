"""prid2011 builder on a dummy release (prid_2011/single_shot/cam_{a,b}/person_NNNN.png), generated here."""

import os
import shutil

import numpy as np
import pytest

from msml_jax.data import builders
from msml_jax.data.builders import prid2011
from tests.builder_fakes import zip_folder
from tests.builder_fakes.testing import build, check_like_tfds, read_split, triples

CAM_A = [1, 2, 3, 4, 5, 6, 201, 202]  # persons 1-6 in both cameras; 201+ are different people in each camera
CAM_B = [1, 2, 3, 4, 5, 6, 201, 202, 203, 204]


def pixels(camera, number):
    return np.random.default_rng([camera == "cam_b", number]).integers(0, 256, (8, 4, 3), dtype=np.uint8)


def make(manual_dir):
    import tensorflow as tf

    root = os.path.join(manual_dir, "prid_2011")
    for camera, numbers in (("cam_a", CAM_A), ("cam_b", CAM_B)):
        os.makedirs(os.path.join(root, "single_shot", camera))
        for n in numbers:
            with open(os.path.join(root, "single_shot", camera, f"person_{n:04d}.png"), "wb") as f:
                f.write(tf.io.encode_png(pixels(camera, n)).numpy())
    os.makedirs(os.path.join(root, "multi_shot", "cam_a", "person_0001"))  # present in the release, not read
    return root


def pid(camera, number):
    # Hand-written from the release's description: cam_b persons above 200 are not cam_a's.
    return number if camera == "cam_a" or number <= 200 else 1000 + number


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prid")
    make(str(tmp / "manual"))
    sizes = {"cam_a": 8, "cam_b": 10}
    return check_like_tfds(prid2011.Prid2011, str(tmp / "manual"), str(tmp / "data"), sizes,
                           groups=[("cam_a", "cam_b")])


def test_cameras_hold_every_image_with_its_identity(built):
    for camid, (camera, numbers) in enumerate((("cam_a", CAM_A), ("cam_b", CAM_B))):
        examples = read_split(built, camera)
        assert triples(examples) == sorted(
            (f"single_shot/{camera}/person_{n:04d}.png", pid(camera, n), camid) for n in numbers)
        for ex in examples:
            number = int(ex["file_name"][-8:-4])
            np.testing.assert_array_equal(ex["image"], pixels(camera, number))


def test_protocol_trials(built):
    read = lambda split: builders.read_split(built, split)  # noqa: E731
    for trial in range(3):
        s = prid2011.protocol_splits(read, trial)
        train_ids, test_ids = set(s["train"]["pids"]), set(s["query"]["pids"])
        # Half of the 6 shared persons train (both cameras), the other half are cam_a queries.
        assert len(train_ids) == 3 and train_ids | test_ids == set(range(1, 7)) and not train_ids & test_ids
        assert len(s["train"]["pids"]) == 6 and set(s["query"]["camids"]) == {0}
        # Gallery: the test persons' cam_b images plus every cam_b person above 200; cam_a's 201+ are unused.
        assert sorted(s["gallery"]["pids"]) == sorted(test_ids | {1201, 1202, 1203, 1204})
        assert set(s["gallery"]["camids"]) == {1}


def test_the_official_zip_gives_the_same_dataset(tmp_path):
    root = make(str(tmp_path / "manual"))
    zip_folder(root, str(tmp_path / "manual" / "prid_2011.zip"))
    shutil.rmtree(root)
    builder = build(prid2011.Prid2011, str(tmp_path / "manual"), str(tmp_path / "data"))
    assert len(read_split(builder, "cam_a")) == len(CAM_A)
