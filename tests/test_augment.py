"""The paper's augmentation: each op against an independent computation, and determinism per (seed, step)."""

import numpy as np
import pytest
import scipy.ndimage
import tensorflow as tf

from msml_jax.data.augment import Augmentation, augment, gaussian_blur
from msml_jax.data.pipeline import train_dataset, train_dataset_from_config
from msml_jax.data.sampling import PKSampler
from tests.conftest import make_tiny_config

SEED = tf.constant([3, 4], tf.int64)


def test_blur_matches_scipy_gaussian_filter():
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (3, 16, 10, 3)).astype(np.float32)
    sigmas = np.array([0.0, 0.7, 1.5], np.float32)
    out = gaussian_blur(tf.constant(images), tf.constant(sigmas), max_sigma=1.5).numpy()
    np.testing.assert_array_equal(out[0], images[0])  # sigma 0: untouched
    radius = 3  # ceil(2 * max_sigma)
    for i in (1, 2):
        # TF's REFLECT padding is scipy's "mirror"; truncate chosen so scipy's radius is ours.
        expected = scipy.ndimage.gaussian_filter(images[i], sigma=(sigmas[i], sigmas[i], 0), mode="mirror",
                                                 truncate=radius / sigmas[i])
        np.testing.assert_allclose(out[i], expected, atol=1e-3)


def test_zoom_scales_about_the_centre_within_range():
    # A horizontal ramp I(y, x) = x: bilinear sampling of it is exact, so the output row is
    # c + (j - c) / scale with c the centre column: its slope is 1 / scale.
    h, w, zoom = 8, 33, 0.25
    ramp = np.broadcast_to(np.arange(w, dtype=np.float32)[None, :, None], (64, h, w, 3)).copy()
    ramp += 100.0  # so that black (0) borders of a zoom-out are told apart
    out = augment(tf.constant(ramp), SEED, flip=False, zoom=zoom).numpy()
    c = (w - 1) / 2
    scales = []
    for image in out:
        row = image[h // 2, :, 0]
        inside = row > 0
        slope = np.polyfit(np.arange(w)[inside], row[inside], 1)[0]
        scale = 1 / slope
        assert 1 - zoom - 1e-3 <= scale <= 1 + zoom + 1e-3
        np.testing.assert_allclose(row[inside], 100 + c + (np.arange(w)[inside] - c) / scale, atol=1e-2)
        scales.append(scale)
    assert min(scales) < 0.95 and max(scales) > 1.05  # both zoom in and zoom out occur


def test_shift_translates_both_ways_by_up_to_shift():
    # Ramps I(y, x) = (100 + x, 100 + y, 100): bilinear sampling of them is exact, so inside the source frame an
    # output pixel (i, j) reads (100 + j + dx, 100 + i + dy), with (dy, dx) the offset in pixels; outside it is
    # black. The offsets, as fractions of (h - 1, w - 1), must be uniform in [-shift, shift].
    h, w, shift = 17, 33, 0.2
    ys, xs = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
    ramp = np.stack([100 + xs, 100 + ys, np.full_like(xs, 100)], axis=-1)
    out = augment(tf.constant(np.broadcast_to(ramp, (64, h, w, 3)).copy()), SEED, flip=False, shift=shift).numpy()
    offsets = []
    for image in out:
        inside = image[..., 2] == 100
        assert inside.sum() >= (1 - shift) ** 2 * h * w - (h + w)  # at most a shift's band is black each way
        assert np.all(image[~inside] == 0)
        dx = image[..., 0][inside] - 100 - xs[inside]
        dy = image[..., 1][inside] - 100 - ys[inside]
        np.testing.assert_allclose(dx, dx.mean(), atol=1e-3)  # a translation: one offset for every pixel
        np.testing.assert_allclose(dy, dy.mean(), atol=1e-3)
        offsets.append((dy.mean() / (h - 1), dx.mean() / (w - 1)))
    offsets = np.array(offsets)
    assert np.abs(offsets).max() <= shift + 1e-4
    for column in offsets.T:  # 64 uniform draws per axis fill the range on both sides
        assert column.min() < -0.8 * shift and column.max() > 0.8 * shift
        assert abs(column.mean()) < 0.3 * shift


def test_erasing_replaces_one_rectangle_in_about_prob_of_the_images():
    images = np.full((200, 32, 16, 3), -1.0, np.float32)  # noise is in [0, 255], never -1
    out = augment(tf.constant(images), SEED, flip=False, erase_prob=0.5, erase_area=(0.1, 0.3)).numpy()
    erased = 0
    for image in out:
        mask = (image != -1).any(axis=-1)
        if not mask.any():
            continue
        erased += 1
        ys, xs = np.nonzero(mask)
        box = mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
        assert box.all()  # one axis-aligned rectangle
        assert 0.1 * 512 - 40 <= box.size <= 0.3 * 512 + 40  # area within range, up to pixel rounding
    assert 70 <= erased <= 130


def test_blur_probability_and_identity_when_off():
    rng = np.random.default_rng(1)
    images = rng.uniform(0, 255, (100, 16, 8, 3)).astype(np.float32)
    out = augment(tf.constant(images), SEED, flip=False, blur_prob=0.3, blur_sigma=1.0).numpy()
    blurred = sum(not np.array_equal(a, b) for a, b in zip(out, images))
    assert 15 <= blurred <= 45
    untouched = augment(tf.constant(images), SEED, Augmentation(flip=False)).numpy()
    np.testing.assert_array_equal(untouched, images)


def test_same_seed_same_batch_other_seed_other_batch():
    images = tf.constant(np.random.default_rng(2).uniform(0, 255, (8, 16, 8, 3)).astype(np.float32))
    a = Augmentation(flip=True, shift=0.1, zoom=0.1, blur_prob=0.5, erase_prob=0.5)
    np.testing.assert_array_equal(augment(images, SEED, a).numpy(), augment(images, SEED, a).numpy())
    assert not np.array_equal(augment(images, SEED, a).numpy(), augment(images, SEED + 1, a).numpy())


def test_pipeline_from_config_resumes_with_every_augmentation_on(tiny_splits):
    config = make_tiny_config()
    config.data.update(dict(zoom=0.1, blur_prob=0.5, blur_sigma=1.0, erase_prob=0.5))
    train = tiny_splits["train"]
    sampler = PKSampler(train["pids"], 4, 2, seed=5)
    full = list(train_dataset_from_config(train, sampler, config.data, 0, 4).as_numpy_iterator())
    resumed = list(train_dataset_from_config(train, sampler, config.data, 2, 4).as_numpy_iterator())
    for a, b in zip(full[2:], resumed):
        np.testing.assert_array_equal(a["images"], b["images"])
    plain = next(train_dataset(train, sampler, start_step=2, end_step=3, image_size=(32, 16), flip=False)
                 .as_numpy_iterator())
    assert not np.array_equal(plain["images"], resumed[0]["images"])


def test_unknown_augmentation_setting_is_refused():
    with pytest.raises(TypeError):
        Augmentation(rotate=10)


def test_preview_shows_each_image_above_its_augmented_self(tiny_splits):
    from msml_jax.data.preview import grid, preview

    config = make_tiny_config()
    config.data.update(dict(zoom=0.2, blur_prob=1.0))
    before, after = preview(config, step=1, num_images=6)
    sampler = PKSampler(tiny_splits["train"]["pids"], config.P, config.K, seed=config.seed)
    np.testing.assert_array_equal(before, tiny_splits["train"]["images"][sampler.batch_indices(1)[:6]])
    assert after.shape == before.shape and not np.array_equal(after, before)
    g = grid(before, after, per_row=4, scale=1, gap=2)
    h, w = before.shape[1:3]
    assert g.shape == (2 * 2 * (h + 2) + 2, 4 * (w + 2) + 2, 3)
    np.testing.assert_array_equal(g[2 : 2 + h, 2 + (w + 2) : 2 + (w + 2) + w], before[1])
    np.testing.assert_array_equal(g[2 + (h + 2) : 2 + (h + 2) + h, 2 : 2 + w], after[0])
    np.testing.assert_array_equal(g[2 + 2 * (h + 2) : 2 + 2 * (h + 2) + h, 2 : 2 + w], before[4])
