"""A PNG of one training batch before and after augmentation: what the network sees.

    python preview.py --config configs/synthetic.py --out /tmp/batch.png
    python preview.py --config configs/viper.py --config.data.data_dir=~/tfds --out viper.png

(the command line is the repository's preview.py: flags live in entry points, not in this library module).

The grid has one pair of rows per row of images, alternating: the batch of global step `--step`
as decoded and resized (first row of the pair), then the same images augmented exactly as the
trainer would for that step (second row), both from `train_dataset` with the run's config and seed.
"""

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
    import numpy as np

    from msml_jax.data import device_augment, load_datasets
    from msml_jax.data.pipeline import train_dataset, train_dataset_from_config
    from msml_jax.data.sampling import PKSampler

    train, _ = load_datasets(config.data)
    sampler = PKSampler(train["pids"], config.P, config.K, seed=config.seed)
    plain = train_dataset(train, sampler, start_step=step, end_step=step + 1, image_size=tuple(config.data.image_size),
                          flip=False, shift=0.0)
    augmented = train_dataset_from_config(train, sampler, config.data, step, step + 1)
    before = next(plain.as_numpy_iterator())["images"][:num_images]
    batch = next(augmented.as_numpy_iterator())
    after = batch["images"][:num_images]
    augment = {k: v[:num_images] for k, v in device_augment.draws_in(batch).items()}
    if augment:  # config.data.augment_on_device: the rest is the train step's, done here as it does it
        from msml_jax.training import steps

        after = steps.network_input(after, augment, steps.StepSettings.from_config(config), step)
        after = np.asarray(after).astype(np.uint8)
    return before, after
