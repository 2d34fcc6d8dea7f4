"""Shared pieces of the re-id TFDS builders: finding a release in the manual dir, reading its images, the features.

A release is found in `manual_dir` either extracted (a folder holding the builder's `RELEASE_MARKER`, up to two
levels down) or as the official archive (.zip / .tar[.gz|.bz2], extracted into a temporary folder removed when
the build ends). Builders implement `_release_splits(root)` over the on-disk release root.

Every example carries `image` (uint8 [H, W, 3]), `pid` (int64 identity; 0 = distractor where the dataset has
them), `camid` (int64, 0-based camera) and `file_name` (the image's path in the release), plus the builder's
`EXTRA_FEATURES`. A build that fails removes what it created in `data_dir` (tfds already writes into an
`.incomplete` folder and renames it on success; the parent folders and `downloads/` are removed here).
"""

import contextlib
import functools
import logging as std_logging
import os
import shutil
import tarfile
import tempfile
import zipfile

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging

from msml_jax.data.registry import Dataset, register_dataset
from msml_jax.errors import UserError

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def person_features(encoding_format="jpeg", **extras):
    """The features dict shared by the re-id builders: image, pid, camid, file_name, plus `extras`."""
    return tfds.features.FeaturesDict(
        {
            "image": tfds.features.Image(shape=(None, None, 3), encoding_format=encoding_format),
            "pid": np.int64,
            "camid": np.int64,
            "file_name": tfds.features.Text(),
            **extras,
        }
    )


def list_images(folder):
    """Sorted paths of the image files directly in `folder` (other files such as Thumbs.db are ignored)."""
    return sorted(os.path.join(folder, n) for n in os.listdir(folder)
                  if n.lower().endswith(IMAGE_SUFFIXES) and os.path.isfile(os.path.join(folder, n)))


def file_name_error(path, expected):
    """The UserError for a release file whose name does not parse."""
    return UserError(f"file name {path} does not parse: expected {expected}; rename or remove that file")


def load_mat(path, key, how_to_fix):
    """Variable `key` of the MATLAB (v5 / v7) file `path` as a numpy array.

    A damaged file or a missing variable is a UserError naming the file and ending with `how_to_fix`.
    """
    import scipy.io

    try:
        value = scipy.io.loadmat(path).get(key)
    except Exception as e:  # scipy raises several types for a damaged file
        raise UserError(f"cannot read {path} ({e}): {how_to_fix}") from e
    if value is None:
        raise UserError(f"{path} has no variable {key!r}: {how_to_fix}")
    return np.asarray(value)


class CorruptImageError(UserError):
    """An image in the release that does not decode."""


def decode_image(data, name):
    """Decodes JPEG/PNG/BMP bytes to uint8 [H, W, 3]; CorruptImageError naming `name` when unreadable/truncated."""
    try:
        image = tf.io.decode_image(data, channels=3, expand_animations=False).numpy()
    except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as e:
        raise CorruptImageError(f"unreadable or truncated image {name}: {e.message.strip().splitlines()[-1]}") from e
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise CorruptImageError(f"unreadable or truncated image {name}: it has no pixels")
    return image


def rgb_if_cmyk(data, name):
    """`data`, or a PNG of its RGB pixels when it is a CMYK JPEG (logged, naming the file).

    TensorFlow's decoder, used per batch by the input pipeline, turns CMYK JPEGs into RGB with colours off by up to
    a quarter of the range (measured: 57 / 255 against the source pixels, Pillow: 1), so the builder stores such an
    image converted by Pillow instead.
    """
    if not data.startswith(b"\xff\xd8"):
        return data
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.mode != "CMYK":
                return data
            out = io.BytesIO()
            image.convert("RGB").save(out, "PNG")
    except (OSError, ValueError):  # not decodable by Pillow either: decode_image names it
        return data
    logging.warning("%s is a CMYK JPEG: stored as an RGB PNG converted by Pillow", name)
    return out.getvalue()


def _archive_root(names, marker):
    """The shortest member prefix `p` such that `p + marker` is a member (file or folder), else None."""
    best = None
    for name in names:
        parts = name.rstrip("/").split("/")
        for end in range(len(parts), 0, -1):  # the member and each folder above it
            candidate = "/".join(parts[:end])
            if candidate == marker or candidate.endswith("/" + marker):
                prefix = candidate[: len(candidate) - len(marker)]
                if best is None or len(prefix) < len(best):
                    best = prefix
    return best


def find_release(manual_dir, marker, archives, instructions, tmp_parent=None):
    """(root folder holding `marker`, temporary folder to remove or None) for the release in `manual_dir`.

    Looks for an extracted copy in `manual_dir` and its sub-folders two levels down, then in the archives in
    `manual_dir` (names in `archives` first, then any other .zip/.tar), extracting the first that holds the
    marker into a new temporary folder under `tmp_parent`. Raises UserError with the manual-download
    `instructions` when nothing holds the marker.
    """
    marker = marker.strip("/")
    if manual_dir is None or not os.path.isdir(manual_dir):
        raise UserError(f"manual directory {manual_dir} does not exist.\n{instructions}")
    level = [manual_dir]
    for depth in range(3):
        for folder in level:
            if os.path.exists(os.path.join(folder, marker)):
                return folder, None
        if depth < 2:  # (not listing the last level: in MARS's pid folders that is a million frames)
            level = [entry.path for f in level for entry in sorted(os.scandir(f), key=lambda e: e.name)
                     if entry.is_dir() and not entry.name.startswith(".")]
    files = sorted(os.listdir(manual_dir))
    candidates = [n for n in archives if n in files] + [
        n for n in files if n.lower().endswith(ARCHIVE_SUFFIXES) and n not in archives]
    unreadable = []
    for name in candidates:
        path = os.path.join(manual_dir, name)
        if zipfile.is_zipfile(path):
            opener, names = zipfile.ZipFile, lambda a: a.namelist()
        elif tarfile.is_tarfile(path):
            opener, names = tarfile.open, lambda a: a.getnames()
        else:
            unreadable.append(path)  # e.g. a download cut short: a zip without its central directory
            continue
        with opener(path) as archive:
            root = _archive_root(names(archive), marker)
            if root is None:
                continue
            if tmp_parent is not None:
                os.makedirs(tmp_parent, exist_ok=True)
            tmp_dir = tempfile.mkdtemp(prefix="msml_extract_", dir=tmp_parent)
            logging.info("extracting %s into %s", path, tmp_dir)
            try:
                if isinstance(archive, zipfile.ZipFile):
                    archive.extractall(tmp_dir)
                else:
                    archive.extractall(tmp_dir, filter="data")
            except BaseException as e:
                shutil.rmtree(tmp_dir, ignore_errors=True)
                if isinstance(e, (OSError, zipfile.BadZipFile, tarfile.TarError, EOFError)):
                    raise UserError(f"cannot extract {path} ({e}): download the archive again") from e
                raise
        return os.path.join(tmp_dir, root), tmp_dir
    if unreadable:
        raise UserError(f"found no {marker!r} in {manual_dir}, and {', '.join(unreadable)} is not a readable zip or tar "
                        f"(a truncated or damaged download?): download it again.\n{instructions}")
    raise UserError(f"found no {marker!r} in {manual_dir}, neither extracted nor in an archive there.\n{instructions}")


class ReidBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base of the re-id builders: manual-dir lookup, image checks, clean failure.

    Subclasses set RELEASE_MARKER (a relative path that identifies the release root), ARCHIVE_NAMES (official
    archive names), MANUAL_DOWNLOAD_INSTRUCTIONS, EXTRA_FEATURES, IMAGE_ENCODING, HOMEPAGE, CITATION, VERSION,
    and implement `_release_splits(root) -> {split name: iterator of (key, example)}`.

    Args (besides tfds's): skip_corrupt: skip (and list in `self.skipped`) the images that do not decode instead
    of raising UserError naming the first one (`config.data.skip_corrupt`).
    """

    VERSION = tfds.core.Version("1.0.0")
    # How the dataset is evaluated (msml_jax.data.registry.Dataset): its protocols, each with the evaluation
    # protocol that ranks it (the first is the default), and the number of random splits of its protocol.
    PROTOCOLS = {"image": "image"}
    TRIALS = 1
    RELEASE_MARKER = None
    ARCHIVE_NAMES = ()
    EXTRA_FEATURES = {}
    IMAGE_ENCODING = "jpeg"
    HOMEPAGE = None
    CITATION = None

    def __init_subclass__(cls, skip_registration=False, **kwargs):
        super().__init_subclass__(skip_registration=skip_registration, **kwargs)
        if not skip_registration:  # a builder class is a dataset: declared once, here
            register_dataset(Dataset(cls.name, load=functools.partial(_load_prepared, cls.name),
                                     protocols=dict(cls.PROTOCOLS), trials=int(cls.TRIALS)))

    def __init__(self, *, skip_corrupt=False, **kwargs):
        self.skip_corrupt = bool(skip_corrupt)
        self.skipped = []  # the images skipped as corrupt
        self._tmp_dirs = []
        self._manual_dir_asked = None  # set by download_and_prepare
        super().__init__(**kwargs)

    def _info(self):
        return self.dataset_info_from_configs(
            features=person_features(self.IMAGE_ENCODING, **self.EXTRA_FEATURES),
            supervised_keys=None,
            homepage=self.HOMEPAGE,
            citation=self.CITATION,
        )

    def manual_dir(self, dl_manager):
        try:
            manual_dir = dl_manager.manual_dir
        except AssertionError:  # tfds's own check of a missing or empty folder; we say what to put there
            # The folder asked for (download_and_prepare's download_config), else TFDS's default place.
            manual_dir = self._manual_dir_asked or os.path.join(os.fspath(self.data_dir_root), "downloads", "manual")
        return os.fspath(manual_dir) if manual_dir else None

    def find_release(self, dl_manager, marker=None, archives=None):
        """The on-disk root of the release part holding `marker` (default RELEASE_MARKER)."""
        root, tmp_dir = find_release(
            self.manual_dir(dl_manager), marker or self.RELEASE_MARKER,
            self.ARCHIVE_NAMES if archives is None else archives, self.MANUAL_DOWNLOAD_INSTRUCTIONS,
            tmp_parent=os.path.join(os.fspath(self.data_dir_root), "downloads", "extracted"))
        if tmp_dir is not None:
            self._tmp_dirs.append(tmp_dir)
        return root

    def missing_release_error(self, root):
        return UserError(f"{root} is not a complete {self.name} release (no {self.RELEASE_MARKER}).\n"
                         f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(examples)
                for split, examples in self._release_splits(self.find_release(dl_manager)).items()}

    def _generate_examples(self, examples):
        """(key, example) pairs of one split, from the iterator `_release_splits` made for it."""
        yield from examples

    def parse_folder(self, root, folder, pattern, expected):
        """[(path, re.Match)] of the images in `folder`, names matched by `pattern`.

        A missing or empty folder is an incomplete release; a name that does not match raises the
        file-name error naming it and `expected` (an example of a good name).
        """
        paths = list_images(folder) if os.path.isdir(folder) else []
        if not paths:
            raise self.missing_release_error(root)
        parsed = []
        for path in paths:
            match = pattern.match(os.path.basename(path))
            if match is None:
                raise file_name_error(path, expected)
            parsed.append((path, match))
        return parsed

    def read_bytes(self, path):
        """The file's bytes as the decoder should see them (a release with quirks overrides this)."""
        with open(path, "rb") as f:
            return f.read()

    def read_checked(self, path, name=None):
        """(bytes, uint8 [H, W, 3]) of the image at `path`, or None when it is corrupt and skip_corrupt is set."""
        name = name or path
        try:
            data = self.read_bytes(path)
        except OSError as e:
            raise UserError(f"cannot read image {name} ({e}): re-extract the release") from e
        try:
            data = rgb_if_cmyk(data, name)
            return data, decode_image(data, name)
        except CorruptImageError as e:
            if not self.skip_corrupt:
                raise UserError(f"{e}; replace the file or set config.data.skip_corrupt=True to skip it") from e
            if name not in self.skipped:  # a file read by two splits is one skipped file
                logging.warning("skipping %s", e)
                self.skipped.append(name)
            return None

    def examples(self, items, root):
        """(key, example) for `items` of (image path, pid, camid, extras dict); corrupt images per skip_corrupt."""
        for path, pid, camid, extras in items:
            rel = os.path.relpath(path, root)
            checked = self.read_checked(path, rel)
            if checked is None:
                continue
            yield rel, {"image": checked[0], "pid": pid, "camid": camid, "file_name": rel, **extras}

    def download_and_prepare(self, *args, download_config=None, **kwargs):
        self._manual_dir_asked = download_config.manual_dir if download_config is not None else None
        if download_config is not None:
            kwargs["download_config"] = download_config
        root = os.fspath(self.data_dir_root)
        # The folders a build may create: <name>/[<config>/]<version> and downloads/.
        candidates = [os.path.join(root, self.name), os.fspath(self.data_dir), os.path.join(root, "downloads")]
        if self.builder_config is not None:
            candidates.append(os.path.join(root, self.name, self.builder_config.name))
        created = [p for p in candidates if not os.path.exists(p)]
        try:
            with quiet_tfds():
                return super().download_and_prepare(*args, **kwargs)
        except BaseException:
            # tfds removes its .incomplete folder; also drop the folders this build created, so a failed build
            # leaves data_dir as it found it.
            for path in created:
                shutil.rmtree(path, ignore_errors=True)
            raise
        finally:
            for tmp_dir in self._tmp_dirs:
                shutil.rmtree(tmp_dir, ignore_errors=True)
            self._tmp_dirs = []

    # TFDS prints "Downloading and preparing dataset Unknown size (download: Unknown size, ...)" before a build and
    # "... downloaded and prepared to ..." after it: nothing is downloaded here, and the sizes are unknown.
    def _log_download_bytes(self):
        source = f" from {self._manual_dir_asked}" if self._manual_dir_asked else ""
        print(f"preparing {self.name}{source} into {self.data_dir} (once: later runs read it there)", flush=True)

    def _log_download_done(self):
        print(f"prepared {self.name} in {self.data_dir}", flush=True)


class _QuietTfds(std_logging.Filter):
    """Lets through TFDS's errors only; the builders' own warnings (a skipped corrupt image) still show."""

    def filter(self, record):
        return record.levelno >= std_logging.ERROR or "tensorflow_datasets" not in record.pathname


@contextlib.contextmanager
def quiet_tfds():
    """TFDS's INFO and WARNING log lines dropped inside (a first build's "Variant folder ... has no
    dataset_info.json", "Generating dataset ..."): the builders say in one line what they prepare, and where."""
    quiet = _QuietTfds()
    logging.get_absl_logger().addFilter(quiet)
    try:
        yield
    finally:
        logging.get_absl_logger().removeFilter(quiet)


def _load_prepared(name, data_config, protocol):
    """{"train", "query", "gallery"} of builder `name` as a run's `config.data` asks (`builders.load`)."""
    from msml_jax.data import builders

    return builders.load(
        name,
        data_config.get("data_dir") or "~/tensorflow_datasets",
        manual_dir=data_config.get("manual_dir") or None,
        skip_corrupt=bool(data_config.get("skip_corrupt", False)),
        trial=int(data_config.get("trial", 0)),
        protocol=protocol,
    )


def default_file_format():
    """The format datasets are prepared in: ArrayRecord (read by index, `builders.read_split`) when the
    `array_record` package is installed, else TFRecord (read whole into memory)."""
    import importlib.util

    return "array_record" if importlib.util.find_spec("array_record") is not None else "tfrecord"


def prepare(name, data_dir, manual_dir, skip_corrupt=False, config=None, file_format=None):
    """Builds dataset `name` (a registered builder) from `manual_dir` into `data_dir`; returns the builder.

    file_format: "array_record" or "tfrecord" (None: `default_file_format()`).
    Raises UserError for a missing or broken release; a failed build leaves `data_dir` as it was.
    """
    if name not in tfds.list_builders():
        raise UserError(f"unknown dataset {name!r}: registered builders are {sorted(tfds.list_builders())}")
    kwargs = {"config": config} if config else {}
    builder = tfds.builder(name, data_dir=data_dir, skip_corrupt=skip_corrupt,
                           file_format=file_format or default_file_format(), **kwargs)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    return builder
