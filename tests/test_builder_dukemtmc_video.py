"""dukemtmc_video builder on a dummy release ({train, query, gallery}/PPPP/TTTT/) in the official layout."""

import os
import shutil

import pytest

from msml_jax.data.builders import dukemtmc_video
from tests.builder_fakes import dukemtmc_video as fake
from tests.builder_fakes.testing import (
    build, build_release, read_split, refused_misnamed, refused_missing_and_incomplete, tracklet_records, values,
)


@pytest.mark.parametrize("archived", [False, True], ids=["folder", "zip"])
def test_frames_tracklets_identities_and_cameras(tmp_path, archived):
    root, expected = fake.make(str(tmp_path / "manual"))
    archive = str(tmp_path / "manual" / "DukeMTMC-VideoReID.zip") if archived else None  # the zip as downloaded
    _, splits = build_release(dukemtmc_video.DukemtmcVideo, root, expected, str(tmp_path / "data"), archive,
                              rows=tracklet_records)
    assert values(splits, "pid") == {"train": {1, 2, 5, 6}, "query": {7, 8}, "gallery": {7, 8, 9}}
    tracklets = values(splits, "tracklet")
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
    manual, data = refused_missing_and_incomplete(
        dukemtmc_video.DukemtmcVideo, tmp_path, fake.make, "DukeMTMC-VideoReID.zip", "query",
        r"query is missing or empty: an incomplete DukeMTMC-VideoReID release")
    shutil.rmtree(manual / fake.TOP)
    refused_misnamed(dukemtmc_video.DukemtmcVideo, manual, data, fake.make,
                     "train/0002/0001/" + fake.frame_name(2, 3, 1, 30006), "frame_0001.jpg",
                     r"frame_0001.jpg does not parse: expected PPPP_CC_FFFF_XNNNNN")
