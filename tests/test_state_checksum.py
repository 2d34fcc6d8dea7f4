"""The checkpoint's state checksum (checkpoint.state_checksum): computed on the devices, checked here on the host.

Each leaf's two sums are compared with a numpy brute force of the equations in checkpoint._word_sums, written
again here (numpy's uint32 arrays wrap mod 2^32 as XLA's do). The checksum must change under damage at random
positions (one flipped bit, two swapped values, a zeroed block, two swapped leaves) and must not change with the
sharding: a subprocess with 8 CPU devices places the same values in several shardings. Restoring must verify
both the checksum and the host sha256 (`state_sha256`) of checkpoints written before the checksum existed.
"""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from flax import struct

from msml_jax import checkpoint
from msml_jax.errors import UserError
from tests.conftest import ROOT, make_tiny_config

M32 = 0xFFFFFFFF


def _mix(x):
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(0x85EBCA6B)
    x = x ^ (x >> np.uint32(13))
    x = x * np.uint32(0xC2B2AE35)
    return x ^ (x >> np.uint32(16))


def _numpy_words(value):
    """The uint32 words of a numpy array as the docstring of checkpoint._words defines them, flat in C order."""
    value = np.ascontiguousarray(value)
    if value.dtype == np.bool_:
        return value.astype(np.uint32).ravel()
    if value.dtype.itemsize < 4:
        return value.view(f"u{value.dtype.itemsize}").astype(np.uint32).ravel()
    return value.view("<u4").ravel()  # 8-byte elements: low word first


def _numpy_sums(value):
    """(s1, s2): s1 = sum (k_i | 1) x_i, s2 = sum mix(x_i ^ k_i), k_i = mix(i * 0x9E3779B1 + 0x7F4A7C15), mod 2^32."""
    x = _numpy_words(value)
    i = (np.arange(x.size, dtype=np.uint64) & M32).astype(np.uint32)
    k = _mix(i * np.uint32(0x9E3779B1) + np.uint32(0x7F4A7C15))
    s1 = int(np.sum((k | np.uint32(1)) * x, dtype=np.uint64)) & M32
    s2 = int(np.sum(_mix(x ^ k), dtype=np.uint64)) & M32
    return s1, s2


def _device_sums(value):
    return tuple(int(s) for s in jax.device_get(checkpoint._jitted_word_sums(jnp.asarray(value))))


def _sample_leaves(rng):
    return {
        "scalar": np.float32(rng.standard_normal()),
        "vector": rng.standard_normal(37).astype(np.float32),
        "kernel": rng.standard_normal((3, 3, 4, 5)).astype(np.float32),
        "bf16": rng.standard_normal((6, 7)).astype(ml_dtypes.bfloat16),
        "f16": rng.standard_normal((5, 3)).astype(np.float16),
        "int8": rng.integers(-128, 128, (9,), dtype=np.int8),
        "uint8": rng.integers(0, 256, (4, 4), dtype=np.uint8),
        "int32": rng.integers(-2**31, 2**31, (11,), dtype=np.int32),
        "bool": rng.random((3, 5)) < 0.5,
        "ones": np.ones((8, 4), np.float32),  # BatchNorm-like constants: many equal words
        "zeros": np.zeros((4, 8), np.float32),
    }


def test_device_sums_equal_the_numpy_brute_force():
    rng = np.random.default_rng(0)
    for name, value in _sample_leaves(rng).items():
        assert _device_sums(value) == _numpy_sums(value), name


def test_64_bit_and_python_leaves_are_read_as_their_little_endian_words():
    leaves = {"i64": np.array([[1, -2, 3**30], [5, 6, 7]], np.int64), "f64": np.array([1.5, -2.25e300]), "step": 7}
    host = checkpoint.state_checksum(leaves)  # 64-bit mode off: 8-byte numpy leaves viewed as uint32 on the host
    with jax.enable_x64(True):  # on the device: bitcast to [..., 2]
        device = checkpoint.state_checksum({k: jnp.asarray(v) for k, v in leaves.items()})
    assert host == device


def test_a_typed_prng_key_is_checksummed_through_its_key_data():
    key = jax.random.key(3)
    assert _device_sums(key) == _numpy_sums(np.asarray(jax.random.key_data(key)))


def _flip_bit(value, rng):
    value = np.array(value)
    flat = value.reshape(-1).view(np.uint8)
    position = rng.integers(flat.size)
    flat[position] ^= np.uint8(1 << int(rng.integers(8 if value.dtype != np.bool_ else 1)))
    return value


def test_one_flipped_bit_anywhere_changes_the_checksum():
    rng = np.random.default_rng(1)
    leaves = _sample_leaves(rng)
    reference = checkpoint.state_checksum(leaves)
    for name in leaves:
        for _ in range(10):
            damaged = dict(leaves, **{name: _flip_bit(leaves[name], rng)})
            assert checkpoint.state_checksum(damaged) != reference, name


def test_swapped_values_a_zeroed_block_and_swapped_leaves_change_the_checksum():
    rng = np.random.default_rng(2)
    leaves = _sample_leaves(rng)
    leaves["signs"] = np.array([0.5, -0.5, 1.0, -1.0, 0.0, -0.0], np.float32)  # swaps change only the sign bit
    leaves["twin"] = leaves["ones"] * 2  # the same shape and dtype as "ones"
    reference = checkpoint.state_checksum(leaves)
    for name, value in leaves.items():
        flat = np.array(value).reshape(-1)
        for _ in range(10 if flat.size > 1 else 0):
            i, j = rng.choice(flat.size, 2, replace=False)
            if flat[i].tobytes() == flat[j].tobytes():
                continue
            swapped = flat.copy()
            swapped[[i, j]] = swapped[[j, i]]
            assert checkpoint.state_checksum(dict(leaves, **{name: swapped.reshape(np.shape(value))})) != reference
        zeroed = flat.copy()
        zeroed[flat.size // 2:] = 0  # what a truncated array file reads back as
        if zeroed.tobytes() != flat.tobytes():
            assert checkpoint.state_checksum(dict(leaves, **{name: zeroed.reshape(np.shape(value))})) != reference
    twins = dict(leaves, ones=leaves["twin"], twin=leaves["ones"])
    assert checkpoint.state_checksum(twins) != reference
    renamed = {("other" if k == "vector" else k): v for k, v in leaves.items()}
    assert checkpoint.state_checksum(renamed) != reference


def _sharding_tree():
    """The sample leaves and one more that divides into 8 rows and 4 columns."""
    return dict(_sample_leaves(np.random.default_rng(3)),
                big=np.random.default_rng(4).standard_normal((16, 24)).astype(np.float32))


def _sharded_checksums():
    """Run in a subprocess with 8 CPU devices: the checksum of the same values placed in several shardings."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    assert jax.device_count() == 8
    leaves = _sharding_tree()
    flat = Mesh(np.asarray(jax.devices()), ("a",))
    grid = Mesh(np.asarray(jax.devices()).reshape(2, 4), ("a", "b"))

    def place(sharding_of):
        return {k: jax.device_put(v, sharding_of(np.ndim(v), np.shape(v))) for k, v in leaves.items()}

    def split(mesh, spec):  # `spec` where the leaf's shape divides evenly, else replicated
        def sharding_of(ndim, shape):
            sizes = [mesh.shape[a] if a else 1 for a in spec]
            if ndim >= len(spec) and all(shape[d] % n == 0 for d, n in enumerate(sizes)):
                return NamedSharding(mesh, P(*spec))
            return NamedSharding(mesh, P())
        return sharding_of

    placements = {
        "numpy": leaves,
        "one device": place(lambda ndim, shape: jax.sharding.SingleDeviceSharding(jax.devices()[5])),
        "replicated over 8": place(split(flat, ())),
        "rows over 8": place(split(flat, ("a",))),
        "columns over 4": place(split(grid, (None, "b"))),
        "2 x 4 blocks": place(split(grid, ("a", "b"))),
    }
    sharded = [k for k, v in placements["2 x 4 blocks"].items() if not v.sharding.is_fully_replicated]
    assert {"big", "uint8", "ones", "zeros"} <= set(sharded), sharded
    print(json.dumps({name: checkpoint.state_checksum(tree)["sha256"] for name, tree in placements.items()}))


def test_the_checksum_is_the_same_in_any_sharding():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-m", "tests.test_state_checksum"], capture_output=True, text=True,
                            cwd=ROOT, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    checksums = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(set(checksums.values())) == 1, checksums
    # and the same as here, in a process with one device: the device count does not enter either
    assert checksums["one device"] == checkpoint.state_checksum(_sharding_tree())["sha256"]


# ------------------------------------------------------------------ what restore_step verifies, both formats


@struct.dataclass
class _State:
    step: jax.Array
    params: dict


def _saved(tmp_path):
    """(manager, the state it saved at step 2, that step's position/metadata path)."""
    rng = np.random.default_rng(5)
    state = _State(step=jnp.asarray(2, jnp.int32), params={"w": jnp.asarray(rng.standard_normal((4, 3)), jnp.float32),
                                                            "b": jnp.zeros(3, jnp.bfloat16)})
    manager = checkpoint.checkpoint_manager(str(tmp_path))
    checkpoint.save(manager, state, make_tiny_config(), position={"seed": 0, "step": 2, "epoch": 0})
    manager.wait_until_finished()
    return manager, state, os.path.join(str(tmp_path), "checkpoints", "2", "position", "metadata")


def _rewrite_position(path, **changes):
    """Replaces fields of a saved position (None deletes one) and recomputes its own sha256, as `save` does."""
    with open(path) as f:
        position = json.load(f)
    position.pop("sha256")
    for key, value in changes.items():
        if value is None:
            position.pop(key, None)
        else:
            position[key] = value
    position["sha256"] = checkpoint._json_digest(position)
    with open(path, "w") as f:
        json.dump(position, f)


def test_restore_verifies_the_recorded_checksum(tmp_path):
    manager, state, position = _saved(tmp_path)
    with open(position) as f:
        assert json.load(f)["state_checksum"] == checkpoint.state_checksum(state)
    restored, _ = checkpoint.restore_step(manager, 2)  # numpy leaves (eval.py's read)
    np.testing.assert_array_equal(restored["params"]["w"], np.asarray(state.params["w"]))
    checkpoint.restore_step(manager, 2, state)  # into the state's structure (the trainer's)
    other = state.replace(params=dict(state.params, w=state.params["w"] + 1))
    _rewrite_position(position, state_checksum=checkpoint.state_checksum(other))
    for target in (None, state):
        with pytest.raises(checkpoint.DamagedCheckpoint, match="do not match the checksum"):
            checkpoint.restore_step(manager, 2, target)
    _rewrite_position(position, state_checksum={"version": checkpoint.CHECKSUM_VERSION + 1, "sha256": "0"})
    with pytest.raises(UserError, match="records a state checksum this version of msml_jax does not know"):
        checkpoint.restore_step(manager, 2)
    manager.close()


def test_checkpoints_of_earlier_versions_are_verified_by_their_host_sha256(tmp_path):
    manager, state, position = _saved(tmp_path)
    _rewrite_position(position, state_checksum=None, state_sha256=checkpoint._legacy_state_sha256(state))
    restored, _ = checkpoint.restore_step(manager, 2)
    np.testing.assert_array_equal(restored["params"]["w"], np.asarray(state.params["w"]))
    other = state.replace(params=dict(state.params, w=state.params["w"] + 1))
    _rewrite_position(position, state_sha256=checkpoint._legacy_state_sha256(other))
    with pytest.raises(checkpoint.DamagedCheckpoint, match="do not match the sha256"):
        checkpoint.restore_step(manager, 2, state)
    manager.close()


if __name__ == "__main__":
    _sharded_checksums()
