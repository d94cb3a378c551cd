"""Timing rounds on a shared machine: rotating cycles, a load monitor, waiting for quiet.

Why: on a 2-core machine shared with other people's jobs, a benchmark is only as good as its
defence against their load. Every contender is warmed up (compiled) first; then cycles run one
round of each contender in a rotating order, so drift and bursts hit all alike; a
``LoadMonitor`` charges each round with the CPU that *other* processes used meanwhile
(``/proc/stat`` busy + steal time minus this process's and its children's CPU time); rounds
above ``foreign_limit`` cores are "contended", extra cycles are run (up to ``max_cycles``)
and the harness sleeps (``wait_for_quiet``, bounded by ``quiet_budget_s``) until the others
go quiet. PyTorch's OpenMP threads slow down 2-80x when a foreign process takes a core
(measured here: a 0.18 s round took 4-24 s), XLA's thread pool about 2x, so an
uncontrolled comparison would be meaningless.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import time
from collections.abc import Callable
from typing import Any

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


# --------------------------------------------------------------------------- load monitor
def _machine_busy_s() -> float | None:
    """Seconds of CPU time all processes used so far (busy + steal), or None if unknown."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / _TICKS


def _own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


MIN_WINDOW_S = 0.2  # /proc/stat counts in 10 ms ticks: shorter windows give no usable estimate


class LoadMonitor:
    """Cores' worth of CPU used by other processes between ``start()`` and ``stop()``."""

    def start(self) -> None:
        self._busy, self._own, self._wall = _machine_busy_s(), _own_cpu_s(), time.perf_counter()

    def stop(self) -> tuple[float, float | None]:
        """``(wall seconds, foreign cores)``; foreign is None where /proc/stat is unavailable
        or the window was shorter than ``MIN_WINDOW_S``."""
        wall = time.perf_counter() - self._wall
        busy = _machine_busy_s()
        if busy is None or self._busy is None or wall < MIN_WINDOW_S:
            return wall, None
        foreign = (busy - self._busy) - (_own_cpu_s() - self._own)
        return wall, max(0.0, foreign / wall)


def wait_for_quiet(limit: float, budget_s: float, window_s: float = 0.25) -> float:
    """Sleep in ``window_s`` probes until other processes use at most ``limit`` cores, or
    ``budget_s`` is spent; returns the seconds waited. Sleeping costs no CPU, so waiting out
    a burst of someone else's work is cheaper than timing through it."""
    t0 = time.perf_counter()
    monitor = LoadMonitor()
    while time.perf_counter() - t0 < budget_s:
        monitor.start()
        time.sleep(window_s)
        _, load = monitor.stop()
        if load is None or load <= limit:
            break
    return time.perf_counter() - t0


# --------------------------------------------------------------------------- timing
@dataclasses.dataclass
class Timing:
    """Raw result of ``time_rounds``: per contender, one entry per round."""

    times_s: dict[str, list[float]]
    foreign: dict[str, list[float | None]]
    first_round_s: dict[str, float]
    cycles: int
    foreign_limit: float
    waited_s: float = 0.0

    def clean(self, name: str) -> list[bool]:
        return [f is None or f <= self.foreign_limit for f in self.foreign[name]]


# A pause before each timed round. PyTorch's OpenMP workers keep spinning for a moment after
# each parallel region and slow whichever contender runs next: measured 2026-11-30 on 2 cores,
# a stacked JAX epoch on two core devices took 24.9 ms right after a burst of torch matmuls
# and 16.7-17.5 ms after a pause of 20-500 ms. XLA's own workers showed no such tail.
SETTLE_S = 0.05


def time_rounds(
    fns: dict[str, Callable[[], Any]],
    *,
    rounds: int,
    warmup: int = 1,
    foreign_limit: float = 0.3,
    max_cycles: int | None = None,
    quiet_budget_s: float = 0.0,
) -> Timing:
    """Warm up every contender, then time rotating cycles of one round each (see module doc).

    Args:
        fns: contender name -> callable running one round and blocking until it is done.
        rounds: clean rounds wanted per contender.
        warmup: untimed rounds per contender before timing (the first is recorded).
        foreign_limit: cores of foreign CPU use above which a round counts as contended.
        max_cycles: stop after this many cycles even without enough clean rounds
            (default ``2 * rounds``).
        quiet_budget_s: seconds this call may spend (in total) waiting for other processes
            to go quiet, before the first cycle and after each contended one.
    """
    names = list(fns)
    first: dict[str, float] = {}
    for name in names:
        for i in range(warmup):
            t0 = time.perf_counter()
            fns[name]()
            if i == 0:
                first[name] = time.perf_counter() - t0
    times: dict[str, list[float]] = {n: [] for n in names}
    foreign: dict[str, list[float | None]] = {n: [] for n in names}
    max_cycles = max_cycles or 2 * rounds
    timing = Timing(times, foreign, first, 0, foreign_limit)
    round_monitor, cycle_monitor = LoadMonitor(), LoadMonitor()
    contended = True  # probe before the first cycle
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()  # a collection inside a timed round would be charged to one contender
    try:
        while timing.cycles < max_cycles:
            if all(sum(timing.clean(n)) >= rounds for n in names) and timing.cycles >= rounds:
                break
            if contended and timing.waited_s < quiet_budget_s:
                timing.waited_s += wait_for_quiet(foreign_limit, quiet_budget_s - timing.waited_s)
            shift = timing.cycles % len(names)
            cycle_monitor.start()
            loads: dict[str, float | None] = {}
            for name in names[shift:] + names[:shift]:
                time.sleep(SETTLE_S)  # the previous contender's spinning workers go idle first
                round_monitor.start()
                fns[name]()
                wall, loads[name] = round_monitor.stop()
                times[name].append(wall)
            _, cycle_load = cycle_monitor.stop()
            for name in names:  # rounds too short to measure get their cycle's load
                foreign[name].append(cycle_load if loads[name] is None else loads[name])
            contended = any(not timing.clean(n)[-1] for n in names)
            timing.cycles += 1
            # The cycle's garbage is young (nothing was collected since the full collection
            # above): a full collection of a large process (a test session, a notebook) took
            # 0.13 s a cycle, 3.3 of the GPU check's 54 s CPU dry run, for nothing more.
            gc.collect(1)
    finally:
        if gc_was_enabled:
            gc.enable()
    return timing
