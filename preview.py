"""A PNG of one training batch before and after augmentation: python preview.py --config CONFIG --out batch.png

Rows in pairs: a row of the batch of global step --step as decoded and resized, then the row of the same images
augmented exactly as the trainer would for that step (msml_jax/data/preview.py).
"""

from absl import flags
from ml_collections import config_flags

from msml_jax import cli, outputs
from msml_jax.config import validate_config

config_flags.DEFINE_config_file("config", None, "Config file (a get_config() module).")
flags.DEFINE_string("out", None, "Path of the PNG to write.")
flags.DEFINE_integer("step", 0, "Global training step whose batch is shown.", lower_bound=0, upper_bound=10**9)
flags.DEFINE_integer("num_images", 16, "How many images of the batch (from its start).", lower_bound=1,
                     upper_bound=4096)
flags.DEFINE_integer("per_row", 8, "Images per row of the grid.", lower_bound=1, upper_bound=4096)
flags.DEFINE_integer("scale", 2, "Integer upscaling of every pixel (nearest neighbour).", lower_bound=1,
                     upper_bound=32)
flags.mark_flags_as_required(["config", "out"])


def main(argv):
    """Runs behind the gate (msml_jax.cli): flags parsed, the config file and overrides checked."""
    FLAGS = flags.FLAGS
    validate_config(FLAGS.config)
    out = FLAGS.out
    outputs.check_file(out, "--out", ".png")
    import tensorflow as tf

    from msml_jax.data.preview import grid, preview

    before, after = preview(FLAGS.config, FLAGS.step, FLAGS.num_images)
    image = grid(before, after, min(FLAGS.per_row, len(before)), FLAGS.scale)
    with outputs.atomic_file(out) as tmp:  # never a half-written PNG
        with open(tmp, "wb") as f:
            f.write(tf.io.encode_png(image).numpy())
    print(f"wrote {out}: step {FLAGS.step}, {len(before)} images, rows in pairs: as loaded, then augmented")


if __name__ == "__main__":
    cli.run(main)
