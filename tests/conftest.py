"""Shared test setup: strict numerics and small real data.

``jax_numpy_rank_promotion="raise"`` catches accidental broadcasting bugs in
library code (the Optax / Levanter convention); float32 matmuls run at full precision on
every backend (below).

Autotuning (``ml_adv.kernels.autotune``) is off for the suite: measuring every layer shape the
tests trace would add minutes to a fresh machine's run, and the static defaults keep
results independent of machine load. ``tests/test_autotune.py`` turns it on in a
temporary cache directory.
"""

import os

os.environ.setdefault("ML_ADV_AUTOTUNE", "0")
# One CPU device, as XLA starts by default: the CLI and the benchmark harness split the CPU
# per core when their main() runs first in a fresh worker, which would change the device
# count for every later test in that process. tests/test_parallel.py splits it on purpose.
os.environ.setdefault("ML_ADV_CPU_DEVICES", "1")


def _share_compiled_programs() -> None:
    """One persistent XLA cache for the whole run: the xdist workers and every subprocess the
    tests start (CLI, examples, multi-process runs) inherit the folder through the
    environment, so a program that several tests or processes build is compiled once.

    The first process to import this file (the xdist controller, or pytest itself) creates
    the folder and removes it at exit; a cache the user set (``JAX_COMPILATION_CACHE_DIR``)
    is used as it is, and ``ML_ADV_TEST_COMPILE_CACHE=0`` turns sharing off. Compilation
    counts stay the same: JAX reports a cache hit as a (short) backend compile.
    """
    if os.environ.get("ML_ADV_TEST_COMPILE_CACHE") == "0":
        return
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        import atexit
        import shutil
        import tempfile

        folder = tempfile.mkdtemp(prefix="ml_adv_tests_xla_")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        os.environ["JAX_COMPILATION_CACHE_DIR"] = folder
    # Tests compile many small programs: cache every one, however quick or small.
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


_share_compiled_programs()


def _pin_each_worker_to_a_core() -> None:
    """With one xdist worker per usable core, give each worker (and the subprocesses it starts,
    which inherit it) a core of its own.

    Why: unpinned, both workers' XLA thread pools and their subprocesses spread over both cores
    and preempt each other. On a 2-core EPYC, two pinned full runs took 557 and 578 s (1,084 and
    1,120 CPU s) against 591-640 s (1,137-1,240 CPU s) in three unpinned runs, with ~37% fewer
    involuntary context switches (268-273k against 420-442k). Each worker's XLA then sizes its
    thread pool to its one core. Any other worker count (``-n 3``, a 16-core machine) is left
    alone.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw0", "gw1", ...
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if not worker.startswith("gw") or not hasattr(os, "sched_setaffinity"):
        return
    cores = sorted(os.sched_getaffinity(0))
    if workers == len(cores) > 1:
        os.sched_setaffinity(0, {cores[int(worker[2:]) % len(cores)]})


# Before JAX starts its CPU client, which sizes its thread pool from this process's affinity.
_pin_each_worker_to_a_core()

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from ml_adv.devices import cheap_cpu_compiles  # noqa: E402

# The suite checks code, not speed, and most of its time is XLA compiling small programs:
# without a GPU, compile with LLVM's cheap settings (the environment variable also reaches the
# tests' subprocesses). ML_ADV_TEST_OPTIMIZED_XLA=1 keeps XLA's defaults.
if os.environ.get("ML_ADV_TEST_OPTIMIZED_XLA") != "1":
    cheap_cpu_compiles()

jax.config.update("jax_numpy_rank_promotion", "raise")
# The suite checks maths: every comparison of two forms of one float32 computation (a kernel
# against XLA's autodiff, the fused LSTM against Flax's cell, padded against unpadded
# attention, the MMD against numpy) means float32 products. GPUs run float32 matmuls at
# TF32-like precision by default (~1e-3 relative error), so pin full precision; on a CPU
# float32 matmuls are already exact to float32 and nothing changes.
jax.config.update("jax_default_matmul_precision", "float32")


@pytest.fixture(scope="session")
def digits_images():
    """(train, test) splits of the real digits images."""
    from ml_adv.data.catalog import load_dataset

    return load_dataset("digits", split="train"), load_dataset("digits", split="test")


@pytest.fixture(scope="session")
def small_digits(digits_images):
    """A 256-example slice of the digits images, for fast training tests."""
    train, _ = digits_images
    return train.subset(np.arange(256))


def pytest_xdist_auto_num_workers(config):
    """``-n auto``: one worker per usable core, at most 4 (more workers mostly duplicate
    JAX's start-up and the session fixtures)."""
    from ml_adv.devices import usable_cores

    return max(1, min(4, usable_cores()))
