"""The augmentation's last two parts, Gaussian blur and random erasing, as pure JAX on the batch: run inside the
jitted train step (`config.data.augment_on_device`) instead of image by image in the input pipeline.

The pipeline then sends, beside the uint8 images (cropped, flipped, resized), each image's blur std (output
pixels, 0 = no blur) and erased box (output pixels; zero height = not erased), drawn from the same seeds as
on the host (`augment.plan`). On an accelerator the blur is a few fused passes over the batch; on the host it
was the one costly part of the pipeline (benchmarks/input_pipeline.py). No TensorFlow here.

What changes against the host path: the blur runs on the network's input rather than on the source crop (on the
host it runs at whichever is smaller, its std scaled), on pixels already rounded to uint8, and the erasing noise
comes from JAX's generator (keyed by seed, step and global row) instead of TensorFlow's. The images are rounded
to whole grey levels at the end, as the pipeline rounds its own.
"""

import math

import jax
import jax.numpy as jnp

# Batch keys the pipeline adds for the train step (float32 [b] and [b, 4]).
KEYS = ("blur_sigma", "erase_box")


def draws_in(batch):
    """The augmentation draws `batch` (a dict) carries for the train step: its `KEYS` present ({}: none)."""
    return {k: batch[k] for k in KEYS if k in batch}


def kernel_radius(max_sigma):
    """Radius (python int) of the Gaussian kernels of stds up to `max_sigma`: 2 stds, at least 1."""
    return max(1, math.ceil(2 * max_sigma))


def step_blur_radius(data_config):
    """The kernel radius of the blur a train step applies for `config.data` (augment_on_device with a blur
    drawn), 0 when it applies none. Defaults as `config.FIELDS`'."""
    d = data_config
    if not (d.get("augment_on_device", False) and d.get("blur_prob", 0.0) > 0 and d.get("blur_sigma", 1.0) > 0):
        return 0
    return kernel_radius(d.get("blur_sigma", 1.0))


def gaussian_kernels(sigmas, radius):
    """float32 [..., 2 * radius + 1] normalised Gaussians of std `sigmas` [...]; std 0 gives the identity."""
    x = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
    kernels = jnp.exp(-0.5 * (x / jnp.maximum(sigmas, 1e-3)[..., None]) ** 2)
    return kernels / jnp.sum(kernels, axis=-1, keepdims=True)


def blur(images, sigmas, radius):
    """float32 [B, H, W, C] `images`, image b blurred by the separable Gaussian of std `sigmas[b]` (pixels) with
    reflected borders (the edge pixel not repeated), kernels truncated at `radius` (python int, < H and W)."""
    kernels = gaussian_kernels(sigmas, radius)[:, :, None, None, None]  # [B, 2r + 1, 1, 1, 1]
    taps = [kernels[:, j] for j in range(2 * radius + 1)]
    for axis in (1, 2):
        images = _blur_pass(images, taps, radius, axis)
    return images


def _blur_pass(x, taps, radius, axis):
    """out[i] = sum_j taps[j] x[reflect(i + j - r)] along `axis`: the interior from whole shifted slices, the r
    border rows on each side one by one. (A reflect pad before the slices is the same arithmetic, but XLA's CPU
    loops over a padded operand run 4x slower.)"""
    n = x.shape[axis]

    def rows(start, stop):
        return jax.lax.slice_in_dim(x, start, stop, axis=axis)

    def reflect(i):
        return -i if i < 0 else 2 * (n - 1) - i if i >= n else i

    def border(i):
        return sum(t * rows(reflect(i + j - radius), reflect(i + j - radius) + 1) for j, t in enumerate(taps))

    interior = sum(t * rows(j, n - 2 * radius + j) for j, t in enumerate(taps))
    return jnp.concatenate([border(i) for i in range(radius)] + [interior]
                           + [border(i) for i in range(n - radius, n)], axis)


def erase(images, boxes, key):
    """`images` (float32 [B, H, W, C]) with the pixels whose centres fall in `boxes[b]` (float32 [B, 4]: top,
    left, height, width in pixels) replaced by uniform noise in [0, 255]; row b's noise is drawn from
    fold_in(key, b), so it does not depend on how the batch is split over devices."""
    _, h, w, c = images.shape
    ys = jnp.arange(h, dtype=jnp.float32) + 0.5
    xs = jnp.arange(w, dtype=jnp.float32) + 0.5
    top, left, height, width = (boxes[:, i, None] for i in range(4))
    in_y = (ys >= top) & (ys < top + height)  # [B, H]
    in_x = (xs >= left) & (xs < left + width)  # [B, W]
    mask = in_y[:, :, None, None] & in_x[:, None, :, None]
    rows = jnp.arange(images.shape[0])
    noise = jax.vmap(lambda row: jax.random.uniform(jax.random.fold_in(key, row), (h, w, c), jnp.float32, 0, 255))(rows)
    return jnp.where(mask, noise, images)


def finish(images, augment, key, radius):
    """The network's input: uint8 [B, H, W, 3] `images` blurred by `augment["blur_sigma"]` (kernels of
    `radius`), then erased in `augment["erase_box"]` with noise from `key`, rounded to whole grey levels
    (float32 in [0, 255])."""
    x = images.astype(jnp.float32)
    if radius:
        x = blur(x, augment["blur_sigma"], radius)
    if "erase_box" in augment:
        x = erase(x, augment["erase_box"], key)
    return jnp.floor(x + 0.5)
