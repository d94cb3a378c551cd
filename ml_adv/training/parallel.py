"""Data parallelism with ``jax.sharding``: one Mesh over all devices, batch sharded, params
replicated.

The compiled step is unchanged; only the placement of its inputs differs. The
batch axis is split over the ``data`` mesh axis and everything else is
replicated, so XLA's SPMD partitioner turns the mean over the batch into a
cross-device all-reduce of the gradients. The same code runs multi-host after
``jax.distributed.initialize()``.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ml_adv.devices import CPU_DEVICES_ENV, usable_cores, use_cpu_cores  # noqa: F401  (re-exported)
from ml_adv.errors import ConfigError

DATA_AXIS = "data"


def data_mesh(devices=None) -> Mesh:
    """A 1-D mesh named ``data`` over ``devices`` (default: all devices)."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh, batch_axis: int = 0) -> NamedSharding:
    """Sharding that splits axis ``batch_axis`` over the data axis."""
    spec = [None] * batch_axis + [DATA_AXIS]
    return NamedSharding(mesh, PartitionSpec(*spec))


def check_divisible(batch_size: int, mesh: Mesh, *, argument: str = "batch_size") -> None:
    """Data parallelism needs the batch to split evenly over the devices."""
    n = mesh.devices.size
    if batch_size % n:
        raise ConfigError(
            f"{argument}: data-parallel training over {n} devices expects a multiple of {n}, "
            f"got {batch_size}"
        )


def data_devices(mesh: Mesh | None) -> int:
    """How many devices each hold one share of the batch and nothing else (1: unsharded).

    Only a pure data mesh counts: on a mesh with other axes too (members), a device's share
    is not simply the batch divided by this count.
    """
    if mesh is None or DATA_AXIS not in mesh.shape or mesh.devices.size != mesh.shape[DATA_AXIS]:
        return 1
    return int(mesh.shape[DATA_AXIS])


def constrain_batch(batch, mesh: Mesh | None):
    """Inside jit: ask XLA to shard each batch array along its leading axis."""
    if mesh is None:
        return batch
    return jax.tree.map(lambda a: jax.lax.with_sharding_constraint(a, batch_sharded(mesh)), batch)


MEMBER_AXIS = "members"


def stacked_mesh(members: int, devices=None) -> Mesh:
    """A 2-D ``members`` x ``data`` mesh for stacked runs.

    The member axis takes the largest device count that divides ``members`` (members
    are independent: no communication along it); the rest split each batch.
    """
    devices = np.asarray(jax.devices() if devices is None else devices)
    n = devices.size
    m = int(np.gcd(int(members), n))
    return Mesh(devices.reshape(m, n // m), (MEMBER_AXIS, DATA_AXIS))


def member_sharded(mesh: Mesh) -> NamedSharding:
    """Leading (member) axis split over the mesh's ``members`` axis."""
    return NamedSharding(mesh, PartitionSpec(MEMBER_AXIS))


def member_mesh(members: int, devices=None) -> Mesh | None:
    """A ``members`` x 1 mesh that spreads stacked members over the devices, or None.

    Members share nothing, so the split adds no communication: each device runs the
    vmapped program for its own members, and on a CPU split into per-core devices
    (``use_cpu_cores``) the devices run concurrently. It uses the largest device count
    that divides ``members``; None when that is 1 (one device, or e.g. 5 members on 2).
    """
    devices = np.asarray(jax.devices() if devices is None else devices).reshape(-1)
    m = int(np.gcd(int(members), devices.size))
    if m < 2:
        return None
    return Mesh(devices[:m].reshape(m, 1), (MEMBER_AXIS, DATA_AXIS))
