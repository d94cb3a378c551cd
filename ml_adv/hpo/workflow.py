"""A hyper-parameter search (and model selection) on a dataset in one run folder (what
``ml-adv hpo`` runs).

Each trial trains on the training split minus a validation part (``validation_split``) and
is scored on that part; the test split is never used. ``prepare_search_run`` loads the data
and checks the method, the space and its options against it without writing or training
anything; ``run_search_workflow`` then runs (or resumes) the study through
``AdvancedHyperparameterOptimizer``, which writes ``trials.jsonl``, ``best_config.json``,
the plots and ``report.json``::

    from ml_adv.hpo.workflow import SearchRunSettings, run_search_workflow
    from ml_adv.rundir import RunDirectory

    settings = SearchRunSettings(architectures=("mlp",), method="random", trials=4, epochs=1)
    result = run_search_workflow(settings, RunDirectory("runs/my-search"))
    result.best_config, result.best_score

Running it again on the same folder replays the journal and runs only the trials that never
finished. With ``workers`` > 1 the trials run in spawned processes, which the prepared
search owns: use it as a context manager (``with prepare_search_run(s) as inputs: ...``) so
that they are shut down.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from ml_adv.hpo.result import StudyResult
from ml_adv.hpo.space import SearchSpace
from ml_adv.rundir import RunDirectory
from ml_adv.training.config import TrainConfig


@dataclasses.dataclass(frozen=True)
class SearchRunSettings:
    """What is searched: ``trials`` configurations of ``method`` over ``space`` (a
    ``SearchSpace`` or its dict declaration; None: ``default_space``, with the architecture
    and size when several are given) on ``data``; how: ``pruner`` (None, "median",
    "successive_halving"), ``workers`` processes or ``stacked`` configurations trained as one
    program; the method's own options (grid_search's ``grid_points``, pbt's ``ready`` and
    ``fraction``; None: the method's default); each trial's base training."""

    data: str = "digits"
    architectures: tuple[str, ...] = ("cnn",)
    sizes: tuple[str, ...] = ("tiny",)
    method: str = "bayesian"
    trials: int = 30
    space: SearchSpace | dict | None = None
    pruner: str | None = None
    grid_points: int = 3
    workers: int = 1
    stacked: int | None = None
    ready: int | None = None
    fraction: float | None = None
    validation_split: float = 0.2
    epochs: int = 5
    batch_size: int = 32
    learning_rate: float = 1e-3
    seed: int = 0
    download: bool = True

    def method_options(self) -> dict[str, Any]:
        """The method's own options: grid_search's ``grid_points``, pbt's ``ready`` and
        ``fraction`` (those given)."""
        if self.method == "grid_search":
            return {"grid_points": self.grid_points}
        if self.method == "pbt":
            options = (("ready", self.ready), ("fraction", self.fraction))
            return {k: v for k, v in options if v is not None}
        return {}


@dataclasses.dataclass
class SearchInputs:
    """The checked search: the trials' objective, the space and the optimizer (with its
    process pool when ``workers`` > 1: ``close`` shuts it down; a ``with`` block does)."""

    objective: Any
    space: SearchSpace
    optimizer: Any

    def close(self) -> None:
        if self.optimizer.executor is not None:
            self.optimizer.executor.shutdown()

    def __enter__(self) -> SearchInputs:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def prepare_search_run(settings: SearchRunSettings) -> SearchInputs:
    """Load and split the data once, then check the method, the space and its options
    against it (``AdvancedHyperparameterOptimizer.study``); nothing is written or trained."""
    from ml_adv.hpo.facade import as_space, default_space
    from ml_adv.hpo.methods import resolve_method
    from ml_adv.hpo.objective import TrainingObjective

    s = settings
    base = TrainConfig(
        epochs=s.epochs, batch_size=s.batch_size, learning_rate=s.learning_rate, seed=s.seed
    )
    objective = TrainingObjective.from_data(
        s.data,
        architectures=tuple(s.architectures),
        validation_split=s.validation_split,
        base_config=base,
        size=s.sizes[0],
        split_seed=s.seed,
        download=s.download,
    )
    smallest = min(len(t) for t, _ in objective.views.values())
    population = resolve_method(s.method).population
    space = as_space(s.space) or default_space(
        s.architectures, s.sizes, max_batch_size=smallest, population=population
    )
    inputs = SearchInputs(objective, space, _optimizer(s, space))
    try:
        inputs.optimizer.study(objective)  # checks the space and options against the data
    except BaseException:
        inputs.close()
        raise
    return inputs


def _optimizer(s: SearchRunSettings, space: SearchSpace):
    """The study's optimizer; its trials run in spawned processes when ``workers`` > 1
    (forking a process that already runs JAX threads is unsafe)."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from ml_adv.hpo.facade import AdvancedHyperparameterOptimizer

    executor = (
        ProcessPoolExecutor(s.workers, mp_context=get_context("spawn")) if s.workers > 1 else None
    )
    try:
        return AdvancedHyperparameterOptimizer(
            s.method,
            s.trials,
            search_space=space,
            seed=s.seed,
            executor=executor,
            pruner=s.pruner,
            stacked=s.stacked is not None,
            trials_per_batch=s.stacked,
            **s.method_options(),
        )
    except BaseException:
        if executor is not None:
            executor.shutdown()
        raise


def run_search_workflow(
    settings: SearchRunSettings,
    run_dir: RunDirectory | str | os.PathLike,
    inputs: SearchInputs | None = None,
) -> StudyResult:
    """Run (or resume) the study in ``run_dir``; returns its ``StudyResult`` (best config and
    score, every trial; ``report.json`` holds its summary).

    ``inputs``: what ``prepare_search_run(settings)`` returned, when the caller checked the
    settings before opening the run folder (the caller then closes it); without it, the
    search is prepared, and closed, here.
    """
    rd = RunDirectory.of(run_dir)
    if inputs is None:
        with prepare_search_run(settings) as prepared:
            return run_search_workflow(settings, rd, prepared)
    inputs.optimizer.run_dir = rd
    return inputs.optimizer.optimize(inputs.objective, search_space=inputs.space)


__all__ = ["SearchInputs", "SearchRunSettings", "prepare_search_run", "run_search_workflow"]
