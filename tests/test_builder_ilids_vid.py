"""ilids_vid builder on a dummy release (i-LIDS-VID/sequences/cam{1,2}/personNNN/) in the official layout."""

import shutil
import tarfile

import numpy as np
import pytest

from msml_jax.data import builders
from msml_jax.data.builders import ilids_vid, viper
from tests.builder_fakes import ilids_vid as fake
from tests.builder_fakes.testing import (
    check_like_tfds, read_split, refused_misnamed, refused_missing_and_incomplete, tracklet_records,
)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Built from iLIDS-VID.tar as downloaded (the i-LIDS-VID/ folder inside it)."""
    tmp = tmp_path_factory.mktemp("ilids_vid")
    root, expected = fake.make(str(tmp / "release"))
    (tmp / "manual").mkdir()
    with tarfile.open(tmp / "manual" / "iLIDS-VID.tar", "w") as tar:
        tar.add(root, arcname="i-LIDS-VID")
    sizes = {split: len(v) for split, v in expected.items()}
    builder = check_like_tfds(ilids_vid.IlidsVid, str(tmp / "manual"), str(tmp / "data"), sizes,
                              groups=[("cam1", "cam2")])
    return builder, expected


def test_each_camera_holds_every_sequence_frame_by_frame(built):
    builder, expected = built
    for camera in ("cam1", "cam2"):
        assert tracklet_records(read_split(builder, camera)) == expected[camera]


def test_ten_splits_halve_the_identities_and_rank_cam1_sequences_against_cam2(built):
    builder, _ = built
    read = lambda split: builders.read_split(builder, split)  # noqa: E731
    persons = sorted(fake.PERSONS)
    seen = set()
    for trial in range(ilids_vid.IlidsVid.TRIALS):
        s = ilids_vid.protocol_splits(read, trial)
        train_ids, test_ids = set(s["train"]["pids"]), set(s["query"]["pids"])
        assert len(train_ids) == len(test_ids) == 4 and sorted(train_ids | test_ids) == persons
        assert set(s["gallery"]["pids"]) == test_ids
        assert set(s["query"]["camids"]) == {0} and set(s["gallery"]["camids"]) == {1}
        assert set(s["train"]["camids"]) == {0, 1}
        # One tracklet per person and camera: 4 query and 4 gallery sequences, 8 training ones.
        assert len(set(s["query"]["tracklet"])) == len(set(s["gallery"]["tracklet"])) == 4
        assert len(set(s["train"]["tracklet"])) == 8
        # The same draw as VIPeR's (viper.trial_split) over the iLIDS-VID identities.
        np.testing.assert_array_equal(sorted(train_ids), viper.trial_split(np.array(persons), trial)[0])
        seen.add(tuple(sorted(train_ids)))
    assert len(seen) > 3  # the trials are different random splits


def test_reproduction_driver_compares_it_over_ten_splits():
    from msml_jax.reproduce import _is_ten_split, _ten_split_names

    assert _is_ten_split("ilids_vid") and "ilids_vid" in _ten_split_names()
    assert not _is_ten_split("dukemtmc_video")


def test_missing_incomplete_or_misnamed_release_is_explained(tmp_path):
    manual, data = refused_missing_and_incomplete(
        ilids_vid.IlidsVid, tmp_path, fake.make, "iLIDS-VID.tar", "sequences/cam2/person009",
        r"person009 has a sequence in one camera only.*iLIDS-VID.tar again")
    shutil.rmtree(manual / fake.TOP)
    refused_misnamed(ilids_vid.IlidsVid, manual, data, fake.make, fake.frame_path(1, 4, 40),
                     "cam2_person004_00040.png",  # the other camera's name
                     r"cam2_person004_00040.png does not parse: expected cam1_person004_FFFFF")
