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

import numpy as np
import tensorflow as tf  # msml_jax.data (imported first) quiets its C++ start-up chatter

from msml_jax.data import source
from msml_jax.data.augment import Augmentation, Rows, apply, augment, plan  # noqa: F401  (augment: this API's)

# TensorFlow only feeds data: keep it off any accelerator JAX will use.
tf.config.set_visible_devices([], "GPU")


class _Source:
    """How a split's images are read: `fetch(indices)` -> one item per index (an encoded file as a tf.string, or
    uint8 pixels), `to_image(item, size)` -> uint8 [*size, 3], `load_batch(indices, size)` -> uint8 [b, *size,
    3]; `size` is the images' own size when they all share one (None when they do not), so that training
    resamples them only once.

    Encoded images held in memory are copied into one string tensor; a lazy `source.EncodedImages` (a prepared
    ArrayRecord split) is read by index, one Python call per batch for only the images it needs, so memory does
    not grow with the dataset.
    """

    def __init__(self, images):
        if source.is_encoded(images):  # encoded files: decode each, resize to a common size later
            first = source.fetch(images, np.arange(min(16, len(images))))
            if isinstance(images, source.EncodedImages):
                def fetch(indices):
                    data = tf.numpy_function(lambda i: np.array(images.fetch(i), dtype=object), [indices],
                                             tf.string, stateful=False)
                    return tf.ensure_shape(data, indices.shape)

                self._decode = _decode  # checking every file's format would read them all: dispatch per file
            else:
                # Not `astype(bytes)`: numpy's fixed-width bytes drop trailing NULs (a BMP's last pixels).
                table = tf.constant([bytes(b) for b in np.asarray(images)], tf.string)

                def fetch(indices):
                    return tf.gather(table, indices)

                # decode_jpeg when every file is a JPEG: decode_image's format dispatch costs a sixth of a decode.
                jpeg = all(bytes(b[:2]) == b"\xff\xd8" for b in np.asarray(images))
                self._decode = tf.io.decode_jpeg if jpeg else _decode
            # The size of the first few files stands for all when they agree (one camera's crops); files of
            # another size are resized to it on decoding.
            sizes = {tuple(_decode(data).shape[:2]) for data in first}
            self.size = tuple(int(n) for n in sizes.pop()) if len(sizes) == 1 else None
            self.encoded = True
        else:
            images = np.asarray(images)
            if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
                raise ValueError(f"split images must be uint8 [N, H, W, 3] or encoded bytes, got {images.dtype} "
                                 f"{images.shape}")
            table = tf.constant(images)

            def fetch(indices):
                return tf.gather(table, indices)

            self.size, self.encoded = tuple(images.shape[1:3]), False
        self.fetch = fetch

    def to_image(self, item, size):
        return _resized(self._decode(item, channels=3) if self.encoded else item, size)

    def load_batch(self, indices, size):
        items = self.fetch(indices)
        if not self.encoded:
            return items if tuple(self.size) == tuple(size) else _to_uint8(tf.image.resize(items, size))
        return tf.map_fn(lambda item: self.to_image(item, size), items,
                         fn_output_signature=tf.TensorSpec([*size, 3], tf.uint8))


def _decode(data, channels=3):
    return tf.io.decode_image(data, channels=channels, expand_animations=False)


def _resized(image, size):
    """uint8 [*size, 3]: `image` (uint8 [h, w, 3]) bilinearly resized to `size` unless it has that size."""
    if image.shape[:2] == tuple(size):
        return image
    same = tf.reduce_all(tf.shape(image)[:2] == tf.constant(size))
    image = tf.cond(same, lambda: image, lambda: _to_uint8(tf.image.resize(image, size)))
    return tf.ensure_shape(image, [*size, 3])


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
        blur_sigma, erase_prob, erase_area, erase_aspect, augment_on_device); all off but flip by default.
      num_threads: size of the pipeline's private thread pool (None: TF's default, all cores).
      rows: a python slice of the P*K rows of each global batch to produce (this process's
        share); None: all of them.
    Returns:
      tf.data.Dataset of dicts with `images` uint8 [b, h, w, 3], `labels` int32 [b]
      (index of the pid in `sampler.identities`), `step` int64; b = P*K, or the rows' count. With
      `augment_on_device`, also the draws the train step applies (`device_augment.KEYS`, those in use):
      `blur_sigma` float32 [b], `erase_box` float32 [b, 4].
    """
    P, K, seed = sampler.P, sampler.K, sampler.seed
    start, stop, _ = (rows or slice(0, P * K)).indices(P * K)
    part = Rows(start, stop, P * K)
    labels = tf.constant(np.searchsorted(sampler.identities, split["pids"]).astype(np.int32))
    images = _Source(split["images"])
    size = tuple(image_size)
    source_size = images.size or size  # images of several sizes: each resized to the output size first
    augmentation = Augmentation(flip=flip, shift=shift, **augmentation)

    @tf.autograph.experimental.do_not_convert  # plain TF ops: nothing for AutoGraph to convert
    def batch_rows(step):
        # Everything random is drawn here for the whole batch, a few numbers per image (`augment.plan`);
        # the images then go one by one, as in plain tf.data, so the parallel map spreads them over the
        # cores, and each costs only its decode, crop, blur and resize.
        indices = tf.numpy_function(lambda s: sampler.batch_indices(s)[start:stop], [step], tf.int64, stateful=False)
        indices.set_shape([stop - start])
        seed_step = tf.stack([tf.constant(seed, tf.int64), step])
        p = plan(seed_step, augmentation, part, source_size, size)
        # The batch's files (or pixels) are fetched at once: one read of a lazy split per batch.
        return tf.fill([stop - start], step), images.fetch(indices), indices, p

    @tf.autograph.experimental.do_not_convert
    def make_image(step, item, index, p):
        seed_step = tf.stack([tf.constant(seed, tf.int64), step])
        image = apply(images.to_image(item, source_size), p, size, augmentation, seed_step)
        # Bilinear resampling, blur and erasing noise keep values in [0, 255]: +0.5 and truncation round.
        return tf.cast(image + 0.5, tf.uint8), index, step, _device_draws(p, augmentation)

    @tf.autograph.experimental.do_not_convert
    def make_batch(images, indices, steps, draws):
        return {"images": images, "labels": tf.gather(labels, indices), "step": steps[0], **draws}

    ds = tf.data.Dataset.range(start_step, end_step).map(batch_rows).unbatch()
    ds = ds.map(make_image, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(stop - start).map(make_batch)
    options = _options()
    if num_threads:
        options.threading.private_threadpool_size = int(num_threads)
    return ds.with_options(options).prefetch(2)


def _device_draws(p, augmentation):
    """The draws the train step applies with `augment_on_device` (`device_augment.KEYS`), of one image's plan `p`:
    its blur std in output pixels (0 = none) and its erased box (zero height = not erased); {} otherwise."""
    a = augmentation
    if not a.augment_on_device:
        return {}
    draws = {}
    if a.blurs:
        draws["blur_sigma"] = p.sigma
    if a.erases:
        draws["erase_box"] = p.erase_box * tf.cast(p.erase, tf.float32)
    return draws


def train_dataset_from_config(split, sampler, data_config, start_step, end_step, rows=None):
    """`train_dataset` with the image size and augmentation fields of `config.data`.

    Reads `image_size`, the `Augmentation` fields present (flip, shift, zoom, blur_prob,
    blur_sigma, erase_prob, erase_area, erase_aspect, augment_on_device) and `num_threads` (optional).
    """
    augmentation = dataclasses.asdict(Augmentation.from_config(data_config))
    return train_dataset(
        split, sampler, start_step=start_step, end_step=end_step, image_size=tuple(data_config.image_size),
        num_threads=data_config.get("num_threads"), rows=rows, **augmentation,
    )


def eval_dataset(split, *, batch_size, image_size, rows=None):
    """The split in order, in batches of exactly `batch_size` (one compile).

    The last batch is padded by repeating image 0: the first N mod batch_size rows of it are real.
    `rows`: a python slice of each batch's rows to produce (this process's share); None: all.
    """
    n = len(split["pids"])
    load_batch = _Source(split["images"]).load_batch
    size = tuple(image_size)
    start, stop, _ = (rows or slice(0, batch_size)).indices(batch_size)

    @tf.autograph.experimental.do_not_convert
    def make_batch(b):
        positions = b * batch_size + tf.range(start, stop, dtype=tf.int64)
        indices = tf.where(positions < n, positions, 0)
        return {"images": load_batch(indices, size)}

    num_batches = -(-n // batch_size)
    return tf.data.Dataset.range(num_batches).map(make_batch).with_options(_options()).prefetch(2)


def _options():
    """The pipelines' tf.data options: autotuning off.

    Autotuning runs a model thread that an iterator's destructor joins; it sleeps between optimizations for a
    period that doubles up to 60 s and, on TF 2.21, was seen not to wake when the iterator went: a finished
    demo run (`python train.py --config configs/synthetic.py ...`) then sat 35 s after its final table, in 4 of 5
    runs under a heap setting that made it likelier, 1 of 4 without. The map's parallelism stays every thread
    of the pool (AUTOTUNE without autotuning: TF's default, the pool's size) and its rate the same: 18,800-20,000
    images/s at 64x32 on 2 cores either way, 20 times what the demo's train step takes. The cost: on 2 cores
    shared with XLA the demo trains at 1,005-1,009 images/s against 1,040-1,052 with autotuning (whose one of two
    runs then waited 35 s at its end).
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return options


def image_reader(split):
    """fn(index) -> uint8 [H, W, 3]: one image of `split` at its stored size, decoded on demand (for pictures)."""
    images = split["images"]
    if source.is_encoded(images):
        return lambda i: tf.io.decode_image(source.fetch(images, [i])[0], channels=3, expand_animations=False).numpy()
    return lambda i: np.asarray(images[i])
