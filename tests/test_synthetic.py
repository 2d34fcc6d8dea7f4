import numpy as np

from msml_jax.data.synthetic import SyntheticSpec, make_synthetic
from tests.conftest import TINY_SYNTHETIC


def test_deterministic_in_seed(tiny_splits):
    again = make_synthetic(0, SyntheticSpec(**TINY_SYNTHETIC))
    other = make_synthetic(1, SyntheticSpec(**TINY_SYNTHETIC))
    for name in ("train", "query", "gallery"):
        for field in ("images", "pids", "camids"):
            np.testing.assert_array_equal(again[name][field], tiny_splits[name][field])
    assert not np.array_equal(other["train"]["images"][:5], tiny_splits["train"]["images"][:5])


def test_split_structure(tiny_splits):
    train, query, gallery = tiny_splits["train"], tiny_splits["query"], tiny_splits["gallery"]
    for split in (train, query, gallery):
        assert split["images"].dtype == np.uint8 and split["images"].shape[1:] == (32, 16, 3)
        assert len(split["images"]) == len(split["pids"]) == len(split["camids"])
        assert split["camids"].min() >= 0 and split["camids"].max() < 3
    assert len(np.unique(train["pids"])) == 12
    # Train and test identities are disjoint; the test identities are exactly the queries'.
    assert not set(train["pids"]) & (set(query["pids"]) | set(gallery["pids"]))
    assert set(query["pids"]) == set(range(12, 18))
    # Distractors: gallery identities that are never queried.
    assert set(gallery["pids"]) - set(query["pids"]) == {18, 19, 20}
    # Every query has a match from another camera in the gallery.
    for pid, cam in zip(query["pids"], query["camids"]):
        assert np.any((gallery["pids"] == pid) & (gallery["camids"] != cam))


def test_images_look_like_people_not_noise(tiny_splits):
    images = tiny_splits["train"]["images"].astype(np.float32)
    # Different images differ, and each image has structure (not constant).
    assert images.std(axis=(1, 2, 3)).min() > 10
    assert np.abs(images[0] - images[1]).mean() > 5
