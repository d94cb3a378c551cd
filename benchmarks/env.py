"""The environment block written with every result file, and the machine slug in its name.

Why so much: absolute numbers on shared cloud machines only mean something next to the CPU
model and its SIMD flags (XLA:CPU and oneDNN pick kernels by AVX2 / AVX-512 / AMX), the core
count and the load, the library versions and any ``XLA_FLAGS``.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata as md
import os
import platform
import re
from pathlib import Path

SIMD_PREFIXES = ("sse", "ssse", "avx", "fma", "amx", "f16c", "bmi", "vnni", "neon", "sve", "asimd")
PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "torch", "ml_adv")


def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if ":" in line:
                    k, v = (s.strip() for s in line.split(":", 1))
                    info.setdefault(k, v)
    except OSError:
        pass
    return info


def _version(pkg: str) -> str | None:
    try:
        return md.version(pkg)
    except md.PackageNotFoundError:
        return None


def collect(torch=None) -> dict:
    """Everything that explains a number: CPU, flags, cores, load, versions, flags, devices."""
    import jax

    info = _cpuinfo()
    flags = info.get("flags", info.get("Features", "")).split()
    devices = jax.devices()
    env = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu_model": info.get("model name") or platform.processor() or platform.machine(),
        "cpu_family": info.get("cpu family"),
        "cpu_model_number": info.get("model"),
        "simd_flags": sorted(f for f in flags if f.startswith(SIMD_PREFIXES)),
        "has_avx512": any(f.startswith("avx512") for f in flags),
        "cpu_flags": flags,
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gb": _memory_gb(),
        "loadavg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {p: _version(p) for p in PACKAGES},
        "XLA_FLAGS": os.environ.get("XLA_FLAGS"),
        "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS"),
        "jax_backend": jax.default_backend(),
        "jax_devices": [f"{d.platform}:{d.device_kind}" for d in devices],
        # Every contender runs in this process, so all of them share these malloc settings.
        "GLIBC_TUNABLES": os.environ.get("GLIBC_TUNABLES"),
        "thp_mode": _thp_mode(),
    }
    if torch is not None:
        env["torch_threads"] = torch.get_num_threads()
        env["torch_mkldnn"] = bool(torch.backends.mkldnn.is_available())
        env["torch_config"] = torch.__config__.parallel_info().splitlines()[:4]
    return env


def _thp_mode() -> str | None:
    """The kernel's transparent-huge-page mode: it decides how XLA's fresh scratch memory faults
    in."""
    try:
        text = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return None
    start, end = text.find("["), text.find("]")
    return text[start + 1 : end] if 0 <= start < end else None


def _memory_gb() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
        return round(kb / 1e6, 1)
    except (OSError, ValueError, IndexError):
        return None


def machine_slug(env: dict) -> str:
    """``cpu-amd-epyc-2c`` / ``gpu-nvidia-h100-80gb-hbm3``: the result file's machine name."""
    if env["jax_backend"] == "gpu":
        name = env["jax_devices"][0].split(":", 1)[1]
        return "gpu-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    model = re.sub(r"\(r\)|\(tm\)|processor|\d+-core|cpu", "", env["cpu_model"].lower())
    model = re.sub(r"[^a-z0-9]+", "-", model).strip("-")
    return f"cpu-{model}-{env['cores']}c"
