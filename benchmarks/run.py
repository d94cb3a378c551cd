"""Run the benchmark suite: ``python -m benchmarks.run [--quick] [--only NAME ...] [--out PATH]``.

Prints one markdown table per group and writes ``benchmarks/results/<machine>-<date>.json``
(``-quick`` / ``-partial`` / ``-gpu-bf16`` suffixes for runs that are not the full CPU suite,
so they never overwrite it) with the environment block and every row. See harness.py for the
method and the row schema, workloads.py for the shapes.

Examples::

    python -m benchmarks.run                       # full CPU suite, float32, vs PyTorch + Flax
    python -m benchmarks.run --quick               # < 3 min on the 2-core reference machine
    python -m benchmarks.run --only throughput/cnn mfu --rounds 5
    python -m benchmarks.run --device gpu --dtype bf16 --only throughput/*/medium mfu

``--device gpu`` runs the PyTorch peers on CUDA (float32 rows with TF32 allowed, bf16 rows
under ``torch.autocast``); ``--dtype bf16`` measures MFU against a bf16 matmul peak. On a
machine without a GPU they still run, JAX and PyTorch on the CPU (autocast with
``device_type="cpu"``), so the path can be exercised anywhere (``--only 'throughput/*/tiny'``
keeps that cheap). ``benchmarks/gpu_check.py`` is the budgeted GPU run built on this harness.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import os
import sys
import time
from pathlib import Path

# Modules whose import registers benchmarks (harness.register). Add later suites here.
BENCHMARK_MODULES = (
    "benchmarks.throughput",
    "benchmarks.mfu",
    "benchmarks.startup",
    "benchmarks.stacked",
    "benchmarks.hpo",
    "benchmarks.ensemble_inference",
    "benchmarks.kcenter",
    "benchmarks.pool_scoring",
)
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def load_benchmarks() -> None:
    """Import every module in ``BENCHMARK_MODULES`` so its benchmarks are registered."""
    for mod in BENCHMARK_MODULES:
        importlib.import_module(mod)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--quick", action="store_true", help="fewer rounds/steps and rows (< 3 min)")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="benchmark names, prefixes or globs")
    ap.add_argument("--out", type=Path, help="result JSON path (default: benchmarks/results/...)")
    ap.add_argument(
        "--rounds", type=int, help="clean timed rounds per contender (default 7, quick 3)"
    )
    ap.add_argument("--steps", type=int, help="train steps per round for every workload")
    ap.add_argument("--steps-scale", type=float, default=1.0, help="multiply each workload's steps")
    ap.add_argument("--device", choices=("cpu", "gpu"), default=None, help="default: JAX's backend")
    ap.add_argument(
        "--dtype", choices=("f32", "bf16"), default=None, help="default: f32 on CPU, bf16 on GPU"
    )
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch peer")
    ap.add_argument(
        "--torch-compile",
        choices=("auto", "on", "off"),
        default="auto",
        help="the torch.compile contender in train-step rows (auto: full mode only; "
        "inductor compiles take tens of seconds per model on a small CPU)",
    )
    ap.add_argument(
        "--foreign-limit",
        type=float,
        default=0.3,
        help="cores used by other processes above which a round counts as contended",
    )
    ap.add_argument(
        "--quiet-budget",
        type=float,
        default=None,
        help="seconds per row to wait for other processes to go quiet (default 30, quick 5)",
    )
    ap.add_argument(
        "--cpu-devices",
        default=os.environ.get("ML_ADV_CPU_DEVICES") or "auto",
        help="split the CPU into this many JAX devices ('auto', the default unless "
        "$ML_ADV_CPU_DEVICES says otherwise: one per usable core, as the ml-adv CLI "
        "does; 1: XLA's default single device)",
    )
    ap.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    return ap.parse_args(argv)


def load_torch(no_torch: bool, device: str) -> tuple[object, str, str]:
    """``(torch or None, torch device, note)``: the PyTorch peer and where it runs.

    A GPU run puts it on CUDA (TF32 allowed for its float32 work: ``contenders.set_torch_tf32``);
    a GPU run on a machine without one (a dry run) keeps it on the CPU, like JAX; a real GPU
    run whose torch has no CUDA drops it, since a CPU peer would say nothing there.
    """
    if no_torch:
        return None, "cpu", "skipped (--no-torch)"
    try:
        import torch
    except ImportError:
        return None, "cpu", "not installed (pip install -e '.[bench]')"
    import jax

    torch.set_num_threads(os.cpu_count() or 1)
    if device == "gpu" and torch.cuda.is_available():
        from benchmarks.contenders import set_torch_tf32

        tf32 = set_torch_tf32(torch)
        gpu = torch.cuda.get_device_name(0)
        return torch, "cuda", f"torch {torch.__version__} on {gpu}, float32 matmuls {tf32}"
    if device == "gpu" and jax.default_backend() == "gpu":
        return None, "cpu", f"skipped: torch {torch.__version__} has no CUDA here"
    return torch, "cpu", f"torch {torch.__version__}, {torch.get_num_threads()} threads"


def default_out(env: dict, settings: dict) -> Path:
    from benchmarks.env import machine_slug

    day = _dt.date.today().isoformat()
    suffix = ""
    if settings["dtype"] != "f32" or settings["device"] != "cpu":
        suffix += f"-{settings['device']}-{settings['dtype']}"
    if settings["quick"]:
        suffix += "-quick"
    if settings["only"]:
        suffix += "-partial"
    return RESULTS_DIR / f"{machine_slug(env)}-{day}{suffix}.json"


def main(argv: list[str] | None = None) -> dict:
    t_start = time.perf_counter()
    args = parse_args(argv)
    load_benchmarks()
    from benchmarks import env as envmod
    from benchmarks import report
    from benchmarks.harness import BENCHMARKS, Context, select, validate_row

    if args.list:
        for b in BENCHMARKS.values():
            print(f"{b.name:32s} group={b.group:11s} quick={b.quick} default={b.default}")
        return {}
    from ml_adv.devices import use_cpu_cores

    cpu_devices = use_cpu_cores(args.cpu_devices, strict=False)  # before JAX's backend starts
    import jax

    device = args.device or ("gpu" if jax.default_backend() == "gpu" else "cpu")
    dtype = args.dtype or ("bf16" if device == "gpu" else "f32")
    if device == "gpu" and jax.default_backend() != "gpu":
        print(
            f"note: --device gpu but JAX's backend is {jax.default_backend()!r}: "
            "running the GPU path there"
        )
    torch, torch_device, torch_note = load_torch(args.no_torch, device)
    chosen = select(args.only, quick=args.quick)
    rounds = args.rounds or (3 if args.quick else 7)
    ctx = Context(quick=args.quick, rounds=rounds, device=device, dtype=dtype,
                  steps_scale=args.steps_scale,
                  steps=args.steps, torch=torch, torch_device=torch_device,
                  torch_compile=torch is not None and (
                      args.torch_compile == "on"
                      or (args.torch_compile == "auto" and not args.quick)),
                  foreign_limit=args.foreign_limit,
                  quiet_budget_s=(args.quiet_budget if args.quiet_budget is not None
                                  else (5.0 if args.quick else 30.0)))  # fmt: skip
    env = envmod.collect(torch)
    settings = {
        "command": " ".join(["python -m benchmarks.run",
                             *(argv if argv is not None else sys.argv[1:])]),
        "quick": args.quick, "only": args.only, "rounds": rounds, "device": device, "dtype": dtype,
        "steps": args.steps, "steps_scale": args.steps_scale, "foreign_limit": args.foreign_limit,
        "quiet_budget_s": ctx.quiet_budget_s, "cpu_devices": cpu_devices,
        "torch": torch_note, "torch_device": torch_device, "benchmarks": [b.name for b in chosen],
    }  # fmt: skip
    print(f"{env['cpu_model']} ({env['cores']} cores, AVX-512: {env['has_avx512']}), "
          f"JAX {env['versions']['jax']} on {env['jax_devices'][0]}; "
          f"PyTorch: {torch_note}")  # fmt: skip
    print(
        f"{len(chosen)} benchmarks, {rounds} rounds, dtype {dtype}, "
        f"load average {env['loadavg_start']}"
    )
    for b in chosen:
        t0 = time.perf_counter()
        print(f"[{time.perf_counter() - t_start:6.0f}s] {b.name}", flush=True)
        ctx.run(b.name)
        print(f"         done in {time.perf_counter() - t0:.1f}s", flush=True)
    rows = list(ctx.results.values())
    for r in rows:
        validate_row(r)
    env["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    wall = time.perf_counter() - t_start
    table = report.markdown(rows)
    print("\n" + table + "\n")
    print(
        "ratios a/b: times faster (>1: a wins), ratio of medians; * = median over contended rounds"
    )
    out = args.out or default_out(env, settings)
    report.write_json(out, env, settings, rows, wall)
    print(f"wall time {wall:.0f} s; wrote {out}")
    return {
        "environment": env,
        "settings": settings,
        "rows": rows,
        "table": table,
        "path": str(out),
    }


if __name__ == "__main__":
    main()
