"""market1501 builder on a dummy release in the official layout (generated at test time)."""

import os
import shutil

import pytest
import tensorflow_datasets as tfds

from msml_jax.data.builders import market1501
from msml_jax.errors import UserError
from tests.builder_fakes import market1501 as fake
from tests.builder_fakes import zip_folder
from tests.builder_fakes.testing import build, check_like_tfds, decode, listing, read_split, triples, truncate


def test_tfds_builder_checks(tmp_path):
    fake.make(str(tmp_path / "manual"))
    sizes = {"train": len(fake.TRAIN), "query": len(fake.QUERY), "gallery": len(fake.GALLERY)}
    check_like_tfds(market1501.Market1501, str(tmp_path / "manual"), str(tmp_path / "data"), sizes)


def test_registered_name():
    assert "market1501" in tfds.list_builders()


@pytest.mark.parametrize("archived", [False, True], ids=["folder", "zip"])
def test_examples_parsed_and_junk_dropped(tmp_path, archived):
    manual = tmp_path / "manual"
    root, expected = fake.make(str(manual))
    if archived:  # the official zip, as downloaded, instead of the extracted folder
        zip_folder(root, str(manual / "Market-1501-v15.09.15.zip"))
        shutil.rmtree(root)
    builder = build(market1501.Market1501, str(manual), str(tmp_path / "data"))
    for split in ("train", "query", "gallery"):
        examples = read_split(builder, split)
        assert triples(examples) == expected[split]
    gallery = read_split(builder, "gallery")
    assert 0 in {int(ex["pid"]) for ex in gallery}  # distractors stay
    assert -1 not in {int(ex["pid"]) for ex in gallery}  # junk is dropped
    # Extras from the name, and the pixels of the stored image are the file's.
    ex = next(e for e in read_split(builder, "train") if e["file_name"].endswith("0007_c5s3_000088_01.jpg"))
    assert (int(ex["sequence"]), int(ex["frame"])) == (3, 88)
    if not archived:
        with open(os.path.join(root, ex["file_name"]), "rb") as f:
            assert (ex["image"] == decode(f.read())).all()


def test_missing_release_gives_instructions_and_leaves_data_dir_clean(tmp_path):
    (tmp_path / "manual").mkdir()
    (tmp_path / "manual" / "unrelated.txt").write_text("x")
    data_dir = str(tmp_path / "data")
    with pytest.raises(UserError, match="Market-1501-v15.09.15.zip"):
        build(market1501.Market1501, str(tmp_path / "manual"), data_dir)
    assert listing(data_dir) == []


def test_corrupt_image_named_or_skipped(tmp_path):
    root, expected = fake.make(str(tmp_path / "manual"))
    bad = os.path.join(root, "query", fake.name(*fake.QUERY[1]))
    truncate(bad)
    data_dir = str(tmp_path / "data")
    with pytest.raises(UserError, match=fake.name(*fake.QUERY[1])):
        build(market1501.Market1501, str(tmp_path / "manual"), data_dir)
    assert listing(data_dir) == []
    builder = build(market1501.Market1501, str(tmp_path / "manual"), data_dir, skip_corrupt=True)
    assert builder.skipped == ["query/" + fake.name(*fake.QUERY[1])]
    assert len(read_split(builder, "query")) == len(expected["query"]) - 1


def test_unparsable_name_is_named(tmp_path):
    root, _ = fake.make(str(tmp_path / "manual"))
    shutil.copy(os.path.join(root, "query", fake.name(*fake.QUERY[0])), os.path.join(root, "query", "IMG_1234.jpg"))
    data_dir = str(tmp_path / "data")
    with pytest.raises(UserError, match="IMG_1234.jpg"):
        build(market1501.Market1501, str(tmp_path / "manual"), data_dir)
    assert listing(data_dir) == []
