"""A PNG of one training batch before and after augmentation: python preview.py --config CONFIG --out batch.png

Rows in pairs: a row of the batch of global step --step as decoded and resized, then the row of the same images
augmented exactly as the trainer would for that step (msml_jax/data/preview.py).
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


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    with exit_on_user_error():
        import tensorflow as tf

        from msml_jax.data.preview import grid, preview

        out = flags.FLAGS.out
        if os.path.dirname(out) and not os.path.isdir(os.path.dirname(out)):
            raise UserError(f"--out={out}: folder {os.path.dirname(out)} does not exist; create it first")
        before, after = preview(flags.FLAGS.config, flags.FLAGS.step, flags.FLAGS.num_images)
        image = grid(before, after, min(flags.FLAGS.per_row, len(before)), flags.FLAGS.scale)
        tmp = out + ".tmp"
        with open(tmp, "wb") as f:
            f.write(tf.io.encode_png(image).numpy())
        os.replace(tmp, out)  # never a half-written PNG
        print(f"wrote {out}: step {flags.FLAGS.step}, {len(before)} images, rows in pairs: as loaded, then augmented")


if __name__ == "__main__":
    app.run(main)
