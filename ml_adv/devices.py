"""The host CPU as several JAX devices: ``use_cpu_cores``.

XLA:CPU runs one program on one device at a time. Splitting the CPU into one device per
core lets independent programs (stacked members placed on different devices by
``fit_stacked``'s ``"spread"`` layout) run concurrently. Kept apart from the training code
because the command line and the benchmark harness call it before anything else.
"""

from __future__ import annotations

import os

import jax
import numpy as np

from ml_adv.errors import ConfigError

CPU_DEVICES_ENV = "ML_ADV_CPU_DEVICES"
_FORCE_FLAG = "--xla_force_host_platform_device_count"


CHEAP_COMPILE_FLAGS = (
    "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
    " --xla_cpu_use_fusion_emitters=false"
)
FAST_COMPILE_FLAGS = (
    "--xla_backend_optimization_level=1 --xla_llvm_disable_expensive_passes=true"
    " --xla_cpu_use_fusion_emitters=false"
)
_GPU_DEVICE_FILES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd")


def cheap_cpu_compiles() -> bool:
    """Compile with XLA:CPU's cheapest settings when no GPU is present; returns whether the
    flags were added.

    For runs that check code rather than measure it (the test suite, the GPU check's CPU dry
    run, the examples' quick mode): most of their time is XLA compiling small programs.
    LLVM's optimisation passes are most of that (30-40% less time measured on a 2-core
    EPYC), and XLA:CPU's MLIR fusion emitters cost more again: they compile each fusion as an
    LLVM module of its own (174 for a tiny MLP's epoch), where the older emitters take a third
    of the time (a tiny MLP's epoch program: 1.2 s against 4.0 s at optimisation level 0,
    same machine). Library calls (dots, convolutions) run the same code either way, but the
    rest runs up to 2x slower: ``fast_cpu_compiles`` suits runs that also compute.
    """
    return _add_cpu_flags(CHEAP_COMPILE_FLAGS)


def fast_cpu_compiles() -> bool:
    """XLA:CPU settings for short runs on a CPU (quickstart, workflow, notebooks): about half
    the compile time at nearly the same speed; returns whether the flags were added.

    Optimisation level 1 without LLVM's expensive passes and without the MLIR fusion
    emitters. Measured on a 2-core EPYC (digits, 3 epochs, size "small"): compile 6.9 -> 3.5 s
    (MLP), 6.3 -> 3.3 (CNN), 12.1 -> 5.2 (LSTM), 16.8 -> 12.0 (Transformer); steps per second
    +33% (MLP), -16% (CNN), -1% (LSTM), -7% (Transformer); the same losses to 6 digits. Long
    runs, where steps outweigh compiling, keep XLA's defaults. A no-op on a GPU machine or
    when ``XLA_FLAGS`` already sets an optimisation level; call it before JAX's backend
    starts (it reads ``XLA_FLAGS`` once).
    """
    return _add_cpu_flags(FAST_COMPILE_FLAGS)


def _add_cpu_flags(extra: str) -> bool:
    import shutil
    from pathlib import Path

    gpu = any(Path(d).exists() for d in _GPU_DEVICE_FILES) or shutil.which("nvidia-smi")
    flags = os.environ.get("XLA_FLAGS", "")
    if gpu or "xla_backend_optimization_level" in flags:
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {extra}".strip()
    return True


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
            raise ConfigError(
                f"{CPU_DEVICES_ENV}: expected 'auto' or a positive integer, got {count!r}"
            )
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
            "use_cpu_cores: expected to run before any JAX computation "
            "(XLA fixes the CPU device count when its backend starts), "
            f"but JAX is already running with {jax.device_count()} device(s)"
        ) from exc
    return count


def join_processes(coordinator: str, num_processes: int, process_id: int) -> None:
    """Make this process one of ``num_processes`` that train as one program (multi-host).

    Every process runs the same command with its own ``process_id`` (0 is the coordinator,
    listening at ``coordinator`` = ``HOST:PORT``). Call it before any JAX computation.
    ``jax.devices()`` then lists the devices of all processes, and a data-parallel run
    (``TrainConfig(data_parallel=True)``) splits every global batch over them; each process
    loads the same data and keeps its own devices' part. On CPUs the collectives go over gloo
    (TCP), so several processes on one machine or on several machines work without a GPU.
    """
    host, _, port = coordinator.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"coordinator: expected HOST:PORT, got {coordinator!r}")
    if isinstance(num_processes, bool) or not isinstance(num_processes, int) or num_processes < 1:
        raise ConfigError(f"num_processes: expected a positive integer, got {num_processes!r}")
    if not isinstance(process_id, int) or not 0 <= process_id < num_processes:
        raise ConfigError(
            f"process_id: expected an integer in [0, {num_processes}), got {process_id!r}"
        )
    # Only the CPU backend needs a collectives implementation; GPUs use NCCL.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator, num_processes=num_processes, process_id=process_id
    )
