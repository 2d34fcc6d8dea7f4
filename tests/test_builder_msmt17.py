"""msmt17 builder on dummy MSMT17_V1 and MSMT17_V2 releases in the official layouts (generated at test time)."""

import os
import shutil

import pytest

from msml_jax.data.builders import msmt17
from msml_jax.errors import UserError
from tests.builder_fakes import msmt17 as fake
from tests.builder_fakes import zip_folder
from tests.builder_fakes.testing import build, check_like_tfds, listing, read_split, triples


@pytest.mark.parametrize("version", ["MSMT17_V1", "MSMT17_V2"])
def test_either_release_gives_train_plus_val_query_gallery(tmp_path, version):
    manual = tmp_path / "manual"
    root, expected = fake.make(str(manual), version)
    if version == "MSMT17_V2":  # the archive as received, not extracted
        zip_folder(root, str(manual / "MSMT17_V2.zip"))
        shutil.rmtree(root)
    sizes = {split: len(v) for split, v in expected.items()}
    builder = check_like_tfds(msmt17.Msmt17, str(manual), str(tmp_path / "data"), sizes)
    splits = {split: read_split(builder, split) for split in expected}
    for split, want in expected.items():
        assert triples(splits[split]) == want, split
    train_folder, test_folder = fake.FOLDERS[version]
    assert {ex["file_name"].split("/")[0] for ex in splits["train"]} == {train_folder}
    assert {ex["file_name"].split("/")[0] for ex in splits["gallery"]} == {test_folder}
    # train = list_train + list_val: 7 + 2 images of identities 0..3; cameras 01..15 -> camids 0..14.
    assert len(splits["train"]) == 9 and {int(ex["pid"]) for ex in splits["train"]} == {0, 1, 2, 3}
    assert {int(ex["camid"]) for ex in splits["train"]} == {0, 1, 2, 3, 6, 7, 8, 9, 14}
    assert {int(ex["pid"]) for ex in splits["query"]} == {0, 1, 2}
    assert {int(ex["camid"]) for ex in splits["gallery"]} == {1, 5, 12, 2, 13, 10}


def test_missing_or_incomplete_release_says_what_to_do(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    with pytest.raises(UserError, match="MSMT17_V2"):
        build(msmt17.Msmt17, str(manual), str(tmp_path / "data"))
    root, _ = fake.make(str(manual))
    shutil.rmtree(os.path.join(root, "mask_test_v2"))
    with pytest.raises(UserError, match=r"incomplete MSMT17_V2 release: mask_test_v2/ is missing"):
        build(msmt17.Msmt17, str(manual), str(tmp_path / "data"))
    shutil.rmtree(os.path.join(root, "mask_train_v2"))
    with pytest.raises(UserError, match=r"neither mask_train_v2/ \+ mask_test_v2/ \(MSMT17_V2\) nor train/"):
        build(msmt17.Msmt17, str(manual), str(tmp_path / "data"))
    assert listing(str(tmp_path / "data")) == []


def test_bad_list_line_and_missing_image_are_named(tmp_path):
    root, _ = fake.make(str(tmp_path / "manual"))
    query_list = os.path.join(root, "list_query.txt")
    with open(query_list) as f:
        lines = f.read().splitlines()
    with open(query_list, "w") as f:
        f.write("\n".join(lines[:1] + ["0001/0001_002_c12_x.jpg 1"] + lines[2:]) + "\n")
    with pytest.raises(UserError, match=r"list_query.txt line 2 '0001/0001_002_c12_x.jpg 1' does not parse"):
        build(msmt17.Msmt17, str(tmp_path / "manual"), str(tmp_path / "data"))
    with open(query_list, "w") as f:
        f.write("\n".join(lines) + "\n")
    missing = lines[2].split()[0]
    os.remove(os.path.join(root, "mask_test_v2", missing))
    with pytest.raises(UserError, match=rf"{os.path.basename(missing)}, listed in list_query.txt line 3, is missing"):
        build(msmt17.Msmt17, str(tmp_path / "manual"), str(tmp_path / "data"))
    assert listing(str(tmp_path / "data")) == []
