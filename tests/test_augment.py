"""The paper's augmentation: each op against an independent computation, and determinism per (seed, step)."""

import numpy as np
import pytest
import scipy.ndimage
import tensorflow as tf

from msml_jax.data.augment import Augmentation, Rows, _blur, augment, augment_to_size, crop_box, draw, gaussian_kernels
from msml_jax.data.pipeline import train_dataset, train_dataset_from_config
from msml_jax.data.sampling import PKSampler
from tests.conftest import make_tiny_config

SEED = tf.constant([3, 4], tf.int64)


def test_zoom_scales_about_the_centre_within_range():
    # A horizontal ramp I(y, x) = 100 + x: bilinear sampling of it is exact, so inside the image each
    # output row is linear in the column, with slope 1 / scale, and passes through the centre column's
    # value up to the half pixel of rounding the box to whole pixels.
    h, w, zoom = 8, 33, 0.25
    ramp = np.broadcast_to(100 + np.arange(w, dtype=np.float32)[None, :, None], (64, h, w, 3)).copy()
    out = augment(tf.constant(ramp), SEED, flip=False, zoom=zoom).numpy()
    c = (w - 1) / 2
    cols = np.arange(8, 25)  # inside the source for every scale in [0.75, 1.25]
    scales = []
    for image in out:
        row = image[h // 2, cols, 0]
        slope, intercept = np.polyfit(cols, row, 1)
        np.testing.assert_allclose(row, intercept + slope * cols, atol=1e-3)  # one linear resample
        scale = 1 / slope
        assert 1 - zoom - 1 / w <= scale <= 1 + zoom + 1 / w  # up to the box's rounding to whole pixels
        assert abs(intercept + slope * c - (100 + c)) <= 0.5 + 1e-3
        scales.append(scale)
    assert min(scales) < 0.9 and max(scales) > 1.1  # both zoom in and zoom out occur
    zoomed_out = out[np.argmin(scales), h // 2, :, 0]
    assert zoomed_out[0] == 0 and zoomed_out[-1] == 0  # the uncovered borders are black


def test_crop_box_worked_example():
    # 128x64 source. Zoom in by 1.1, shifted down 0.1 and left 0.05: box 116x58 (128 / 1.1 = 116.4,
    # 64 / 1.1 = 58.2), centred at (76.8, 28.8): top 76.8 - 58 = 18.8 -> 19, left 28.8 - 29 = -0.2 -> 0.
    box = crop_box((128, 64), tf.constant([0.1, -0.05]), tf.constant(1.1))
    np.testing.assert_array_equal(box, [19, 0, 116, 58])
    # Zoom out by 0.9, no shift: box 142x71 (142.2, 71.1) centred at (64, 32): top -7, left -3.5 -> -4
    # (halves round to even), so the box overhangs the source by 7 / 7 rows and 4 / 3 columns.
    box = crop_box((128, 64), tf.constant([0.0, 0.0]), tf.constant(0.9))
    np.testing.assert_array_equal(box, [-7, -4, 142, 71])


def _bilinear(image, size):
    """Half-pixel-centre bilinear resize of float [h, w, C] with clamped edges (tf.image.resize's)."""
    for axis, n_out in enumerate(size):
        n_in = image.shape[axis]
        src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        frac = (src - lo).reshape([-1] + [1] * (image.ndim - 1))
        image = np.moveaxis(image, axis, 0)
        image = np.moveaxis(image[lo] * (1 - frac) + image[hi] * frac, 0, axis)
    return image


@pytest.mark.parametrize("source, size", [((12, 8), (24, 16)), ((24, 16), (12, 8))])
def test_each_image_is_its_box_flipped_blurred_and_resized(source, size):
    # Against numpy / scipy, image by image: zero-padded box, mirrored, bilinearly resized to the output
    # size, and Gaussian-blurred: before the resize when the source is the smaller, with the sigma scaled
    # to source pixels; after it otherwise.
    rng = np.random.default_rng(3)
    (h, w), n = source, 24
    images = rng.uniform(0, 255, (n, h, w, 3)).astype(np.float32)
    a = Augmentation(flip=True, shift=0.2, zoom=0.2, blur_prob=0.5, blur_sigma=1.0)
    out = augment_to_size(tf.constant(images), size, SEED, a).numpy()
    upsampling = h * w <= size[0] * size[1]
    # The kernel radius: 2 sigma of the largest blur, in pixels of the image blurred (boxes <= source / 0.8 + 1).
    radius = int(np.ceil(2 * max((h / 0.8 + 1) / size[0], (w / 0.8 + 1) / size[1]))) if upsampling else 2
    draws = draw(SEED, a, Rows(0, n, n))
    flips = blurs = 0
    for i, image in enumerate(images):
        s, (dy, dx), sigma = float(draws.scale[i]), draws.offset[i].numpy(), float(draws.sigma[i])
        ch, cw = max(round(h / s), 1), max(round(w / s), 1)
        top, left = round(h * (0.5 + dy) - ch / 2), round(w * (0.5 + dx) - cw / 2)
        padded = np.zeros((h + 40, w + 40, 3), np.float32)
        padded[20 : 20 + h, 20 : 20 + w] = image
        crop = padded[20 + top : 20 + top + ch, 20 + left : 20 + left + cw]
        if draws.flip[i]:
            crop, flips = crop[:, ::-1], flips + 1
        blurs += sigma > 0

        def blur(x, scales):
            for axis in (0, 1):
                if sigma > 0:
                    sd = sigma * scales[axis]
                    x = scipy.ndimage.gaussian_filter1d(x, sd, axis=axis, mode="mirror", truncate=radius / sd)
            return x

        if upsampling:
            expected = _bilinear(blur(crop, (ch / size[0], cw / size[1])), size)
        else:
            expected = blur(_bilinear(crop, size), (1, 1))
        np.testing.assert_allclose(out[i], expected, atol=1e-3)
    assert 4 <= flips <= 20 and 4 <= blurs <= 20


@pytest.mark.parametrize("shape, sigmas, radius", [((9, 7), (0.8, 0.5), 2), ((3, 5), (1.5, 0.3), 2), ((6, 4), (0.0, 1.0), 1)])
def test_blur_is_a_reflected_2d_gaussian_convolution(shape, sigmas, radius):
    # Against a direct 2-D convolution in numpy: the kernel k(a, b) = g_y(a) g_x(b), g the Gaussian of std sigma
    # sampled at -r..r and normalised (sigma 0: the identity), over the image mirrored about its edge pixels.
    image = np.random.default_rng(4).uniform(0, 255, (*shape, 3)).astype(np.float32)
    taps = np.arange(-radius, radius + 1)
    g = [np.exp(-0.5 * (taps / s) ** 2) if s > 0 else (taps == 0).astype(float) for s in sigmas]
    kernel = np.outer(g[0] / g[0].sum(), g[1] / g[1].sum())
    padded = np.pad(image.astype(np.float64), [(radius, radius), (radius, radius), (0, 0)], mode="reflect")
    expected = np.zeros(image.shape)
    for i in range(shape[0]):
        for j in range(shape[1]):
            expected[i, j] = np.einsum("ab,abc->c", kernel, padded[i : i + 2 * radius + 1, j : j + 2 * radius + 1])
    kernel_y, kernel_x = tf.unstack(gaussian_kernels(tf.constant(sigmas), radius))
    np.testing.assert_allclose(_blur(tf.constant(image), kernel_y, kernel_x).numpy(), expected, atol=1e-3)


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


@pytest.mark.parametrize("image_size", [(32, 16), (64, 32), (16, 16)])
@pytest.mark.parametrize("zoom", [0.0, 0.5, 0.9])
def test_the_widest_blur_the_config_accepts_runs_on_the_host_and_on_the_device(tiny_splits, image_size, zoom):
    # config.widest_blur is the bound validation puts on blur_sigma (beyond it a kernel outgrows the images it blurs
    # and TensorFlow fails mid-run): at the bound both paths make their batch, 32x16 sources to each output size.
    from msml_jax.config import widest_blur
    from msml_jax.data.pipeline import train_dataset
    from msml_jax.data.sampling import PKSampler
    from msml_jax.training import steps
    from tests.conftest import make_tiny_config

    sigma = widest_blur(image_size, zoom)
    train = tiny_splits["train"]
    sampler = PKSampler(train["pids"], P=4, K=4, seed=1)
    settings = dict(image_size=image_size, shift=0.1, zoom=zoom, blur_prob=1.0, blur_sigma=sigma)
    host = next(train_dataset(train, sampler, start_step=0, end_step=1, **settings).as_numpy_iterator())
    device = next(train_dataset(train, sampler, start_step=0, end_step=1, augment_on_device=True,
                                **settings).as_numpy_iterator())
    config = make_tiny_config()
    config.data.update(dict(image_size=image_size, zoom=zoom, blur_prob=1.0, blur_sigma=sigma, augment_on_device=True))
    seen = steps.network_input(device["images"], {"blur_sigma": device["blur_sigma"]},
                               steps.StepSettings.from_config(config), 0)
    assert host["images"].shape == seen.shape == (16, *image_size, 3) and np.all(device["blur_sigma"] > 0)
