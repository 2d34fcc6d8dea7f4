"""dukemtmc_video builder on a dummy release ({train, query, gallery}/PPPP/TTTT/) in the official layout."""

import os
import shutil

import pytest

from msml_jax.data.builders import dukemtmc_video
from msml_jax.errors import UserError
from tests.builder_fakes import dukemtmc_video as fake
from tests.builder_fakes import zip_folder
from tests.builder_fakes.testing import build, check_like_tfds, listing, read_split, tracklet_records


@pytest.mark.parametrize("archived", [False, True], ids=["folder", "zip"])
def test_frames_tracklets_identities_and_cameras(tmp_path, archived):
    manual = tmp_path / "manual"
    root, expected = fake.make(str(manual))
    if archived:  # DukeMTMC-VideoReID.zip as downloaded
        zip_folder(root, str(manual / "DukeMTMC-VideoReID.zip"))
        shutil.rmtree(root)
    sizes = {split: len(v) for split, v in expected.items()}
    builder = check_like_tfds(dukemtmc_video.DukemtmcVideo, str(manual), str(tmp_path / "data"), sizes)
    splits = {split: read_split(builder, split) for split in expected}
    for split, want in expected.items():
        assert tracklet_records(splits[split]) == want, split
    ids = {split: {int(ex["pid"]) for ex in examples} for split, examples in splits.items()}
    assert ids == {"train": {1, 2, 5, 6}, "query": {7, 8}, "gallery": {7, 8, 9}}
    tracklets = {split: {int(ex["tracklet"]) for ex in examples} for split, examples in splits.items()}
    assert [len(t) for t in tracklets.values()] == [6, 2, 4]  # one per PPPP/TTTT folder, none shared
    assert not (tracklets["query"] & tracklets["gallery"]) and not (tracklets["train"] & tracklets["gallery"])
    assert {int(ex["camid"]) for ex in splits["train"]} == {0, 1, 2, 7, 3, 5}  # C -> C - 1


def test_older_frame_names_parse_too(tmp_path):
    """torchreid also reads 0001C6F0099X30823.jpg (no underscores): the camera is the same digit."""
    root, _ = fake.make(str(tmp_path / "manual"))
    folder = os.path.join(root, "query", "0008", "0001")
    for name in os.listdir(folder):
        os.rename(os.path.join(folder, name), os.path.join(folder, name.replace("_", "")))
    builder = build(dukemtmc_video.DukemtmcVideo, str(tmp_path / "manual"), str(tmp_path / "data"))
    query = [ex for ex in read_split(builder, "query") if int(ex["pid"]) == 8]
    assert {int(ex["camid"]) for ex in query} == {4} and sorted(int(ex["frame"]) for ex in query) == [1, 2]


def test_missing_incomplete_or_misnamed_release_is_explained(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    with pytest.raises(UserError, match="DukeMTMC-VideoReID.zip"):
        build(dukemtmc_video.DukemtmcVideo, str(manual), str(tmp_path / "data"))
    root, _ = fake.make(str(manual))
    shutil.rmtree(os.path.join(root, "query"))
    with pytest.raises(UserError, match=r"query is missing or empty: an incomplete DukeMTMC-VideoReID release"):
        build(dukemtmc_video.DukemtmcVideo, str(manual), str(tmp_path / "data"))
    shutil.rmtree(root)
    root, _ = fake.make(str(manual))
    folder = os.path.join(root, "train", "0002", "0001")
    first = sorted(os.listdir(folder))[0]
    shutil.copy(os.path.join(folder, first), os.path.join(folder, "frame_0001.jpg"))
    with pytest.raises(UserError, match=r"frame_0001.jpg does not parse: expected PPPP_CC_FFFF_XNNNNN"):
        build(dukemtmc_video.DukemtmcVideo, str(manual), str(tmp_path / "data"))
    assert listing(str(tmp_path / "data")) == []
