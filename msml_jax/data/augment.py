"""The paper's training augmentation (section 4.2) as stateless TF ops.

Random horizontal flip, shift, zoom and Gaussian blur, plus random erasing (Zhong et al.
2017) as an option. Every random draw comes from a stateless seed, so a batch's
augmentation is a pure function of (seed, step) — and the step fixes the epoch —
which is what lets a run resume mid-epoch with the batches it would have seen.

Several processes each augment only their own rows of a global batch (`Rows`): the
per-image random numbers are drawn for the whole global batch (a few floats per image)
and sliced, and erasing noise is seeded per global row, so a row's augmentation does
not depend on how the batch is split.

Speed (benchmarks/input_pipeline.py): the draws of a batch become a `Plan` at once, and
each image then costs a handful of ops (`apply`), nothing at the network's input size
but the one resampling: shift and zoom are an integer crop of the small source image
(zero-padded where it leaves the image), the flip a reverse of that uint8 crop, the blur
a Gaussian at source resolution with its sigma scaled to source pixels, on the images
drawn for it only, and one bilinear resize takes the crop to the output size.
"""

import dataclasses
import functools
import math
import typing

import tensorflow as tf

from msml_jax.data import device_augment


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


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """Settings of `augment`; the defaults are the demo's (flip + shift 0.1 in configs/synthetic.py sets shift).

    Attributes:
      flip: flip each image left-right with probability 1/2.
      shift: largest translation, a fraction of height / width (uniform in [-shift, shift]).
      zoom: largest zoom: the scale is uniform in [1 - zoom, 1 + zoom]; > 1 zooms in (crops),
        < 1 zooms out. Uncovered borders (shift, zoom-out) are black. Shift and zoom are
        rounded to whole pixels of the source image.
      blur_prob: probability of a Gaussian blur per image.
      blur_sigma: largest blur standard deviation in output pixels (uniform in [0.1, blur_sigma]).
      erase_prob: probability of random erasing per image (0 = off).
      erase_area: (min, max) erased fraction of the image area.
      erase_aspect: smallest aspect ratio h / w of the erased rectangle (largest is its inverse).
      augment_on_device: the blur and the erasing are left to the train step (`device_augment`): `apply`
        skips them, and `Plan.sigma` / `Plan.erase_box` carry their draws to the batch.
    """

    flip: bool = True
    shift: float = 0.0
    zoom: float = 0.0
    blur_prob: float = 0.0
    blur_sigma: float = 1.0
    erase_prob: float = 0.0
    erase_area: tuple = (0.02, 0.4)
    erase_aspect: float = 0.3
    augment_on_device: bool = False

    @classmethod
    def from_config(cls, data_config):
        """The fields present in `config.data` (missing ones keep their defaults)."""
        values = {f.name: data_config.get(f.name) for f in dataclasses.fields(cls)}
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if v is not None}
        return cls(**values)

    @property
    def blurs(self):
        return self.blur_prob > 0 and self.blur_sigma > 0

    @property
    def erases(self):
        return self.erase_prob > 0

    @property
    def blurs_here(self):
        """Whether `apply` blurs (not left to the train step)."""
        return self.blurs and not self.augment_on_device

    @property
    def erases_here(self):
        """Whether `apply` erases (not left to the train step)."""
        return self.erases and not self.augment_on_device


def _uniform(rows, shape, seed):
    """Uniform [0, 1) draws of shape [rows.stop - rows.start, *shape]: rows of the draw for the whole global
    batch, so that a row's numbers do not depend on which rows a process holds."""
    return tf.random.stateless_uniform([rows.total, *shape], seed)[rows.start : rows.stop]


def _seeds(seed):
    """(draw seed, erase seed) of a batch seed."""
    return tf.unstack(tf.random.experimental.stateless_split(seed, 2))


class Draws(typing.NamedTuple):
    """The random settings of b images."""

    flip: tf.Tensor  # bool [b]
    offset: tf.Tensor  # float32 [b, 2]: (dy, dx), fractions of height / width
    scale: tf.Tensor  # float32 [b]: zoom, > 1 zooms in
    sigma: tf.Tensor  # float32 [b]: blur std in output pixels, 0 = no blur


def draw(seed, augmentation, rows):
    """The flip / shift / zoom / blur draws of `rows` of the global batch seeded by `seed` (int [2]).

    Each op has its own column of uniforms, so turning one on or off leaves the others' draws as they were.
    """
    a = augmentation
    u = _uniform(rows, [6], _seeds(seed)[0])
    flip = u[:, 0] < 0.5 if a.flip else tf.zeros_like(u[:, 0], tf.bool)
    offset = a.shift * (2.0 * u[:, 1:3] - 1.0)
    scale = 1.0 + a.zoom * (2.0 * u[:, 3] - 1.0)
    sigma = tf.zeros_like(u[:, 0])
    if a.blurs:
        sigma = tf.where(u[:, 4] < a.blur_prob, 0.1 + (a.blur_sigma - 0.1) * u[:, 5], 0.0)
    return Draws(flip, offset, scale, sigma)


def crop_box(source_size, offset, scale):
    """The integer source boxes of shifts + zooms: what the output images show.

    The output shows the source box of size (h, w) / scale centred at ((0.5 + dy) h, (0.5 + dx) w),
    rounded to whole source pixels; parts outside the source are black.
    Args: source_size (h, w); offset float32 [..., 2] (dy, dx); scale float32 [...].
    Returns int32 [..., 4]: (top, left, height, width); top / left may be negative.
    """
    hw = tf.cast(tf.stack(source_size), tf.float32)  # [2]
    extent = tf.maximum(tf.round(hw / scale[..., None]), 1.0)
    corner = tf.round(hw * (0.5 + offset) - extent / 2)
    return tf.cast(tf.concat([corner, extent], axis=-1), tf.int32)


def blurs_source(source_size, size):
    """Whether the blur runs on the source (not smaller than the output: a blur costs its pixels) rather
    than on the output."""
    return source_size[0] * source_size[1] <= size[0] * size[1]


def blur_radius(augmentation, source_size, size):
    """Kernel radius (python int) that bounds every image's blur, in pixels of the image it runs on.

    On the source, a blur of std s output pixels is one of s * (box size / output size) source pixels,
    and boxes are at most source / (1 - zoom) + 1 pixels: the radius does not depend on the draws.
    """
    if not blurs_source(source_size, size):
        return device_augment.kernel_radius(augmentation.blur_sigma)
    largest = max((n / (1.0 - augmentation.zoom) + 1) / m for n, m in zip(source_size, size))
    return device_augment.kernel_radius(augmentation.blur_sigma * largest)


def gaussian_kernels(sigmas, radius):
    """float32 [..., 2 * radius + 1] normalised Gaussians of std `sigmas` [...]; sigma 0 gives the identity."""
    x = tf.range(-radius, radius + 1, dtype=tf.float32)
    kernels = tf.exp(-0.5 * (x / tf.maximum(sigmas, 1e-3)[..., None]) ** 2)
    return kernels / tf.reduce_sum(kernels, axis=-1, keepdims=True)


def _reflect_pad(x, radius, axis):
    """`x` with `radius` rows (axis 0) or columns (axis 1) mirrored onto each side, the edge itself not
    repeated (REFLECT: x[2], x[1] | x[0] ... x[n - 1] | x[n - 2], x[n - 3]); needs radius < n.

    Concatenated slices: tf.pad's REFLECT mode costs as much as the whole blur's arithmetic.
    """
    size = tf.shape(x)[axis]
    head = tf.reverse(_take(x, 1, radius + 1, axis), [axis])
    tail = tf.reverse(_take(x, size - radius - 1, size - 1, axis), [axis])
    return tf.concat([head, x, tail], axis)


def _take(x, start, stop, axis):
    """x[start:stop] along axis 0 (height) or 1 (width)."""
    return x[start:stop] if axis == 0 else x[:, start:stop]


def _blur(image, kernel_y, kernel_x):
    """`image` (float32 [h, w, C]) blurred by the separable Gaussian `kernel_y`, `kernel_x` (float32 [2r + 1]):
    out[i] = sum_j k[j] x[i + j - r] along height, then the same along width, with reflected borders (so a blur
    does not darken them).

    Each pass is a weighted sum of 2r + 1 shifted slices: element-wise ops that stay on the calling thread.
    A depthwise convolution does the same arithmetic but, with 3 channels, runs no faster on one core and
    shards itself across the others, which on 2 cores doubled its CPU time inside the parallel map.
    """
    for axis, kernel in enumerate((kernel_y, kernel_x)):
        radius = kernel.shape[0] // 2
        size = tf.shape(image)[axis]
        padded = _reflect_pad(image, radius, axis)
        shifted = [_take(padded, j, j + size, axis) for j in range(2 * radius + 1)]
        image = tf.add_n([k * x for k, x in zip(tf.unstack(kernel), shifted)])
    return image


class Plan(typing.NamedTuple):
    """Everything random about b images of a batch, drawn for the whole batch at once so that the work
    left for each image is a handful of ops (`apply`). Every field has b rows."""

    row: tf.Tensor  # int32 [b]: the image's row in the global batch (seeds its erasing noise)
    begin: tf.Tensor  # int32 [b, 3]: the box's part inside the source: (top, left, 0) ...
    extent: tf.Tensor  # int32 [b, 3]: ... and (height, width, -1)
    paddings: tf.Tensor  # int32 [b, 3, 2]: the black rows / columns that make it the whole box
    flip: tf.Tensor  # int32 [b]: 1 = mirror left-right
    sigma: tf.Tensor  # float32 [b]: blur std in output pixels, 0 = no blur
    blur: tf.Tensor  # bool [b]
    kernel_y: tf.Tensor  # float32 [b, 2r + 1]: Gaussian along height, in pixels of the image blurred (`blurs_source`)
    kernel_x: tf.Tensor  # float32 [b, 2r + 1]: along width
    erase: tf.Tensor  # bool [b]
    erase_box: tf.Tensor  # float32 [b, 4]: (top, left, height, width) in output pixels


def plan(seed, augmentation, rows, source_size, size):
    """The `Plan` of `rows` of the global batch seeded by `seed` (int [2]), for sources of python size
    `source_size` (h, w) going to `size` (H, W).

    Planned for the whole global batch, then sliced: TensorFlow's exp and sqrt may round a value differently in
    a vector of another length (SIMD body or scalar tail), and a process's rows must be those of the whole batch
    to the last bit (the erased boxes and blur stds travel to the train step as floats).
    """
    whole = _plan(seed, augmentation, Rows(0, rows.total, rows.total), source_size, size)
    return Plan(*(field[rows.start : rows.stop] for field in whole))


def _plan(seed, augmentation, rows, source_size, size):
    a = augmentation
    if not 0 <= a.zoom < 1 or a.shift < 0:
        raise ValueError(f"zoom must be in [0, 1) and shift >= 0, got zoom {a.zoom}, shift {a.shift}")
    d = draw(seed, a, rows)
    box = crop_box(source_size, d.offset, d.scale)  # [b, 4]
    hw = tf.constant(source_size, tf.int32)
    inside_begin = tf.clip_by_value(box[:, :2], 0, hw)
    inside_end = tf.clip_by_value(box[:, :2] + box[:, 2:], 0, hw)
    b = tf.shape(box)[0]
    zeros = tf.zeros([b, 1], tf.int32)
    begin = tf.concat([inside_begin, zeros], axis=1)
    extent = tf.concat([inside_end - inside_begin, zeros - 1], axis=1)
    paddings = tf.stack([inside_begin - box[:, :2], box[:, :2] + box[:, 2:] - inside_end], axis=2)  # [b, 2, 2]
    paddings = tf.concat([paddings, tf.zeros([b, 1, 2], tf.int32)], axis=1)
    # A blur of std s output pixels is one of s * (box size / output size) source pixels.
    radius = blur_radius(a, source_size, size) if a.blurs_here else 0
    sigmas = tf.stack([d.sigma, d.sigma], axis=1)
    if blurs_source(source_size, size):
        sigmas *= tf.cast(box[:, 2:], tf.float32) / tf.constant(size, tf.float32)
    erase_box, erase = _erase_boxes(_seeds(seed)[1], a, rows, size)
    return Plan(tf.range(rows.start, rows.stop), begin, extent, paddings, tf.cast(d.flip, tf.int32), d.sigma,
                d.sigma > 0, *tf.unstack(gaussian_kernels(sigmas, radius), axis=1), erase, erase_box)


def _erase_boxes(seed, a, rows, size):
    """Random erasing's rectangles (float32 [b, 4]: top, left, height, width) and whether it happens.

    Area fraction s ~ U(erase_area), aspect r = h/w with log r ~ U(log erase_aspect, -log erase_aspect),
    rectangle h = sqrt(s r) H, w = sqrt(s / r) W (clipped to the image), top-left uniform over the
    positions that keep it inside.
    """
    hf, wf = float(size[0]), float(size[1])
    u = _uniform(rows, [5], seed)
    s = a.erase_area[0] + (a.erase_area[1] - a.erase_area[0]) * u[:, 0]
    log_r = math.log(a.erase_aspect) * (1.0 - 2.0 * u[:, 1])
    eh = tf.minimum(tf.sqrt(s * tf.exp(log_r)) * hf, hf)
    ew = tf.minimum(tf.sqrt(s / tf.exp(log_r)) * wf, wf)
    return tf.stack([u[:, 2] * (hf - eh), u[:, 3] * (wf - ew), eh, ew], axis=1), u[:, 4] < a.erase_prob


def _erase(image, box, noise_seed):
    """`image` (float32 [h, w, C]) with the pixels whose centres fall in `box` replaced by noise in [0, 255]."""
    h, w = image.shape[0], image.shape[1]
    ys = tf.range(h, dtype=tf.float32) + 0.5
    xs = tf.range(w, dtype=tf.float32) + 0.5
    in_y = (ys >= box[0]) & (ys < box[0] + box[2])
    in_x = (xs >= box[1]) & (xs < box[1] + box[3])
    mask = in_y[:, None, None] & in_x[None, :, None]
    return tf.where(mask, tf.random.stateless_uniform(tf.shape(image), noise_seed, 0, 255), image)


def _maybe_blur(image, p):
    # A cond: a blur is a third of an image's work, and only blur_prob of the images need it.
    return tf.cond(p.blur, lambda: _blur(image, p.kernel_y, p.kernel_x), lambda: image)


def apply(image, p, size, augmentation, seed):
    """One image's augmentation: float32 [*size, 3] in [0, 255] from its source (uint8 / float32 [h, w, 3]).

    Args:
      image: the source image, of the size `p` was planned for.
      p: the image's row of a `Plan` (each field without its batch dimension).
      size: python (H, W) of the output.
      augmentation: the `Augmentation` the plan was drawn for.
      seed: the batch seed (int [2]): the erasing noise of global row i is drawn from
        fold_in(fold_in(erase seed, 1), i).
    The shift + zoom box, mirrored, then one bilinear resize to `size`; the blur runs before the resize when
    the source is the smaller (its sigma scaled to source pixels), after it otherwise. With
    `augment_on_device` neither the blur nor the erasing runs here (see `device_augment`).
    """
    a = augmentation
    crop = tf.pad(tf.slice(image, p.begin, p.extent), p.paddings)
    crop = tf.reverse(crop, tf.range(1, 1 + p.flip))  # axis [1] or []: cheaper than a cond
    crop = tf.cast(crop, tf.float32)  # resize reads float32 faster than uint8
    on_source = blurs_source(image.shape[:2], size)
    if a.blurs_here and on_source:
        crop = _maybe_blur(crop, p)
    out = tf.raw_ops.ResizeBilinear(images=crop[None], size=size, half_pixel_centers=True)[0]  # tf.image.resize's
    if a.blurs_here and not on_source:
        out = _maybe_blur(out, p)
    if a.erases_here:
        noise_seed = tf.random.experimental.stateless_fold_in(
            tf.random.experimental.stateless_fold_in(_seeds(seed)[1], 1), p.row)
        # Noise only for the images erased: drawing it costs as much as the rest of the augmentation.
        out = tf.cond(p.erase, lambda: _erase(out, p.erase_box, noise_seed), lambda: out)
    return out


def _check(images):
    if not images.shape[1:3].is_fully_defined():
        raise ValueError(f"augmentation needs images of a static height and width, got {images.shape}")


def augment_to_size(images, size, seed, augmentation=None, rows=None):
    """Resizes a batch to `size` and augments it, with one resampling per image.

    Args:
      images: uint8 or float32 [B, h, w, 3] source images, values in [0, 255].
      size: python (height, width) of the output.
      seed, augmentation, rows: see `augment`.
    Returns:
      float32 [B, *size, 3] in [0, 255]: see `apply`.
    """
    images = tf.convert_to_tensor(images)
    a = augmentation or Augmentation()
    _check(images)
    size = tuple(int(n) for n in size)
    if tf.executing_eagerly():  # eagerly the per-image loop would run op by op: trace it once per settings
        return _traced_batch(size, a, rows)(images, seed)
    return _augment_batch(images, seed, size, a, rows)


def _augment_batch(images, seed, size, a, rows):
    p = plan(seed, a, Rows.of(images, rows), tuple(images.shape[1:3]), size)
    return tf.map_fn(
        lambda args: apply(args[0], Plan(*args[1:]), size, a, seed),
        (images, *p),
        fn_output_signature=tf.TensorSpec([*size, 3], tf.float32),
    )


@functools.lru_cache(maxsize=16)
def _traced_batch(size, a, rows):
    return tf.function(functools.partial(_augment_batch, size=size, a=a, rows=rows))


def augment(images, seed, augmentation=None, rows=None, **settings):
    """The paper's augmentation of a batch, drawn from a stateless seed; the output keeps the input's size.

    Args:
      images: float32 (or uint8) [B, h, w, 3], values in [0, 255].
      seed: int [2] stateless seed; the same seed gives the same augmentation.
      augmentation: an `Augmentation`; or give its fields as keyword arguments
        (`augment(images, seed, flip=True, shift=0.1)`).
      rows: a `Rows` when `images` are rows [start, stop) of a global batch of `total`:
        each image is then augmented exactly as in the whole batch. None: the whole batch.
    Returns:
      float32 [B, h, w, 3]: see `apply`.
    """
    images = tf.convert_to_tensor(images)
    a = augmentation or Augmentation(**settings)
    _check(images)
    return augment_to_size(images, images.shape[1:3], seed, a, rows)
