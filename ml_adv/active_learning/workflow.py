"""Sampling strategies compared by simulation in one run folder (what ``ml-adv active-learn``
runs).

Every (strategy, seed) pair starts from the same seeded random initial labelled set
(``initial`` samples of the training split); the rest of the training split is the pool,
and its true labels are the oracle (``simulate_loop``). ``prepare_active_learning_run``
checks the settings and loads the data without writing or compiling anything;
``run_active_learning_workflow`` then runs (or resumes) every loop, each with its journal
under ``loops/``, and writes ``metrics.jsonl`` (one line per model),
``plots/learning_curve.png`` (mean +- std over seeds per strategy) and ``report.json``
(curves, labels needed to reach each of ``TARGETS``)::

    from ml_adv.active_learning.workflow import (
        ActiveLearningRunSettings, run_active_learning_workflow)
    from ml_adv.rundir import RunDirectory

    settings = ActiveLearningRunSettings(strategies=("random", "entropy"), seeds=2, rounds=3)
    report = run_active_learning_workflow(settings, RunDirectory("runs/my-comparison"))
    report["strategies"]["entropy"]["final_mean"]

Running it again on the same folder restores each loop from its journal.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from typing import Any

from ml_adv.active_learning.loop import ActiveLearningConfig
from ml_adv.data.dataset import ArrayDataset
from ml_adv.rundir import RunDirectory
from ml_adv.training.config import TrainConfig

TARGETS = (0.9, 0.95)  # test accuracies whose label cost the report gives


@dataclasses.dataclass(frozen=True)
class ActiveLearningRunSettings:
    """The strategies compared on ``data``, each over ``seeds`` loops (seeds ``seed`` ..
    ``seed + seeds - 1``) of ``rounds`` rounds labelling ``query_size`` samples after
    ``initial`` random ones; the model (``arch``/``size``, or a committee of ``members``),
    its first training (``epochs``) and each round's warm-started update."""

    data: str = "digits"
    strategies: tuple[str, ...] = ("random", "entropy", "bald", "coreset")
    rounds: int = 10
    query_size: int = 20
    initial: int = 20
    seeds: int = 3
    mc_samples: int = 10
    members: int = 1
    update_epochs: int = 5
    min_steps: int = 100
    arch: str = "mlp"
    size: str = "small"
    epochs: int = 30
    batch_size: int = 32
    learning_rate: float = 1e-3
    seed: int = 0
    download: bool = True


@dataclasses.dataclass
class ActiveLearningInputs:
    """The checked run: the loops' shared config and the training (pool) and test splits."""

    config: ActiveLearningConfig
    train: ArrayDataset
    test: ArrayDataset


def prepare_active_learning_run(settings: ActiveLearningRunSettings) -> ActiveLearningInputs:
    """Check the strategies' names and the loops' config and load the data; nothing is
    written or trained, so a mistake costs nothing."""
    from ml_adv.active_learning.strategies import resolve_strategy
    from ml_adv.data.catalog import load_dataset

    s = settings
    for name in s.strategies:
        resolve_strategy(name)
    config = ActiveLearningConfig(
        train=TrainConfig(
            epochs=s.epochs, batch_size=s.batch_size, learning_rate=s.learning_rate, seed=s.seed
        ),
        update_epochs=s.update_epochs,
        min_steps=s.min_steps,
        mc_samples=s.mc_samples,
        members=s.members,
    )
    train, test = (load_dataset(s.data, split=p, download=s.download) for p in ("train", "test"))
    return ActiveLearningInputs(config, train, test)


def run_active_learning_workflow(
    settings: ActiveLearningRunSettings,
    run_dir: RunDirectory | str | os.PathLike,
    inputs: ActiveLearningInputs | None = None,
    *,
    say: Callable[[str], None] = print,
    report_settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run (or resume) every loop, plot and report in ``run_dir``; returns the report (also
    written to ``report.json``).

    ``inputs``: what ``prepare_active_learning_run(settings)`` returned, when the caller
    checked the settings before opening the run folder. ``say``: one line per finished loop.
    ``report_settings``: what the report records as its ``settings`` (default: ``settings``
    as a dict; ``ml-adv active-learn`` records its options).
    """
    from ml_adv.active_learning.plots import plot_strategy_curves
    from ml_adv.active_learning.simulate import summarise_curves

    rd = RunDirectory.of(run_dir)
    inputs = inputs or prepare_active_learning_run(settings)
    started = time.perf_counter()
    curves, records = run_loops(settings, inputs, rd, say)
    rd.rewrite_metrics(records)
    summary = summarise_curves(curves, TARGETS)
    plot = plot_strategy_curves(
        summary,
        rd.plot_path("learning_curve"),
        targets=TARGETS,
        title=f"{settings.data}: {settings.arch}/{settings.size}, {settings.seeds} seed(s)",
    )
    report = {
        "command": "active-learn",
        "data": settings.data,
        "strategies": summary,
        "settings": report_settings or dataclasses.asdict(settings),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "plot": plot,
    }
    rd.write_report(report)
    return report


def run_loops(
    settings: ActiveLearningRunSettings,
    inputs: ActiveLearningInputs,
    rd: RunDirectory,
    say: Callable[[str], None] = print,
):
    """Run (or resume) one loop per (strategy, seed) in ``loops/<strategy>-s<seed>``; the
    curves by strategy and every record."""
    from ml_adv.active_learning.simulate import simulate_loop

    s = settings
    curves: dict[str, list] = {}
    records = []
    for name in s.strategies:
        for seed in range(s.seed, s.seed + s.seeds):
            t0 = time.perf_counter()
            curve = simulate_loop(
                name,
                inputs.train,
                inputs.test,
                rounds=s.rounds,
                query_size=s.query_size,
                initial=s.initial,
                seed=seed,
                architecture=s.arch,
                size=s.size,
                config=inputs.config,
                run_dir=rd.tree_for(f"loops/{name}-s{seed}"),
            )
            curves.setdefault(name, []).append(curve)
            records.extend(curve)
            say(
                f"{name:>16} seed {seed}: {curve[-1]['labels']} labels -> test accuracy "
                f"{curve[-1]['val_accuracy']:.4f} ({time.perf_counter() - t0:.1f} s)"
            )
    return curves, records


__all__ = [
    "TARGETS",
    "ActiveLearningInputs",
    "ActiveLearningRunSettings",
    "prepare_active_learning_run",
    "run_active_learning_workflow",
    "run_loops",
]
