"""mars builder on a dummy release (bbox_train/, bbox_test/, info/) in the official layout, made at test time."""

import shutil

import pytest

from msml_jax.data.builders import mars
from msml_jax.errors import UserError
from tests.builder_fakes import mars as fake
from tests.builder_fakes import zip_folder
from tests.builder_fakes.testing import build, check_like_tfds, listing, read_split, truncate


def records(examples):
    return sorted((ex["file_name"], int(ex["pid"]), int(ex["camid"]), int(ex["tracklet"]), int(ex["frame"]))
                  for ex in examples)


@pytest.mark.parametrize("archived", [False, True], ids=["folders", "zips"])
def test_frames_tracklets_and_protocol(tmp_path, archived):
    manual = tmp_path / "manual"
    expected = fake.make(str(manual))
    if archived:  # bbox_train.zip / bbox_test.zip as downloaded
        for part in ("bbox_train", "bbox_test"):
            zip_folder(str(manual / part), str(manual / f"{part}.zip"))
            shutil.rmtree(manual / part)
    sizes = {split: len(v) for split, v in expected.items()}
    builder = check_like_tfds(mars.Mars, str(manual), str(tmp_path / "data"), sizes)
    for split, want in expected.items():
        assert records(read_split(builder, split)) == want, split
    gallery_pids = {int(ex["pid"]) for ex in read_split(builder, "gallery")}
    assert 0 in gallery_pids and -1 not in gallery_pids


def test_missing_part_gives_instructions(tmp_path):
    manual = tmp_path / "manual"
    fake.make(str(manual))
    shutil.rmtree(manual / "bbox_test")
    with pytest.raises(UserError, match="bbox_test.zip"):
        build(mars.Mars, str(manual), str(tmp_path / "data"))
    assert listing(str(tmp_path / "data")) == []


def test_bad_name_and_corrupt_frame_are_named(tmp_path):
    manual = tmp_path / "manual"
    fake.make(str(manual))
    bad_frame = fake.frame_name(4, 2, 1, 2)
    truncate(str(manual / "bbox_test" / "0004" / bad_frame))
    with pytest.raises(UserError, match=bad_frame):
        build(mars.Mars, str(manual), str(tmp_path / "data"))
    assert listing(str(tmp_path / "data")) == []
    builder = build(mars.Mars, str(manual), str(tmp_path / "data"), skip_corrupt=True)
    assert builder.skipped == [f"bbox_test/0004/{bad_frame}"]
    # A name in the list that does not parse.
    names_path = manual / "info" / "train_name.txt"
    names = names_path.read_text().splitlines()
    names[0] = "0001_c1_frame1.jpg"
    names_path.write_text("\n".join(names) + "\n")
    with pytest.raises(UserError, match="0001_c1_frame1.jpg"):
        build(mars.Mars, str(manual), str(tmp_path / "data2"))
    assert listing(str(tmp_path / "data2")) == []
