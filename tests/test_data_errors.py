"""Bad input as a user meets it: one clear message (exit 2 from the CLI) and data_dir left as it was."""

import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from msml_jax.data import builders
from msml_jax.data.builders import viper
from msml_jax.errors import UserError
from tests import test_builder_viper as fake
from tests.builder_fakes.testing import build, listing, read_split, truncate
from tests.conftest import ROOT


def test_corrupted_image_through_the_cli_exits_2_naming_it(tmp_path):
    root = fake.make(str(tmp_path / "manual"))
    truncate(os.path.join(root, "cam_b", "012_45.bmp"))
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "other_dataset").mkdir()  # what was there before stays
    cmd = [sys.executable, "train.py", "--config", "configs/viper.py", "--workdir", str(tmp_path / "run"),
           f"--config.data.data_dir={data_dir}", f"--config.data.manual_dir={tmp_path / 'manual'}"]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cam_b/012_45.bmp" in errors[0] and "skip_corrupt" in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert listing(str(data_dir)) == ["other_dataset"]


def test_corrupted_image_skipped_and_counted_when_asked(tmp_path):
    root = fake.make(str(tmp_path / "manual"))
    truncate(os.path.join(root, "cam_a", "005_90.bmp"))
    builder = build(viper.Viper, str(tmp_path / "manual"), str(tmp_path / "data"), skip_corrupt=True)
    assert builder.skipped == ["cam_a/005_90.bmp"]
    assert len(read_split(builder, "cam_a")) == len(fake.PEOPLE) - 1


def test_misnamed_file_is_named_and_data_dir_stays_clean(tmp_path):
    root = fake.make(str(tmp_path / "manual"))
    shutil.copy(os.path.join(root, "cam_a", "000_45.bmp"), os.path.join(root, "cam_a", "person 1.bmp"))
    with pytest.raises(UserError, match=r"person 1\.bmp.*NNN_ANGLE"):
        builders.load("viper", str(tmp_path / "data"), manual_dir=str(tmp_path / "manual"))
    assert listing(str(tmp_path / "data")) == []


@pytest.mark.parametrize("case", ["no_folder", "empty", "unrelated"])
def test_missing_release_gives_the_instructions(tmp_path, case):
    manual = tmp_path / "manual"
    if case != "no_folder":
        manual.mkdir()
    if case == "unrelated":
        (manual / "notes.txt").write_text("VIPeR goes here")
    with pytest.raises(UserError, match=r"VIPeR\.v1\.0\.zip"):
        builders.load("viper", str(tmp_path / "data"), manual_dir=str(manual))
    assert listing(str(tmp_path / "data")) == []


def test_a_damaged_or_foreign_mat_file_is_named_with_the_fix(tmp_path):
    import scipy.io

    from msml_jax.data.builders.common import load_mat

    good = str(tmp_path / "query_IDX.mat")
    scipy.io.savemat(good, {"query_IDX": np.arange(1, 4)[None]})
    np.testing.assert_array_equal(load_mat(good, "query_IDX", "fix it").ravel(), [1, 2, 3])
    with pytest.raises(UserError, match=r"query_IDX.mat has no variable 'track_train_info': fix it"):
        load_mat(good, "track_train_info", "fix it")
    damaged = tmp_path / "tracks_train_info.mat"
    damaged.write_bytes(b"MATLAB 5.0 MAT-file, truncated")
    with pytest.raises(UserError, match=r"cannot read .*tracks_train_info.mat .*: fix it"):
        load_mat(str(damaged), "track_train_info", "fix it")


def test_a_truncated_release_zip_is_named(tmp_path):
    from tests.builder_fakes import zip_folder

    root = fake.make(str(tmp_path / "manual"))
    archive = zip_folder(root, str(tmp_path / "manual" / "VIPeR.v1.0.zip"))
    shutil.rmtree(root)
    truncate(archive)
    with pytest.raises(UserError, match=r"VIPeR.v1.0.zip is not a readable zip or tar \(a truncated or damaged "
                                        r"download\?\): download it again"):
        build(viper.Viper, str(tmp_path / "manual"), str(tmp_path / "data"))
    assert listing(str(tmp_path / "data")) == []


def _encoded(kind, pixels):
    import io

    from PIL import Image

    out = io.BytesIO()
    if kind == "grayscale":
        Image.fromarray(pixels[..., 0]).save(out, "PNG")
    elif kind == "cmyk":
        Image.fromarray(pixels).convert("CMYK").save(out, "JPEG", quality=100)
    elif kind == "16-bit":
        image = Image.new("I;16", pixels.shape[1::-1])
        image.frombytes((pixels[..., 0].astype("<u2") * 257).tobytes())
        image.save(out, "PNG")
    elif kind == "rgba":
        Image.fromarray(np.dstack([pixels, pixels[..., :1]])).save(out, "PNG")
    return out.getvalue()


@pytest.mark.parametrize("kind", ["grayscale", "cmyk", "16-bit", "rgba"])
def test_unusual_but_valid_images_decode_as_rgb_in_the_builder_check_and_the_pipelines(kind):
    from msml_jax.data.builders.common import decode_image, rgb_if_cmyk
    from msml_jax.data.pipeline import eval_dataset

    pixels = np.random.default_rng(0).integers(0, 256, (16, 8, 3), np.uint8)
    original = _encoded(kind, pixels)
    data = rgb_if_cmyk(original, kind)  # what the builder stores (read_checked)
    assert (data != original) == (kind == "cmyk")
    decoded = decode_image(data, kind)
    # What each kind keeps of the pixels, independently of TensorFlow: grey (channel 0) for the one-channel
    # kinds, RGB otherwise; CMYK goes through a lossy JPEG, so against Pillow's decoding of that file.
    if kind == "cmyk":
        import io

        from PIL import Image

        want = np.asarray(Image.open(io.BytesIO(original)).convert("RGB"))
    else:
        want = np.repeat(pixels[..., :1], 3, -1) if kind in ("grayscale", "16-bit") else pixels
    assert decoded.shape == (16, 8, 3) and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - want).max() <= (2 if kind == "cmyk" else 1)
    split = {"images": np.array([data, data], dtype=object), "pids": np.array([0, 1]), "camids": np.array([0, 1])}
    (batch,) = eval_dataset(split, batch_size=2, image_size=(16, 8)).as_numpy_iterator()
    np.testing.assert_array_equal(batch["images"][0], decoded)


def test_a_zero_byte_image_is_named_and_a_1x1_image_is_accepted(tmp_path):
    import io

    from PIL import Image

    root = fake.make(str(tmp_path / "manual"))
    open(os.path.join(root, "cam_a", "005_90.bmp"), "wb").close()
    with pytest.raises(UserError, match=r"cam_a/005_90.bmp.*Input is empty.*skip_corrupt"):
        build(viper.Viper, str(tmp_path / "manual"), str(tmp_path / "data"))
    out = io.BytesIO()
    Image.fromarray(np.full((1, 1, 3), 200, np.uint8)).save(out, "BMP")
    with open(os.path.join(root, "cam_a", "005_90.bmp"), "wb") as f:
        f.write(out.getvalue())
    builder = build(viper.Viper, str(tmp_path / "manual"), str(tmp_path / "data2"))
    (one,) = [ex for ex in read_split(builder, "cam_a") if ex["file_name"].endswith("005_90.bmp")]
    assert one["image"].shape == (1, 1, 3) and (one["image"] == 200).all()  # kept; the pipeline resizes it


def test_a_first_build_says_in_one_line_what_it_prepares(tmp_path, capfd, caplog):
    # TFDS's own words ("Downloading and preparing dataset Unknown size ...", its INFO / WARNING log lines) are
    # replaced by one line before and one after; the builder's own warning of a skipped image still shows.
    root = fake.make(str(tmp_path / "manual"))
    truncate(os.path.join(root, "cam_a", "005_90.bmp"))
    manual, data = str(tmp_path / "manual"), str(tmp_path / "data")
    caplog.set_level(logging.INFO)
    builders.load("viper", data, manual_dir=manual, skip_corrupt=True)
    out = capfd.readouterr().out
    prepared = os.path.join(data, "viper", str(viper.Viper.VERSION))
    assert f"preparing viper from {manual} into {prepared} (once" in out and f"prepared viper in {prepared}" in out
    assert "Downloading" not in out and "downloaded and prepared" not in out
    assert any("005_90.bmp" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    tfds_lines = [r.getMessage() for r in caplog.records if "tensorflow_datasets" in r.pathname]
    assert not tfds_lines
    builders.load("viper", data, manual_dir=manual, skip_corrupt=True)  # prepared: nothing more to say
    assert "prepar" not in capfd.readouterr().out
