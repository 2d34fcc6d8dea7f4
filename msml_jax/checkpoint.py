"""Orbax checkpoints of a run: the train state, the input position and the config it was trained with.

The one module that opens, writes, looks up and reads them: the trainer (`save`, `restore_latest_intact`), eval.py
and the Embedder (`find_checkpoint`, `restore_checkpoint`, `check_model_fields`). It sits below training and
evaluation and imports neither.

Atomicity: Orbax writes each step into `<step>.orbax-checkpoint-tmp-<time>` and renames it to `<step>` only
once every item is written (and, on several hosts, every process has finished), so a process killed during a
write leaves a tmp directory that `latest_step()` never returns; the next run's manager deletes it.

Exact resume: the training batch of step s is a pure function of (config.seed, s) (see data.pipeline), so the
state and the step are the whole input position; `position` records (seed, step, epoch) for people and checks.

Damaged files (a disk error, a truncated copy): `restore_latest_intact` tries the steps newest first and moves a
damaged one aside as `<step>.damaged-<time>` (never deleted; not a step name, so Orbax ignores it). What is
detected: unreadable JSON, metadata or array files (Orbax / tensorstore raise), and, because Orbax keeps no checksum
of the values, changed values of the state and any changed byte of the config or the position, through what `save`
writes into the position item: `state_checksum` (see that function: two position-weighted uint32 sums per leaf,
computed on the devices, hashed with the leaves' paths, dtypes and shapes), `config_sha256`, and `sha256` of the
position itself. One changed 32-bit word in a leaf always changes the checksum; damage to several words escapes only
if both sums happen to come out unchanged: for random damage a chance of the order of 2^-64, and 2^-32 where the
first sum cannot see it (an even number of flipped sign bits). It is no defence against deliberate tampering.
Measured on a tiny run (tests/test_damaged_checkpoint.py prints the table), each file truncated to half or with one
bit flipped: detected in config/metadata, position/metadata, state/_METADATA, _sharding, manifest.ocdbt, the
top-level OCDBT data file and the array-data files restoring reads (a flipped bit in the per-process data file
holding the arrays reads back without error: the checksum alone catches it); not detected, and harmless (the
restored state matches its checksum), in _CHECKPOINT_METADATA, commit_success.txt, array_metadatas/ (a flip) and the
per-process OCDBT files the merged database no longer reads. Checkpoints written before the checksum existed carry
`state_sha256` (a host sha256 of the replicated leaves' bytes) and are verified with it; those written before any
digest are checked for readability only. A checkpoint of another model (config.model.*, or other array shapes) is a
UserError, never taken for damage.
"""

import hashlib
import json
import logging
import os
import sys
import time
import traceback

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from flax import serialization

from msml_jax import errors
from msml_jax.errors import UserError

# Fields a restarted run may change without --config.allow_config_change: they decide how long to train, how
# often to log / save / evaluate and how to batch evaluation, never what a step computes. Lengthening a run
# with num_train_steps continues the same schedule (the learning-rate boundaries are in steps).
CHANGEABLE_FIELDS = frozenset(
    {
        "num_train_steps",
        "log_every_steps",
        "checkpoint_every_steps",
        "eval_every_steps",
        "max_checkpoints",
        "eval_batch_size",
        "allow_config_change",
    }
)

# Fields that decide the model's parameters or the function it computes: a checkpoint restored under other
# values would not load, or would silently evaluate another model. (pretrained, dropout, eval_embedding and dtype
# may differ at evaluation.)
MODEL_FIELDS = frozenset(
    f"model.{name}" for name in ("name", "embed_dim", "last_stride", "keras_style", "preprocessing", "bnneck")
)


# Fields an evaluation config must share with the checkpoint's: those deciding the parameters and the input size
# the network was trained at.
EVAL_MODEL_FIELDS = MODEL_FIELDS | {"data.image_size"}


def _manager(directory, **options):
    """The CheckpointManager over `directory` with `options` (ocp.CheckpointManagerOptions fields).

    With `cleanup_tmp_directories`, orbax deletes the tmp directories of interrupted writes in a thread it waits
    for only at the first save (not in `close`): a process ending before that (a user mistake found after the
    managers are made, a finished run restarted) printed the thread's traceback at exit ("cannot schedule new
    futures after interpreter shutdown"). The clean-up is waited for here (a directory listing).
    """
    manager = ocp.CheckpointManager(os.path.abspath(directory), options=ocp.CheckpointManagerOptions(**options))
    await_cleanup = getattr(manager, "_maybe_await_cleanup_tmp_directory", None)  # private (orbax 0.12)
    if await_cleanup is not None:
        await_cleanup()
    return manager


def checkpoint_manager(workdir, max_to_keep=3, create=True):
    """An asynchronous CheckpointManager over `workdir/checkpoints` keeping the last `max_to_keep` steps.

    The trainer's manager (`create`) deletes tmp directories of interrupted writes; a reader's leaves them.
    """
    return _manager(os.path.join(workdir, "checkpoints"), max_to_keep=max_to_keep, create=create,
                    cleanup_tmp_directories=create, enable_async_checkpointing=True)


def best_checkpoint_manager(workdir):
    """A manager over `workdir/best` keeping the single checkpoint of highest `mAP` (mean over evaluation sets)."""
    return _manager(os.path.join(workdir, "best"), max_to_keep=1, best_fn=lambda metrics: metrics["mAP"],
                    best_mode="max", cleanup_tmp_directories=True)


def _reader(directory):
    """A manager that only reads `directory` (it creates nothing and leaves tmp directories alone)."""
    return _manager(directory, create=False, cleanup_tmp_directories=False)


def _json_digest(obj):
    """sha256 of `obj` as JSON (sorted keys; tuples hash as the lists they are after saving)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _legacy_state_sha256(state):
    """The `state_sha256` of checkpoints written before `state_checksum` existed (kept to verify those).

    sha256 over every leaf's path, dtype, shape and bytes, read on the host; leaves not replicated on this
    process are skipped. A replicated leaf spanning several processes is read from this process's own copy.
    """
    digest = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(serialization.to_state_dict(state))[0]:
        if isinstance(leaf, jax.Array):
            if not leaf.sharding.is_fully_replicated:
                continue
            leaf = leaf.addressable_data(0)
        value = np.asarray(jax.device_get(leaf))
        digest.update(f"{jax.tree_util.keystr(path)}|{value.dtype}|{value.shape}|".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()


# Version of the `state_checksum` equations below; a new version needs a new number (and old ones kept to verify).
CHECKSUM_VERSION = 1


def _mix32(x):
    """murmur3's 32-bit finalizer: a bijection of uint32 in which every input bit changes about half the output."""
    x = x ^ (x >> 16)
    x = x * np.uint32(0x85EBCA6B)
    x = x ^ (x >> 13)
    x = x * np.uint32(0xC2B2AE35)
    return x ^ (x >> 16)


def _words(leaf):
    """The leaf's values as uint32 words: 4-byte elements bitcast, 1- and 2-byte ones zero-extended (each element
    one word), 8-byte ones bitcast to [..., 2] (low word first: the little-endian bytes), bool as 0 / 1."""
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        leaf = jax.random.key_data(leaf)
    if leaf.dtype == jnp.bool_:
        return leaf.astype(jnp.uint32)
    size = leaf.dtype.itemsize
    if size < 4:
        return jax.lax.bitcast_convert_type(leaf, jnp.dtype(f"uint{8 * size}")).astype(jnp.uint32)
    return jax.lax.bitcast_convert_type(leaf, jnp.uint32)


def _word_sums(leaf):
    """(s1, s2), uint32 scalars, of one leaf: with x_i its words (`_words`) in C order, i their flat index (mod 2^32),
    k_i = mix(i * 0x9E3779B1 + 0x7F4A7C15) and mix = `_mix32`, all in uint32 wraparound arithmetic:

        s1 = sum_i (k_i | 1) * x_i        s2 = sum_i mix(x_i ^ k_i)

    Sums mod 2^32 are exact in any order, so the result does not depend on how the leaf is sharded. s1 changes
    whenever exactly one word changes (an odd weight is invertible mod 2^32); s2 is the nonlinear half, against
    several changed words cancelling in s1 (swapped values, zeroed blocks).
    """
    x = _words(leaf)
    index = jnp.zeros(x.shape, jnp.uint32)
    stride = 1
    for dim in reversed(range(x.ndim)):  # the flat index from per-axis iotas: no reshape of a sharded array
        index = index + jax.lax.broadcasted_iota(jnp.uint32, x.shape, dim) * np.uint32(stride % 2**32)
        stride *= x.shape[dim]
    k = _mix32(index * np.uint32(0x9E3779B1) + np.uint32(0x7F4A7C15))
    # One variadic reduction: both sums in one pass over the words (two jnp.sum calls took several times as long
    # on the CPU).
    zero = np.uint32(0)
    return jax.lax.reduce(((k | np.uint32(1)) * x, _mix32(x ^ k)), (zero, zero),
                          lambda a, b: (a[0] + b[0], a[1] + b[1]), tuple(range(x.ndim)))


_jitted_word_sums = jax.jit(_word_sums)


def state_checksum(state):
    """{"version", "sha256"}: sha256 over every leaf's path, dtype and shape and its two `_word_sums`.

    The sums are computed where the leaves live, sharded leaves included (a small jitted program per leaf shape,
    dtype and sharding, compiled once: 1.3-2.2 s for a ResNet-50 state's 30 shapes on 2 CPU cores), and only 8 bytes
    per leaf are fetched. Every process computes the same value, and so does any other sharding or device count
    of the same values (a resume on other devices). Leaves that are not jax.Arrays (the numpy state eval.py
    restores, a Python int) are checksummed on the default device; 8-byte ones are first viewed as uint32 words on
    the host, as `_words` reads them, when JAX's 64-bit mode is off.
    """
    described, leaves = [], []
    for path, leaf in jax.tree_util.tree_flatten_with_path(serialization.to_state_dict(state))[0]:
        if not isinstance(leaf, jax.Array):
            leaf = np.asarray(leaf)
        described.append(f"{jax.tree_util.keystr(path)}|{leaf.dtype}|{leaf.shape}|")
        if isinstance(leaf, np.ndarray) and leaf.dtype.itemsize == 8 and not jax.config.jax_enable_x64:
            leaf = np.ascontiguousarray(leaf).reshape(*leaf.shape, 1).view(np.uint32)  # [..., 2], as _words
        leaves.append(leaf)
    # Per leaf rather than one program over the whole state: compiling a ResNet-50 state's 598 leaves' sums as one
    # program took 4 s, its 30 shapes alone 1.5 s. All are dispatched before the first result is fetched; a result
    # spanning several processes (a scalar: replicated) is read from this process's own copy.
    sums = [_jitted_word_sums(leaf) for leaf in leaves]
    sums = jax.device_get([[s if s.is_fully_addressable else s.addressable_data(0) for s in pair] for pair in sums])
    digest = hashlib.sha256(f"msml state checksum v{CHECKSUM_VERSION}|".encode())
    for text, (s1, s2) in zip(described, sums):
        digest.update(f"{text}{int(s1):08x}{int(s2):08x}|".encode())
    return {"version": CHECKSUM_VERSION, "sha256": digest.hexdigest()}


def save(manager, state, config, position=None, metrics=None, force=False):
    """Starts saving the train state, input position and config at the state's step (asynchronously).

    The position item also records the digests that let `restore_latest_intact` detect changed bytes. A Ctrl-C
    while the write is being started takes effect once it is (`errors.ctrl_c_deferred`), so that
    `manager.wait_until_finished()` then commits it.
    """
    step = int(state.step)
    config_dict = config.to_dict()
    items = dict(
        state=ocp.args.StandardSave(serialization.to_state_dict(state)),
        config=ocp.args.JsonSave(config_dict),
    )
    if position is not None:
        position = dict(position, state_checksum=state_checksum(state), config_sha256=_json_digest(config_dict))
        position["sha256"] = _json_digest(position)
        items["position"] = ocp.args.JsonSave(position)
    with errors.ctrl_c_deferred():  # a Ctrl-C inside would strand orbax's background threads: see there
        return manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=force)


def _flatten(tree, prefix=""):
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def config_differences(saved, config):
    """Dotted field names whose values differ between a saved config dict and `config`, with both values.

    Returns:
      list of (field, saved value, current value); a field absent on one side shows as "<absent>".
    """
    from msml_jax.config import all_fields

    # JSON round trip: tuples and lists compare equal, as they are after saving.
    saved = _flatten(json.loads(json.dumps(saved)))
    current = _flatten(json.loads(json.dumps(config.to_dict())))
    absent = "<absent>"
    fields = all_fields()

    def meaning(values, field):
        """The value a field has: an optional field absent means its default (a field added to the config
        files after a run was saved is no change to it)."""
        if field in values:
            return values[field]
        known = fields.get(field)
        return absent if known is None or known.required else json.loads(json.dumps(known.default))

    return [
        (field, saved.get(field, absent), current.get(field, absent))
        for field in sorted(set(saved) | set(current))
        if meaning(saved, field) != meaning(current, field)
    ]


def _listing(differences):
    return "; ".join(f"config.{field}: {old!r} in the checkpoint, {new!r} now" for field, old, new in differences)


def model_field_changes(saved, config, fields=MODEL_FIELDS):
    """The (field, saved value, current value) of `config_differences` whose field is one of `fields`."""
    return [d for d in config_differences(saved, config) if d[0] in fields]


def check_config_unchanged(saved, config, checkpoint_dir):
    """UserError naming every changed field unless it is changeable or config.allow_config_change is set."""
    if config.get("allow_config_change", False):
        return
    changed = [d for d in config_differences(saved, config) if d[0] not in CHANGEABLE_FIELDS]
    if changed:
        raise UserError(
            f"the config differs from the one the checkpoint in {checkpoint_dir} was trained with ({_listing(changed)}): "
            f"restore those values, use a new --workdir, or pass --config.allow_config_change=True to continue anyway"
        )


def check_model_fields(saved, config, where):
    """UserError naming each field deciding the network (`EVAL_MODEL_FIELDS`) in which `config` differs from
    `saved`, the config dict of the checkpoint at `where`."""
    changed = model_field_changes(saved, config, EVAL_MODEL_FIELDS)
    if changed:
        raise UserError(f"the config differs from the one the checkpoint in {where} was trained with in fields that "
                        f"decide the network ({_listing(changed)}): drop those overrides (the checkpoint's config is "
                        f"used when --config is not given)")


class DamagedCheckpoint(Exception):
    """A checkpoint step whose files cannot be read back as written (the message says which and how)."""


def _leaf_shapes(tree):
    """{"a/b/c": shape} of a tree of arrays or Orbax ArrayMetadata."""
    def name(path):
        return "/".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path)

    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {name(path): tuple(getattr(leaf, "shape", np.shape(leaf))) for path, leaf in leaves}


def _model_mismatch(step_dir, target, saved_config, config):
    """A UserError when the checkpoint holds another model than `config` builds, else None.

    Orbax reports a mismatch as a page-long tree dump, so it is looked for first: in the model fields of the
    saved config (its digest was checked), then in the array shapes the state metadata lists. Metadata that
    cannot be read, or that lacks the model's parameters, is damage (DamagedCheckpoint).
    """
    fields = model_field_changes(saved_config, config)
    if config.get("allow_config_change", False):  # the user vouches for the new values; shapes must still match
        fields = []
    if fields:
        cause = _listing(fields)
    else:
        try:
            # The handler's own metadata read: a Checkpointer's also looks for (and warns about) step metadata.
            metadata = ocp.PyTreeCheckpointHandler().metadata(epath.Path(step_dir) / "state")
            saved = _leaf_shapes(getattr(metadata, "tree", metadata))
        except Exception as e:  # noqa: BLE001  (any failure to read the metadata is damage)
            _mute_abandoned_reads()
            raise DamagedCheckpoint(f"its state metadata cannot be read ({_short(e)})") from None
        wanted = _leaf_shapes(target)
        if not saved:  # what a damaged _METADATA, _sharding or OCDBT manifest reads as
            raise DamagedCheckpoint("its state metadata lists no arrays (state/_METADATA or the OCDBT manifest)")
        if set(saved) != set(wanted) and not config.get("allow_config_change", False):
            # The model fields agree with the saved (digest-checked) config, so other array names are damage.
            raise DamagedCheckpoint(f"its state metadata lists {len(saved)} arrays, not the model's {len(wanted)}")
        differing = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
        if not differing:
            return None
        key = differing[0]
        cause = (f"{len(differing)} array(s) differ, e.g. {key}: {saved.get(key, 'absent')} in the checkpoint, "
                 f"{wanted.get(key, 'absent')} now; same backbone, embedding and training datasets?")
    return UserError(
        f"the checkpoint {step_dir} holds another model than the config describes ({cause}): pass the config it "
        f"was trained with (saved in {os.path.join(step_dir, 'config', 'metadata')})"
    )


def _is_abandoned_read_noise(text):
    return "orbax" in text or "tensorstore" in text.lower() or "Event loop is closed" in text


class _DropAbandonedReadNoise(logging.Filter):
    def filter(self, record):
        text = record.getMessage()
        if record.exc_info:
            text += "".join(traceback.format_exception(*record.exc_info))
        return not _is_abandoned_read_noise(text)


def _mute_abandoned_reads():
    """Drops the page-long tracebacks Orbax's abandoned reads of a damaged file print later, at any time.

    They arrive through asyncio's logger ("Task exception was never retrieved") and sys.unraisablehook (when the
    coroutines are collected, or when tensorstore calls back into a closed event loop). Installed once, on the
    first damaged file; everything else still goes to the previous hook.
    """
    previous = sys.unraisablehook
    if getattr(previous, "msml_drops_abandoned_reads", False):
        return

    def hook(unraisable):
        text = "".join(traceback.format_exception(unraisable.exc_type, unraisable.exc_value, unraisable.exc_traceback))
        if not _is_abandoned_read_noise(text + repr(unraisable.object)):
            previous(unraisable)

    hook.msml_drops_abandoned_reads = True
    sys.unraisablehook = hook
    logging.getLogger("asyncio").addFilter(_DropAbandonedReadNoise())


def _short(e, limit=240):
    """`Type: message` of the root cause of `e` (Orbax wraps tensorstore's precise error), cut to `limit`."""
    while e.__cause__ is not None or (e.__context__ is not None and not e.__suppress_context__):
        e = e.__cause__ or e.__context__
    text = " ".join(f"{type(e).__name__}: {e}".split())
    return text if len(text) <= limit else text[:limit] + "..."


def _read_json(step_dir, item):
    path = os.path.join(step_dir, item, "metadata")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise DamagedCheckpoint(f"{os.path.join(item, 'metadata')} cannot be read ({_short(e)})") from e


def _json_items(step_dir):
    """(saved config dict, position dict) of a step directory, checked against their digests."""
    saved_config = _read_json(step_dir, "config")
    has_position = os.path.isdir(os.path.join(step_dir, "position"))
    position = _read_json(step_dir, "position") if has_position else {}
    if not isinstance(position, dict) or not isinstance(saved_config, dict):
        raise DamagedCheckpoint("its config or position item is not a JSON object")
    if "sha256" in position and _json_digest({k: v for k, v in position.items() if k != "sha256"}) != position["sha256"]:
        raise DamagedCheckpoint("position/metadata does not match its sha256")
    if "config_sha256" in position and _json_digest(saved_config) != position["config_sha256"]:
        raise DamagedCheckpoint("config/metadata does not match the sha256 recorded in position/metadata")
    return saved_config, position


def restore_step(manager, step, state=None, config=None):
    """(state, saved config dict) of one step; DamagedCheckpoint on damage, UserError on another model.

    `state` None: the saved state dict of numpy arrays, read without a target structure (eval.py); otherwise
    restored into the structure and shardings of `state`, after checking it is the model `config` describes.
    """
    step_dir = os.path.join(str(manager.directory), str(step))
    saved_config, position = _json_items(step_dir)
    target = None if state is None else serialization.to_state_dict(state)
    if config is not None and state is not None:
        mismatch = _model_mismatch(step_dir, target, saved_config, config)
        if mismatch is not None:
            raise mismatch
    try:
        restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))["state"]
        if state is not None:
            restored = serialization.from_state_dict(state, restored)
    except Exception as e:  # noqa: BLE001  (tensorstore, decompression, OSError, ValueError: all are damage here)
        _mute_abandoned_reads()
        raise DamagedCheckpoint(f"its state cannot be read ({_short(e)})") from None
    _check_state(restored, position, step_dir)
    return restored, saved_config


def _check_state(restored, position, step_dir):
    """DamagedCheckpoint unless `restored` matches the state checksum recorded in `position` (the position's own
    sha256 was checked): `state_checksum`, or the host `state_sha256` of checkpoints written before it existed."""
    recorded = position.get("state_checksum")
    if recorded is not None:
        if not isinstance(recorded, dict) or recorded.get("version") != CHECKSUM_VERSION:
            raise UserError(f"the checkpoint {step_dir} records a state checksum this version of msml_jax does not "
                            f"know ({recorded!r}; it computes version {CHECKSUM_VERSION}): it was written by a newer "
                            f"version; update msml_jax to read it")
        if state_checksum(restored) != recorded:
            raise DamagedCheckpoint("its state's values do not match the checksum recorded in position/metadata")
    elif "state_sha256" in position and _legacy_state_sha256(restored) != position["state_sha256"]:
        raise DamagedCheckpoint("its state's values do not match the sha256 recorded in position/metadata")


def move_aside(manager, step, why="damaged"):
    """Renames step `step` to `<step>.<why>-<UTC time>` (process 0; a name Orbax does not take for a step)."""
    source = os.path.join(str(manager.directory), str(step))
    target = f"{source}.{why}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    if jax.process_index() == 0:
        os.rename(source, target)
    from msml_jax import sharding

    sharding.barrier(f"msml: moved checkpoint {step} aside")
    manager.reload()
    return target


def restore_latest_intact(manager, state, config=None):
    """Restores the newest intact checkpoint into the structure and shardings of `state` (the trainer's resume).

    Damaged newer steps are moved aside (with one "warning: ..." line each on stderr) and the next older one is
    tried. `config`, when given, is the current config: a checkpoint of another model is a UserError naming the
    fields, never taken for damage.

    Returns:
      (state, step), or (state, None) when `manager` holds no checkpoint.
    Raises:
      UserError when every step is damaged, or the checkpoint is of another model.
    """
    directory = str(manager.directory)
    steps = sorted(manager.all_steps(), reverse=True)
    if not steps:
        return state, None
    damaged = []
    for candidate in steps:
        try:
            restored, _ = restore_step(manager, candidate, state, config)
        except DamagedCheckpoint as e:
            damaged.append((candidate, str(e)))
            continue
        for bad, reason in damaged:
            target = move_aside(manager, bad)
            if jax.process_index() == 0:  # one line, like the entry points' "error: ..."
                print(f"warning: the checkpoint {os.path.join(directory, str(bad))} is damaged ({reason}); moved it "
                      f"aside to {target} and resumed from step {candidate}", file=sys.stderr, flush=True)
        return restored, candidate
    listing = "; ".join(f"step {s}: {reason}" for s, reason in damaged)
    raise UserError(
        f"every checkpoint in {directory} is damaged ({listing}): nothing was changed; move that directory away "
        f"(or use a new --workdir) to train from scratch"
    )


def latest_readable_config(manager):
    """The saved config dict of the newest step whose config item reads and matches its digest (or None)."""
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            return _json_items(os.path.join(str(manager.directory), str(step)))[0]
        except DamagedCheckpoint:
            continue
    return None


# ------------------------------------------------------------------------------- readers: eval.py, the Embedder


def find_checkpoint(workdir, which="latest"):
    """(directory, step) of checkpoint `which` of run `workdir`: "latest", "best" or a step number.

    Raises UserError naming the workdir and the steps there are when there is no such checkpoint.
    """
    which = str(which)
    directory = os.path.join(workdir, "best" if which == "best" else "checkpoints")
    steps = []
    if os.path.isdir(directory):
        manager = _reader(directory)
        steps = sorted(manager.all_steps())
        manager.close()
    if not steps:
        hint = ("no evaluation has kept a best checkpoint yet (config.eval_every_steps)" if which == "best" else
                f"train first with `python train.py --config CONFIG --workdir {workdir}`, or pass the --workdir "
                f"of a trained run")
        raise UserError(f"no checkpoint in {directory}: {hint}")
    if which in ("latest", "best"):
        return directory, steps[-1]
    if not which.isdigit() or int(which) not in steps:
        raise UserError(f"--checkpoint={which}: {directory} holds the steps {', '.join(map(str, steps))}: "
                        f"pass one of those, latest or best")
    return directory, int(which)


def restore_checkpoint(directory, step):
    """(config dict, {"params", "batch_stats"} of numpy arrays) saved at `step` in `directory`.

    A damaged checkpoint (an unreadable item, or bytes that do not match the sha256 recorded at saving) is a
    UserError naming it and the other steps to pick with --checkpoint.
    """
    manager = _reader(directory)
    try:
        state, saved_config = restore_step(manager, step)
    except DamagedCheckpoint as e:
        others = [str(s) for s in sorted(manager.all_steps(), reverse=True) if s != step]
        pick = (f"evaluate another one with --checkpoint {others[0]} (checkpoints present: {', '.join(others)})"
                if others else "there is no other checkpoint here: try --checkpoint best, or train again")
        raise UserError(f"the checkpoint {os.path.join(directory, str(step))} is damaged: {e}; {pick}") from None
    finally:
        manager.close()
    variables = {"params": state["params"], "batch_stats": state.get("batch_stats") or {}}
    return saved_config, jax.tree_util.tree_map(np.asarray, variables)
