"""cuhk03 builder on a dummy release (cuhk-03.mat in MATLAB v7.3 layout + new-protocol mats), made at test time."""

import os
import shutil

import numpy as np
import pytest

from msml_jax.data.builders import cuhk03
from msml_jax.errors import UserError
from tests.builder_fakes import cuhk03 as fake
from tests.builder_fakes import zip_folder
from tests.builder_fakes.testing import build, check_like_tfds, listing, read_split, triples


@pytest.fixture(scope="module")
def manual(tmp_path_factory):
    manual = tmp_path_factory.mktemp("cuhk03_manual")
    fake.make(str(manual))
    return str(manual)


def classic_expected(kind):
    test_ids = set(fake.testsets()[cuhk03.CLASSIC_SPLIT])
    out = {"classic_train": [], "classic_test": []}
    for pair, person, index in fake.cells(kind):
        split = "classic_test" if (pair, person) in test_ids else "classic_train"
        out[split].append((fake.file_name(pair, person, index), fake.global_pid(pair, person),
                           2 * (pair - 1) + (index > 5)))
    return {k: sorted(v) for k, v in out.items()}


@pytest.mark.parametrize("kind", ["labeled", "detected"])
def test_both_protocols(manual, tmp_path, kind):
    expected = {**fake.new_protocol(kind), **classic_expected(kind)}
    sizes = {split: len(v) for split, v in expected.items()}
    builder = check_like_tfds(cuhk03.Cuhk03, manual, str(tmp_path / "data"), sizes, config=kind,
                              groups=[("train", "query", "gallery"), ("classic_train", "classic_test")])
    for split, want in expected.items():
        examples = read_split(builder, split)
        assert triples(examples) == want, split
    # Pixels are the cell's, exactly (PNG is lossless), in H x W x 3.
    for ex in read_split(builder, "query"):
        pair, person, _, index = (int(x) for x in ex["file_name"][:-4].split("_"))
        np.testing.assert_array_equal(ex["image"], fake.image(kind, pair, person, index))
    # The classic protocol: 1 official test set of identities, disjoint from training.
    test_pids = {p for _, p, _ in expected["classic_test"]}
    assert len(test_pids) == fake.TEST_PER_SET
    assert not test_pids & {p for _, p, _ in expected["classic_train"]}


def test_zip_and_missing_protocol_file(manual, tmp_path):
    manual2 = tmp_path / "manual"
    shutil.copytree(manual, manual2)
    zip_folder(str(manual2 / "cuhk03_release"), str(manual2 / "cuhk03_release.zip"))
    shutil.rmtree(manual2 / "cuhk03_release")
    builder = build(cuhk03.Cuhk03, str(manual2), str(tmp_path / "data"), config="labeled")
    assert triples(read_split(builder, "train")) == fake.new_protocol("labeled")["train"]
    # A failing build of the other config next to a finished one leaves data_dir exactly as it was.
    before = listing(str(tmp_path / "data"))
    os.remove(manual2 / "cuhk03_new_protocol_config_detected.mat")
    with pytest.raises(UserError, match="cuhk03_new_protocol_config_detected.mat"):
        build(cuhk03.Cuhk03, str(manual2), str(tmp_path / "data"), config="detected")
    assert listing(str(tmp_path / "data")) == before


def test_missing_release_gives_instructions(tmp_path):
    (tmp_path / "manual").mkdir()
    with pytest.raises(UserError, match="cuhk03_release.zip"):
        build(cuhk03.Cuhk03, str(tmp_path / "manual"), str(tmp_path / "data"), config="labeled")
    assert listing(str(tmp_path / "data")) == []


def test_bad_filelist_name_is_named(manual, tmp_path):
    import scipy.io

    manual2 = tmp_path / "manual"
    shutil.copytree(manual, manual2)
    path = str(manual2 / "cuhk03_new_protocol_config_labeled.mat")
    mat = scipy.io.loadmat(path)
    mat["filelist"][0, 0] = np.array(["img_0001.png"])
    scipy.io.savemat(path, {k: v for k, v in mat.items() if not k.startswith("__")})
    with pytest.raises(UserError, match="img_0001.png"):
        build(cuhk03.Cuhk03, str(manual2), str(tmp_path / "data"), config="labeled")
    assert listing(str(tmp_path / "data")) == []
