"""Encoded images read by index from where they are stored, so a split never holds a dataset's bytes.

A split's `images` is either a numpy array (uint8 [N, H, W, 3], or encoded bytes object [N]) held in
memory, or an `EncodedImages`: a lazy sequence of N encoded JPEG/PNG/BMP files whose bytes are read
only for the indices asked (`fetch`). `RecordImages` reads them by random access from the ArrayRecord
files of a prepared TFDS split; `images[mask or indices]` is a view of some of them (a protocol's
query / gallery / trial split) and `np.concatenate` of lazy images (or `concatenate`) is one sequence
mapping a global index to (part, local index) (a union of datasets). Memory is the indices (8 bytes
an image), not the images.

Neither numpy nor this module imports TensorFlow: the pipeline decodes what `fetch` returns.
"""

import numpy as np

# How many images `__iter__` fetches at once.
_CHUNK = 1024


class EncodedImages:
    """N encoded images, read on demand. Subclasses implement `__len__` and `_fetch(int64 [B]) -> [bytes]`."""

    def __len__(self):
        raise NotImplementedError

    def _fetch(self, indices):
        raise NotImplementedError

    def fetch(self, indices):
        """The encoded bytes of images `indices` (int [B], each in [0, N)), as a list in that order."""
        indices = np.asarray(indices, np.int64).reshape(-1)
        n = len(self)
        if indices.size and (indices.min() < -n or indices.max() >= n):
            raise IndexError(f"image index out of range [0, {n}) in {indices}")
        return self._fetch(np.where(indices < 0, indices + n, indices))

    def __getitem__(self, key):
        """key int: that image's bytes; a slice, an int array or a bool mask [N]: a lazy view of those images."""
        if isinstance(key, (int, np.integer)):
            return self.fetch([key])[0]
        if isinstance(key, slice):
            return Subset(self, np.arange(len(self))[key])
        key = np.asarray(key)
        if key.dtype == bool:
            if key.shape != (len(self),):
                raise IndexError(f"boolean mask of shape {key.shape} for {len(self)} images")
            key = np.flatnonzero(key)
        elif key.dtype.kind not in "iu":
            raise IndexError(f"images are indexed by ints, slices or boolean masks, not {key.dtype}")
        return Subset(self, key)

    def __iter__(self):
        for start in range(0, len(self), _CHUNK):
            yield from self.fetch(np.arange(start, min(start + _CHUNK, len(self))))

    def __array__(self, dtype=None, copy=None):
        # np.asarray(images) would read every image: that is what this class is there to avoid.
        raise TypeError(f"{type(self).__name__} reads images by index (fetch); it is not turned into an array")

    def __array_function__(self, func, types, args, kwargs):
        if func is np.concatenate and not kwargs.get("axis"):  # axis=0 or None: one sequence after the other
            return concatenate(args[0])
        return NotImplemented


class RecordImages(EncodedImages):
    """The images of one prepared TFDS split, read by random access (`builder.as_data_source`, ArrayRecord).

    Args:
      data_source: a sequence of examples whose `image` is the encoded bytes (TFDS's data source of the
        split, made with `decoders={"image": tfds.decode.SkipDecoding()}`); supports `__getitems__`.
    """

    def __init__(self, data_source):
        self._source = data_source

    def __len__(self):
        return len(self._source)

    def _fetch(self, indices):
        return [bytes(ex["image"]) for ex in self._source.__getitems__(indices.tolist())]


class Subset(EncodedImages):
    """Images `positions` (int [M]) of `base`, in that order."""

    def __init__(self, base, positions):
        positions = np.asarray(positions, np.int64).reshape(-1)
        if isinstance(base, Subset):  # a view of a view reads the base directly
            base, positions = base.base, base.positions[positions]
        self.base, self.positions = base, positions

    def __len__(self):
        return len(self.positions)

    def _fetch(self, indices):
        return fetch(self.base, self.positions[indices])


class Concatenated(EncodedImages):
    """The images of `parts` (EncodedImages or numpy bytes arrays [N_i]) one after the other."""

    def __init__(self, parts):
        self.parts = list(parts)
        self.offsets = np.concatenate([[0], np.cumsum([len(p) for p in self.parts])]).astype(np.int64)

    def __len__(self):
        return int(self.offsets[-1])

    def _fetch(self, indices):
        part = np.searchsorted(self.offsets, indices, side="right") - 1
        out = [None] * len(indices)
        for p in np.unique(part):
            where = np.flatnonzero(part == p)
            for i, data in zip(where, fetch(self.parts[p], indices[where] - self.offsets[p])):
                out[i] = data
        return out


def is_encoded(images):
    """Whether `images` are encoded files (lazy, or a numpy bytes array) rather than uint8 pixels."""
    return isinstance(images, EncodedImages) or np.asarray(images).dtype.kind in "SO"


def fetch(images, indices):
    """The encoded bytes of `images[indices]` (lazy or a numpy bytes array) as a list."""
    if isinstance(images, EncodedImages):
        return images.fetch(indices)
    # Not `astype(bytes)`: numpy's fixed-width bytes drop trailing NULs (a BMP's last pixels).
    return [bytes(b) for b in np.asarray(images)[np.asarray(indices, np.int64)]]


def concatenate(parts):
    """Encoded images `parts` one after the other: lazy when one of them is, else a numpy object array."""
    parts = list(parts)
    if any(isinstance(p, EncodedImages) for p in parts):
        return Concatenated(parts)
    return np.concatenate([np.asarray(p, dtype=object) for p in parts])
