"""config.data.augment_on_device: the blur and the erasing done in the train step (msml_jax.data.device_augment)
instead of the input pipeline, against brute-force numpy and against the host path they replace."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from msml_jax.data import device_augment
from msml_jax.training import steps
from tests.conftest import make_tiny_config


def _reference_blur(image, sigma, radius):
    """A 2-D convolution by loops over the image mirrored about its edge pixels, kernel g(a) g(b) with g the
    Gaussian of std `sigma` sampled at -r..r and normalised (sigma 0: the identity); float64."""
    taps = np.arange(-radius, radius + 1)
    g = np.exp(-0.5 * (taps / sigma) ** 2) if sigma > 0 else (taps == 0).astype(float)
    kernel = np.outer(g / g.sum(), g / g.sum())
    padded = np.pad(image.astype(np.float64), [(radius, radius), (radius, radius), (0, 0)], mode="reflect")
    out = np.zeros(image.shape)
    for i in range(image.shape[0]):
        for j in range(image.shape[1]):
            out[i, j] = np.einsum("ab,abc->c", kernel, padded[i : i + 2 * radius + 1, j : j + 2 * radius + 1])
    return out


def test_blur_is_each_images_reflected_2d_gaussian():
    images = np.random.default_rng(0).uniform(0, 255, (3, 9, 6, 3)).astype(np.float32)
    sigmas = np.array([0.7, 0.0, 1.0], np.float32)
    out = np.asarray(device_augment.blur(jnp.asarray(images), jnp.asarray(sigmas), 2))
    for image, sigma, got in zip(images, sigmas, out):
        np.testing.assert_allclose(got, _reference_blur(image, sigma, 2), atol=1e-3)
    np.testing.assert_array_equal(out[1], images[1])  # std 0: untouched, bit for bit


def test_erase_replaces_the_box_with_noise_per_row_and_leaves_the_rest():
    images = np.full((4, 10, 8, 3), 7.0, np.float32)
    # (top, left, height, width); zero height: not erased. Pixel (i, j) is inside when its centre is.
    boxes = np.array([[2.0, 1.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0], [0.2, 6.6, 9.8, 1.0], [2.0, 1.0, 3.0, 4.0]],
                     np.float32)
    key = jax.random.PRNGKey(3)
    out = np.asarray(device_augment.erase(jnp.asarray(images), jnp.asarray(boxes), key))
    counts = []
    for b, (top, left, height, width) in enumerate(boxes):
        inside = np.zeros((10, 8), bool)
        for i in range(10):
            for j in range(8):
                inside[i, j] = top <= i + 0.5 < top + height and left <= j + 0.5 < left + width
        assert np.all(out[b][~inside] == 7.0)
        assert np.all((out[b][inside] >= 0) & (out[b][inside] <= 255)) and np.all(out[b][inside] != 7.0)
        counts.append(inside.sum())
    # 3 rows x 4 columns; none; column 7 (centre 7.5 in [6.6, 7.6)) of every row (centres 0.5 .. 9.5 in [0.2, 10)).
    assert counts == [12, 0, 10, 12]
    assert not np.array_equal(out[0], out[3])  # same box, rows of their own noise
    # A row's noise depends on its row only: the first two rows alone are erased the same.
    np.testing.assert_array_equal(np.asarray(device_augment.erase(jnp.asarray(images[:1]), jnp.asarray(boxes[:1]),
                                                                   key)), out[:1])


def _pipeline_batch(split, **augmentation):
    from msml_jax.data.pipeline import train_dataset
    from msml_jax.data.sampling import PKSampler

    sampler = PKSampler(split["pids"], P=4, K=4, seed=5)
    ds = train_dataset(split, sampler, start_step=3, end_step=4, image_size=(64, 32), flip=True, shift=0.1,
                       zoom=0.1, **augmentation)
    return next(ds.as_numpy_iterator())


def test_the_pipeline_leaves_blur_and_erasing_to_the_step_with_their_draws(tiny_splits):
    train = tiny_splits["train"]
    blur = dict(blur_prob=0.5, blur_sigma=2.0)
    host = _pipeline_batch(train, **blur)
    device = _pipeline_batch(train, augment_on_device=True, erase_prob=0.5, **blur)
    plain = _pipeline_batch(train)
    assert set(device) == {"images", "labels", "step", "blur_sigma", "erase_box"} and set(host) == set(plain)
    # The images are those of the pipeline without blur and erasing, the other draws unchanged.
    np.testing.assert_array_equal(device["images"], plain["images"])
    np.testing.assert_array_equal(device["labels"], host["labels"])
    sigma, boxes = device["blur_sigma"], device["erase_box"]
    blurred, erased = sigma > 0, boxes[:, 2] > 0
    assert 2 <= blurred.sum() <= 14 and np.all((sigma[blurred] >= 0.1) & (sigma[blurred] <= 2.0))
    assert 2 <= erased.sum() <= 14 and np.all(boxes[~erased] == 0)
    assert np.all(boxes[erased, 0] + boxes[erased, 2] <= 64 + 1e-4) and np.all(boxes[erased, 1] + boxes[erased, 3] <= 32 + 1e-4)
    # The host blurs the same images as the step does (the same draws, the std in output pixels): the host runs it
    # on the 32x16 source crop with its std halved, the step on the 64x32 input, so they agree up to resampling
    # (stds of 1 output pixel or less differ most: sampled at whole source pixels, the host's is the weaker).
    assert np.array_equal(host["images"][~blurred], plain["images"][~blurred])
    settings = steps.StepSettings.from_config(_device_config(erase_prob=0.0, blur_sigma=2.0))
    on_step = np.asarray(steps.network_input(device["images"], {"blur_sigma": sigma}, settings, 3))
    gap = np.abs(on_step - host["images"].astype(np.float32))[blurred].mean()
    unblurred = np.abs(plain["images"].astype(np.float32) - host["images"])[blurred].mean()
    assert gap < 0.5 * unblurred, (gap, unblurred)


def _device_config(**data):
    config = make_tiny_config()
    config.data.update({"augment_on_device": True, "blur_prob": 0.5, "blur_sigma": 1.0, **data})
    return config


def _flat_apply(variables, images, train, mutable, rngs):
    """A linear model of the flattened images: embeddings [B, 4], logits [B, 4]; no BatchNorm."""
    x = images.reshape(images.shape[0], -1).astype(jnp.float32) / 255.0
    embeddings = x @ variables["params"]["w"]
    return {"embeddings": embeddings, "logits": embeddings @ variables["params"]["v"]}, {"batch_stats": {}}


def test_the_step_trains_on_the_blurred_images():
    # The step given uint8 images and their stds equals the step given the images blurred by loops, rounded.
    config = _device_config()
    settings = steps.StepSettings.from_config(config)
    assert settings.blur_radius == math.ceil(2 * config.data.blur_sigma)
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (8, 6, 5, 3)).astype(np.uint8)
    sigmas = np.array([0.0, 0.4, 1.0, 0.0, 0.7, 0.2, 0.0, 0.9], np.float32)
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    expected = np.stack([np.floor(_reference_blur(x, s, settings.blur_radius) + 0.5) for x, s in zip(images, sigmas)])
    params = {"w": jnp.asarray(rng.normal(size=(90, 4)), jnp.float32), "v": jnp.asarray(rng.normal(size=(4, 4)),
                                                                                             jnp.float32)}
    state = steps.TrainState.create(apply_fn=_flat_apply, params=params, batch_stats={}, tx=optax.sgd(0.1))
    step = jax.jit(functools.partial(steps.train_step, settings=settings))
    on_device, metrics = step(state, jnp.asarray(images), jnp.asarray(labels), {"blur_sigma": jnp.asarray(sigmas)})
    reference, expected_metrics = step(state, jnp.asarray(expected, jnp.float32), jnp.asarray(labels))
    assert abs(float(metrics["loss"]) - float(expected_metrics["loss"])) < 1e-4
    for got, want in zip(jax.tree_util.tree_leaves(on_device.params), jax.tree_util.tree_leaves(reference.params)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)
    unblurred, _ = step(state, jnp.asarray(images), jnp.asarray(labels))  # the stds matter
    assert not np.allclose(np.asarray(unblurred.params["w"]), np.asarray(on_device.params["w"]), atol=1e-5)


def test_a_run_saved_before_the_field_existed_resumes_unchanged():
    # A config written before config.data.augment_on_device existed lacks it: absent means its default.
    from msml_jax.checkpoint import config_differences

    config = make_tiny_config()
    saved = config.to_dict()
    del saved["data"]["augment_on_device"]
    assert config_differences(saved, config) == []
    config.data.augment_on_device = True
    assert config_differences(saved, config) == [("data.augment_on_device", "<absent>", True)]


def test_a_run_with_blur_and_erasing_on_the_device_applies_them_and_resumes_exactly(tmp_path, monkeypatch):
    # The loop hands the batch's draws to the step (the step traces the device augmentation), and a run killed
    # after a checkpoint and resumed ends bitwise equal to one trained straight through: the draws come from the
    # pipeline's (seed, step) and the erasing noise from the step's own (seed, step, row).
    import json
    import os

    import orbax.checkpoint as ocp

    from msml_jax import checkpoint
    from msml_jax.training import loop

    config = _device_config(erase_prob=0.5)
    config.update(dict(num_train_steps=4, checkpoint_every_steps=2, log_every_steps=1, lr_boundaries=(3,)))
    traced = []
    real = steps.network_input
    monkeypatch.setattr(steps, "network_input", lambda *args: traced.append(sorted(args[1])) or real(*args))

    def killed_at_3(trainer, start_step):
        for batch in loop._default_batches(trainer, start_step):
            if int(batch["step"]) == 3:
                raise RuntimeError("killed")
            yield batch

    whole, parts = str(tmp_path / "whole"), str(tmp_path / "parts")
    loop.train_and_evaluate(config, whole, evaluate=False, tensorboard=False)
    assert traced and traced[0] == ["blur_sigma", "erase_box"]
    with pytest.raises(RuntimeError, match="killed"):
        loop.train_and_evaluate(config, parts, batches=killed_at_3, evaluate=False, tensorboard=False)
    assert checkpoint.checkpoint_manager(parts, create=False).latest_step() == 2
    loop.train_and_evaluate(config, parts, evaluate=False, tensorboard=False)

    def records(workdir):
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
            return [{k: v for k, v in json.loads(line).items() if k != "images_per_sec"} for line in f]

    def final_params(workdir):
        manager = checkpoint.checkpoint_manager(workdir, create=False)
        state = manager.restore(4, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
        manager.close()
        return jax.tree_util.tree_leaves(state["params"])

    assert records(parts) == records(whole)
    for a, b in zip(final_params(parts), final_params(whole), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_the_option_on_a_cpu_is_warned_about_in_one_line(capsys):
    # Legal but costly here: the step's blur on a CPU costs several times the pipeline's (docs/benchmarks.md).
    import types

    from msml_jax.training import loop

    trainer = types.SimpleNamespace(config=_device_config(), sampler=types.SimpleNamespace(counts=np.array([4, 4])))
    loop._warn_if_likely_wrong(trainer)
    lines = [line for line in capsys.readouterr().err.splitlines() if "augment_on_device" in line]
    assert jax.default_backend() == "cpu" and len(lines) == 1
    assert "--config.data.augment_on_device=False" in lines[0]
    trainer.config.data.blur_prob = 0.0  # erasing alone: nothing costly moves
    loop._warn_if_likely_wrong(trainer)
    assert "augment_on_device" not in capsys.readouterr().err
