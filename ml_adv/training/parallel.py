"""Data parallelism with ``jax.sharding``: one Mesh over all devices, batch sharded, params replicated.

The compiled step is unchanged; only the placement of its inputs differs. The
batch axis is split over the ``data`` mesh axis and everything else is
replicated, so XLA's SPMD partitioner turns the mean over the batch into a
cross-device all-reduce of the gradients. The same code runs multi-host after
``jax.distributed.initialize()``.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

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
            f"{argument}: data-parallel training over {n} devices expects a multiple of {n}, got {batch_size}"
        )


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


CPU_DEVICES_ENV = "ML_ADV_CPU_DEVICES"
_FORCE_FLAG = "--xla_force_host_platform_device_count"


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def use_cpu_cores(count: int | str | None = None, *, strict: bool = True) -> int:
    """Split the host CPU into ``count`` JAX devices (default: one per usable core).

    XLA:CPU runs one program at a time on one device; small programs (the layers of
    stacked ensemble members, populations, CV folds) leave the other cores idle. With
    one device per core, stacked runs place their members on different devices
    (``TrainConfig.spread_members``) and those run concurrently. Single runs stay on
    device 0 and keep the whole intra-op thread pool, so they lose nothing.

    Call it right after ``import jax``, before any JAX computation: XLA fixes the device
    count when its backend starts. Setting ``ML_ADV_CPU_DEVICES=auto`` (or a number)
    does it at ``import ml_adv``; the ``ml-adv`` command line does it by default.
    Returns the device count asked for (1 means: unchanged). An explicit
    ``--xla_force_host_platform_device_count`` in ``XLA_FLAGS`` wins and is left alone.
    With ``strict=False``, a call after JAX has started keeps its devices and returns
    their count instead of raising (the command line and the benchmark harness, when
    their ``main`` runs inside a process that already uses JAX).
    """
    if count is None or count == "auto":
        count = usable_cores()
    elif isinstance(count, str):
        if not count.strip().isdigit():
            raise ConfigError(f"{CPU_DEVICES_ENV}: expected 'auto' or a positive integer, got {count!r}")
        count = int(count)
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
        raise ConfigError(f"count: expected 'auto' or a positive integer, got {count!r}")
    count = int(count)
    if _FORCE_FLAG in os.environ.get("XLA_FLAGS", ""):
        return count
    current = jax.config.jax_num_cpu_devices  # -1: XLA's default, one device
    if current == count or (count == 1 and current < 1):
        return count
    try:
        jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError as exc:  # XLA's backend already started
        if not strict:
            return jax.local_device_count(backend="cpu")
        raise ConfigError(
            "use_cpu_cores: expected to run before any JAX computation (XLA fixes the CPU device count "
            f"when its backend starts), but JAX is already running with {jax.device_count()} device(s)"
        ) from exc
    return count
