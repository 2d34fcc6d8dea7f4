"""tf.data input pipelines: PK-sampled, augmented training batches and ordered evaluation batches.

A split is a dict of numpy arrays: `images` (uint8 [N, H, W, 3], or encoded
JPEG/PNG bytes [N], or a lazy `source.EncodedImages` whose batches are read by index
from the prepared files), `pids` int [N], `camids` int [N]. Batches come out as numpy
dicts with uint8 `images` [B, h, w, 3]; normalisation happens on the accelerator.

The training batch of global step s is a pure function of (seed, s): the PK
indices come from `PKSampler` and every random augmentation draws from stateless
TF ops seeded by (seed, s). Starting the pipeline at `start_step` therefore
reproduces exactly what an uninterrupted run would have seen.

With several processes each one builds only its own rows of every global batch
(`rows`): it decodes and augments those images alone, and they come out exactly
as the same rows of the whole batch would.
"""

import dataclasses
import os

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
import tensorflow as tf  # noqa: E402

from msml_jax.data import source  # noqa: E402
from msml_jax.data.augment import Augmentation, Rows, augment  # noqa: E402,F401  (augment: part of this API)

# TensorFlow only feeds data: keep it off any accelerator JAX will use.
tf.config.set_visible_devices([], "GPU")


def _image_source(images):
    """Returns fn(indices) -> float32 [B, h, w, 3] images before resizing, plus their size."""
    if source.is_encoded(images):  # encoded files: decode each, resize to a common size later
        if isinstance(images, source.EncodedImages):
            # Read from the prepared files only the batch's images: memory does not grow with the dataset.
            def gather(indices):
                encoded = tf.numpy_function(
                    lambda i: np.array(images.fetch(i), dtype=object), [indices], tf.string, stateful=False)
                return tf.ensure_shape(encoded, indices.shape)
        else:
            # Not `astype(bytes)`: numpy's fixed-width bytes drop trailing NULs (a BMP's last pixels).
            encoded_table = tf.constant([bytes(b) for b in np.asarray(images)], tf.string)

            def gather(indices):
                return tf.gather(encoded_table, indices)

        def load(indices, size):
            return tf.map_fn(
                lambda s: tf.image.resize(tf.io.decode_image(s, channels=3, expand_animations=False), size),
                gather(indices),
                fn_output_signature=tf.TensorSpec([*size, 3], tf.float32),
            )

        return load
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"split images must be uint8 [N, H, W, 3] or encoded bytes, got {images.dtype} {images.shape}")
    table = tf.constant(images)

    def load(indices, size):
        batch = tf.cast(tf.gather(table, indices), tf.float32)
        return batch if tuple(images.shape[1:3]) == tuple(size) else tf.image.resize(batch, size)

    return load


def _to_uint8(images):
    return tf.cast(tf.clip_by_value(tf.round(images), 0, 255), tf.uint8)


def train_dataset(split, sampler, *, start_step, end_step, image_size, flip=True, shift=0.0, num_threads=None,
                  rows=None, **augmentation):
    """PK batches of global steps [start_step, end_step): decode, resize, augment.

    Args:
      split: the training split.
      sampler: a PKSampler over split["pids"]; its seed also seeds the augmentation.
      image_size: (height, width) of the network input.
      flip, shift, **augmentation: the `augment.Augmentation` fields (zoom, blur_prob,
        blur_sigma, erase_prob, erase_area, erase_aspect); all off but flip by default.
      num_threads: size of the pipeline's private thread pool (None: TF's default, all cores).
      rows: a python slice of the P*K rows of each global batch to produce (this process's
        share); None: all of them.
    Returns:
      tf.data.Dataset of dicts with `images` uint8 [b, h, w, 3], `labels` int32 [b]
      (index of the pid in `sampler.identities`), `step` int64; b = P*K, or the rows' count.
    """
    P, K, seed = sampler.P, sampler.K, sampler.seed
    start, stop, _ = (rows or slice(0, P * K)).indices(P * K)
    part = Rows(start, stop, P * K)
    labels = tf.constant(np.searchsorted(sampler.identities, split["pids"]).astype(np.int32))
    load = _image_source(split["images"])
    size = tuple(image_size)
    augmentation = Augmentation(flip=flip, shift=shift, **augmentation)

    @tf.autograph.experimental.do_not_convert  # plain TF ops: nothing for AutoGraph to convert
    def make_batch(step):
        indices = tf.numpy_function(lambda s: sampler.batch_indices(s)[start:stop], [step], tf.int64, stateful=False)
        indices.set_shape([stop - start])
        images = augment(load(indices, size), tf.stack([tf.constant(seed, tf.int64), step]), augmentation, part)
        return {"images": _to_uint8(images), "labels": tf.gather(labels, indices), "step": step}

    ds = tf.data.Dataset.range(start_step, end_step)
    ds = ds.map(make_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if num_threads:
        options = tf.data.Options()
        options.threading.private_threadpool_size = int(num_threads)
        ds = ds.with_options(options)
    return ds.prefetch(2)


def train_dataset_from_config(split, sampler, data_config, start_step, end_step, rows=None):
    """`train_dataset` with the image size and augmentation fields of `config.data`.

    Reads `image_size`, the `Augmentation` fields present (flip, shift, zoom, blur_prob,
    blur_sigma, erase_prob, erase_area, erase_aspect) and `num_threads` (optional).
    """
    augmentation = dataclasses.asdict(Augmentation.from_config(data_config))
    return train_dataset(
        split, sampler, start_step=start_step, end_step=end_step, image_size=tuple(data_config.image_size),
        num_threads=data_config.get("num_threads"), rows=rows, **augmentation,
    )


def eval_dataset(split, *, batch_size, image_size, rows=None):
    """The split in order, in batches of exactly `batch_size` (one compile).

    The last batch is padded by repeating image 0; `mask` bool [B] marks real images.
    `rows`: a python slice of each batch's rows to produce (this process's share); None: all.
    """
    n = len(split["pids"])
    load = _image_source(split["images"])
    size = tuple(image_size)
    start, stop, _ = (rows or slice(0, batch_size)).indices(batch_size)

    @tf.autograph.experimental.do_not_convert
    def make_batch(b):
        positions = b * batch_size + tf.range(start, stop, dtype=tf.int64)
        mask = positions < n
        indices = tf.where(mask, positions, 0)
        return {"images": _to_uint8(load(indices, size)), "mask": mask}

    num_batches = -(-n // batch_size)
    return tf.data.Dataset.range(num_batches).map(make_batch).prefetch(2)


def image_reader(split):
    """fn(index) -> uint8 [H, W, 3]: one image of `split` at its stored size, decoded on demand (for pictures)."""
    images = split["images"]
    if source.is_encoded(images):
        return lambda i: tf.io.decode_image(source.fetch(images, [i])[0], channels=3, expand_animations=False).numpy()
    return lambda i: np.asarray(images[i])
