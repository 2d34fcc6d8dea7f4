"""Images read by index from prepared ArrayRecord files (msml_jax.data.source): same data, same batches,
no dataset bytes in memory."""

import tracemalloc

import numpy as np
import pytest
import tensorflow_datasets as tfds

from msml_jax.data import source, union
from tests.builder_fakes.testing import build


class _ListSource:
    """A data source over a python list of bytes, shaped like TFDS's (examples with an `image`)."""

    def __init__(self, items):
        self.items, self.reads = items, 0

    def __len__(self):
        return len(self.items)

    def __getitems__(self, indices):
        self.reads += len(indices)
        return [{"image": self.items[i]} for i in indices]


def test_views_and_concatenation_read_the_bytes_numpy_indexing_gives():
    rng = np.random.default_rng(0)
    a = [bytes(rng.integers(0, 256, rng.integers(1, 9)).astype(np.uint8)) + b"\0" for _ in range(23)]
    b = [bytes([i, 0]) for i in range(11)]
    lazy_a, lazy_b = source.RecordImages(_ListSource(a)), source.RecordImages(_ListSource(b))
    ref_a, ref_b = np.array(a, dtype=object), np.array(b, dtype=object)
    mask = rng.random(23) < 0.5
    picks = rng.integers(0, 11, 7)
    lazy = np.concatenate([lazy_a[mask], lazy_b[picks][::-1], ref_a[:3]])  # lazy parts and an in-memory one
    ref = np.concatenate([ref_a[mask], ref_b[picks][::-1], ref_a[:3]])
    assert isinstance(lazy, source.EncodedImages) and len(lazy) == len(ref)
    order = rng.permutation(len(ref))
    assert lazy.fetch(order) == list(ref[order])  # trailing NULs kept
    assert list(lazy) == list(ref) and lazy[-1] == ref[-1]
    assert list(lazy[order[:5]][[4, 0]]) == list(ref[order[:5]][[4, 0]])
    with pytest.raises(TypeError, match="reads images by index"):
        np.asarray(lazy)


@pytest.fixture(scope="module")
def mars_both(tmp_path_factory):
    """The generated MARS release prepared twice: as ArrayRecord (read lazily) and as TFRecord (read whole)."""
    from msml_jax.data import builders
    from msml_jax.data.builders.mars import Mars
    from tests.builder_fakes import mars

    manual = str(tmp_path_factory.mktemp("mars_manual"))
    mars.make(manual)
    lazy = build(Mars, manual, str(tmp_path_factory.mktemp("ar")), file_format="array_record")
    whole = build(Mars, manual, str(tmp_path_factory.mktemp("tfr")))
    assert builders.random_access(lazy) and not builders.random_access(whole)
    out = {s: (builders.read_split(lazy, s), builders.read_split(whole, s)) for s in ("train", "gallery")}
    out["data_dirs"] = (str(lazy.data_dir_root), str(whole.data_dir_root))
    return out


def test_lazy_split_holds_the_same_examples_and_gives_the_same_batches(mars_both):
    from msml_jax.data import pipeline
    from msml_jax.data.sampling import PKSampler

    for lazy, whole in (mars_both["train"], mars_both["gallery"]):
        assert isinstance(lazy["images"], source.RecordImages) and whole["images"].dtype == object
        assert sorted(lazy) == sorted(whole)
        for key in whole:
            got = list(lazy[key]) if key == "images" else lazy[key]
            np.testing.assert_array_equal(np.asarray(got, dtype=whole[key].dtype), whole[key], err_msg=key)
    lazy, whole = mars_both["train"]
    sampler = PKSampler(lazy["pids"], P=2, K=2, seed=3)
    kwargs = dict(start_step=4, end_step=6, image_size=(16, 8), shift=0.1)
    for a, b in zip(pipeline.train_dataset(lazy, sampler, **kwargs).as_numpy_iterator(),
                    pipeline.train_dataset(whole, sampler, **kwargs).as_numpy_iterator(), strict=True):
        for key in b:
            np.testing.assert_array_equal(a[key], b[key])
    lazy, whole = mars_both["gallery"]
    kwargs = dict(batch_size=4, image_size=(16, 8))
    for a, b in zip(pipeline.eval_dataset(lazy, **kwargs).as_numpy_iterator(),
                    pipeline.eval_dataset(whole, **kwargs).as_numpy_iterator(), strict=True):
        np.testing.assert_array_equal(a["images"], b["images"])
    np.testing.assert_array_equal(pipeline.image_reader(lazy)(3), pipeline.image_reader(whole)(3))


def test_union_of_lazy_splits_reads_each_dataset_by_its_own_index(mars_both):
    (train_l, train_w), (gallery_l, gallery_w) = mars_both["train"], mars_both["gallery"]
    lazy, whole = union([train_l, gallery_l]), union([train_w, gallery_w])
    assert isinstance(lazy["images"], source.EncodedImages)
    for key in whole:
        got = list(lazy[key]) if key == "images" else lazy[key]
        np.testing.assert_array_equal(np.asarray(got, dtype=whole[key].dtype), whole[key], err_msg=key)


def test_reading_a_split_does_not_hold_its_encoded_images(tmp_path, monkeypatch):
    """Python's allocations while reading a split stay far below the split's bytes (about 1.5 MB of JPEGs).

    Reading holds one chunk of serialized examples at a time: 16 here (of 300), 4096 by default.
    """
    import tensorflow as tf

    from msml_jax.data import builders

    rng = np.random.default_rng(0)
    sizes = {}
    for i in range(600):  # noisy 96x48 JPEGs of 150 identities, 2 cameras, Market-style names
        name = f"{i // 4:04d}_c{i % 2 + 1}_{i:04d}.jpg"
        data = tf.io.encode_jpeg(rng.integers(0, 256, (96, 48, 3)).astype(np.uint8), quality=95).numpy()
        (tmp_path / name).write_bytes(data)
        sizes[name] = len(data)
    builder = tfds.builder("folder", data_dir=str(tmp_path / "data"), file_format="array_record")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(tmp_path)))
    monkeypatch.setattr(builders, "_METADATA_BATCH", 16)
    builders.read_split(builder, "train")  # warm up TFDS's own caches (dataset info, features)
    tracemalloc.start()
    split = builders.read_split(builder, "train")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    encoded = sum(sizes[name] for name in split["file_name"])
    assert len(split["images"]) == 300 and encoded > 1_000_000
    assert peak < encoded / 10, (peak, encoded)
    eager = builders.read_split(builder, "train", lazy=False)  # the in-memory path does hold them
    assert sum(len(b) for b in eager["images"]) == encoded


def test_load_reads_data_prepared_as_tfrecord_whole_and_array_record_lazily(mars_both):
    from msml_jax.data import builders

    lazy_dir, whole_dir = mars_both["data_dirs"]
    lazy, whole = builders.load("mars", lazy_dir), builders.load("mars", whole_dir)
    assert isinstance(lazy["gallery"]["images"], source.RecordImages)
    assert isinstance(whole["gallery"]["images"], np.ndarray)
    assert list(lazy["gallery"]["images"]) == list(whole["gallery"]["images"]) == list(mars_both["gallery"][1]["images"])
