"""Run the examples' ``main()`` one after another in this process; write a JSON report.

    python examples/_run_all.py [--output results.json] [NAME ...]

Each example runs from the current folder (its ``runs/`` go there); one that raises is
recorded (status, traceback, seconds, the tail of what it printed) and the next one runs.
The report is rewritten after every example, so a run cut short still says how far it got.
Running them in one process lets them share compiled programs and data: this is how
``tests/test_examples.py`` runs them, with ``ML_ADV_EXAMPLES_QUICK=1``. The exit status is
1 when an example failed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import runpy
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUTPUT_TAIL = 4000  # characters of each example's printed output kept in the report


def example_names() -> list[str]:
    """Every example script (helpers start with an underscore)."""
    return sorted(p.stem for p in HERE.glob("*.py") if not p.name.startswith("_"))


class _Tee(io.TextIOBase):
    """Write to the console and keep a copy."""

    def __init__(self, *streams):
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


def run_example(name: str) -> dict:
    copy = io.StringIO()
    started = time.perf_counter()
    error = None
    print(f"=== {name}", flush=True)
    try:
        with contextlib.redirect_stdout(_Tee(sys.stdout, copy)):
            namespace = runpy.run_path(str(HERE / f"{name}.py"), run_name=f"example_{name}")
            namespace["main"]()
    except KeyboardInterrupt:
        raise
    except BaseException:  # noqa: BLE001 - a failing example is reported; the next one runs
        error = traceback.format_exc()
        print(error, file=sys.stderr, flush=True)
    return {
        "status": "failed" if error else "passed",
        "seconds": round(time.perf_counter() - started, 2),
        "error": error,
        "output": copy.getvalue()[-OUTPUT_TAIL:],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="examples to run (default: all)")
    parser.add_argument("--output", default="examples-report.json", help="the JSON report")
    args = parser.parse_args(argv)
    names = args.names or example_names()
    unknown = sorted(set(names) - set(example_names()))
    if unknown:
        parser.error(f"unknown examples {unknown}; expected some of {example_names()}")
    sys.path.insert(0, str(HERE))  # the examples import _common
    report = {
        "quick": os.environ.get("ML_ADV_EXAMPLES_QUICK") == "1",
        "examples": {},
        "total_seconds": 0.0,
    }
    started = time.perf_counter()
    for name in names:
        report["examples"][name] = run_example(name)
        report["total_seconds"] = round(time.perf_counter() - started, 2)
        Path(args.output).write_text(json.dumps(report, indent=2))
    for name, result in report["examples"].items():
        print(f"{result['status']:6} {result['seconds']:7.1f} s  {name}")
    print(f"total {report['total_seconds']:.1f} s")
    return int(any(r["status"] != "passed" for r in report["examples"].values()))


if __name__ == "__main__":
    sys.exit(main())
