"""msmt17 builder on dummy MSMT17_V1 and MSMT17_V2 releases in the official layouts (generated at test time)."""

import os
import shutil

import pytest

from msml_jax.data.builders import msmt17
from tests.builder_fakes import msmt17 as fake
from tests.builder_fakes.testing import build_release, refused, refused_missing_and_incomplete, values


@pytest.mark.parametrize("version", ["MSMT17_V1", "MSMT17_V2"])
def test_either_release_gives_train_plus_val_query_gallery(tmp_path, version):
    root, expected = fake.make(str(tmp_path / "manual"), version)
    archive = str(tmp_path / "manual" / "MSMT17_V2.zip") if version == "MSMT17_V2" else None  # as received
    _, splits = build_release(msmt17.Msmt17, root, expected, str(tmp_path / "data"), archive)
    train_folder, test_folder = fake.FOLDERS[version]
    assert {ex["file_name"].split("/")[0] for ex in splits["train"]} == {train_folder}
    assert {ex["file_name"].split("/")[0] for ex in splits["gallery"]} == {test_folder}
    # train = list_train + list_val: 7 + 2 images of identities 0..3; cameras 01..15 -> camids 0..14.
    ids, cams = values(splits, "pid"), values(splits, "camid")
    assert len(splits["train"]) == 9 and ids["train"] == {0, 1, 2, 3}
    assert cams["train"] == {0, 1, 2, 3, 6, 7, 8, 9, 14}
    assert ids["query"] == {0, 1, 2} and cams["gallery"] == {1, 5, 12, 2, 13, 10}


def test_missing_or_incomplete_release_says_what_to_do(tmp_path):
    manual, data = refused_missing_and_incomplete(msmt17.Msmt17, tmp_path, fake.make, "MSMT17_V2", "mask_test_v2",
                                                  r"incomplete MSMT17_V2 release: mask_test_v2/ is missing")
    shutil.rmtree(os.path.join(manual, fake.TOP_V2, "mask_train_v2"))
    refused(msmt17.Msmt17, str(manual), data, r"neither mask_train_v2/ \+ mask_test_v2/ \(MSMT17_V2\) nor train/")


def test_bad_list_line_and_missing_image_are_named(tmp_path):
    root, _ = fake.make(str(tmp_path / "manual"))
    query_list = os.path.join(root, "list_query.txt")
    with open(query_list) as f:
        lines = f.read().splitlines()
    with open(query_list, "w") as f:
        f.write("\n".join(lines[:1] + ["0001/0001_002_c12_x.jpg 1"] + lines[2:]) + "\n")
    refused(msmt17.Msmt17, str(tmp_path / "manual"), str(tmp_path / "data"),
            r"list_query.txt line 2 '0001/0001_002_c12_x.jpg 1' does not parse")
    with open(query_list, "w") as f:
        f.write("\n".join(lines) + "\n")
    missing = lines[2].split()[0]
    os.remove(os.path.join(root, "mask_test_v2", missing))
    refused(msmt17.Msmt17, str(tmp_path / "manual"), str(tmp_path / "data"),
            rf"{os.path.basename(missing)}, listed in list_query.txt line 3, is missing")
