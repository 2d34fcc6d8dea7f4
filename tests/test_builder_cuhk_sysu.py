"""cuhk_sysu builder on a dummy release (Image/SSM scenes + annotation .mat files), made at test time."""

import os
import shutil

import numpy as np
import pytest

from msml_jax.data.builders import cuhk_sysu
from msml_jax.errors import UserError
from tests.builder_fakes import cuhk_sysu as fake
from tests.builder_fakes import zip_folder
from tests.builder_fakes.testing import build, check_like_tfds, decode, listing, read_split, truncate


def records(examples):
    return sorted((ex["file_name"], int(ex["pid"]), int(ex["camid"]), tuple(int(v) for v in ex["bbox"]))
                  for ex in examples)


@pytest.mark.parametrize("archived", [False, True], ids=["folder", "zip"])
def test_crops_and_protocol(tmp_path, archived):
    manual = tmp_path / "manual"
    root, expected = fake.make(str(manual))
    scenes = {n: decode(open(os.path.join(root, "Image", "SSM", n), "rb").read())
              for n in os.listdir(os.path.join(root, "Image", "SSM"))}
    if archived:
        zip_folder(root, str(manual / "cuhk_sysu.zip"))
        shutil.rmtree(root)
    sizes = {split: len(v) for split, v in expected.items()}
    builder = check_like_tfds(cuhk_sysu.CuhkSysu, str(manual), str(tmp_path / "data"), sizes)
    for split, want in expected.items():
        examples = read_split(builder, split)
        assert records(examples) == want, split
        for ex in examples:  # the stored crop is exactly the box of the decoded scene
            x, y, w, h = (int(v) for v in ex["bbox"])
            np.testing.assert_array_equal(ex["image"], scenes[ex["file_name"]][y:y + h, x:x + w])
    # Test identities are disjoint from training ones; each test person has its query and >= 1 gallery box.
    train_pids = {r[1] for r in expected["train"]}
    assert not train_pids & {r[1] for r in expected["query"]}
    assert {r[1] for r in expected["query"]} == {r[1] for r in expected["gallery"]}


def test_missing_release_and_corrupt_scene(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="Image/SSM"):
        build(cuhk_sysu.CuhkSysu, str(tmp_path / "empty"), str(tmp_path / "data"))
    assert listing(str(tmp_path / "data")) == []
    root, expected = fake.make(str(tmp_path / "manual"))
    truncate(os.path.join(root, "Image", "SSM", "s202.jpg"))
    with pytest.raises(UserError, match="s202.jpg"):
        build(cuhk_sysu.CuhkSysu, str(tmp_path / "manual"), str(tmp_path / "data"))
    assert listing(str(tmp_path / "data")) == []
    builder = build(cuhk_sysu.CuhkSysu, str(tmp_path / "manual"), str(tmp_path / "data"), skip_corrupt=True)
    assert builder.skipped == ["Image/SSM/s202.jpg"]
    assert len(read_split(builder, "query")) == len(expected["query"]) - 1  # p22's query lies in s202
    assert len(read_split(builder, "gallery")) == len(expected["gallery"]) - 1  # p21's box in s202


def test_test_persons_numbered_apart_without_idname(tmp_path):
    _, expected = fake.make(str(tmp_path / "manual"), query_idname=False)
    builder = build(cuhk_sysu.CuhkSysu, str(tmp_path / "manual"), str(tmp_path / "data"))
    renumber = {pid: cuhk_sysu.TEST_PID_OFFSET + i for i, pid in enumerate(fake.pid(n) for n in fake.TEST)}
    for split in ("query", "gallery"):
        want = sorted((n, renumber[p], c, b) for n, p, c, b in expected[split])
        assert records(read_split(builder, split)) == want
