"""folder builder: a user's own images in each accepted layout, generated here."""

import collections
import os

import numpy as np
import pytest

from msml_jax.data.builders import folder
from msml_jax.errors import UserError
from tests.builder_fakes import tiny_jpeg, write
from tests.builder_fakes.testing import build, check_like_tfds, listing, read_split

# pid -> cameras of its images (several images per camera for some).
PEOPLE = {2: [1, 1, 2], 5: [1, 3], 7: [2, 2, 2, 3], 11: [1], 13: [4, 4], 20: [1, 2], 21: [3, 1]}


def make(manual_dir, layout):
    """Writes PEOPLE in `layout`; returns [(file name relative to manual_dir, pid, camid or None)]."""
    truth, seed = [], 0
    lines = ["path,pid,camid"] if layout == "csv" else []
    for pid, cams in PEOPLE.items():
        for i, cam in enumerate(cams):
            seed += 1
            rel = {
                "market": f"{pid:04d}_c{cam}_{i:03d}.jpg",
                "pid_cam": f"{pid:04d}/{cam}/{i}.jpg",
                "pid": f"{pid:04d}/img{i}.jpg",
                "csv": f"images/p{pid}_{i}.jpg",
            }[layout]
            write(os.path.join(manual_dir, rel), tiny_jpeg(seed))
            lines.append(f"{rel},{pid},{cam}")
            truth.append((rel, pid, None if layout == "pid" else cam))
    if layout == "csv":
        write(os.path.join(manual_dir, "labels.csv"), ("\n".join(lines) + "\n").encode())
    return truth


def documented_sizes():
    """Split sizes by the rule in folder.py's docstring, worked out here from PEOPLE."""
    ids = sorted(PEOPLE)
    order = np.random.default_rng(0).permutation(len(ids))
    train_ids = {ids[i] for i in order[: len(ids) // 2]}
    train = sum(len(PEOPLE[p]) for p in train_ids)
    query = sum(len(set(PEOPLE[p])) for p in ids if p not in train_ids and len(PEOPLE[p]) >= 2)
    total = sum(len(c) for c in PEOPLE.values())
    return {"train": train, "query": query, "gallery": total - train - query}


def _all(builder):
    return {s: read_split(builder, s) for s in ("train", "query", "gallery")}


@pytest.mark.parametrize("layout", ["market", "pid_cam", "pid", "csv"])
def test_layouts_give_the_identities_cameras_and_the_documented_split(tmp_path, layout):
    truth = make(str(tmp_path / "manual"), layout)
    n = len(truth)
    if layout == "market":  # the tfds-style checks once
        check_like_tfds(folder.Folder, str(tmp_path / "manual"), str(tmp_path / "d0"),
                        documented_sizes())
    builder = build(folder.Folder, str(tmp_path / "manual"), str(tmp_path / "data"))
    splits = _all(builder)
    got = [(ex["file_name"], int(ex["pid"]), int(ex["camid"])) for s in splits.values() for ex in s]
    assert sorted(f for f, _, _ in got) == sorted(f for f, _, _ in truth)  # every image exactly once
    by_name = {f: (p, c) for f, p, c in got}
    for rel, pid, cam in truth:
        assert by_name[rel][0] == pid
        if cam is not None:
            assert by_name[rel][1] == cam
    if layout == "pid":  # no cameras: every image its own camera, so no pair is dropped as same-camera
        assert len({c for _, _, c in got}) == n
    # Split rule: identities are wholly train or test, half of them (rounded down) train.
    train_ids = {int(ex["pid"]) for ex in splits["train"]}
    test_ids = {int(ex["pid"]) for s in ("query", "gallery") for ex in splits[s]}
    assert not train_ids & test_ids and len(train_ids) == len(PEOPLE) // 2
    # One query per (test identity with >= 2 images, camera) (without cameras: per identity), its first file.
    queries = collections.Counter((int(ex["pid"]), None if cam is None else int(ex["camid"]))
                                  for ex, cam in ((ex, truth[0][2]) for ex in splits["query"]))
    expected = {(pid, None if layout == "pid" else c) for pid in test_ids if len(PEOPLE[pid]) >= 2
                for c in PEOPLE[pid]}
    assert set(queries) == expected and set(queries.values()) == {1}
    for ex in splits["query"]:
        same = [f for f, p, c in truth if p == int(ex["pid"]) and (layout == "pid" or c == int(ex["camid"]))]
        assert ex["file_name"] == min(same)


def test_bad_csv_line_and_bad_folder_name_are_named(tmp_path):
    make(str(tmp_path / "manual"), "csv")
    with open(tmp_path / "manual" / "labels.csv", "a") as f:
        f.write("images/p2_0.jpg,two\n")
    with pytest.raises(UserError, match=r"labels.csv line 18"):
        build(folder.Folder, str(tmp_path / "manual"), str(tmp_path / "data"))
    assert listing(str(tmp_path / "data")) == []
    make(str(tmp_path / "m2"), "pid")
    os.rename(tmp_path / "m2" / "0005", tmp_path / "m2" / "bob")
    with pytest.raises(UserError, match="bob"):
        build(folder.Folder, str(tmp_path / "m2"), str(tmp_path / "data"))
    assert listing(str(tmp_path / "data")) == []


def test_split_rule_is_fixed():
    pids = np.repeat(np.arange(10), 3)
    cams = np.tile([0, 1, 2], 10)
    names = [f"{i:03d}" for i in range(30)]
    a = folder.split_rule(pids, cams, names, True)
    b = folder.split_rule(pids[::-1].copy(), cams[::-1].copy(), names[::-1], True)
    train_a = set(pids[a[0]])
    assert train_a == set(pids[::-1][b[0]]) and len(train_a) == 5
