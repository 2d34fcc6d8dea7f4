"""Bad input as a user meets it: one clear message (exit 2 from the CLI) and data_dir left as it was."""

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
