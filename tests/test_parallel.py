"""Data parallelism: 8 simulated CPU devices train exactly as one (global-batch mining and BatchNorm), and
embed an evaluation split as one device does.

The 8-device run needs XLA_FLAGS set before JAX starts, so it runs this file as a script in a subprocess:
the script trains N steps of the tiny config on a 1-device mesh and on an 8-device mesh (batch of 8, one row per
device) in the same process and prints both trajectories; the test compares them. The 1-device program is the
reference: no collective, every reduction over the whole batch on one device.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from msml_jax.errors import UserError
from msml_jax import sharding
from tests.conftest import ROOT

NUM_STEPS = 3


def _trajectory(mesh, config, model, batches, gallery):
    import functools

    import jax

    from msml_jax.evaluation.retrieval import embed_split, embed_step, jit_embed_fn
    from msml_jax.models import init_variables
    from msml_jax.training import steps
    from msml_jax.training.trainer import jit_train_step

    variables = init_variables(model, tuple(config.data.image_size), jax.random.PRNGKey(config.seed))
    state = sharding.replicate(steps.create_train_state(model, config, variables), mesh)
    train_step = jit_train_step(config, mesh)
    losses, mined = [], []
    for batch in batches:
        inputs = sharding.global_batch(batch, config.batch_size, mesh)
        shard_rows = {s.data.shape[0] for s in inputs["images"].addressable_shards}
        assert len(inputs["images"].addressable_shards) == mesh.devices.size and shard_rows == {
            config.batch_size // mesh.devices.size
        }
        state, metrics = train_step(state, inputs["images"], inputs["labels"])
        losses.append(float(metrics["loss"]))
        mined.append([float(metrics["hardest_pos"]), float(metrics["hardest_neg"])])
    params = jax.tree_util.tree_leaves(jax.device_get({"params": state.params, "stats": state.batch_stats}))
    # The gallery embedded in padded batches of 16 split over the mesh, against the whole gallery at once on the
    # host's default device with the same (fetched) variables.
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    embedded = embed_split(jit_embed_fn(model.apply, mesh), variables, gallery, batch_size=16,
                           image_size=tuple(config.data.image_size), mesh=mesh)
    whole = jax.jit(functools.partial(embed_step, model.apply))(jax.device_get(variables), gallery["images"])
    return {"loss": losses, "mined": mined, "params": [np.asarray(p, np.float64).ravel().tolist() for p in params],
            "embedding_shape": list(embedded.shape), "embedding_max_diff": float(np.max(np.abs(embedded - whole)))}


def _main():
    import jax

    from msml_jax.data import load_datasets
    from msml_jax.data.pipeline import train_dataset
    from msml_jax.data.sampling import PKSampler
    from msml_jax.models import model_from_config
    from tests.conftest import make_tiny_config

    assert jax.device_count() == 8, jax.devices()
    config = make_tiny_config()
    train, eval_sets = load_datasets(config.data)
    gallery = eval_sets["synthetic"]["gallery"]
    assert len(gallery["pids"]) % 16, "the gallery should end in a padded batch"
    model = model_from_config(config, len(np.unique(train["pids"])))
    sampler = PKSampler(train["pids"], config.P, config.K, config.seed)
    dataset = train_dataset(train, sampler, start_step=0, end_step=NUM_STEPS, image_size=config.data.image_size,
                            flip=config.data.flip, shift=config.data.shift)
    batches = [{"images": b["images"], "labels": b["labels"]} for b in dataset.as_numpy_iterator()]
    one = _trajectory(sharding.make_mesh(jax.devices()[:1]), config, model, batches, gallery)
    eight = _trajectory(sharding.make_mesh(), config, model, batches, gallery)
    one["gallery_size"] = len(gallery["pids"])
    print(json.dumps({"one": one, "eight": eight}))


@pytest.fixture(scope="module")
def trajectories():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    command = [sys.executable, "-m", "tests.test_parallel"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_eight_devices_train_as_one(trajectories):
    one, eight = trajectories["one"], trajectories["eight"]
    # Same mined pairs and losses: the mining saw the global batch (per-device mining over 1 row has no pairs).
    np.testing.assert_allclose(eight["loss"], one["loss"], rtol=1e-5)
    np.testing.assert_allclose(eight["mined"], one["mined"], rtol=1e-5, atol=1e-6)
    # Parameters to float tolerance: sums in another order differ by ~1e-7, and Adam's m / sqrt(v) turns such a
    # difference in a near-zero gradient component into up to a few % of one step (lr = 3e-3): atol 1e-4.
    for a, b in zip(eight["params"], one["params"]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    assert one["loss"][0] != one["loss"][-1]  # it trained


def test_eight_devices_embed_an_evaluation_split_as_one(trajectories):
    for run in trajectories["one"], trajectories["eight"]:
        assert run["embedding_shape"] == [trajectories["one"]["gallery_size"], 16]  # padding dropped, in order
        assert run["embedding_max_diff"] < 1e-5


def test_a_batch_that_does_not_split_over_the_devices_is_refused():
    import jax

    mesh = sharding.make_mesh(jax.devices()[:1])
    sharding.check_batch_size(7, mesh)  # one device takes anything
    fake = type("FakeMesh", (), {"devices": np.empty(8)})()
    with pytest.raises(UserError, match=r"config.batch_size=12 does not split over 8 devices: use a multiple of 8 "
                                        r"\(e.g. 8 or 16"):
        sharding.check_batch_size(12, fake)


if __name__ == "__main__":
    _main()
