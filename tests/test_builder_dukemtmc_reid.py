"""dukemtmc_reid builder on a dummy release in the official layout (generated at test time)."""

import pytest

from msml_jax.data.builders import dukemtmc_reid
from tests.builder_fakes import dukemtmc_reid as fake
from tests.builder_fakes.testing import build_release, refused_misnamed, refused_missing_and_incomplete, values


@pytest.mark.parametrize("archived", [False, True], ids=["folder", "zip"])
def test_splits_identities_and_cameras(tmp_path, archived):
    root, expected = fake.make(str(tmp_path / "manual"))
    archive = str(tmp_path / "manual" / "DukeMTMC-reID.zip") if archived else None  # the zip as downloaded
    _, splits = build_release(dukemtmc_reid.DukemtmcReid, root, expected, str(tmp_path / "data"), archive)
    ids, cams = values(splits, "pid"), values(splits, "camid")
    assert ids == {"train": {2, 7, 11, 12}, "query": {1, 3}, "gallery": {1, 3, 9, 5000}}
    assert cams["train"] == {0, 1, 2, 4, 5, 6, 7} and cams["query"] == {0, 1, 4}  # camera C -> camid C - 1
    ex = next(e for e in splits["train"] if e["file_name"].endswith("0002_c1_f0046182.jpg"))
    assert int(ex["frame"]) == 46182


def test_missing_or_incomplete_release_says_what_to_do(tmp_path):
    refused_missing_and_incomplete(dukemtmc_reid.DukemtmcReid, tmp_path, fake.make, "DukeMTMC-reID.zip", "query",
                                   r"has no query/.*extract the whole")


def test_bad_file_name_is_named(tmp_path):
    refused_misnamed(dukemtmc_reid.DukemtmcReid, tmp_path / "manual", str(tmp_path / "data"), fake.make,
                     "query/" + fake.name(*fake.QUERY[0]), "0001_c9_f0000070.jpg",  # camera 9 does not exist
                     r"0001_c9_f0000070\.jpg does not parse: expected PPPP_cC_fFFFFFFF")
