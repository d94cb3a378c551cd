"""Pick a lowering by measuring it, once per (operation, shape, dtype) and CPU model.

Why this exists: the CPU fast paths (the conv weight gradient as matmuls or as a
batch-as-channels conv, the dense weight gradient from a transposed operand, the LSTM layer
with its weight gradients after the loop) were chosen
by measurements on one machine class, and the best lowering differs between machines
(Intel Xeon, AMD EPYC with and without AVX-512). Like cuDNN's benchmark mode, the first
time a layer is traced on a CPU this module compiles each candidate lowering for that exact
shape and dtype, times it inside a ``lax.scan`` (how training runs it), keeps the fastest,
and writes the choice to a JSON cache named after the CPU model, so later runs and
processes reuse it without measuring.

* Cache: ``$ML_ADV_AUTOTUNE_CACHE`` if set, else ``$XDG_CACHE_HOME/ml_adv/autotune``
  (``~/.cache/ml_adv/autotune``), one ``<device>-<hash>.json`` per CPU model and SIMD flags
  (or GPU device kind) and jaxlib version. Delete the file to measure again.
* Opt-out: ``ML_ADV_AUTOTUNE=0`` (or ``off``/``false``), or ``configure(enabled=False)``:
  every decision takes its measured-on-EPYC static default and nothing is timed.
* Per backend: each decision says where it is measured (``backends=``, default the CPU
  only). The CPU fast paths stay on CPUs: the conv and dense weight gradients are CPU
  branches of ``lax.platform_dependent`` (lowered away elsewhere), the per-core device
  split and the member layouts need per-core CPU devices. Decisions that are real choices
  on a GPU too (the LSTM layer's lowering, the max-pool backward, the attention form) are
  measured there as well, in a cache of their own: the cache file is named after the
  device (``device_signature``: the CPU model and SIMD flags, or the GPU's device kind),
  because a choice measured on one says nothing about the other.

Same machine and cache, same choice, so a resumed run traces the same program: every
decision is made while tracing, before the first epoch and so before any checkpoint, and
the first process to record a case wins (``_write_cache``), so concurrent first runs agree. Every
candidate computes the same function (each layer's tests check every lowering against
XLA's autodiff), so a choice changes speed and float rounding, never the model.

Batch split over per-core devices: a train step whose batch is sharded over several
per-core CPU devices (``fit``'s ``batch_over_cores`` layout) traces its layers inside
``batch_split(n)``. An operation that opts in (``choose(..., concurrent=n)``) is then timed
as it runs there: on its per-device share of the batch, on ``n`` devices at once, each
core busy with its own copy. Timed alone on the whole batch, a form that spreads one matmul
over both cores can win and then lose in the sharded step, where each core already runs
its own half (the dense weight gradient: ``models/dense.py``). Only the dense weight gradient
opts in: timed per core, the medium CNN's first convolution tied its two forms (3.35 against
3.41 ms) and picked the one that ran its sharded step 2.6% slower than the whole-batch choice.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import fcntl
import hashlib
import json
import logging
import os
import platform
import re
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ml_adv.errors import ConfigError, describe

__all__ = [
    "CPU",
    "CPU_AND_GPU",
    "GPU",
    "active",
    "batch_split",
    "batch_split_devices",
    "cache_path",
    "choose",
    "configure",
    "cpu_signature",
    "device_signature",
    "enabled",
    "lookup",
    "measurements",
    "record",
]

ENV_SWITCH = "ML_ADV_AUTOTUNE"
ENV_CACHE = "ML_ADV_AUTOTUNE_CACHE"
_OFF = {"0", "off", "false", "no"}
# Where a decision is measured (``backends=``); anywhere else its default is used unmeasured.
CPU: tuple[str, ...] = ("cpu",)
GPU: tuple[str, ...] = ("gpu",)
CPU_AND_GPU: tuple[str, ...] = ("cpu", "gpu")
# Timing: a scan of this many applications per call, best of this many calls (after one
# warm-up). The minimum is the estimate least disturbed by other processes on the machine.
SCAN_LENGTH = 4
REPEATS = 5
# A candidate this many times slower than the best so far is dropped after one timed call.
GIVE_UP_FACTOR = 3.0
# ... or already after its warm-up call when that is this many times the give-up time
# (the first call of any program pays page faults, so it only rules out gross losers).
FIRST_CALL_FACTOR = 5.0

_log = logging.getLogger(__name__)
_lock = threading.Lock()
_settings: dict[str, Any] = {"enabled": None, "cache_dir": None}
_memory: dict[str, dict[str, Any]] = {}  # this process's view of the cache file
_batch_split: contextvars.ContextVar[int] = contextvars.ContextVar(
    "ml_adv_autotune_batch_split", default=1
)


@contextlib.contextmanager
def batch_split(devices: int):
    """Trace inside this when the batch is sharded over ``devices`` concurrent CPU devices."""
    token = _batch_split.set(max(1, int(devices)))
    try:
        yield
    finally:
        _batch_split.reset(token)


def batch_split_devices(batch: int | None = None) -> int:
    """Over how many concurrent devices the batch being traced is split (1: not split).

    With ``batch``: 1 also when the split does not divide it (then it is not this op's batch).
    """
    devices = _batch_split.get()
    return 1 if batch is not None and batch % devices else devices


_measure_count = 0  # measurements taken by this process (tests count them)


def configure(*, enabled: bool | None = None, cache_dir: str | os.PathLike | None = None) -> None:
    """Override the environment for this process: ``enabled`` and the cache directory.

    ``None`` leaves a setting to the environment (``ML_ADV_AUTOTUNE``, ``ML_ADV_AUTOTUNE_CACHE``).
    """
    if enabled is not None and not isinstance(enabled, bool):
        raise ConfigError(f"enabled: expected True, False or None, got {describe(enabled)}")
    with _lock:
        _settings["enabled"] = enabled
        _settings["cache_dir"] = None if cache_dir is None else Path(cache_dir)
        _memory.clear()


def enabled() -> bool:
    """Whether decisions are measured (else every ``choose`` returns its default)."""
    if _settings["enabled"] is not None:
        return _settings["enabled"]
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in _OFF


def _cpu_model_and_flags() -> tuple[str, list[str]]:
    model, flags = platform.processor() or platform.machine(), []
    with contextlib.suppress(OSError):
        text = Path("/proc/cpuinfo").read_text()
        if m := re.search(r"^model name\s*:\s*(.+)$", text, re.M):
            model = m.group(1).strip()
        if m := re.search(r"^(?:flags|Features)\s*:\s*(.+)$", text, re.M):
            flags = m.group(1).split()
    return model, flags


def cpu_signature() -> str:
    """``<cpu-model>-<hash>``: the CPU model, its SIMD flags and the jaxlib version.

    The SIMD flags matter as much as the model name (the same "AMD EPYC" comes with and
    without AVX-512), and a new jaxlib may lower differently, so all three key the cache.
    """
    import jaxlib

    model, flags = _cpu_model_and_flags()
    simd = sorted(f for f in flags if f.startswith(("avx", "amx", "sse4", "fma", "asimd", "sve")))
    digest = hashlib.sha256(json.dumps([model, simd, jaxlib.__version__]).encode()).hexdigest()[:10]
    slug = re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-")[:40] or "cpu"
    return f"{slug}-{digest}"


def device_signature() -> str:
    """The cache's key for the default backend: ``cpu_signature()`` on a CPU, else
    ``<backend>-<device-kind>-<hash>`` (e.g. ``gpu-nvidia-h200-<hash>``; the hash covers the
    device kind, the platform version and jaxlib)."""
    backend = jax.default_backend()
    if backend == "cpu":
        return cpu_signature()
    import jaxlib

    device = jax.devices()[0]
    kind = getattr(device, "device_kind", backend)
    version = getattr(device.client, "platform_version", "") if hasattr(device, "client") else ""
    digest = hashlib.sha256(
        json.dumps([backend, kind, version, jaxlib.__version__]).encode()
    ).hexdigest()[:10]
    slug = re.sub(r"[^a-z0-9]+", "-", f"{backend}-{kind}".lower()).strip("-")[:40]
    return f"{slug}-{digest}"


def cache_path() -> Path:
    """The JSON file holding this device's decisions (it may not exist yet)."""
    directory = _settings["cache_dir"]
    if directory is None:
        env = os.environ.get(ENV_CACHE)
        base = (
            Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ml_adv" / "autotune"
        )
        directory = Path(env) if env else base
    return Path(directory) / f"{device_signature()}.json"


def measurements() -> int:
    """How many decisions this process has measured (not read from the cache)."""
    return _measure_count


def _read_cache(path: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        _log.warning("autotune cache %s is unreadable (%s); measuring again", path, err)
        return {}
    entries = data.get("entries") if isinstance(data, dict) else None
    return entries if isinstance(entries, dict) else {}


def _write_cache(path: Path, key: str, entry: dict[str, Any]) -> dict[str, Any]:
    """Merge one decision into the cache file and return the entry that holds for ``key``.

    First writer wins: if another process recorded this case meanwhile, its entry is kept
    and returned, so every process on the machine (a killed run and its resumption
    included) lowers the same program. An entry whose choice is no longer a candidate
    (the library dropped that form since) is replaced. The read-modify-write holds an
    exclusive lock on a side file and replaces the cache atomically.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(path.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            entries = _read_cache(path)
            existing = entries.get(key)
            if isinstance(existing, dict) and existing.get("choice") in entry["us"]:
                return existing
            entries[key] = entry
            model, _ = _cpu_model_and_flags()
            payload = {"cpu": model, "signature": path.stem, "entries": entries}
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".autotune-", suffix=".json")
            with os.fdopen(fd, "w") as f:
                json.dump(payload, f, indent=1, sort_keys=True)
            os.replace(tmp, path)
    except OSError as err:  # a read-only home must not stop training
        _log.warning(
            "autotune: could not write %s (%s); the choice is kept for this process only", path, err
        )
    return entry


def _time_candidate(
    fn: Callable, example: Sequence[jax.ShapeDtypeStruct], give_up_after: float, concurrent: int = 1
) -> float:
    """Best-of-``REPEATS`` seconds per application of ``fn`` inside a scan, on random inputs.

    A candidate whose first timed call is already ``give_up_after`` seconds per application
    is not timed again: losers can be 100x slower (XLA's conv gradient in a loop), and
    repeating them would make the first compile take minutes. ``concurrent > 1``: the same
    scan runs on that many CPU devices at once (one SPMD program, ``example`` per device).
    """

    def program(*args):
        def body(carry, _):
            # Feeding the carry into the inputs keeps XLA from hoisting the work out of the loop.
            shifted = [a + carry.astype(a.dtype) for a in args]
            out = fn(*shifted)
            total = sum(jnp.sum(leaf.astype(jnp.float32)) for leaf in jax.tree.leaves(out))
            return carry + 0.0 * total, None

        return jax.lax.scan(body, jnp.float32(0), None, length=SCAN_LENGTH)[0]

    rng = np.random.default_rng(0)
    if concurrent > 1:
        program, example = _on_devices(program, example, concurrent)
    inputs = [rng.standard_normal(s.shape).astype(s.dtype) for s in example]
    compiled = jax.jit(program).lower(*example).compile()
    if concurrent > 1:
        inputs = [jax.device_put(a, s.sharding) for a, s in zip(inputs, example)]
    start = time.perf_counter()
    jax.block_until_ready(compiled(*inputs))  # warm-up: page faults and cold caches
    first = (time.perf_counter() - start) / SCAN_LENGTH
    if first > FIRST_CALL_FACTOR * give_up_after:
        return first
    best = float("inf")
    for attempt in range(REPEATS):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*inputs))
        best = min(best, time.perf_counter() - start)
        if attempt >= 1 and best / SCAN_LENGTH > give_up_after:  # two calls: one can be preempted
            break
    return best / SCAN_LENGTH


def _on_devices(program: Callable, example: Sequence[jax.ShapeDtypeStruct], devices: int):
    """``program`` as one SPMD program over ``devices`` CPU devices, ``example`` per device
    (every argument stacked along its leading axis, one share per device)."""
    from jax.sharding import NamedSharding, PartitionSpec

    mesh = jax.sharding.Mesh(np.array(jax.local_devices(backend="cpu")[:devices]), ("autotune",))
    spec = PartitionSpec("autotune")

    def per_device(*args):
        return program(*args)[None]

    spread = jax.shard_map(per_device, mesh=mesh, in_specs=spec, out_specs=spec, check_vma=False)
    sharding = NamedSharding(mesh, spec)
    example = [
        jax.ShapeDtypeStruct((devices * s.shape[0], *s.shape[1:]), s.dtype, sharding=sharding)
        for s in example
    ]
    return spread, example


def choose(
    operation: str,
    signature: Mapping[str, Any],
    candidates: Mapping[str, Callable],
    example: Sequence[jax.ShapeDtypeStruct],
    *,
    default: str,
    concurrent: int = 1,
    backends: Sequence[str] = CPU,
) -> str:
    """The fastest of ``candidates`` for this operation and shape on this device (cached).

    Args:
        operation: a stable name, e.g. ``"conv2d"``.
        signature: what identifies the case (shapes, strides, dtype): JSON-able values.
        candidates: ``{name: fn(*example_arrays) -> pytree}``, every one the same function.
        example: the shapes and dtypes ``fn`` is timed on.
        default: the name returned without measuring (opt-out, non-CPU backend).
        concurrent: time each candidate on this many CPU devices at once, ``example`` on
            each (for a batch split over per-core devices: ``batch_split_devices()``);
            the signature should say so. More devices than exist: timed on those there are.
        backends: the backends this decision is measured on (``CPU``, ``GPU``,
            ``CPU_AND_GPU``); elsewhere ``default`` is returned without measuring.
    """
    if default not in candidates:
        raise ConfigError(f"default: expected one of {sorted(candidates)}, got {describe(default)}")
    if len(candidates) == 1 or not active(backends):
        return default
    concurrent = min(max(1, int(concurrent)), len(jax.local_devices()))
    with _lock:
        cached = _lookup_locked(operation, signature, candidates)
        if cached is not None:
            return cached
        seconds: dict[str, float] = {}
        # Measured outside any trace: jit on concrete inputs runs eagerly even mid-trace.
        with jax.ensure_compile_time_eval():
            for name in [default, *(n for n in candidates if n != default)]:
                give_up = GIVE_UP_FACTOR * min(seconds.values(), default=float("inf"))
                seconds[name] = _time_candidate(candidates[name], example, give_up, concurrent)
        return _record_locked(operation, signature, seconds)


def active(backends: Sequence[str] = CPU) -> bool:
    """Whether a decision measured on ``backends`` is measured here: enabled, and the
    default backend is one of them (the CPU, unless the decision says otherwise)."""
    return enabled() and jax.default_backend() in backends


def _key(operation: str, signature: Mapping[str, Any]) -> str:
    return operation + json.dumps(dict(signature), sort_keys=True, default=str)


def _lookup_locked(operation, signature, names) -> str | None:
    if not _memory:
        _memory.update(_read_cache(cache_path()))
    entry = _memory.get(_key(operation, signature))
    return entry["choice"] if entry is not None and entry.get("choice") in names else None


def _record_locked(
    operation, signature, seconds: Mapping[str, float], keep: str | None = None, margin: float = 0.0
) -> str:
    global _measure_count
    choice = min(seconds, key=seconds.get)
    if keep in seconds and seconds[choice] > (1.0 - margin) * seconds[keep]:
        choice = keep  # not clearly faster: a single timed run each is noisy
    entry = {
        "choice": choice,
        "us": {name: round(s * 1e6, 2) for name, s in seconds.items()},
        "measured": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    _measure_count += 1
    entry = _write_cache(cache_path(), _key(operation, signature), entry)
    _memory[_key(operation, signature)] = entry
    _log.info(
        "autotune %s %s: %s (%s us)", operation, dict(signature), entry["choice"], entry["us"]
    )
    return entry["choice"]


def lookup(
    operation: str,
    signature: Mapping[str, Any],
    names: Sequence[str],
    backends: Sequence[str] = CPU,
) -> str | None:
    """The cached choice among ``names`` for this case, or None (not measured yet, or inactive).

    For decisions that are measured by running the real thing (``record``), e.g. the layout
    of a stacked epoch, which is timed on the first epoch itself rather than on random inputs.
    """
    if not active(backends):
        return None
    with _lock:
        return _lookup_locked(operation, signature, names)


def record(
    operation: str,
    signature: Mapping[str, Any],
    seconds: Mapping[str, float],
    *,
    keep: str | None = None,
    margin: float = 0.0,
) -> str:
    """Cache the fastest of ``seconds`` (``{name: seconds}``) for this case and return its name.

    ``keep``/``margin``: another candidate replaces ``keep`` only when it is faster by more
    than ``margin`` (a fraction), for decisions timed on one run of each candidate.
    """
    if not seconds:
        raise ConfigError("seconds: expected at least one timed candidate, got none")
    if not 0.0 <= margin < 1.0:
        raise ConfigError(f"margin: expected a fraction in [0, 1), got {describe(margin)}")
    with _lock:
        return _record_locked(operation, signature, seconds, keep, margin)
