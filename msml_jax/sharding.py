"""Data parallelism over every device of every host, with hard mining over the global batch.

The train step is one `jax.jit` program over a 1-D device `Mesh` with axis "data": the batch is sharded along
its first dimension (`NamedSharding(mesh, P("data"))`), parameters and optimizer state are replicated
(`NamedSharding(mesh, P())`). The program is written for the whole P x K batch, so the [B, B] distance matrix,
MSML's max / min reductions and BatchNorm's batch mean and variance are computed over the GLOBAL batch: the XLA
partitioner inserts the all-gathers / all-reduces. Splitting the batch over more devices changes only the order
of floating-point sums, never what is mined.

Why not `pmap`: it is in maintenance mode since JAX 0.8, and its per-device program would mine the hardest
pairs of each device's slice only (a different, weaker loss: fast-reid's cross-GPU behaviour) unless every loss
all-gathered by hand; BatchNorm would likewise see per-device statistics.

Several hosts: each process feeds only its own rows of the global batch; `global_batch` assembles them with
`jax.make_array_from_process_local_data`.
"""

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from msml_jax.errors import UserError

DATA_AXIS = "data"


def initialize_distributed(coordinator_address="", num_processes=0, process_id=-1):
    """Joins a multi-process run when asked to by arguments or the environment; a no-op for one process.

    `coordinator_address` "host:port" (or $MSML_COORDINATOR), `num_processes` (or $MSML_NUM_PROCESSES) and
    `process_id` (or $MSML_PROCESS_ID). On Cloud TPU / SLURM, jax.distributed.initialize() finds them itself:
    set $MSML_DISTRIBUTED=1 to call it without arguments.
    """
    address = coordinator_address or os.environ.get("MSML_COORDINATOR", "")
    count = int(num_processes or os.environ.get("MSML_NUM_PROCESSES", 0))
    index = int(process_id if process_id >= 0 else os.environ.get("MSML_PROCESS_ID", -1))
    if address:
        if count < 1 or index < 0:
            raise UserError(
                f"a coordinator address ({address}) needs --num_processes and --process_id "
                f"(or $MSML_NUM_PROCESSES and $MSML_PROCESS_ID), got {count} and {index}"
            )
        if jax.config.jax_platforms in (None, "", "cpu") and count > 1:
            jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU collectives across processes
        jax.distributed.initialize(coordinator_address=address, num_processes=count, process_id=index)
    elif os.environ.get("MSML_DISTRIBUTED") == "1":
        jax.distributed.initialize()


def make_mesh(devices=None):
    """A 1-D mesh with axis "data" over `devices` (default: all devices of all processes).

    The devices are ordered by process, so each process's share of a batch is one contiguous block of rows.
    """
    devices = jax.devices() if devices is None else list(devices)
    devices = sorted(devices, key=lambda d: (d.process_index, d.id))
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh):
    """Sharding of parameters, optimizer state and scalar metrics: a full copy on every device."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh):
    """Sharding of a batch: rows split evenly over the "data" axis."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_batch_size(batch_size, mesh):
    """UserError unless `batch_size` splits evenly over the devices and processes of `mesh`."""
    devices = mesh.devices.size
    if batch_size % devices:
        lower = batch_size // devices * devices
        raise UserError(
            f"config.batch_size={batch_size} does not split over {devices} devices: use a multiple of {devices} "
            f"(e.g. {lower or devices} or {lower + devices}, changing config.P or config.K to match), "
            f"or run on a device count that divides {batch_size}"
        )


def local_rows(batch_size, mesh):
    """The slice of global batch rows this process feeds (its devices' rows, contiguous in mesh order)."""
    sharding = batch_sharding(mesh)
    indices = sharding.addressable_devices_indices_map((batch_size,))
    starts = sorted(index[0].start or 0 for index in indices.values())
    stops = sorted(batch_size if index[0].stop is None else index[0].stop for index in indices.values())
    if starts[1:] != stops[:-1]:
        raise RuntimeError(f"this process's rows {list(zip(starts, stops))} are not contiguous: build the mesh "
                           f"with make_mesh, which orders the devices by process")
    return slice(starts[0], stops[-1])


def global_batch(local, batch_size, mesh):
    """Global jax.Arrays sharded on "data" from this process's rows `local` (dict of numpy [b_local, ...])."""
    sharding = batch_sharding(mesh)
    return {
        key: jax.make_array_from_process_local_data(sharding, np.asarray(value), (batch_size, *value.shape[1:]))
        for key, value in local.items()
    }


def barrier(name):
    """Waits until every process reaches `name` (a no-op for one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def replicate(tree, mesh):
    """Puts every leaf of `tree` (the same values in every process) on every device of `mesh`."""
    sharding = replicated(mesh)

    def put(leaf):
        value = np.asarray(leaf)
        return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])

    return jax.tree_util.tree_map(put, tree)


def prefetch(batches, batch_size, mesh, size=2, keys=("images", "labels")):
    """Yields `batches` (dicts of this process's numpy rows) with `keys` (those present) already on the mesh,
    `size` ahead.

    The next batch's host-to-device copy is issued before the current step runs (double buffering with
    size=2), so the devices never wait for a transfer; other keys (e.g. `step`) pass through as they are.
    """
    import collections

    queue = collections.deque()

    def put(batch):
        return {**batch, **global_batch({k: batch[k] for k in keys if k in batch}, batch_size, mesh)}

    for batch in batches:
        queue.append(put(batch))
        if len(queue) >= size:
            yield queue.popleft()
    while queue:
        yield queue.popleft()
