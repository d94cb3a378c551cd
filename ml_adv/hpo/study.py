"""``Study``: the ask/tell loop, its trial journal, replay on resume, executors.

A study asks its searcher for a batch of configurations (one, or one per worker),
evaluates them (in process, or on any ``concurrent.futures.Executor`` / dask client),
appends each finished trial durably to ``trials.jsonl`` as it finishes, and tells the
batch's losses (``-score``) to the searcher in trial order.

Resume: started again on the same run directory, a study replays the journal into a
fresh searcher built with the same seed: for each journaled batch it asks as many
configurations as the batch had (a seeded searcher proposes the same ones) and tells
the journaled losses, so the optimizer reaches the state it had, then runs only the
trials that never finished. Should a re-asked configuration differ from the journal
(e.g. another nevergrad version), the journaled configuration is told instead and
``replay_mismatches`` counts it.

Failed trials are told the worst loss told so far (0.0, i.e. a score of zero, when none
was): the "impute the worst" rule of SMAC, which keeps model-based searchers away from
failing regions without inventing a scale. Pruned trials are told their last
intermediate score (as Optuna does).
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import math
import time
from typing import Any

from ml_adv.errors import ConfigError, check_positive, describe
from ml_adv.hpo.journal import TrialJournal
from ml_adv.hpo.methods import Suggestion, make_searcher, resolve_method
from ml_adv.hpo.objective import FunctionObjective, run_trial
from ml_adv.hpo.pruning import resolve_pruner
from ml_adv.hpo.result import StudyResult
from ml_adv.hpo.space import SearchSpace

_log = logging.getLogger(__name__)


class Study:
    """A hyper-parameter search over ``space`` for ``objective``.

    Args:
        objective: a ``TrainingObjective``, a ``FunctionObjective`` or any ``config -> score``
            callable (higher is better).
        space: the ``SearchSpace``.
        method: a name of ``SEARCH_METHODS`` or of nevergrad's optimizer registry.
        max_trials: number of trials (the grid may end earlier).
        seed: seeds the searcher (trials train with ``base_config.seed``).
        run_dir: a ``RunDirectory`` or path; makes the study resumable (``trials.jsonl``).
        executor: a ``concurrent.futures.Executor`` or a ``dask.distributed.Client``.
        trials_per_batch: configurations asked and evaluated together (default: the
            executor's worker count, else 1).
        pruner: None, ``"median"``, ``"successive_halving"`` or a pruner object.
        method_options: extra options of the method (``grid_points``, ``grid_order``: ``"spread"``,
            ``"lexicographic"`` or ``"shuffled"``, see ``ml_adv.hpo.methods``;
            ``reduction_factor`` for ``population``; ``ready``, ``fraction``,
            ``resample_probability``, ``perturb_factors`` for ``pbt``).
        stacked: train each batch of asked configurations as stacked populations
            (``ml_adv.hpo.population.stacked_trials``: one compiled program per group of
            configurations differing only in traced hyper-parameters).
        progress: tqdm bar over trials (default: only on a terminal).

    Example:
        >>> from ml_adv.hpo.space import Float
        >>> study = Study(lambda c: -(c["x"] - 1) ** 2, SearchSpace([Float("x", -3, 3)]),
        ...               method="random", max_trials=10, progress=False)
        >>> abs(study.run().best_config["x"] - 1) < 1.5
        True
    """

    def __init__(
        self,
        objective,
        space: SearchSpace,
        *,
        method: str = "bayesian",
        max_trials: int = 20,
        seed: int = 0,
        run_dir=None,
        executor=None,
        trials_per_batch: int | None = None,
        pruner=None,
        method_options: dict[str, Any] | None = None,
        progress: bool | None = None,
        stacked: bool = False,
    ):
        if not isinstance(space, SearchSpace):
            raise ConfigError(f"space: expected a SearchSpace, got {describe(space)}")
        check_positive("max_trials", max_trials)
        self.entry = resolve_method(method)
        if not hasattr(objective, "check_space"):
            objective = FunctionObjective(objective)
        objective.check_space(space)
        self.objective, self.space, self.method = objective, space, method
        self.max_trials, self.seed = int(max_trials), int(seed)
        self.executor = _as_executor(executor)
        self.trials_per_batch = int(trials_per_batch or _workers(executor))
        check_positive("trials_per_batch", self.trials_per_batch)
        self.pruner = resolve_pruner(pruner)
        self.method_options = dict(method_options or {})
        self.progress = progress
        if not isinstance(stacked, bool):
            raise ConfigError(f"stacked: expected True or False, got {describe(stacked)}")
        self.stacked = stacked
        if stacked or self.entry.population:
            from ml_adv.hpo.population import check_stackable

            check_stackable(objective)
            if self.pruner is not None or self.executor is not None:
                raise ConfigError(
                    "stacked: population training runs in this process without a pruner; "
                    f"got pruner={self.pruner!r}, executor={self.executor!r}"
                )
        if self.entry.check is not None:
            self.entry.check(self)
        if not self.entry.population:
            # Build the searcher once now so that bad method options fail before anything trains.
            make_searcher(
                method,
                space,
                self.max_trials,
                seed=seed,
                num_workers=self.trials_per_batch,
                **self.method_options,
            )
        self.run_dir = None if run_dir is None else _run_directory(run_dir)
        self.trials: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ loop
    def header(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "space": self.space.to_dict(),
            "seed": self.seed,
            "max_trials": self.max_trials,
            "batch_size": self.trials_per_batch,
            "objective": self.objective.describe(),
            "method_options": self.method_options,
            "pruner": repr(self.pruner),
            "stacked": self.stacked,
        }

    def run(self) -> StudyResult:
        """Run (or resume) the study until ``max_trials`` trials finished or the grid is
        exhausted.
        """
        if self.entry.run is not None:
            return self.entry.run(self)
        started = time.perf_counter()
        searcher = make_searcher(
            self.method,
            self.space,
            self.max_trials,
            seed=self.seed,
            num_workers=self.trials_per_batch,
            **self.method_options,
        )
        if getattr(searcher, "notice", None):  # e.g. a grid cut to max_trials: say which points run
            _log.warning("%s", searcher.notice)
        journal = (
            TrialJournal(self.run_dir.path_for("trials.jsonl"))
            if self.run_dir is not None
            else None
        )
        done = journal.start(self.header()) if journal is not None else []
        self.trials, pending, mismatches = self._replay(searcher, done)
        resumed = len(self.trials)
        bar = _progress(self.progress, total=self.max_trials, initial=resumed)
        try:
            batch_id = 1 + max((t["batch"] for t in self.trials), default=-1)
            while len(self.trials) < self.max_trials:
                batch, already = pending or (self._ask(searcher, batch_id), {})
                if not pending:
                    batch_id += 1
                pending = None
                if not batch:
                    break  # the grid is exhausted
                to_run = [b for b in batch if b[0] not in already]
                finished = self._evaluate(to_run, len(batch), journal, bar)
                self._tell(searcher, batch, {**already, **finished})
        finally:
            if hasattr(bar, "close"):
                bar.close()
        result = self._result(resumed, mismatches, time.perf_counter() - started)
        if self.run_dir is not None:
            from ml_adv.hpo.report import write_study_outputs

            write_study_outputs(self.run_dir, result, self.header())
        return result

    def _ask(self, searcher, batch_id: int) -> list[tuple[int, Suggestion, int]]:
        room = self.max_trials - len(self.trials)
        out, next_id = [], len(self.trials)
        for _ in range(min(self.trials_per_batch, room)):
            suggestion = searcher.ask()
            if suggestion is None:
                break
            out.append((next_id + len(out), suggestion, batch_id))
        return out

    def _evaluate(self, batch, asked: int, journal, bar) -> dict[int, dict[str, Any]]:
        """Run the batch's trials; journal each one as it finishes."""
        # Only earlier batches count: peers in the same batch were not told yet (also on resume).
        current = {b for _, _, b in batch}
        earlier = [t for t in self.trials if t["batch"] not in current]
        reference = [
            t.get("intermediate") or [] for t in earlier if t["status"] in ("ok", "pruned")
        ]
        told = [t["loss"] for t in earlier if t["loss"] is not None]
        finished: dict[int, dict[str, Any]] = {}

        def record(trial_id: int, suggestion: Suggestion, batch_id: int, outcome: dict[str, Any]):
            trial = {
                "trial": trial_id,
                "batch": batch_id,
                "batch_asked": asked,
                "config": suggestion.config,
                **outcome,
                "loss": _loss(outcome, told),
                "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            }
            if journal is not None:
                journal.append(trial)
            finished[trial_id] = trial
            self.trials.append(trial)
            _advance(bar, self.trials)

        if self.stacked and len(batch) > 1:
            from ml_adv.hpo.population import stacked_trials

            for (trial_id, suggestion, batch_id), outcome in zip(
                batch, stacked_trials(self.objective, [s.config for _, s, _ in batch])
            ):
                record(trial_id, suggestion, batch_id, outcome)
        elif self.executor is None or len(batch) == 1:
            for trial_id, suggestion, batch_id in batch:
                record(
                    trial_id,
                    suggestion,
                    batch_id,
                    run_trial(self.objective, suggestion.config, self.pruner, reference),
                )
        else:
            futures = {
                self.executor.submit(run_trial, self.objective, s.config, self.pruner, reference): (
                    i,
                    s,
                    b,
                )
                for i, s, b in batch
            }
            for future in cf.as_completed(futures):
                record(*futures[future], _outcome(future))
        self.trials.sort(key=lambda t: t["trial"])
        return finished

    def _tell(self, searcher, batch, finished: dict[int, dict[str, Any]]) -> None:
        for trial_id, suggestion, _ in batch:
            searcher.tell(suggestion, finished[trial_id]["loss"])

    def _replay(self, searcher, done: list[dict[str, Any]]):
        """Feed journaled trials to ``searcher``.

        Returns ``(trials, pending, mismatches)``; ``pending`` is ``(batch, finished members)``
        when the last batch was cut short by a kill, else None.
        """
        by_batch: dict[int, dict[int, dict[str, Any]]] = {}
        for t in done:
            by_batch.setdefault(t["batch"], {})[t["trial"]] = t
        trials, pending, mismatches = [], None, 0
        for batch_id in sorted(by_batch):
            members = by_batch[batch_id]
            first, asked = min(members), next(iter(members.values()))["batch_asked"]
            batch = []
            for offset in range(asked):
                suggestion = searcher.ask()
                trial_id = first + offset
                if trial_id in members:
                    journaled = self.space.canonical(members[trial_id]["config"])
                    if suggestion is None or journaled != suggestion.config:
                        suggestion, mismatches = Suggestion(journaled, None), mismatches + 1
                    trials.append({**members[trial_id], "config": journaled})
                if suggestion is not None:
                    batch.append((trial_id, suggestion, batch_id))
            if len(members) == len(batch):
                self._tell(searcher, batch, members)
            else:  # killed mid-batch: the study runs the rest of this batch, then tells it whole
                pending = (batch, members)
        trials.sort(key=lambda t: t["trial"])
        return trials, pending, mismatches

    def _result(self, resumed: int, mismatches: int, wall: float) -> StudyResult:
        ok = [t for t in self.trials if t["status"] == "ok"]
        best = max(ok, key=lambda t: t["score"], default=None)
        return StudyResult(
            self.method,
            dict(best["config"]) if best else None,
            best["score"] if best else None,
            best["trial"] if best else None,
            list(self.trials),
            resumed,
            mismatches,
            wall,
            str(self.run_dir.path) if self.run_dir is not None else None,
        )


def _loss(outcome: dict[str, Any], told: list[float]) -> float:
    if (
        outcome["status"] in ("ok", "pruned")
        and outcome["score"] is not None
        and math.isfinite(outcome["score"])
    ):
        return -float(outcome["score"])
    return max(told, default=0.0)


def _outcome(future) -> dict[str, Any]:
    try:
        return future.result()
    except Exception as exc:  # noqa: BLE001 - e.g. a worker process died; record it, go on
        return {
            "status": "failed",
            "score": None,
            "metrics": {},
            "error": f"{type(exc).__name__}: {exc}",
            "intermediate": [],
            "seconds": None,
        }


def _as_executor(executor):
    if executor is None or isinstance(executor, cf.Executor):
        return executor
    if hasattr(executor, "get_executor"):  # a dask.distributed Client
        return executor.get_executor()
    raise ConfigError(
        "executor: expected a concurrent.futures.Executor or a dask Client, got "
        f"{describe(executor)}"
    )


def _workers(executor) -> int:
    if executor is None:
        return 1
    if hasattr(executor, "scheduler_info"):  # dask Client: one trial per worker thread
        workers = executor.scheduler_info().get("workers", {})
        return max(1, sum(w.get("nthreads", 1) for w in workers.values()))
    return max(1, int(getattr(executor, "_max_workers", 1)))


def _run_directory(run_dir):
    from ml_adv.rundir import Run

    return Run.at(run_dir).directory


def _progress(enabled: bool | None, *, total: int, initial: int):
    if enabled is False:
        return None
    from ml_adv.rundir import tqdm_class

    tqdm = tqdm_class()

    return tqdm(
        total=total,
        initial=initial,
        desc="trials",
        unit="trial",
        disable=None if enabled is None else not enabled,
    )


def _advance(bar, trials: list[dict[str, Any]]) -> None:
    if bar is None:
        return
    scores = [t["score"] for t in trials if t["status"] == "ok"]
    if scores:
        bar.set_postfix({"best": f"{max(scores):.4f}"})
    bar.update(1)
