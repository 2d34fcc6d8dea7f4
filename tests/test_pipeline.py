import numpy as np
import pytest
import tensorflow as tf

from msml_jax.data.pipeline import augment, eval_dataset, train_dataset
from msml_jax.data.sampling import PKSampler


def _batches(split, start, end, **kwargs):
    sampler = PKSampler(split["pids"], P=4, K=2, seed=7)
    ds = train_dataset(split, sampler, start_step=start, end_step=end, image_size=(32, 16), **kwargs)
    return list(ds.as_numpy_iterator()), len(sampler.identities)


def test_train_batches_are_the_sampled_images_with_their_labels(tiny_splits):
    train = tiny_splits["train"]
    batches, num_classes = _batches(train, 0, 3, flip=False, shift=0.0)
    identities = np.unique(train["pids"])
    assert num_classes == len(identities)
    sampler = PKSampler(train["pids"], 4, 2, seed=7)
    for step, batch in enumerate(batches):
        indices = sampler.batch_indices(step)
        assert batch["step"] == step
        assert batch["images"].dtype == np.uint8 and batch["images"].shape == (8, 32, 16, 3)
        # Without augmentation the pipeline returns the source images unchanged.
        np.testing.assert_array_equal(batch["images"], train["images"][indices])
        np.testing.assert_array_equal(identities[batch["labels"]], train["pids"][indices])


def test_a_pipeline_started_mid_run_yields_the_same_batches(tiny_splits):
    full, _ = _batches(tiny_splits["train"], 0, 6, flip=True, shift=0.1)
    resumed, _ = _batches(tiny_splits["train"], 4, 6, flip=True, shift=0.1)
    assert [b["step"] for b in resumed] == [4, 5]
    for a, b in zip(full[4:], resumed):
        np.testing.assert_array_equal(a["images"], b["images"])
        np.testing.assert_array_equal(a["labels"], b["labels"])
    # And the augmentation does change the images.
    plain, _ = _batches(tiny_splits["train"], 4, 5, flip=False, shift=0.0)
    assert np.any(plain[0]["images"] != resumed[0]["images"])


@pytest.mark.parametrize("on_device", [False, True])
def test_each_process_share_of_a_batch_is_those_rows_of_the_whole_batch(tiny_splits, on_device):
    # Every augmentation on, erasing's per-image noise included: a process that builds rows [a, b) of each
    # global batch gets exactly those rows of the batch one process builds, whatever the split; with the blur and
    # erasing left to the train step, the same holds for their draws.
    settings = dict(flip=True, shift=0.1, zoom=0.2, blur_prob=0.5, blur_sigma=1.0, erase_prob=0.5,
                    augment_on_device=on_device)
    keys = ["images", "labels"] + (["blur_sigma", "erase_box"] if on_device else [])
    whole, _ = _batches(tiny_splits["train"], 3, 5, **settings)
    for cuts in ([0, 4, 8], [0, 2, 4, 6, 8], [0, 1, 8]):
        parts = [_batches(tiny_splits["train"], 3, 5, rows=slice(a, b), **settings)[0] for a, b in zip(cuts, cuts[1:])]
        for s, batch in enumerate(whole):
            assert [p[s]["images"].shape[0] for p in parts] == list(np.diff(cuts))
            assert sorted(batch) == sorted(keys + ["step"])
            for key in keys:
                np.testing.assert_array_equal(np.concatenate([p[s][key] for p in parts]), batch[key])
    plain, _ = _batches(tiny_splits["train"], 3, 4, flip=False)
    assert np.mean(plain[0]["images"] != whole[0]["images"]) > 0.5  # the augmentations did act


def test_flip_mirrors_and_shift_translates():
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (16, 8, 6, 3)).astype(np.float32)
    flipped = augment(tf.constant(images), tf.constant([1, 2], tf.int64), flip=True, shift=0.0).numpy()
    for original, out in zip(images, flipped):
        assert np.array_equal(out, original) or np.array_equal(out, original[:, ::-1])
    n_flipped = sum(not np.array_equal(o, i) for o, i in zip(flipped, images))
    assert 2 <= n_flipped <= 14  # about half
    shifted = augment(tf.constant(images), tf.constant([1, 2], tf.int64), flip=False, shift=0.3).numpy()
    # A translation by a fraction of the size: inside the shifted frame each output pixel is a
    # bilinear blend of source pixels, so values stay within the source range; borders are black.
    assert shifted.shape == images.shape
    assert np.any(shifted == 0) and shifted.max() <= images.max() + 1e-3


def test_encoded_images_are_decoded_to_the_same_pixels(tiny_splits):
    train = tiny_splits["train"]
    encoded = dict(train, images=np.array([tf.io.encode_png(im).numpy() for im in train["images"]], dtype=object))
    raw, _ = _batches(train, 0, 2, flip=False, shift=0.0)
    decoded, _ = _batches(encoded, 0, 2, flip=False, shift=0.0)
    for a, b in zip(raw, decoded):
        np.testing.assert_array_equal(a["images"], b["images"])


def test_encoded_images_of_several_sizes_come_out_resized_to_the_input_size(tiny_splits):
    # Files of two sizes (no common source size): each image is resized straight to the network input.
    train = tiny_splits["train"]
    sources = [im if i % 2 else tf.image.resize(im, (40, 20)).numpy().round().astype(np.uint8)
               for i, im in enumerate(train["images"])]
    encoded = dict(train, images=np.array([tf.io.encode_png(im).numpy() for im in sources], dtype=object))
    batches, _ = _batches(encoded, 0, 2, flip=False, shift=0.0)
    sampler = PKSampler(train["pids"], 4, 2, seed=7)
    for step, batch in enumerate(batches):
        expected = [tf.image.resize(sources[i], (32, 16)).numpy() for i in sampler.batch_indices(step)]
        np.testing.assert_allclose(batch["images"], np.round(expected), atol=1)


def test_eval_batches_cover_the_split_in_order_with_a_padded_tail(tiny_splits):
    gallery = tiny_splits["gallery"]
    n = len(gallery["pids"])
    batches = list(eval_dataset(gallery, batch_size=16, image_size=(32, 16)).as_numpy_iterator())
    assert len(batches) == -(-n // 16)
    assert all(b["images"].shape == (16, 32, 16, 3) for b in batches)
    images = np.concatenate([b["images"] for b in batches])
    np.testing.assert_array_equal(images[:n], gallery["images"])
    np.testing.assert_array_equal(images[n:], np.repeat(gallery["images"][:1], len(images) - n, 0))  # the padding


def test_eval_resizes_to_the_requested_size(tiny_splits):
    batch = next(eval_dataset(tiny_splits["query"], batch_size=4, image_size=(16, 8)).as_numpy_iterator())
    assert batch["images"].shape == (4, 16, 8, 3)
    expected = tf.image.resize(tiny_splits["query"]["images"][:4].astype(np.float32), (16, 8)).numpy()
    np.testing.assert_allclose(batch["images"], np.round(expected), atol=1)


def test_bad_image_array_is_refused(tiny_splits):
    bad = dict(tiny_splits["train"], images=tiny_splits["train"]["images"].astype(np.float32))
    with pytest.raises(ValueError, match="uint8"):
        train_dataset(bad, PKSampler(bad["pids"], 2, 2, 0), start_step=0, end_step=1, image_size=(32, 16))


def test_encoded_images_ending_in_zero_bytes_keep_them(tiny_splits):
    # An uncompressed BMP whose last pixels are black ends in NUL bytes, which numpy's fixed-width
    # bytes would strip. Hand-made 2x2 24-bit BMP: rows bottom-up, BGR, each padded to 8 bytes.
    import struct

    pixels = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [0, 0, 0]]], np.uint8)  # bottom-right black
    rows = b"".join(pixels[y, :, ::-1].tobytes().ljust(8, b"\0") for y in (1, 0))
    data = struct.pack("<2sIHHI", b"BM", 54 + len(rows), 0, 0, 54) + struct.pack(
        "<IiiHHIIiiII", 40, 2, 2, 1, 24, 0, len(rows), 2834, 2834, 0, 0) + rows
    assert data.endswith(b"\0")
    split = {"images": np.array([data], dtype=object), "pids": np.array([0]), "camids": np.array([0])}
    batch = next(eval_dataset(split, batch_size=1, image_size=(2, 2)).as_numpy_iterator())
    np.testing.assert_array_equal(batch["images"][0], pixels)
