"""What every experiment script shares: arguments, per-seed result files, machine facts, stats.

Each experiment writes one JSON file per (setting, seed) under
``experiments/results/<experiment>/`` as soon as that seed finishes, so a killed run loses
at most the seed in progress and ``python -m experiments.report`` can summarise whatever
has finished. A record::

    {"experiment": "active_learning", "setting": "mnist", "seed": 0, "quick": false,
     "protocol": {...what was run...}, "results": {...}, "seconds": 812.4,
     "finished": "2026-12-04T21:13:02+00:00", "machine": {...}}

``--quick`` runs (the test suite's) write into a temporary folder unless ``--out`` says
otherwise, so they never mix with the committed results.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import statistics
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def use_shared_data() -> None:
    """Point ``ML_ADV_DATA_DIR`` at ``../shared/data`` when it exists and nothing else is set."""
    if "ML_ADV_DATA_DIR" not in os.environ and SHARED_DATA.is_dir():
        os.environ["ML_ADV_DATA_DIR"] = str(SHARED_DATA)


def parser(
    description: str, *, default_seeds: Sequence[int] = (0, 1, 2)
) -> argparse.ArgumentParser:
    """The arguments every experiment takes: ``--seeds``, ``--quick``, ``--out``."""
    p = argparse.ArgumentParser(description=description.strip().splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=list(default_seeds), help="seeds to run")
    p.add_argument(
        "--quick",
        action="store_true",
        help="a tiny version of the protocol for the test suite (results go to a temporary folder)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="results folder (default: experiments/results, or a temporary one with --quick)",
    )
    p.add_argument(
        "--force", action="store_true", help="rerun seeds that already have a result file"
    )
    return p


def results_root(args: argparse.Namespace) -> Path:
    if args.out is not None:
        return Path(args.out)
    return Path(tempfile.mkdtemp(prefix="ml_adv-quick-")) if args.quick else RESULTS


def result_path(root: Path, experiment: str, setting: str, seed: int) -> Path:
    return root / experiment / f"{setting}-seed{seed}.json"


def done(
    root: Path, experiment: str, setting: str, seed: int, args: argparse.Namespace | None = None
) -> bool:
    """True when this (setting, seed) already has a result file (and ``--force`` is not given)."""
    return (
        not (args is not None and args.force)
        and result_path(root, experiment, setting, seed).is_file()
    )


def write_result(
    root: Path,
    experiment: str,
    setting: str,
    seed: int,
    *,
    protocol: dict,
    results: dict,
    seconds: float,
    quick: bool,
) -> Path:
    """Write one record atomically (temporary file, then rename)."""
    path = result_path(root, experiment, setting, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "experiment": experiment,
        "setting": setting,
        "seed": int(seed),
        "quick": bool(quick),
        "protocol": protocol,
        "results": results,
        "seconds": round(float(seconds), 1),
        "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
    }
    part = path.with_suffix(".json.part")
    part.write_text(json.dumps(record, indent=1, default=_plain) + "\n")
    os.replace(part, path)
    return path


def load_results(experiment: str, root: Path = RESULTS) -> list[dict[str, Any]]:
    """Every record of ``experiment`` under ``root``, sorted by (setting, seed); quick runs
    skipped."""
    folder = root / experiment
    records = (
        [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
        if folder.is_dir()
        else []
    )
    return sorted(
        (r for r in records if not r.get("quick")), key=lambda r: (r["setting"], r["seed"])
    )


def machine() -> dict[str, Any]:
    """CPU model, core count and library versions: what a reader needs to compare timings."""
    import importlib.metadata as md

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(
                (line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu
            )
    except OSError:
        pass
    versions = {}
    for pkg in ("jax", "flax", "optax", "ml_adv"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    try:
        import jax

        backend = jax.default_backend()
    except Exception:  # noqa: BLE001 - only descriptive
        backend = None
    return {"cpu": cpu, "cores": os.cpu_count(), "backend": backend, **versions}


def mean_std(values: Iterable[float | None]) -> tuple[float | None, float | None, int]:
    """``(mean, sample std, n)`` over the non-None values (std None for n < 2)."""
    xs = [
        float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))
    ]
    if not xs:
        return None, None, 0
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else None), len(xs)


def fmt_mean_std(
    values: Iterable[float | None], pattern: str = "{:.4f}", *, of: int | None = None
) -> str:
    """``"0.9912 ± 0.0004"``; ``"-"`` when nothing; ``"(2/3 seeds)"`` appended when some are
    missing."""
    values = list(values)
    mean, std, n = mean_std(values)
    if mean is None:
        return "-"
    # A std has no sign: a signed pattern ("{:+.1%}", for changes) shows it unsigned.
    unsigned = pattern.replace("{:+", "{:")
    text = pattern.format(mean) + ("" if std is None else " ± " + unsigned.format(std))
    total = of if of is not None else len(values)
    return text + (f" ({n}/{total} seeds)" if n < total else "")


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _plain(value: Any) -> Any:
    """JSON for numpy scalars and arrays."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")
