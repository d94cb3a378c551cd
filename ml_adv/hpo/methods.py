"""Search methods: a registry of ask/tell searchers over a ``SearchSpace``.

Every method is a ``Searcher`` with ``ask() -> Suggestion | None`` and
``tell(suggestion, loss)`` (lower is better). The study owns the loop, so any
method can be replayed from the trial journal, batched, or run on an executor.

Registered methods (``SEARCH_METHODS``):

* ``bayesian``: nevergrad's Bayesian optimizer (``ParametrizedBO``, a Gaussian process
  through ``bayes_opt``) with the expected-improvement acquisition (``utility_kind="ei"``),
  the usual default for a best-score search (BoTorch, Optuna's GP sampler): nevergrad's
  default, UCB with bayes_opt's ``kappa=2.576``, is tuned for exploration, and on the MNIST
  study its guided trials kept probing the box's corners (the largest learning rate and
  weight decay) rather than refining the best region. ``gp_parameters={"alpha": 1e-3}``:
  nevergrad asks for a positive GP noise term on discontinuous spaces (integers,
  choices) and noisy objectives, and a trained network's validation score is both.
  Ordered choices (numbers such as batch sizes or dropout rates, growing width tuples)
  are one coordinate each (``ng.p.TransitionChoice``), not one weight per option: a GP
  fitted on a few dozen trials needs few dimensions (the MNIST study's space: 5 instead of
  11), and neighbouring options are then neighbours for its kernel.
* ``genetic``: nevergrad's ``TwoPointsDE`` (differential evolution with two-point
  crossover) with a population sized to the budget (``genetic_population``). Why this one
  for mixed spaces: it works on nevergrad's continuous data space, where a ``Choice`` is a
  block of per-option weights and an integer is a rounded float, so one variation operator
  handles floats, integers and choices alike; two-point crossover inherits contiguous
  blocks (a whole choice's weights) from one parent; it is population based, so batched
  asks (``num_workers``) are natural; and it is among the most robust nevergrad
  optimizers in its benchmarks at small budgets and high parallelism. ``evolutionary`` is
  an alias.
* ``grid_search``: the space's grid (``SearchSpace.grid``). When ``max_trials`` covers it,
  every point in lexicographic order of the declared parameters (last parameter fastest).
  When ``max_trials`` is smaller, the default ``grid_order="spread"`` tries a seeded,
  Latin-hypercube-like subset (``spread_grid_indices``: each axis's values used about
  equally often, all of them when it has at most ``max_trials``); ``"lexicographic"``
  keeps the first points of that order (one corner of the grid), ``"shuffled"`` the first
  of a seeded permutation. A cut grid is reported in one log line.
* ``random``: uniform sampling (log-uniform on log scales), the baseline;
  ``random_search`` is an alias.
* ``population``: configurations trained as one stacked, vmapped population with
  successive halving (``ml_adv.hpo.population``).
* ``pbt``: population based training (Jaderberg et al. 2017): ``max_trials`` members
  train as one stacked program; every ``ready`` epochs the bottom ``fraction`` copies
  the weights and optimizer state of the top ``fraction`` and perturbs their
  hyper-parameters, without recompiling (``ml_adv.hpo.pbt``).
* any other name of ``nevergrad.optimizers.registry`` (``CMA``, ``NGOpt``, ``PSO`` ...).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from ml_adv.errors import ConfigError, check_positive, describe
from ml_adv.hpo.space import SearchSpace
from ml_adv.registry import Registry

GRID_ORDERS = ("spread", "lexicographic", "shuffled")


@dataclasses.dataclass
class Suggestion:
    """A configuration proposed by a searcher; ``handle`` is the searcher's own token."""

    config: dict[str, Any]
    handle: Any = None


class NevergradSearcher:
    """Ask/tell over any nevergrad optimizer class or configured family."""

    def __init__(
        self,
        optimizer_cls,
        space: SearchSpace,
        budget: int,
        seed: int,
        num_workers: int = 1,
        ordinal: bool = False,
    ):
        self.space = space
        with warnings.catch_warnings():
            # nevergrad warns about settings it considers inefficient; the choices are
            # documented above.
            warnings.simplefilter("ignore")
            self.optimizer = optimizer_cls(
                parametrization=space.to_nevergrad(seed, ordinal=ordinal),
                budget=budget,
                num_workers=num_workers,
            )
        self._bayes_opt = hasattr(self.optimizer, "_normalizer") and hasattr(self.optimizer, "bo")
        if self._bayes_opt:
            _harden_bayes_opt(self.optimizer)

    def ask(self) -> Suggestion:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            candidate = self.optimizer.ask()
        return Suggestion(self.space.canonical(candidate.value), candidate)

    def tell(self, suggestion: Suggestion, loss: float) -> None:
        handle = suggestion.handle
        if handle is None:  # a configuration the optimizer did not propose (replay fallback)
            handle = self.optimizer.parametrization.spawn_child(new_value=dict(suggestion.config))
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            # bayes_opt prints a line for each repeated point (see _harden_bayes_opt)
            warnings.simplefilter("ignore")
            self.optimizer.tell(handle, float(loss))


def _harden_bayes_opt(optimizer) -> None:
    """Two fixes for nevergrad 1.0's BO over bayes_opt 1.4, found on real studies.

    * Probes are kept ``1e-9`` inside the unit box (``_InteriorNormalizer``).
    * Repeated points are allowed: the acquisition often picks the same corner twice once
      the GP is confident, and bayes_opt then raises ``NotUniqueError`` on ``tell``; with a
      positive GP noise term a repeated observation is ordinary data.
    The ``bo`` property is built here rather than at the first ask; nothing else draws
    from the optimizer's random state in between, so the proposals are the same.
    """
    optimizer._normalizer = _InteriorNormalizer(optimizer._normalizer)
    bo = optimizer.bo
    bo._allow_duplicate_points = True
    bo._space._allow_duplicate_points = True


class _InteriorNormalizer:
    """Keeps nevergrad BO's ``[0, 1]`` probes ``1e-9`` inside the unit box.

    The GP's acquisition optimum often lies on the box's boundary; mapped back through a
    bounded (log) parameter it can land a rounding error outside the bounds, and nevergrad
    1.0 then raises ``ValueError: Only data between ... can be transformed back``.
    """

    def __init__(self, inner):
        self.inner = inner

    def backward(self, x):
        return self.inner.backward(np.clip(np.asarray(x, dtype=float), 1e-9, 1.0 - 1e-9))

    def forward(self, x):
        return self.inner.forward(x)


class GridSearcher:
    """The space's grid, or ``budget`` points of it, in a stated order; ``ask`` returns None
    at the end.

    ``order`` matters only when ``budget`` is below the grid size (otherwise every point runs
    in lexicographic order): ``"spread"`` (``spread_grid_indices``), ``"lexicographic"``
    (the first points: the last parameter varies, the first stays at its lowest value) or
    ``"shuffled"`` (the first points of a seeded permutation). ``notice`` is the one line
    the study reports when the grid is cut, else None.
    """

    def __init__(
        self, space: SearchSpace, budget: int, seed: int, *, points: int = 3, order: str = "spread"
    ):
        if not isinstance(order, str) or order not in GRID_ORDERS:
            raise ConfigError(
                f"grid_order: expected one of {list(GRID_ORDERS)}, got {describe(order)}"
            )
        axes = space.grid_axes(points)
        total = math.prod(len(axis) for axis in axes)
        self.notice = None
        if budget < total:
            how = {
                "spread": f"spread evenly over each axis's values (seed {seed}; "
                "grid_order='lexicographic' keeps the first points instead)",
                "lexicographic": "the first in lexicographic order (grid_order='lexicographic')",
                "shuffled": (
                    f"the first of a seeded permutation (grid_order='shuffled', seed {seed})"
                ),
            }[order]
            self.notice = (
                f"grid_search: trying {budget} of the {total} grid points "
                f"(max_trials={budget}), {how}"
            )
        if order == "spread" and budget < total:
            names = space.names
            self.points = [
                {
                    n: axis[i]
                    for n, axis, i in zip(
                        names, axes, np.unravel_index(flat, [len(a) for a in axes])
                    )
                }
                for flat in spread_grid_indices([len(a) for a in axes], budget, seed)
            ]
        else:
            grid = space.grid(points)
            if order == "shuffled":
                grid = [grid[i] for i in np.random.default_rng(seed).permutation(len(grid))]
            self.points = grid[:budget]
        self._next = 0

    def ask(self) -> Suggestion | None:
        if self._next >= len(self.points):
            return None
        self._next += 1
        return Suggestion(dict(self.points[self._next - 1]), self._next - 1)

    def tell(self, suggestion: Suggestion, loss: float) -> None:
        """Grid search does not adapt to the scores."""


def spread_grid_indices(sizes: list[int], count: int, seed: int) -> list[int]:
    """``count`` distinct points of a grid with axes of ``sizes`` values, as lexicographic indices.

    Latin-hypercube-like: each point takes, on every axis, a value used least so far (seeded
    random among those), so every prefix spreads over every axis. Guaranteed: every value
    of every axis with at most ``count`` values is tried, and while ``count`` is at most the
    largest axis size each axis's values are used equally often, within one. Points never
    repeat: when every combination of least-used values was taken before (possible only
    beyond the largest axis size), the unused point with the fewest extra uses is taken.

    Why not the alternatives: the first points of the lexicographic order hold the first
    axes at their lowest values; a seeded shuffle covers an axis only by chance (4 of a 3^4
    grid's 81 points miss a value of a given axis 54% of the time, of some axis 96%); a
    strided subset aliases with the axes' periods (3 of those 81 points at stride 27 vary
    only the first axis).
    """
    sizes = [int(n) for n in sizes]
    total = math.prod(sizes)
    if not 0 <= count <= total:
        raise ConfigError(f"count: expected 0 <= count <= {total} (the grid size), got {count!r}")
    rng = np.random.default_rng(seed)
    uses = [np.zeros(n, dtype=np.int64) for n in sizes]
    chosen: list[int] = []
    taken: set[int] = set()
    every_point = None  # built only if a fallback scan is needed
    for _ in range(count):
        least = [np.flatnonzero(u == u.min()) for u in uses]
        flat = None
        for _ in range(
            8
        ):  # a few draws among the least-used values find an unused point almost always
            candidate = int(
                np.ravel_multi_index([int(rng.choice(values)) for values in least], sizes)
            )
            if candidate not in taken:
                flat = candidate
                break
        if flat is None:
            if every_point is None:
                every_point = np.indices(sizes).reshape(len(sizes), -1)
            extra = sum(u[coords] - u.min() for u, coords in zip(uses, every_point))
            extra[list(taken)] = np.iinfo(np.int64).max
            best = np.flatnonzero(extra == extra.min())
            flat = int(rng.choice(best))
        chosen.append(flat)
        taken.add(flat)
        for u, i in zip(uses, np.unravel_index(flat, sizes)):
            u[i] += 1
    return chosen


@dataclasses.dataclass(frozen=True)
class MethodEntry:
    """How to build a searcher: ``make(space, budget, seed, num_workers, **options)``."""

    name: str
    make: Callable[..., Any]
    description: str
    population: bool = False  # trains its trials as one stacked population (needs fit_stacked)
    run: Callable[[Any], Any] | None = (
        None  # study -> StudyResult, for methods that own the whole study
    )
    check: Callable[[Any], Any] | None = None  # study -> None, raises before anything compiles


SEARCH_METHODS: Registry[MethodEntry] = Registry("optimization_method")


def _nevergrad(factory: Callable[[], Any], ordinal: bool = False):
    def make(space, budget, seed, num_workers=1, **options):
        _no_options(options)
        return NevergradSearcher(factory(), space, budget, seed, num_workers, ordinal=ordinal)

    return make


def _bayesian():
    import nevergrad as ng

    return ng.families.ParametrizedBO(
        utility_kind="ei", utility_xi=0.0, gp_parameters={"alpha": 1e-3}
    )


def _registry_entry(name: str):
    def factory():
        import nevergrad as ng  # imported on first use: ``import ml_adv.hpo`` stays light

        return ng.optimizers.registry[name]

    return factory


def genetic_population(budget: int, num_workers: int = 1) -> int:
    """DE population for a budget: about a quarter of it, within [4, 30], and >= num_workers.

    nevergrad's ``TwoPointsDE`` uses at least 30 individuals, so a search of fewer than 30
    trials never leaves its random initial population; hyper-parameter budgets are often
    that small, so the population shrinks with the budget to leave room for a few
    generations of crossover and selection.
    """
    return max(num_workers, min(30, max(4, budget // 4)))


def _genetic(space, budget, seed, num_workers=1, **options):
    import nevergrad as ng

    _no_options(options)
    de = ng.families.DifferentialEvolution(
        crossover="twopoints", popsize=genetic_population(budget, num_workers)
    )
    return NevergradSearcher(de, space, budget, seed, num_workers)


def _grid(
    space,
    budget,
    seed,
    num_workers=1,
    *,
    grid_points: int = 3,
    grid_order: str = "spread",
    **options,
):
    _no_options(options)
    return GridSearcher(space, budget, seed, points=grid_points, order=grid_order)


def _no_options(options: dict[str, Any]) -> None:
    if options:
        raise ConfigError(f"method options: unknown option(s) {sorted(options)} for this method")


for _name, _make, _doc in (
    (
        "bayesian",
        _nevergrad(_bayesian, ordinal=True),
        "nevergrad ParametrizedBO (GP + expected improvement, alpha=1e-3), ordered choices as one "
        "coordinate",
    ),
    (
        "genetic",
        _genetic,
        "nevergrad two-point-crossover differential evolution, budget-sized population",
    ),
    ("evolutionary", _genetic, "alias of genetic"),
    ("random", _nevergrad(_registry_entry("RandomSearch")), "uniform / log-uniform random search"),
    ("random_search", _nevergrad(_registry_entry("RandomSearch")), "alias of random"),
    ("grid_search", _grid, "the grid; a seeded, evenly spread subset when max_trials is smaller"),
):
    SEARCH_METHODS.register(_name, MethodEntry(_name, _make, _doc))


def _lazy(module: str, name: str):
    """``module.name`` imported on first call (``import ml_adv.hpo`` stays light, no import
    circle).
    """

    def call(*args, **kwargs):
        import importlib

        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    return call


# The population methods train configurations as one vmapped program and own their study
# loop (the searcher proposes the initial population at random).
SEARCH_METHODS.register(
    "population",
    MethodEntry(
        "population",
        _nevergrad(_registry_entry("RandomSearch")),
        "stacked population with successive halving (one compiled program)",
        population=True,
        run=_lazy("ml_adv.hpo.population", "run_population_study"),
    ),
)
SEARCH_METHODS.register(
    "pbt",
    MethodEntry(
        "pbt",
        _nevergrad(_registry_entry("RandomSearch")),
        "population based training: exploit/explore every `ready` epochs inside one compiled "
        "stacked program",
        population=True,
        run=_lazy("ml_adv.hpo.pbt_study", "run_pbt_study"),
        check=_lazy("ml_adv.hpo.pbt", "check_study"),
    ),
)

# The trainer's optimization_method names: "none" plus every registered method.
OPTIMIZATION_METHODS = ("none", *SEARCH_METHODS.names())


def resolve_method(name: str) -> MethodEntry:
    """The registered method, or a nevergrad optimizer of that name; ConfigError otherwise."""
    if isinstance(name, str) and name in SEARCH_METHODS:
        return SEARCH_METHODS.get(name)
    if isinstance(name, str) and name:
        import nevergrad as ng

        if name in ng.optimizers.registry:
            return MethodEntry(name, _nevergrad(_registry_entry(name)), f"nevergrad {name}")
    raise ConfigError(
        f"optimization_method: unknown name {name!r}; expected one of {SEARCH_METHODS.names()} "
        f"or a nevergrad optimizer name (e.g. 'CMA', 'NGOpt', 'PSO'), got {describe(name)}"
    )


def make_searcher(
    method: str,
    space: SearchSpace,
    budget: int,
    *,
    seed: int = 0,
    num_workers: int = 1,
    **options: Any,
):
    """A searcher for ``method`` over ``space`` with ``budget`` trials (validated up front)."""
    if not isinstance(space, SearchSpace):
        raise ConfigError(f"space: expected a SearchSpace, got {describe(space)}")
    check_positive("max_trials", budget)
    check_positive("num_workers", num_workers)
    return resolve_method(method).make(space, budget, seed, num_workers, **options)
