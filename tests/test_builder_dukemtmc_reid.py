"""dukemtmc_reid builder on a dummy release in the official layout (generated at test time)."""

import os
import shutil

import pytest

from msml_jax.data.builders import dukemtmc_reid
from msml_jax.errors import UserError
from tests.builder_fakes import dukemtmc_reid as fake
from tests.builder_fakes import zip_folder
from tests.builder_fakes.testing import build, check_like_tfds, listing, read_split, triples


@pytest.mark.parametrize("archived", [False, True], ids=["folder", "zip"])
def test_splits_identities_and_cameras(tmp_path, archived):
    manual = tmp_path / "manual"
    root, expected = fake.make(str(manual))
    if archived:  # DukeMTMC-reID.zip as downloaded
        zip_folder(root, str(manual / "DukeMTMC-reID.zip"))
        shutil.rmtree(root)
    sizes = {split: len(v) for split, v in expected.items()}
    builder = check_like_tfds(dukemtmc_reid.DukemtmcReid, str(manual), str(tmp_path / "data"), sizes)
    splits = {split: read_split(builder, split) for split in expected}
    for split, want in expected.items():
        assert triples(splits[split]) == want, split
    ids = {split: {int(ex["pid"]) for ex in examples} for split, examples in splits.items()}
    cams = {split: {int(ex["camid"]) for ex in examples} for split, examples in splits.items()}
    assert ids == {"train": {2, 7, 11, 12}, "query": {1, 3}, "gallery": {1, 3, 9, 5000}}
    assert cams["train"] == {0, 1, 2, 4, 5, 6, 7} and cams["query"] == {0, 1, 4}  # camera C -> camid C - 1
    ex = next(e for e in splits["train"] if e["file_name"].endswith("0002_c1_f0046182.jpg"))
    assert int(ex["frame"]) == 46182


def test_missing_or_incomplete_release_says_what_to_do(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    with pytest.raises(UserError, match="DukeMTMC-reID.zip"):
        build(dukemtmc_reid.DukemtmcReid, str(manual), str(tmp_path / "data"))
    root, _ = fake.make(str(manual))
    shutil.rmtree(os.path.join(root, "query"))
    with pytest.raises(UserError, match=r"has no query/.*extract the whole"):
        build(dukemtmc_reid.DukemtmcReid, str(manual), str(tmp_path / "data"))
    assert listing(str(tmp_path / "data")) == []


def test_bad_file_name_is_named(tmp_path):
    root, _ = fake.make(str(tmp_path / "manual"))
    shutil.copy(os.path.join(root, "query", fake.name(*fake.QUERY[0])),
                os.path.join(root, "query", "0001_c9_f0000070.jpg"))  # camera 9 does not exist
    with pytest.raises(UserError, match=r"0001_c9_f0000070\.jpg does not parse: expected PPPP_cC_fFFFFFFF"):
        build(dukemtmc_reid.DukemtmcReid, str(tmp_path / "manual"), str(tmp_path / "data"))
    assert listing(str(tmp_path / "data")) == []
