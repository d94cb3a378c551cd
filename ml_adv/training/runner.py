"""``EpochRunner``: runs one compiled epoch; ``PROGRAMS``: every compiled program of the process.

The runner compiles the scanned epoch at its first call (the time is ``compile_seconds``),
or steps one jitted call at a time, and makes the two decisions that are measured on the
run's own epochs: the member layout of a stacked run and the non-finite guard
(``ml_adv.kernels.autotune``).

``PROGRAMS`` (a ``ProgramCache``) holds, in bounded maps, what one run leaves for the next:
compiled epochs, the optimizer and train-step objects of a program structure
(``setup.init_run``), vmapped initialisers and the per-process layout and guard decisions.
Runs that differ only in traced values (hyper-parameter trials, population batches, active
learning rounds, seeds) then compile once. ``PROGRAMS.clear()`` forgets all of it (tests,
long notebooks).
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections import OrderedDict
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ml_adv.errors import ConfigError
from ml_adv.kernels import autotune
from ml_adv.training.steps import make_epoch_fn, make_step_fn, run_epoch_stepwise

PROGRAM_CACHE_SIZE = 32


class ProgramCache:
    """Named, bounded (least recently used) maps of compiled programs and decisions.

    Maps: ``epochs`` (compiled epochs by step and argument shapes), ``parts`` (module,
    optimizer and train steps by program structure), ``single_inits`` and ``stacked_inits``
    (jitted and vmapped initialisers), ``layouts`` and ``guards`` (in-process decisions),
    ``guard_trials`` (guard trials still running). One object rather than a module-level dict
    each, so that what the process keeps is visible and can be cleared at once.
    """

    NAMES = (
        "epochs",
        "parts",
        "single_inits",
        "stacked_inits",
        "layouts",
        "guards",
        "guard_trials",
    )

    def __init__(self, size: int = PROGRAM_CACHE_SIZE):
        self.size = size
        self._maps: dict[str, OrderedDict] = {name: OrderedDict() for name in self.NAMES}

    def get(self, name: str, key, default=None):
        """The entry for ``key`` (marked recently used), or ``default``."""
        entries = self._maps[name]
        if key not in entries:
            return default
        entries.move_to_end(key)
        return entries[key]

    def put(self, name: str, key, value):
        """Keep ``value`` under ``key``, dropping the least recently used entries past ``size``."""
        entries = self._maps[name]
        entries[key] = value
        entries.move_to_end(key)
        while len(entries) > self.size:
            entries.popitem(last=False)
        return value

    def pop(self, name: str, key) -> None:
        self._maps[name].pop(key, None)

    def __contains__(self, item: tuple[str, object]) -> bool:
        name, key = item
        return key in self._maps[name]

    def count(self, name: str) -> int:
        """How many entries ``name`` holds (e.g. compiled epochs, for tests)."""
        return len(self._maps[name])

    def clear(self) -> None:
        """Forget every compiled program and decision of this process."""
        for entries in self._maps.values():
            entries.clear()


PROGRAMS = ProgramCache()


@dataclasses.dataclass
class EpochRunner:
    """Runs one epoch: compiles the scanned program at the first call (timed), or steps one by one.

    A stacked run's members train either vmapped (``"vmap"``: batched matmuls), as one scan
    per member inside the same program (``"scan"``: the single-run matmuls), or, given a
    ``member_mesh`` (several devices, e.g. a CPU split per core by ``use_cpu_cores``),
    with the members split over the devices and the devices running concurrently, vmapped
    (``"spread"``) or as per-member scans (``"spread_scan"``); the runner places state and
    data. With ``members_as="auto"`` and
    autotuning active (``ml_adv.kernels.autotune``), the first epoch of a program not seen before on
    this CPU is timed in each layout on copies of the state (``_time_layouts``), and the
    choice is cached, keyed by the program's fingerprint and the device count, so later runs
    compile only the chosen layout. Otherwise ``"spread"`` where a mesh is given, else
    ``"vmap"``. The time spent measuring is counted in ``compile_seconds``.
    """

    train_step: Any
    scan: bool = True
    stacked: bool = False
    member_batches: bool = False
    spmd_axis_name: str | None = None
    members_as: str = "auto"
    member_mesh: Any = None
    unroll: int = 1
    guard_steps: Any = None
    compile_seconds: float = 0.0
    train_seconds: float = 0.0
    layout: str | None = None
    guard: str | None = None
    _program: Any = None
    _trial: Any = None
    _placed_data: Any = None
    _last_placement: Any = None

    def __call__(self, state, data, order, active=None):
        t0 = time.perf_counter()
        if self.scan:
            args = (state, data, order, active)
            if self._program is None:
                self._choose_layout(*args)
                self._begin_guard_trial(args)
            program, trial_guard, placed = self._program, None, self._placed(self.layout, args)
            if self._trial is not None:  # this epoch runs the next guard on trial
                trial_guard = self._trial["order"][
                    self._trial["epochs"] % len(self._trial["order"])
                ]
                program = self._compiled(self.layout, *placed, step=self.guard_steps[trial_guard])
                self._trial["programs"][trial_guard] = program
            self.compile_seconds += time.perf_counter() - t0  # measuring a layout counts here
            t0 = time.perf_counter()
            state, metrics = program(*placed)
            self._last_placement = (
                None  # donated: a later call with the same arguments places again
            )
            if trial_guard is not None:
                metrics = jax.device_get(metrics)  # waits for the epoch
                self._guard_timed(trial_guard, time.perf_counter() - t0)
        else:
            if self.stacked or active is not None:
                raise ConfigError(
                    "scan_epochs: stacked and multi-pool runs need scan_epochs=True, got False"
                )
            if self._program is None:
                self._program = make_step_fn(self.train_step)
            state, metrics = run_epoch_stepwise(self._program, state, data, order)
        metrics = jax.device_get(metrics)
        self.train_seconds += time.perf_counter() - t0
        return state, metrics

    def _choose_layout(self, state, data, order, active):
        """Compile the epoch in the layout this CPU runs fastest (measured once, then cached)."""
        args = (state, data, order, active)
        spreadable = self.stacked and self.spmd_axis_name is None and self.member_mesh is not None
        layouts = MEMBER_LAYOUTS + (SPREAD_LAYOUTS if spreadable else ())
        measurable = (
            self.stacked
            and self.spmd_axis_name is None
            and self.members_as == "auto"
            and autotune.active()
        )
        if not measurable:
            self.layout = (
                self.members_as if self.members_as != "auto" else "spread" if spreadable else "vmap"
            )
            if (
                self.layout in SPREAD_LAYOUTS and not spreadable
            ):  # asked for a split without devices
                self.layout = {"spread": "vmap", "spread_scan": "scan"}[self.layout]
            self._program = self._compiled(self.layout, *self._placed(self.layout, args))
            return None
        known = self._program_key("?", *args) + (layouts,)
        self.layout = PROGRAMS.get("layouts", known)  # this process decided it already: no lowering
        if self.layout is None:
            lowered = self._epoch_fn("vmap").lower(*args)
            # The candidates are part of the case: a decision cached before a layout existed
            # must not stand in for a measurement that includes it.
            signature = {
                "program": hashlib.sha256(lowered.as_text().encode()).hexdigest()[:20],
                "devices": self.member_mesh.devices.size if spreadable else 1,
                "layouts": list(layouts),
            }
            self.layout = autotune.lookup(_LAYOUT_DECISION, signature, layouts)
            if self.layout is None:
                programs = {
                    name: self._compiled(
                        name, *self._placed(name, args), lowered=lowered if name == "vmap" else None
                    )
                    for name in layouts
                }
                self.layout = autotune.record(
                    _LAYOUT_DECISION, signature, _time_layouts(programs, self._placed, args)
                )
            PROGRAMS.put("layouts", known, self.layout)
            if self.layout == "vmap":  # compile the program already lowered for the fingerprint
                self._program = self._compiled("vmap", *args, lowered=lowered)
                return None
        self._program = self._compiled(self.layout, *self._placed(self.layout, args))
        return None

    @property
    def deciding(self) -> bool:
        """Whether the coming epochs still alternate guards on trial (see
        ``_begin_guard_trial``)."""
        return self._trial is not None

    def _begin_guard_trial(self, args: tuple) -> None:
        """Pick the non-finite guard (``steps.GUARDS``) by measurement, on the run's own epochs.

        Both guards give bitwise-identical states, so nothing is run twice: the first
        ``GUARD_TRIAL_ROUNDS`` x 2 epochs of a program not seen before on this CPU alternate
        the guards (the static choice first). A program's first execution is not timed (it
        pays page faults, often 10-50x an epoch's time); the best of the others decides, and
        the faster guard (by more than ``GUARD_MARGIN``) is cached, keyed by the program's
        fingerprint. Runs shorter than that carry the trial over to the next run of the
        same program in this process (HPO trials, populations). A cached choice other than
        the static one compiles that program instead.
        """
        steps = self.guard_steps
        if not steps or len(steps) < 2 or not autotune.active():
            return
        default = next((g for g, step in steps.items() if step is self.train_step), None)
        if default is None:
            return
        placed = self._placed(self.layout, args)
        known = self._program_key(self.layout, *placed) + ("guard",)
        choice = PROGRAMS.get("guards", known)
        if (
            choice is None and ("guard_trials", known) in PROGRAMS
        ):  # a shorter run of this program began it
            self._trial = PROGRAMS.get("guard_trials", known)
            return
        if choice is None:
            lowered = self._epoch_fn(self.layout).lower(*placed)
            signature = {"program": hashlib.sha256(lowered.as_text().encode()).hexdigest()[:20]}
            choice = autotune.lookup(_GUARD_DECISION, signature, tuple(steps))
            if choice is None:
                self._trial = {
                    "signature": signature,
                    "known": known,
                    "seconds": {},
                    "programs": {},
                    "epochs": 0,
                    "order": [default, *(g for g in steps if g != default)],
                }
                PROGRAMS.put("guard_trials", known, self._trial)
                return
            PROGRAMS.put("guards", known, choice)
        self._use_guard(choice, placed)

    def _guard_timed(self, guard: str, seconds: float) -> None:
        trial = self._trial
        trial["epochs"] += 1
        if trial["epochs"] > len(trial["order"]):  # a program's first execution is not timed
            trial["seconds"][guard] = min(trial["seconds"].get(guard, float("inf")), seconds)
        if trial["epochs"] < GUARD_TRIAL_ROUNDS * len(trial["order"]):
            return
        self._trial = None
        PROGRAMS.pop("guard_trials", trial["known"])
        choice = autotune.record(
            _GUARD_DECISION,
            trial["signature"],
            trial["seconds"],
            keep=trial["order"][0],
            margin=GUARD_MARGIN,
        )
        PROGRAMS.put("guards", trial["known"], choice)
        self.guard, self.train_step = choice, self.guard_steps[choice]
        self._program = trial["programs"][choice]

    def _use_guard(self, guard: str, placed: tuple) -> None:
        """Run ``guard``'s program from now on."""
        self.guard = guard
        if self.guard_steps[guard] is not self.train_step:
            self.train_step = self.guard_steps[guard]
            self._program = self._compiled(self.layout, *placed)

    def _placed(self, layout: str, args: tuple) -> tuple:
        """The epoch's arguments where ``layout`` runs them: for ``"spread"`` the state split
        over the member mesh and the rest replicated (a no-op once they are there)."""
        if layout not in SPREAD_LAYOUTS:
            return args
        from ml_adv.training import parallel

        last = self._last_placement
        if (
            last is not None
            and last[0] == layout
            and all(a is b for a, b in zip(last[1], args, strict=True))
        ):
            # The first epoch asks three times (layout, guard, run) for the same arguments:
            # copying the state to the devices each time cost ~7 ms a run for a digits MLP
            # population. The epoch donates the placement, and __call__ forgets it then.
            return last[2]
        state, data, *rest = args
        if self._placed_data is None or self._placed_data[0] is not data:
            # The pool is the same object every epoch: copy it to the devices once, not per epoch.
            self._placed_data = (data, jax.device_put(data, parallel.replicated(self.member_mesh)))
        placed = (
            _put(state, parallel.member_sharded(self.member_mesh)),
            self._placed_data[1],
            *_put(tuple(rest), parallel.replicated(self.member_mesh)),
        )
        self._last_placement = (layout, args, placed)
        return placed

    def _epoch_fn(self, layout: str, step=None):
        from ml_adv.training.parallel import MEMBER_AXIS

        if layout == "spread_scan":
            return _spread_member_scans(
                self.train_step if step is None else step, self.member_mesh, self.member_batches
            )
        spmd_axis_name = MEMBER_AXIS if layout == "spread" else self.spmd_axis_name
        return make_epoch_fn(
            self.train_step if step is None else step,
            stacked=self.stacked,
            member_batches=self.member_batches,
            spmd_axis_name=spmd_axis_name,
            members_as="vmap" if layout == "spread" else layout,
            unroll=self.unroll,
        )

    def _program_key(self, layout: str, *args, step=None) -> tuple:
        leaves, treedef = jax.tree.flatten(args)
        step = self.train_step if step is None else step
        return (
            step,
            self.stacked,
            self.member_batches,
            self.spmd_axis_name,
            layout,
            self.unroll,
            treedef,
            tuple(
                (
                    np.shape(a),
                    np.asarray(a).dtype if not hasattr(a, "dtype") else a.dtype,
                    getattr(a, "sharding", None),
                )
                for a in leaves
            ),
        )

    def _compiled(self, layout: str, *args, lowered=None, step=None):
        """The compiled epoch for these argument shapes; reused across runs with the same step.
        ``lowered``: this layout's program already lowered (it is compiled instead of lowering
        again);
        ``step``: another train step than the runner's (a guard on trial)."""
        key = self._program_key(layout, *args, step=step)
        program = PROGRAMS.get("epochs", key)
        if program is None:
            program = (
                lowered if lowered is not None else self._epoch_fn(layout, step).lower(*args)
            ).compile()
            PROGRAMS.put("epochs", key, program)
        return program


MEMBER_LAYOUTS = ("vmap", "scan")
SPREAD_LAYOUTS = ("spread", "spread_scan")


def _put(tree, sharding):
    """``jax.device_put`` of the leaves not already placed with ``sharding``. The state an
    epoch returned is placed but for the hyper-parameters set on the host between epochs,
    and putting a placed leaf again still re-wraps each of its shards (~0.1 ms a leaf)."""
    leaves, treedef = jax.tree.flatten(tree)
    todo = [
        i
        for i, leaf in enumerate(leaves)
        if not (isinstance(leaf, jax.Array) and leaf.sharding == sharding)
    ]
    if todo:
        for i, moved in zip(todo, jax.device_put([leaves[i] for i in todo], sharding), strict=True):
            leaves[i] = moved
    return jax.tree.unflatten(treedef, leaves)


def _spread_member_scans(train_step, mesh, member_batches: bool):
    """The ``"scan"`` layout with the members split over ``mesh``'s devices (``shard_map``):
    each device runs its own members' single-run scans, one after another, and the devices
    run concurrently. No collectives: members share nothing."""
    from jax.sharding import PartitionSpec as P

    from ml_adv.training.parallel import MEMBER_AXIS
    from ml_adv.training.steps import _member_scans

    local = _member_scans(train_step, member_batches, 1)

    def run_epoch(state, data, order, active=None):
        steps = jax.tree.leaves(order)[0].shape[0]
        if active is None:
            active = jnp.ones((steps, state.step.shape[0]), bool)
        by_member = P(None, MEMBER_AXIS)
        spread = jax.shard_map(
            local,
            mesh=mesh,
            check_vma=False,
            in_specs=(P(MEMBER_AXIS), P(), by_member if member_batches else P(), by_member),
            out_specs=(P(MEMBER_AXIS), by_member),
        )
        return spread(state, data, order, active)

    return jax.jit(run_epoch, donate_argnums=0)


_GUARD_DECISION = "nonfinite_guard"
# A guard replaces the static choice only when its epoch ran this much faster: each is timed
# on one real epoch (its first execution), so small differences are noise.
GUARD_MARGIN = 0.05
GUARD_TRIAL_ROUNDS = 3  # epochs per guard on trial: one warm-up and two timed
_LAYOUT_DECISION = "stacked_epoch_layout"
# Measuring runs each layout twice (a warm-up, whose first execution pays one-time costs, then
# the timed run) on copies of the first epoch's state. Epochs longer than this are not
# measured: there the batched matmuls are large and vmap is kept (recorded as the choice).
LAYOUT_MEASURE_LIMIT_S = 2.0


def _time_layouts(programs, placed, args) -> dict[str, float]:
    """Seconds of one epoch in each layout, on copies of the state (the caller's state is
    untouched); ``placed(layout, args)`` puts the arguments where that layout runs them."""
    seconds: dict[str, float] = {}
    state, *rest = args
    for name in programs:
        for _ in range(2):
            spare = jax.block_until_ready(placed(name, (jax.tree.map(jnp.copy, state), *rest)))
            start = time.perf_counter()
            jax.block_until_ready(programs[name](*spare))
            seconds[name] = min(seconds.get(name, float("inf")), time.perf_counter() - start)
            if seconds[name] > LAYOUT_MEASURE_LIMIT_S:
                return {"vmap": seconds.get("vmap", seconds[name])}
    return seconds
