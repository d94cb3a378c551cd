"""The row format, the registry every benchmark plugs into, and the run ``Context``.

Method (timing.py has the machinery and the reasons):

* every contender is built and warmed up (compiled) before any timing; the warm-up round's
  time is kept (``first_round_s``: compile plus one round);
* cycles run one round of every contender in a rotating order; a load monitor flags rounds
  during which other processes used more than ``foreign_limit`` cores, extra cycles replace
  them, and the harness waits (bounded) for the machine to go quiet;
* the median is taken over the clean rounds when there are at least ``ceil(rounds / 2)`` of
  them (else over all rounds, and the contender says ``median_over_contended``);
* each row reports the median per contender, the *ratio of medians* against the peers, and
  the median of the per-cycle ratios (paired, so robust to slow drift).

Rows (plain dicts, JSON-ready) share one schema, checked by ``validate_row``::

    {"name": "throughput/cnn/medium", "group": "throughput", "title": "...",
     "unit": "samples/s", "higher_is_better": true,
     "contenders": {"ml_adv": {"value": 1510.0, "median_s": ..., "min_s": ...,
                               "times_s": [...], "foreign_cores": [...], "clean_rounds": 5,
                               "first_round_s": ..., ...}, ...},
     "ratios": {"ml_adv/PyTorch": 2.1, ...},          # >1: ml_adv faster / better
     "paired_ratios": {"ml_adv/PyTorch": 2.0, ...},
     "extra": {...}}                                  # row-specific facts (config, FLOPs ...)

Extension point: a later benchmark (ensembles, HPO populations, k-center selection) is a
function ``fn(ctx: Context) -> list[row]`` registered with ``@register("ensemble/mlp8",
group="ensemble")`` in a module listed in ``benchmarks.run.BENCHMARK_MODULES``; it times its
contenders with ``time_rounds`` and builds its row with ``make_row``, and then gets the
same selection (``--only``), quick mode, table and JSON output as the rows here.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import statistics
from collections.abc import Callable
from typing import Any

from benchmarks.timing import LoadMonitor, Timing, time_rounds, wait_for_quiet

__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "Context",
    "LoadMonitor",
    "Timing",
    "make_row",
    "register",
    "select",
    "simple_row",
    "time_rounds",
    "validate_row",
    "wait_for_quiet",
]


def _median_of(values: list[float], keep: list[bool], rounds: int) -> tuple[float, bool]:
    """Median over the kept values when enough of them are kept; flag says it fell back."""
    kept = [v for v, k in zip(values, keep) if k]
    if len(kept) >= max(1, math.ceil(rounds / 2)):
        return statistics.median(kept), False
    return statistics.median(values), True


# --------------------------------------------------------------------------- rows
def make_row(
    name: str,
    group: str,
    title: str,
    timing: Timing,
    *,
    rounds: int,
    work_per_round: float | dict[str, float],
    unit: str,
    higher_is_better: bool = True,
    subject: str | None = None,
    peers: tuple[str, ...] = (),
    contender_extra: dict[str, dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Turn a ``Timing`` into a row.

    ``value = work_per_round / median_s`` when ``higher_is_better`` (a rate, e.g. samples/s),
    else ``median_s * work_per_round`` (a time, e.g. seconds per import with work 1).
    ``ratios[f"{subject}/{peer}"]`` is how many times better ``subject`` is than each peer
    (>1: the subject is faster), from medians; ``paired_ratios`` is the median over cycles of
    the same ratio, using cycles where both rounds were clean.
    """

    def work(c: str) -> float:
        return work_per_round[c] if isinstance(work_per_round, dict) else work_per_round

    def better(t_subject: float, t_peer: float, peer: str) -> float:
        # how many times better the subject is: rates compare work/time, times compare time*work
        ws, wp = work(subject), work(peer)
        return (
            (t_peer / t_subject) * (ws / wp)
            if higher_is_better
            else (t_peer * wp) / (t_subject * ws)
        )

    contenders: dict[str, dict[str, Any]] = {}
    for cname, ts in timing.times_s.items():
        keep = timing.clean(cname)
        med, fell_back = _median_of(ts, keep, rounds)
        value = work(cname) / med if higher_is_better else med * work(cname)
        contenders[cname] = {
            "value": value,
            "median_s": med,
            "min_s": min(ts),
            "times_s": ts,
            "foreign_cores": timing.foreign[cname],
            "clean_rounds": sum(keep),
            "median_over_contended": fell_back,
            "first_round_s": timing.first_round_s.get(cname),
            **(contender_extra or {}).get(cname, {}),
        }
    ratios: dict[str, float] = {}
    paired: dict[str, float] = {}
    for peer in peers if subject in contenders else ():
        if peer not in contenders:
            continue
        key = f"{subject}/{peer}"
        ratios[key] = better(contenders[subject]["median_s"], contenders[peer]["median_s"], peer)
        pairs = list(
            zip(
                timing.times_s[subject],
                timing.times_s[peer],
                timing.clean(subject),
                timing.clean(peer),
            )
        )
        cycle_ratios = [better(a, b, peer) for a, b, ka, kb in pairs if ka and kb]
        paired[key] = statistics.median(
            cycle_ratios or [better(a, b, peer) for a, b, _, _ in pairs]
        )
    return {
        "name": name,
        "group": group,
        "title": title,
        "unit": unit,
        "higher_is_better": higher_is_better,
        "contenders": contenders,
        "ratios": ratios,
        "paired_ratios": paired,
        "cycles": timing.cycles,
        "waited_for_quiet_s": timing.waited_s,
        "extra": extra or {},
    }


def simple_row(
    name: str,
    group: str,
    title: str,
    values: dict[str, float],
    *,
    unit: str,
    higher_is_better: bool,
    ratios: dict[str, float] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A row of derived or single-shot values (no timing rounds), same schema."""
    return {
        "name": name, "group": group, "title": title, "unit": unit,
        "higher_is_better": higher_is_better,
        "contenders": {k: {"value": v} for k, v in values.items()},
        "ratios": ratios or {}, "paired_ratios": {}, "cycles": 0, "extra": extra or {},
    }  # fmt: skip


ROW_KEYS = {
    "name",
    "group",
    "title",
    "unit",
    "higher_is_better",
    "contenders",
    "ratios",
    "paired_ratios",
    "cycles",
    "extra",
}


def validate_row(row: dict[str, Any]) -> None:
    """Raise ValueError unless ``row`` follows the schema in the module docstring."""
    missing = ROW_KEYS - set(row)
    if missing:
        raise ValueError(f"row {row.get('name')!r}: missing keys {sorted(missing)}")
    for cname, c in row["contenders"].items():
        v = c.get("value")
        if v is not None and not isinstance(v, (int, float)):
            raise ValueError(
                f"row {row['name']!r}: contender {cname!r} value must be a number or None, "
                f"got {v!r}"
            )
    for key in ("ratios", "paired_ratios"):
        for k, r in row[key].items():
            if "/" not in k or not isinstance(r, (int, float)):
                raise ValueError(
                    f"row {row['name']!r}: {key}[{k!r}] must be 'a/b' -> number, got {r!r}"
                )


# --------------------------------------------------------------------------- registry
@dataclasses.dataclass
class Context:
    """What a benchmark function gets: run settings, the optional peers, earlier results.

    Attributes:
        quick: ``--quick`` (fewer rounds and steps).
        rounds: clean timed rounds wanted per contender.
        device, dtype: ``"cpu"``/``"gpu"`` and ``"f32"``/``"bf16"``.
        steps_scale: multiplies every workload's steps per round (GPU steps are faster).
        torch: the ``torch`` module, or None when PyTorch is skipped or missing.
        torch_device: where the PyTorch peers run: ``"cpu"``, or ``"cuda"`` in a GPU run
            (peers that only run on a CPU leave themselves out when it is not ``"cpu"``).
        torch_compile: add the ``torch.compile`` contender to the train-step rows.
        contenders: the train-step contenders to build and time (None: all of them; the
            GPU check keeps ``ml_adv`` and the PyTorch peers, for its time budget).
        foreign_limit, quiet_budget_s: see ``time_rounds`` (the budget is per row).
        results: rows produced so far in this run, by name (benchmarks may reuse them).
    """

    quick: bool = False
    rounds: int = 7
    device: str = "cpu"
    dtype: str = "f32"
    steps_scale: float = 1.0
    steps: int | None = None
    torch: Any = None
    torch_device: str = "cpu"
    torch_compile: bool = False
    contenders: tuple[str, ...] | None = None
    foreign_limit: float = 0.3
    quiet_budget_s: float = 30.0
    results: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    ran: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    log: Callable[[str], None] = print

    def wants(self, contender: str) -> bool:
        """Whether the train-step rows build ``contender`` (see ``contenders``)."""
        return self.contenders is None or contender in self.contenders

    def time(self, fns: dict[str, Callable[[], Any]], **kwargs) -> Timing:
        kwargs.setdefault("rounds", self.rounds)
        kwargs.setdefault("foreign_limit", self.foreign_limit)
        kwargs.setdefault("quiet_budget_s", self.quiet_budget_s)
        rounds = kwargs["rounds"]
        kwargs.setdefault("max_cycles", rounds + (1 if self.quick else rounds))
        return time_rounds(fns, **kwargs)

    def run(self, name: str) -> list[dict[str, Any]]:
        """Run benchmark ``name`` once per context (later calls return the same rows)."""
        if name not in self.ran:
            rows = BENCHMARKS[name].fn(self)
            self.ran[name] = [row["name"] for row in rows]
            for row in rows:
                self.results[row["name"]] = row
        return [self.results[n] for n in self.ran[name]]

    def need(self, row_name: str) -> dict[str, Any]:
        """Row ``row_name`` of this run, running the benchmark of that name first if needed."""
        if row_name not in self.results:
            self.run(row_name)
        return self.results[row_name]


@dataclasses.dataclass(frozen=True)
class Benchmark:
    name: str
    group: str
    fn: Callable[[Context], list[dict[str, Any]]]
    quick: bool
    default: bool


BENCHMARKS: dict[str, Benchmark] = {}


def register(name: str, *, group: str, quick: bool = True, default: bool = True):
    """Decorator: add ``fn(ctx) -> list[row]`` as benchmark ``name``.

    ``quick``: part of ``--quick``; ``default``: part of a run without ``--only`` (tiny
    smoke-test rows are not).
    """

    def add(fn):
        if name in BENCHMARKS:
            raise ValueError(f"benchmark {name!r} is already registered")
        BENCHMARKS[name] = Benchmark(name, group, fn, quick, default)
        return fn

    return add


def select(patterns: list[str] | None, *, quick: bool) -> list[Benchmark]:
    """Benchmarks matching any of ``patterns`` (fnmatch, or a name prefix), in registry order.

    Without patterns: the default benchmarks (only the quick ones under ``quick``).
    """
    if not patterns:
        return [b for b in BENCHMARKS.values() if b.default and (b.quick or not quick)]
    chosen = [
        b for b in BENCHMARKS.values()
        if any(fnmatch.fnmatchcase(b.name, p) or b.name.startswith(p.rstrip("/") + "/")
               or b.name == p
               for p in patterns)
    ]  # fmt: skip
    if not chosen:
        raise ValueError(f"--only {patterns}: no benchmark matches; known: {sorted(BENCHMARKS)}")
    return chosen
