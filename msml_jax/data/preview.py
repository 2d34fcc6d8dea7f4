"""A PNG of one training batch before and after augmentation: what the network sees.

    python -m msml_jax.data.preview --config configs/synthetic.py --out /tmp/batch.png
    python -m msml_jax.data.preview --config configs/viper.py --config.data.data_dir=~/tfds --out viper.png

The grid has one pair of rows per row of images: the batch of global step `--step` as
decoded and resized (top), and the same images augmented exactly as the trainer would
for that step (bottom), both from `train_dataset` with the run's config and seed.
"""

import os

from absl import app, flags
from ml_collections import config_flags

from msml_jax.errors import UserError, exit_on_user_error

config_flags.DEFINE_config_file("config", None, "Config file (a get_config() module).")
flags.DEFINE_string("out", None, "Path of the PNG to write.")
flags.DEFINE_integer("step", 0, "Global training step whose batch is shown.")
flags.DEFINE_integer("num_images", 16, "How many images of the batch (from its start).")
flags.DEFINE_integer("per_row", 8, "Images per row of the grid.")
flags.DEFINE_integer("scale", 2, "Integer upscaling of every pixel (nearest neighbour).")
flags.mark_flags_as_required(["config", "out"])


def grid(before, after, per_row, scale=1, gap=2):
    """uint8 [H', W', 3] grid: rows of `before` images each followed by the row of their `after` images.

    Args:
      before, after: uint8 [N, h, w, 3].
    """
    import numpy as np

    n, h, w, _ = before.shape
    rows = -(-n // per_row)
    cell_h, cell_w = h + gap, w + gap
    out = np.full((2 * rows * cell_h + gap, per_row * cell_w + gap, 3), 255, np.uint8)
    for i in range(n):
        r, c = divmod(i, per_row)
        for k, images in enumerate((before, after)):
            y, x = (2 * r + k) * cell_h + gap, c * cell_w + gap
            out[y : y + h, x : x + w] = images[i]
    return out.repeat(scale, axis=0).repeat(scale, axis=1)


def preview(config, step=0, num_images=16):
    """(before, after) uint8 [n, h, w, 3] of the first `num_images` images of step `step`'s batch."""
    from msml_jax.data import load_datasets
    from msml_jax.data.pipeline import train_dataset, train_dataset_from_config
    from msml_jax.data.sampling import PKSampler

    train, _ = load_datasets(config.data)
    sampler = PKSampler(train["pids"], config.P, config.K, seed=config.seed)
    plain = train_dataset(train, sampler, start_step=step, end_step=step + 1, image_size=tuple(config.data.image_size),
                          flip=False, shift=0.0)
    augmented = train_dataset_from_config(train, sampler, config.data, step, step + 1)
    before = next(plain.as_numpy_iterator())["images"][:num_images]
    after = next(augmented.as_numpy_iterator())["images"][:num_images]
    return before, after


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    with exit_on_user_error():
        import tensorflow as tf

        out = flags.FLAGS.out
        if os.path.dirname(out) and not os.path.isdir(os.path.dirname(out)):
            raise UserError(f"--out={out}: folder {os.path.dirname(out)} does not exist; create it first")
        before, after = preview(flags.FLAGS.config, flags.FLAGS.step, flags.FLAGS.num_images)
        image = grid(before, after, min(flags.FLAGS.per_row, len(before)), flags.FLAGS.scale)
        tmp = out + ".tmp"
        with open(tmp, "wb") as f:
            f.write(tf.io.encode_png(image).numpy())
        os.replace(tmp, out)  # never a half-written PNG
        print(f"wrote {out}: step {flags.FLAGS.step}, {len(before)} images, top rows as loaded, bottom rows augmented")


if __name__ == "__main__":
    app.run(main)
