"""The GPU check: ml_adv against PyTorch on one GPU, everything inside one time budget (issue 27).

``bash benchmarks/gpu_check.sh [--budget-seconds N]`` installs what is missing and runs
``python -m benchmarks.gpu_check``. On a machine without a GPU the same path runs on the CPU
with tiny stand-ins (a dry run of the code, not a measurement; its programs share one
compilation cache, ``dry_run_compiles``), which ``tests/test_benchmarks.py`` runs so the check
cannot rot.

The plan, in priority order (``build_plan``):

1. ``throughput/<arch>/medium/<precision>``: the five medium workloads, each in ``bf16`` (ml_adv
   mixed precision against ``torch.autocast(bfloat16)``, float32 weights on both sides) and
   ``f32`` (float32; on a GPU JAX's default matmul precision is TF32-like and PyTorch runs with
   TF32 allowed, so the title says ``f32/TF32``): ml_adv's scanned epoch against PyTorch eager
   on CUDA, same model, batch, optimizer and synthetic data.
2. ``mfu/matmul-peak`` (bf16 8192^2 ``jnp.dot`` and ``torch.matmul``),
   ``throughput/<arch>/large/bf16`` (12 layers, d1024, 16 heads, ffn 4096, 512 tokens, batch
   32) and ``mfu/<arch>/<size>``: the encoders' model FLOP utilisation against that peak.
3. ``quickstart/unroll-<u>`` and ``quickstart/steps``: the quickstart per ``scan_unroll``, and its
   device-loop ceiling (``benchmarks/quickstart.py``).
4. ``stacked/*`` and ``hpo/*``: K=8 members and P=16 populations (``stacked.py``, ``hpo.py``).
5. ``torch-compile/<row>``: ``torch.compile`` against ml_adv for each throughput row that ran
   (added to that row); last because inductor takes tens of seconds per model.
6. ``quickstart/command``: a fresh ``ml-adv quickstart`` process.

Budget: ``--budget-seconds`` (default 240) counts from ``--started-at`` (the shell script's
start, so the install is included). Each task has an estimate for the device (``GPU.estimates``,
scaled by how the finished tasks compared to theirs); one that would not fit in the time left is
skipped and listed with the reason. The JSON is rewritten after every task, with every task of
the plan and its status; run as a script, a watchdog writes it and exits just before the
deadline, naming the task it interrupted.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import dataclasses
import datetime as _dt
import fnmatch
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from benchmarks.stacked import FULL, TINY, Members

DEFAULT_BUDGET_S = 240.0
RESERVE_S = 3.0  # the last JSON write and the tables
ARCHS = ("mlp", "cnn", "lstm", "transformer", "bert")
ENCODERS = ("transformer", "bert")
PRECISIONS = ("bf16", "f32")
COMPILE_ORDER = ("transformer", "bert", "cnn", "mlp", "lstm")  # the most telling first


@dataclasses.dataclass(frozen=True)
class Sizes:
    """What each part of the check runs on this device, and how long each kind of task takes."""

    label: str
    medium: str  # the workload size run as "medium"
    large: str  # ... and as "large"
    steps: dict[str, int]  # steps per timed round, by workload name
    rounds: int
    slow_rounds: int  # populations and HPO: a round is 16 trainings
    peak: tuple[int, int]  # matmul n, products per round
    members: Members
    population: dict[str, int]  # p, epochs, examples (None: all digits)
    quickstart: tuple[str, ...]  # options on top of the quickstart's defaults
    unrolls: tuple[int, ...]
    loop_unrolls: tuple[int, ...]
    estimates: dict[str, float]  # seconds per task kind: priors, see Budget
    off: dict[str, str] = dataclasses.field(default_factory=dict)  # left out here: task -> reason


# Rounds sized so the slower contender's round takes ~0.2-0.6 s on an H200 (a medium step is
# launch-bound there: ~0.05-0.3 ms for the MLP and CNN, a few ms for the encoders; a large
# encoder step does ~16 TFLOP, ~30-50 ms). The estimates are guesses until the lead's run: the
# budget rescales them by the first tasks' actual times.
# fmt: off
GPU = Sizes(
    label="gpu", medium="medium", large="large",
    steps={"mlp/medium": 2000, "cnn/medium": 400, "lstm/medium": 200, "transformer/medium": 100,
           "bert/medium": 100, "transformer/large": 10, "bert/large": 10},
    rounds=3, slow_rounds=1, peak=(8192, 20), members=FULL,
    population={"p": 16, "epochs": 3, "examples": None}, quickstart=(),
    unrolls=(1, 16, 4), loop_unrolls=(1, 16),
    estimates={"throughput/mlp": 8, "throughput/cnn": 10, "throughput/lstm": 14,
               "throughput/transformer": 14, "throughput/bert": 14, "large": 60, "peak": 6,
               "mfu": 0, "quickstart": 30, "quickstart-steps": 15, "members": 12,
               "population": 40, "hpo": 40, "torch-compile": 60, "torch-compile-large": 120,
               "command": 45},
)
# The CPU dry run: tiny workloads stand in for medium and large (2 steps a round, as the
# run.main tests in tests/test_benchmarks.py, whose programs the dry run then loads), tiny members
# and populations, a tiny quickstart (CNN tiny, 1 epoch: quickstart/steps' device loop over all
# epochs is then fit's own epoch program, loaded from the dry run's cache). It checks the code
# path, not the CPU's speed; rows whose code another row already runs are left out.
CPU = Sizes(
    label="cpu dry run", medium="tiny", large="tiny",
    steps={f"{a}/tiny": 2 for a in ARCHS},
    rounds=2, slow_rounds=1, peak=(256, 2), members=TINY,
    population={"p": 2, "epochs": 1, "examples": 128},
    quickstart=("--size", "tiny", "--epochs", "1"), unrolls=(1, 2), loop_unrolls=(1,),
    estimates={"throughput/mlp": 1.5, "throughput/cnn": 2, "throughput/lstm": 3,
               "throughput/transformer": 3, "throughput/bert": 3, "large": 3, "peak": 1,
               "mfu": 0, "quickstart": 4, "quickstart-steps": 3, "members": 3,
               "population": 4, "hpo": 4, "torch-compile": 25, "torch-compile-large": 25,
               "command": 15},
    off={"stacked/mlp-w128": "CPU dry run: the same code as stacked/mlp-w32",
         "stacked/population-lr-cnn": "CPU dry run: the same code as stacked/population-lr",
         "hpo/population-cnn": "CPU dry run: the same code as hpo/population-mlp",
         # One plain and one encoder workload run the throughput and MFU code; the other
         # models' twins are checked parameter by parameter in tests/test_benchmarks.py.
         **{f"throughput/{a}/medium/{p}": f"CPU dry run: the same code as throughput/mlp/medium/{p}"
            for a in ("cnn", "lstm", "bert") for p in PRECISIONS},
         "throughput/transformer/medium/f32":
             "CPU dry run: the same code as throughput/mlp/medium/f32",
         "throughput/bert/large/bf16":
             "CPU dry run: the same code as throughput/transformer/large/bf16",
         "mfu/bert/medium": "CPU dry run: the same code as mfu/transformer/medium",
         "mfu/bert/large": "CPU dry run: the same code as mfu/transformer/large",
         "quickstart/unroll-2": "CPU dry run: the same code as quickstart/unroll-1"},
)
# fmt: on


@dataclasses.dataclass
class Task:
    """One entry of the plan: ``run()`` returns its rows (a torch-compile task updates others)."""

    name: str
    kind: str  # key of Sizes.estimates
    run: Callable[[], list[dict]]
    needs: tuple[str, ...] = ()  # rows that must exist first
    off: str | None = None  # a reason to skip it whatever the budget


# --------------------------------------------------------------------------- budget
class Budget:
    """Time left before the deadline, and estimates rescaled by how the done tasks went."""

    def __init__(self, deadline: float, estimates: dict[str, float]):
        self.deadline, self.estimates, self.ratios = deadline, estimates, []

    def left(self) -> float:
        return self.deadline - time.time() - RESERVE_S

    def estimate(self, kind: str) -> float:
        # Why a median of ratios: one slow compile must not skip everything after it, but a
        # machine 2x slower than the priors should plan as such after its first few tasks.
        scale = min(3.0, max(0.5, statistics.median(self.ratios))) if self.ratios else 1.0
        return self.estimates[kind] * scale

    def done(self, kind: str, seconds: float) -> None:
        if self.estimates[kind] >= 1:
            self.ratios.append(seconds / self.estimates[kind])


# --------------------------------------------------------------------------- the result file
class Check:
    """Rows and plan entries so far; writes the JSON after every change (thread-safe)."""

    def __init__(self, out: Path, env: dict, settings: dict, started: float):
        self.out, self.env, self.settings, self.started = out, env, settings, started
        self.rows: dict[str, dict] = {}
        self.plan: list[dict] = []
        self.lock = threading.RLock()

    def entry(self, name: str) -> dict:
        return next(e for e in self.plan if e["name"] == name)

    def not_run(self) -> list[dict]:
        return [
            {"name": e["name"], "status": e["status"], "reason": e.get("reason", "")}
            for e in self.plan
            if e["status"] not in ("done", "pending", "running")
        ]

    def write(self) -> None:
        from benchmarks import report

        with self.lock:
            keys = ("budget_seconds", "started_at", "deadline")
            extra = {
                "plan": self.plan,
                "not_run": self.not_run(),
                "budget": {k: self.settings[k] for k in keys},
            }
            report.write_json(
                self.out,
                self.env,
                self.settings,
                list(self.rows.values()),
                time.time() - self.started,
                extra,
            )

    def finish(self, *, deadline_hit: bool = False) -> str:
        """Mark what the deadline cut short, write the JSON, print and return the tables."""
        from benchmarks import report

        with self.lock:
            for e in self.plan:
                if deadline_hit and e["status"] == "running":
                    e.update(status="interrupted", reason="the budget ran out while it ran")
                elif e["status"] in ("pending", "running"):
                    e.update(status="skipped", reason="not reached before the budget ran out")
            self.write()
            table = report.markdown(list(self.rows.values()))
            missing = report.not_run_table(self.not_run())
        text = "\n\n".join(t for t in (table, missing) if t)
        print("\n" + text + "\n", flush=True)
        print("ratios a/b: times faster (>1: a wins), ratio of medians", flush=True)
        budget = self.settings["budget_seconds"]
        wall = time.time() - self.started
        print(f"wall time {wall:.0f} s (budget {budget:.0f} s); wrote {self.out}", flush=True)
        return text


def run_plan(check: Check, plan: list[Task], budget: Budget, patterns: dict) -> None:
    """Run every task that is selected, fits the budget and has what it needs; record each."""
    with check.lock:
        check.plan[:] = [
            {
                "name": t.name,
                "kind": t.kind,
                "status": "pending",
                "estimate_s": budget.estimates[t.kind],
            }
            for t in plan
        ]
    check.write()
    for task in plan:
        entry = check.entry(task.name)
        reason = _skip_reason(task, check, budget, patterns)
        if reason:
            with check.lock:
                entry.update(status="skipped", reason=reason)
            check.write()
            print(f"[{time.time() - check.started:6.0f}s] skip {task.name}: {reason}", flush=True)
            continue
        print(f"[{time.time() - check.started:6.0f}s] {task.name}", flush=True)
        with check.lock:
            entry.update(status="running", planned_s=round(budget.estimate(task.kind), 1))
        check.write()  # a run killed from outside still names the task it was in
        t0, cpu0 = time.time(), time.process_time()
        try:
            rows = task.run()
        except Exception as exc:  # noqa: BLE001 - one broken row must not lose the others
            with check.lock:
                entry.update(
                    status="failed",
                    seconds=time.time() - t0,
                    reason=f"{type(exc).__name__}: {exc}",
                    traceback=traceback.format_exc()[-3000:],
                )
            print(f"         FAILED: {type(exc).__name__}: {exc}", flush=True)
        else:
            seconds = time.time() - t0
            budget.done(task.kind, seconds)
            with check.lock:
                for row in rows:
                    check.rows[row["name"]] = row
                entry.update(
                    status="done",
                    seconds=seconds,
                    rows=[r["name"] for r in rows],
                    cpu_seconds=time.process_time() - cpu0,
                )
            print(f"         done in {seconds:.1f}s", flush=True)
        check.write()


def _skip_reason(task: Task, check: Check, budget: Budget, patterns: dict) -> str | None:
    if patterns["only"] and not any(fnmatch.fnmatchcase(task.name, p) for p in patterns["only"]):
        return "not selected (--only)"
    if any(fnmatch.fnmatchcase(task.name, p) for p in patterns["skip"]):
        return "--skip"
    if task.off:
        return task.off
    missing = [n for n in task.needs if n not in check.rows]
    if missing:
        return f"needs {missing[0]}, which did not run"
    need, left = budget.estimate(task.kind), budget.left()
    if need > left:
        return f"budget: needs ~{need:.0f} s (estimate), {max(0.0, left):.0f} s left"
    return None


# --------------------------------------------------------------------------- the plan
def build_plan(
    sizes: Sizes, ctxs: dict, torch_compile_off: str | None, budget: Budget
) -> list[Task]:
    """Every task of the check in priority order (see the module docstring)."""
    from benchmarks import hpo, mfu, quickstart, stacked, throughput
    from benchmarks.workloads import WORKLOADS

    kept: dict[str, dict] = {}
    check_rows: dict[str, dict] = {}  # filled by the tasks: what later tasks read
    tasks: list[Task] = []

    def tput(arch: str, slot: str, prec: str) -> Task:
        size = sizes.medium if slot == "medium" else sizes.large
        wl = WORKLOADS[f"{arch}/{size}"]
        name = f"throughput/{arch}/{slot}/{prec}"
        stand_in = "" if size == slot else f" (as {slot})"
        title = f"{arch} {size}{stand_in} {precision_label(ctxs[prec])}"

        def run():
            kept[name] = {}
            rows = throughput.run_workload(
                ctxs[prec], wl, name=name, title=title, steps=sizes.steps[wl.name], keep=kept[name]
            )
            check_rows.update({r["name"]: r for r in rows})
            return rows

        return Task(name, "large" if slot == "large" else f"throughput/{arch}", run)

    def peak():
        rows = mfu.matmul_peak(ctxs["bf16"], n=sizes.peak[0], reps=sizes.peak[1])
        check_rows.update({r["name"]: r for r in rows})
        return rows

    def mfu_task(arch: str, slot: str) -> Task:
        size = sizes.medium if slot == "medium" else sizes.large
        source = f"throughput/{arch}/{slot}/bf16"

        def run():
            return [
                mfu.mfu_row(
                    ctxs["bf16"],
                    f"mfu/{arch}/{slot}",
                    f"{arch}/{size}",
                    check_rows[source],
                    check_rows["mfu/matmul-peak"],
                    f"{arch} {slot} train step, bf16",
                )
            ]

        return Task(f"mfu/{arch}/{slot}", "mfu", run, needs=(source, "mfu/matmul-peak"))

    for arch in ARCHS:
        tasks += [tput(arch, "medium", prec) for prec in PRECISIONS]
    tasks.append(Task("mfu/matmul-peak", "peak", peak))
    tasks += [mfu_task(arch, "medium") for arch in ENCODERS]
    for arch in ENCODERS:
        tasks += [tput(arch, "large", "bf16"), mfu_task(arch, "large")]
    tasks += quickstart_tasks(sizes, ctxs["f32"], quickstart)
    slow = dataclasses.replace(ctxs["f32"], rounds=sizes.slow_rounds)
    pop = sizes.population

    def members(width: int) -> Task:
        return Task(
            f"stacked/mlp-w{width}",
            "members",
            lambda: stacked._members_row(ctxs["f32"], width, sizes.members),
        )

    tasks += [
        members(32),
        members(128),
        Task(
            "stacked/population-lr",
            "population",
            lambda: stacked._population_row(slow, "mlp", **pop),
        ),
        Task(
            "stacked/population-lr-cnn",
            "population",
            lambda: stacked._population_row(slow, "cnn", **pop),
        ),
        Task("hpo/population-mlp", "hpo", lambda: hpo._row(slow, "mlp", **pop)),
        Task("hpo/population-cnn", "hpo", lambda: hpo._row(slow, "cnn", **pop)),
    ]
    tasks += compile_tasks(ctxs, kept, check_rows, torch_compile_off)
    tasks.append(
        Task(
            "quickstart/command",
            "command",
            lambda: quickstart.command_row(
                ctxs["f32"], sizes.quickstart, timeout_s=max(5.0, budget.left())
            ),
        )
    )
    for t in tasks:
        t.off = t.off or sizes.off.get(t.name)
    return tasks


def quickstart_tasks(sizes: Sizes, ctx, quickstart) -> list[Task]:
    """One task per unroll, then the steps row against the device-loop ceiling."""
    results: dict[int, dict] = {}

    def args(name: str):  # run directories in a temporary folder, removed at exit
        if "tmp" not in results:
            results["tmp"] = tempfile.mkdtemp(prefix="ml_adv_gpu_check_")
            atexit.register(shutil.rmtree, results["tmp"], ignore_errors=True)
        return quickstart.quickstart_args(Path(results["tmp"]) / name, sizes.quickstart)

    def unroll(u: int) -> Task:
        return Task(
            f"quickstart/unroll-{u}",
            "quickstart",
            lambda: quickstart.unroll_row(ctx, args(f"unroll-{u}"), u, results),
        )

    def steps():
        fits = {u: r for u, r in results.items() if isinstance(u, int)}
        return quickstart.steps_row(ctx, args("loop"), fits, sizes.loop_unrolls)

    first = f"quickstart/unroll-{sizes.unrolls[0]}"
    return [unroll(u) for u in sizes.unrolls] + [
        Task("quickstart/steps", "quickstart-steps", steps, needs=(first,))
    ]


def compile_tasks(ctxs: dict, kept: dict, rows: dict, off: str | None) -> list[Task]:
    """``torch.compile`` against ml_adv for each throughput row, added to that row."""
    from benchmarks import throughput

    def task(arch: str, slot: str, prec: str) -> Task:
        name = f"throughput/{arch}/{slot}/{prec}"

        def run():
            compile_row = rows.get(name.replace("throughput/", "compile/", 1))
            throughput.add_torch_compile(ctxs[prec], rows[name], compile_row, kept[name])
            return [rows[name]]

        kind = "torch-compile-large" if slot == "large" else "torch-compile"
        return Task(f"torch-compile/{name}", kind, run, needs=(name,), off=off)

    out = [task(arch, "medium", prec) for prec in PRECISIONS for arch in COMPILE_ORDER]
    return out + [task(arch, "large", "bf16") for arch in ENCODERS]


def precision_label(ctx) -> str:
    if ctx.dtype == "bf16":
        return "bf16"
    return "f32/TF32" if ctx.device == "gpu" else "f32"


# --------------------------------------------------------------------------- entry point
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu_check", description=__doc__.split("\n")[0]
    )
    ap.add_argument(
        "--budget-seconds",
        type=float,
        default=DEFAULT_BUDGET_S,
        help="the whole check's time, counted from --started-at (default 240)",
    )
    ap.add_argument(
        "--started-at",
        type=float,
        default=None,
        help="Unix time the budget counts from (gpu_check.sh passes its start)",
    )
    ap.add_argument(
        "--out",
        type=Path,
        help="the JSON (default: benchmarks/results/<machine>-<date>-gpu-check.json)",
    )
    ap.add_argument(
        "--only",
        nargs="+",
        default=[],
        metavar="GLOB",
        help="run only the tasks matching these (the others are listed as skipped)",
    )
    ap.add_argument("--skip", nargs="+", default=[], metavar="GLOB", help="skip these tasks")
    ap.add_argument(
        "--torch-compile",
        choices=("auto", "on", "off"),
        default="auto",
        help="torch.compile tasks (auto: on a GPU as the budget allows, off on a CPU)",
    )
    ap.add_argument("--no-torch", action="store_true", help="leave the PyTorch peers out")
    ap.add_argument(
        "--no-autotune",
        action="store_true",
        help="ML_ADV_AUTOTUNE=0: static lowerings and guard (not what fit runs)",
    )
    ap.add_argument("--cpu-devices", default="1", help="CPU dry run: JAX's CPU devices (default 1)")
    ap.add_argument("--list", action="store_true", help="print the plan and exit")
    return ap.parse_args(argv)


def default_out(env: dict, on_gpu: bool, partial: bool) -> Path:
    """``benchmarks/results/<machine>-<date>-gpu-check[-partial].json`` (``--only``: partial, so
    a second run for what the first skipped keeps the first); a dry run's goes to $TMPDIR."""
    from benchmarks.env import machine_slug
    from benchmarks.run import RESULTS_DIR

    if not on_gpu:  # a dry run measures nothing worth keeping: out of the repository
        return Path(tempfile.gettempdir()) / "ml_adv-gpu-check-cpu-dry-run.json"
    name = f"{machine_slug(env)}-{_dt.date.today().isoformat()}-gpu-check"
    return RESULTS_DIR / f"{name}{'-partial' if partial else ''}.json"


def make_contexts(sizes: Sizes, on_gpu: bool, torch, torch_device: str) -> dict:
    """One harness ``Context`` per precision: ml_adv and the PyTorch peers, no quiet waits."""
    from benchmarks.contenders import ML_ADV, TORCH
    from benchmarks.harness import Context

    # Other processes' CPU load hardly moves GPU timings, and the dry run checks code, not
    # speed: no round counts as contended, so none is repeated.
    base = Context(
        quick=True,
        rounds=sizes.rounds,
        device="gpu" if on_gpu else "cpu",
        torch=torch,
        torch_device=torch_device,
        contenders=(ML_ADV, TORCH),
        foreign_limit=1e9,
        quiet_budget_s=0.0,
        log=lambda s: print(s, flush=True),
    )
    return {p: dataclasses.replace(base, dtype=p) for p in PRECISIONS}


def start_jax(args: argparse.Namespace) -> bool:
    """Start JAX's backend as the check wants it; returns whether it is a GPU."""
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # JAX and PyTorch share it
    from ml_adv.devices import use_cpu_cores

    use_cpu_cores(args.cpu_devices, strict=False)  # before JAX's backend starts
    import jax

    on_gpu = jax.default_backend() == "gpu"
    if args.no_autotune:
        os.environ["ML_ADV_AUTOTUNE"] = "0"
    elif not on_gpu:  # a dry run measures nothing: autotuning would only cost time
        os.environ.setdefault("ML_ADV_AUTOTUNE", "0")
    if not on_gpu:
        print(
            "gpu_check: JAX sees no GPU: a CPU dry run with tiny stand-ins "
            "(checks the code, measures nothing)"
        )
    return on_gpu


# The CPU dry run's shared compilation cache (``dry_run_compiles``): JAX's persistent cache,
# every program written (JAX's default keeps only those that took over a second).
_CACHE_CONFIG = {
    "jax_compilation_cache_dir": None,
    "jax_persistent_cache_min_compile_time_secs": 0.0,
    "jax_persistent_cache_min_entry_size_bytes": 0,
}


@contextlib.contextmanager
def dry_run_compiles(on_gpu: bool) -> Iterator[str | None]:
    """CPU dry run: one persistent compilation cache (a temporary folder) for the whole check;
    yields its path (None on a GPU, where nothing changes).

    Why: most of a dry run is XLA compiling, and many of its programs are compiled more than
    once: ``throughput/*/large`` trains the same tiny stand-in as ``medium``, ``fit``'s runner
    compiles the epoch the contender compiled ahead of time, ``quickstart/steps``' device loop
    is fit's epoch, and ``quickstart/command``'s fresh process trains what
    ``quickstart/unroll-1`` trained. With the cache each such program is compiled
    once and loaded from the cache after that, here and in the child process (the environment
    passes it on, with this process's matmul precision so that its programs are the same). The
    code runs as before; only compile times are shorter, and a dry run measures nothing. A
    real GPU run never gets here: its compile times are part of what it reports. The previous
    settings come back afterwards (the test suite runs the dry run inside a worker).
    """
    if on_gpu:
        yield None
        return
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    given = jax.config.jax_compilation_cache_dir  # a cache already set up is used as it is
    folder = given or tempfile.mkdtemp(prefix="ml_adv_gpu_check_xla_")
    values = {**_CACHE_CONFIG, "jax_compilation_cache_dir": folder}
    before = {k: getattr(jax.config, k) for k in values}
    env = {k.upper(): str(v) for k, v in values.items()}
    precision = jax.config.jax_default_matmul_precision
    if precision is not None:
        env["JAX_DEFAULT_MATMUL_PRECISION"] = str(precision)
    env_before = {k: os.environ.get(k) for k in env}
    try:
        for k, v in values.items():
            jax.config.update(k, v)
        compilation_cache.reset_cache()  # JAX decides whether it caches at its first compile
        os.environ.update(env)
        yield folder
    finally:
        for k, v in env_before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        for k, v in before.items():
            jax.config.update(k, v)
        compilation_cache.reset_cache()
        if not given:
            shutil.rmtree(folder, ignore_errors=True)


def run_settings(
    args, argv, sizes: Sizes, deadline: float, started: float, torch_facts: dict
) -> dict:
    """The settings block of the result file."""
    command = argv if argv is not None else sys.argv[1:]
    return {
        "command": " ".join(["python -m benchmarks.gpu_check", *command]),
        "budget_seconds": args.budget_seconds,
        "started_at": started,
        "deadline": deadline,
        "sizes": sizes.label,
        "measured_on_gpu": sizes is GPU,
        "rounds": sizes.rounds,
        "steps": sizes.steps,
        **torch_facts,
        "autotune": os.environ.get("ML_ADV_AUTOTUNE", "on"),
        "XLA_PYTHON_CLIENT_PREALLOCATE": os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE"),
    }


def main(argv: list[str] | None = None, *, watchdog: bool = False) -> dict[str, Any]:
    """Run the check; returns ``{"path", "table", "rows", "plan"}``. ``watchdog`` (the script):
    write the JSON and exit just before the deadline whatever is running."""
    args = parse_args(argv)
    started = args.started_at or time.time()
    deadline = started + args.budget_seconds
    on_gpu = start_jax(args)
    from benchmarks import env as envmod
    from benchmarks.run import load_torch

    sizes = GPU if on_gpu else CPU
    torch, torch_device, torch_note = load_torch(args.no_torch, "gpu" if on_gpu else "cpu")
    ctxs = make_contexts(sizes, on_gpu, torch, torch_device)
    compile_off = _compile_off(args.torch_compile, on_gpu, torch)
    budget = Budget(deadline, sizes.estimates)
    plan = build_plan(sizes, ctxs, compile_off, budget)
    if args.list:
        for t in plan:
            print(f"{t.name:48s} {t.kind:20s} ~{sizes.estimates[t.kind]:.0f} s {t.off or ''}")
        return {"plan": [t.name for t in plan]}
    env = envmod.collect(torch)
    torch_facts = {
        "torch": torch_note,
        "torch_device": torch_device,
        "torch_compile": compile_off or "on",
        "contenders": list(ctxs["bf16"].contenders),
    }
    settings = run_settings(args, argv, sizes, deadline, started, torch_facts)
    print(
        f"{env['jax_devices'][0]}, JAX {env['versions']['jax']}, Flax {env['versions']['flax']}; "
        f"PyTorch: {torch_note}; {deadline - time.time():.0f} s of the budget left"
    )
    check = Check(args.out or default_out(env, on_gpu, bool(args.only)), env, settings, started)
    if watchdog:
        _start_watchdog(check, deadline)
    with dry_run_compiles(on_gpu) as cache:
        settings["compilation_cache"] = "shared by the dry run's programs" if cache else None
        run_plan(check, plan, budget, {"only": args.only, "skip": args.skip})
    table = check.finish()
    return {
        "path": str(check.out),
        "table": table,
        "rows": list(check.rows.values()),
        "plan": check.plan,
    }


def _compile_off(choice: str, on_gpu: bool, torch) -> str | None:
    """Why the torch.compile tasks are off, or None when they run (as the budget allows)."""
    if torch is None:
        return "no PyTorch peer"
    if choice == "off":
        return "--torch-compile off"
    if choice == "auto" and not on_gpu:
        return (
            "CPU dry run: inductor compiles take ~15 s a model on a small CPU "
            "(--torch-compile on to try)"
        )
    return None


def _start_watchdog(check: Check, deadline: float) -> None:
    """At the deadline: write what there is, name the interrupted task, exit (status 0)."""

    def fire():
        print("gpu_check: the budget ran out: writing the results so far", flush=True)
        for _ in range(3):  # the running task may change a row while it is being written
            try:
                check.finish(deadline_hit=True)
                break
            except RuntimeError:
                time.sleep(0.1)
        os._exit(0)

    timer = threading.Timer(max(0.0, deadline - time.time() - 1.0), fire)
    timer.daemon = True
    timer.start()


if __name__ == "__main__":
    from ml_adv.devices import cheap_cpu_compiles

    # Without a GPU the dry run measures nothing: compile cheaply (~40% less time). Only
    # before JAX's backend starts, so only here, not in main().
    cheap_cpu_compiles()
    result = main(watchdog=True)
    failed = [e for e in result.get("plan", []) if isinstance(e, dict) and e["status"] == "failed"]
    sys.exit(1 if failed else 0)
