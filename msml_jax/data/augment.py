"""The paper's training augmentation (section 4.2) as batched, stateless TF ops.

Random horizontal flip, shift, zoom and Gaussian blur, plus random erasing (Zhong et al.
2017) as an option. Every random draw comes from a stateless seed, so a batch's
augmentation is a pure function of (seed, step) — and the step fixes the epoch —
which is what lets a run resume mid-epoch with the batches it would have seen.

Several processes each augment only their own rows of a global batch (`Rows`): the
per-image random numbers are drawn for the whole global batch (a few floats per image)
and sliced, and erasing noise is seeded per global row, so a row's augmentation does
not depend on how the batch is split.
"""

import dataclasses
import typing

import tensorflow as tf


class Rows(typing.NamedTuple):
    """Rows [start, stop) of a global batch of `total` images: the part one process loads and augments."""

    start: int
    stop: int
    total: int

    @classmethod
    def of(cls, images, rows):
        """`rows`, or all rows of `images` when None."""
        if rows is not None:
            return rows
        batch = tf.shape(images)[0]
        return cls(0, batch, batch)


def _uniform(rows, shape, seed, minval=0.0, maxval=1.0):
    """Uniform draws of shape [rows.stop - rows.start, *shape]: rows of the draw for the whole global batch."""
    return tf.random.stateless_uniform([rows.total, *shape], seed, minval, maxval)[rows.start : rows.stop]


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """Settings of `augment`; the defaults are the demo's (flip + shift 0.1 in configs/synthetic.py sets shift).

    Attributes:
      flip: flip each image left-right with probability 1/2.
      shift: largest translation, a fraction of height / width (uniform in [-shift, shift]).
      zoom: largest zoom: the scale is uniform in [1 - zoom, 1 + zoom]; > 1 zooms in (crops),
        < 1 zooms out. Uncovered borders (shift, zoom-out) are black.
      blur_prob: probability of a Gaussian blur per image.
      blur_sigma: largest blur standard deviation in pixels (uniform in [0.1, blur_sigma]).
      erase_prob: probability of random erasing per image (0 = off).
      erase_area: (min, max) erased fraction of the image area.
      erase_aspect: smallest aspect ratio h / w of the erased rectangle (largest is its inverse).
    """

    flip: bool = True
    shift: float = 0.0
    zoom: float = 0.0
    blur_prob: float = 0.0
    blur_sigma: float = 1.0
    erase_prob: float = 0.0
    erase_area: tuple = (0.02, 0.4)
    erase_aspect: float = 0.3

    @classmethod
    def from_config(cls, data_config):
        """The fields present in `config.data` (missing ones keep their defaults)."""
        values = {f.name: data_config.get(f.name) for f in dataclasses.fields(cls)}
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if v is not None}
        return cls(**values)


def _seeds(seed, n):
    # The first two match the original flip/shift seeds, so the demo's batches did not change.
    flip_seed, shift_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    extra = [tf.cast(tf.random.experimental.stateless_fold_in(seed, 1000 + i), flip_seed.dtype) for i in range(n - 2)]
    return [flip_seed, shift_seed, *extra]


def shift_zoom(images, seed, shift, zoom, rows=None):
    """Translates by up to `shift` and scales by [1 - zoom, 1 + zoom], one bilinear resample.

    Each output image samples the normalised source box of size 1/scale centred at
    (0.5 + dy, 0.5 + dx); pixels outside the source are black. `rows`: see `augment`.
    """
    batch, h, w = tf.shape(images)[0], tf.shape(images)[1], tf.shape(images)[2]
    rows = Rows.of(images, rows)
    shift_seed, zoom_seed = tf.unstack(seed)
    offsets = tf.zeros([batch, 2])
    if shift > 0:
        offsets = _uniform(rows, [2], shift_seed, -shift, shift)
    size = tf.ones([batch, 1])
    if zoom > 0:
        size = 1.0 / _uniform(rows, [1], zoom_seed, 1.0 - zoom, 1.0 + zoom)
    top_left = offsets + (1.0 - size) / 2  # exactly `offsets` without zoom: the demo's boxes unchanged
    boxes = tf.concat([top_left, top_left + size], axis=1)  # [y1, x1, y2, x2]
    return tf.image.crop_and_resize(images, boxes, tf.range(batch), tf.stack([h, w]))


def gaussian_blur(images, sigmas, max_sigma):
    """Blurs image i with a separable Gaussian of std `sigmas[i]` px (0 leaves it unchanged).

    Args:
      images: float32 [B, h, w, C].
      sigmas: float32 [B].
      max_sigma: python float, the largest sigma: fixes the kernel radius ceil(2 * max_sigma).
    Borders are reflected, so a blur does not darken them.
    """
    radius = max(1, int(-(-2 * max_sigma // 1)))
    x = tf.range(-radius, radius + 1, dtype=tf.float32)
    sig = tf.maximum(sigmas, 1e-3)[:, None]
    kernels = tf.exp(-0.5 * (x[None, :] / sig) ** 2)
    kernels = kernels / tf.reduce_sum(kernels, axis=1, keepdims=True)  # [B, 2r + 1]
    batch, h, w, c = (tf.shape(images)[i] for i in range(4))
    # Per-image kernels as a depthwise conv over the batch folded into channels: [1, h, w, B * C].
    folded = tf.reshape(tf.transpose(images, [1, 2, 0, 3]), [1, h, w, batch * c])
    folded = tf.pad(folded, [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="REFLECT")
    per_channel = tf.repeat(kernels, c, axis=0)  # [B * C, 2r + 1]
    kernel_y = tf.transpose(per_channel)[:, None, :, None]  # [2r + 1, 1, B * C, 1]
    kernel_x = tf.transpose(per_channel)[None, :, :, None]  # [1, 2r + 1, B * C, 1]
    folded = tf.nn.depthwise_conv2d(folded, kernel_y, [1, 1, 1, 1], "VALID")
    folded = tf.nn.depthwise_conv2d(folded, kernel_x, [1, 1, 1, 1], "VALID")
    return tf.transpose(tf.reshape(folded, [h, w, batch, c]), [2, 0, 1, 3])


def random_erasing(images, seed, prob, area, min_aspect, rows=None):
    """Replaces one random rectangle per chosen image with uniform noise in [0, 255].

    With probability `prob` per image: area fraction s ~ U(area), aspect r = h/w with
    log r ~ U(log min_aspect, -log min_aspect), rectangle h = sqrt(s r) H, w = sqrt(s / r) W
    (clipped to the image), top-left uniform over the positions that keep it inside.
    The noise of global row i is drawn from its own seed, fold_in(fold_in(seed, 1), i).
    `rows`: see `augment`.
    """
    h, w = tf.shape(images)[1], tf.shape(images)[2]
    rows = Rows.of(images, rows)
    hf, wf = tf.cast(h, tf.float32), tf.cast(w, tf.float32)
    u = _uniform(rows, [5], seed)
    s = area[0] + (area[1] - area[0]) * u[:, 0]
    log_r = tf.math.log(min_aspect) * (1.0 - 2.0 * u[:, 1])
    eh = tf.minimum(tf.sqrt(s * tf.exp(log_r)) * hf, hf)
    ew = tf.minimum(tf.sqrt(s / tf.exp(log_r)) * wf, wf)
    y0 = u[:, 2] * (hf - eh)
    x0 = u[:, 3] * (wf - ew)
    on = u[:, 4] < prob
    ys = tf.range(h, dtype=tf.float32)[None, :] + 0.5
    xs = tf.range(w, dtype=tf.float32)[None, :] + 0.5
    in_y = (ys >= y0[:, None]) & (ys < (y0 + eh)[:, None])  # [B, h]
    in_x = (xs >= x0[:, None]) & (xs < (x0 + ew)[:, None])  # [B, w]
    mask = in_y[:, :, None] & in_x[:, None, :] & on[:, None, None]
    noise_seed = tf.random.experimental.stateless_fold_in(seed, 1)
    noise = tf.map_fn(
        lambda row: tf.random.stateless_uniform(
            tf.shape(images)[1:], tf.random.experimental.stateless_fold_in(noise_seed, row), 0, 255
        ),
        tf.range(rows.start, rows.stop),
        fn_output_signature=tf.float32,
    )
    return tf.where(mask[..., None], noise, images)


def augment(images, seed, augmentation=None, rows=None, **settings):
    """The paper's augmentation of a batch, drawn from a stateless seed.

    Args:
      images: float32 [B, h, w, 3], values in [0, 255].
      seed: int [2] stateless seed; the same seed gives the same augmentation.
      augmentation: an `Augmentation`; or give its fields as keyword arguments
        (`augment(images, seed, flip=True, shift=0.1)`).
      rows: a `Rows` when `images` are rows [start, stop) of a global batch of `total`:
        each image is then augmented exactly as in the whole batch. None: the whole batch.
    Returns:
      float32 [B, h, w, 3]: shift + zoom (one resample), then flip, blur, erasing.
    """
    a = augmentation or Augmentation(**settings)
    flip_seed, shift_seed, zoom_seed, blur_seed, erase_seed = _seeds(seed, 5)
    rows = Rows.of(images, rows)
    if a.shift > 0 or a.zoom > 0:
        images = shift_zoom(images, tf.stack([shift_seed, zoom_seed]), a.shift, a.zoom, rows)
    if a.flip:
        flips = _uniform(rows, [], flip_seed) < 0.5
        images = tf.where(flips[:, None, None, None], tf.reverse(images, axis=[2]), images)
    if a.blur_prob > 0 and a.blur_sigma > 0:
        u = _uniform(rows, [2], blur_seed)
        sigmas = tf.where(u[:, 0] < a.blur_prob, 0.1 + (a.blur_sigma - 0.1) * u[:, 1], 0.0)
        images = gaussian_blur(images, sigmas, a.blur_sigma)
    if a.erase_prob > 0:
        images = random_erasing(images, erase_seed, a.erase_prob, a.erase_area, a.erase_aspect, rows)
    return images
