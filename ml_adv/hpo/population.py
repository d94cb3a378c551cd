"""Population search: many configurations trained as one stacked, vmapped program.

Continuous optimizer hyper-parameters (learning rate, weight decay, label smoothing: the
values ``fit_stacked`` traces per member) and seeds (each member has its own key) do not
change the compiled program, so P configurations that differ only in them train as P
members of one ``fit_stacked`` call: one compilation and one scanned epoch for all of
them, instead of P of each. Configurations that differ in anything structural (batch
size, architecture, widths, dropout ...) are grouped, one stacked program per group.

Two ways to use it:

* ``stacked_trials``: the evaluator behind ``Study(..., stacked=True)``, i.e. batched
  asks from any method (ask P, train them together, tell P);
* the ``population`` method (``run_population_study``): successive halving over a
  stacked population. P configurations are sampled (seeded, uniform / log-uniform); rung
  k trains the survivors for ``epochs / eta**(R-1-k)`` epochs as one program and keeps
  the best ``max(1, n // eta)``; the last rung trains at the full budget. Survivors are
  retrained from their initialisation at each rung (successive halving with restarts):
  a member's key depends on the population it belongs to, so a continued state would not
  be one a user could reproduce with ``fit``; the cost is at most ``R`` times the first
  rung. Each finished rung is journaled, so a killed study resumes at the next rung.

The third way, the ``pbt`` method (population based training: exploit/explore between
epochs of one stacked program that is never restarted), lives in ``ml_adv.hpo.pbt``.

Member i of a population is not bitwise the run ``fit`` would make for the same
configuration (its key is the i-th of the population's split keys); the study reports
the population's own scores.
"""

from __future__ import annotations

import math
import time
import traceback
from collections.abc import Sequence
from typing import Any

from ml_adv.errors import ConfigError, describe

DEFAULT_REDUCTION_FACTOR = 3


def member_fields(objective) -> frozenset[str]:
    """Trial-config keys that can differ between members of one stacked program."""
    from ml_adv.hpo.objective import train_fields
    from ml_adv.training.setup import traceable_hparam_names

    return frozenset(traceable_hparam_names(objective.base_config)) & train_fields()


def check_stackable(objective) -> None:
    if not hasattr(objective, "build") or not hasattr(objective, "views"):
        raise ConfigError(
            f"stacked: population training needs a TrainingObjective, got {describe(objective)}"
        )


def structural_groups(
    configs: Sequence[dict[str, Any]], varying: frozenset[str]
) -> list[list[int]]:
    """Indices of ``configs`` grouped by everything outside ``varying`` (first-seen order)."""
    groups: dict[str, list[int]] = {}
    for i, config in enumerate(configs):
        groups.setdefault(
            repr(sorted((k, v) for k, v in config.items() if k not in varying)), []
        ).append(i)
    return list(groups.values())


def stacked_trials(objective, configs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Train ``configs`` as stacked populations (one per structural group); one outcome per config.

    Outcomes have ``run_trial``'s shape; a member whose loss turned non-finite is a failed
    trial, an exception fails its whole group, and other groups go on.
    """
    from ml_adv.rundir import QUIET
    from ml_adv.training.stacked import fit_stacked

    varying = member_fields(objective)
    outcomes: list[dict[str, Any] | None] = [None] * len(configs)
    for members in structural_groups(configs, varying):
        started = time.perf_counter()
        first = configs[members[0]]
        try:
            spec, train_config, train, val = objective.build(first)
            hparams = {
                name: [float(configs[i][name]) for i in members]
                for name in varying
                if name in first
            }
            result = fit_stacked(
                spec,
                train,
                train_config,
                members=len(members),
                val=val,
                member_hparams=hparams or None,
                run=QUIET,
            )
            seconds = round(
                (time.perf_counter() - started) / len(members), 4
            )  # the group's time, shared
            for j, i in enumerate(members):
                outcomes[i] = _member_outcome(result, j, train_config, objective.metric, seconds)
        except Exception as exc:  # noqa: BLE001 - a failing group is recorded, the study goes on
            for i in members:
                outcomes[i] = {
                    "status": "failed",
                    "score": None,
                    "metrics": {},
                    "intermediate": [],
                    "error": f"{type(exc).__name__}: {exc}",
                    "traceback": traceback.format_exc(limit=3),
                    "seconds": None,
                }
    return outcomes


def _member_outcome(result, j: int, config, metric: str, seconds: float) -> dict[str, Any]:
    history = result.histories[j]
    curve = [float(r.get(metric, float("nan"))) for r in history]
    out = {
        "status": "ok",
        "score": None,
        "metrics": {},
        "intermediate": curve,
        "error": None,
        "seconds": seconds,
        "stacked_members": len(result.histories),
    }
    if bool(result.failed[j]) or not history:
        out.update(status="failed", error="non-finite loss: the member was frozen by fit_stacked")
        return out
    restored = config.early_stopping and config.restore_best and int(result.best_epochs[j]) > 0
    final = history[int(result.best_epochs[j]) - 1] if restored else history[-1]
    metrics = {
        k: final[k] for k in ("train_loss", "val_loss", "val_accuracy", metric) if k in final
    }
    metrics.update(epochs_run=len(history), best_epoch=int(result.best_epochs[j]))
    if not all(math.isfinite(v) for v in metrics.values() if isinstance(v, float)):
        out.update(status="failed", error=f"non-finite score or loss: {metrics}")
    out.update(score=float(final[metric]), metrics=metrics)
    return out


def rung_epochs(epochs: int, population: int, eta: int) -> list[int]:
    """Epochs per rung: ``epochs / eta**(R-1-k)`` for ``R = 1 + floor(log_eta P)`` rungs (at
    least 1 each).
    """
    rungs = 1 + int(math.floor(math.log(population, eta) + 1e-9)) if population > 1 else 1
    out = [max(1, int(round(epochs / eta ** (rungs - 1 - k)))) for k in range(rungs)]
    return sorted(set(out))  # a short budget merges rungs that would train equally long


def run_population_study(study):
    """Successive halving over a stacked population for ``study`` (its ``method`` is
    ``population``).
    """
    from ml_adv.hpo.methods import make_searcher

    check_stackable(study.objective)
    eta = _reduction_factor(study.method_options)
    started = time.perf_counter()
    searcher = make_searcher("random", study.space, study.max_trials, seed=study.seed)
    configs = [searcher.ask().config for _ in range(study.max_trials)]
    schedule = rung_epochs(int(study.objective.base_config.epochs), len(configs), eta)
    journal, finished, done_rungs = _open_journal(study)
    resumed = len(finished)
    alive, curves = list(range(len(configs))), {i: [] for i in range(len(configs))}
    for k, epochs in enumerate(schedule):
        last = k == len(schedule) - 1
        done = done_rungs[k] if k < len(done_rungs) else None
        outcomes, scores = _rung_scores(study.objective, configs, alive, epochs, done)
        for i in alive:
            curves[i].append(scores[i])
        ranked = sorted((i for i in alive if scores[i] is not None), key=lambda i: -scores[i])
        keep = ranked if last else ranked[: max(1, len(ranked) // eta)]
        if outcomes is not None:
            _journal_rung(
                journal,
                finished,
                configs,
                curves,
                rung=k,
                epochs=epochs,
                last=last,
                alive=alive,
                outcomes=outcomes,
                scores=scores,
                keep=keep,
            )
        alive = keep
        if not alive:
            break
    return _study_result(study, finished, resumed, started)


def _reduction_factor(method_options) -> int:
    """The method options' ``reduction_factor`` (eta, default 3), checked; no other option."""
    options = dict(method_options)
    eta = options.pop("reduction_factor", DEFAULT_REDUCTION_FACTOR)
    if isinstance(eta, bool) or not isinstance(eta, int) or eta < 2:
        raise ConfigError(f"reduction_factor: expected an integer >= 2, got {describe(eta)}")
    if options:
        raise ConfigError(f"method options: unknown option(s) {sorted(options)} for 'population'")
    return eta


def _open_journal(study):
    """``(journal, finished trials by id, finished rung records)``: started (or replayed) in
    the run directory, or ``(None, {}, [])`` without one."""
    from ml_adv.hpo.journal import TrialJournal

    journal = (
        TrialJournal(study.run_dir.path_for("trials.jsonl")) if study.run_dir is not None else None
    )
    finished = {
        t["trial"]: t for t in (journal.start(study.header()) if journal is not None else [])
    }
    done_rungs = journal.read_records("rung") if journal is not None else []
    return journal, finished, done_rungs


def _rung_scores(objective, configs, alive: list[int], epochs: int, done: dict | None):
    """``(outcomes, scores)`` of the ``alive`` trials at one rung: replayed from ``done`` (a
    rung finished before a kill; no outcomes) or trained as stacked populations now."""
    if done is not None:  # a rung finished before a kill: replay its scores
        return None, dict(zip(done["trials"], done["scores"]))
    trained = stacked_trials(objective, [{**configs[i], "epochs": epochs} for i in alive])
    outcomes = dict(zip(alive, trained))
    scores = {i: o["score"] if o["status"] == "ok" else None for i, o in outcomes.items()}
    return outcomes, scores


def _journal_rung(
    journal, finished: dict, configs, curves, *, rung, epochs, last, alive, outcomes, scores, keep
) -> None:
    """Journal the trials decided at this rung (failed, pruned, or ok at the last rung), then
    the rung itself."""
    for i in alive:  # trials decided at this rung are journaled before the rung itself
        status = (
            outcomes[i]["status"]
            if outcomes[i]["status"] == "failed"
            else ("ok" if last else "pruned" if i not in keep else None)
        )
        if status is not None:
            _finish(
                journal,
                finished,
                i,
                rung,
                epochs,
                configs[i],
                {**outcomes[i], "status": status},
                curves[i],
            )
    if journal is not None:
        journal.append_record(
            "rung",
            {
                "rung": rung,
                "epochs": epochs,
                "trials": alive,
                "scores": [scores[i] for i in alive],
            },
        )


def _study_result(study, finished: dict, resumed: int, started: float):
    """Record the finished trials on ``study`` and write its outputs; the ``StudyResult``."""
    from ml_adv.hpo.report import write_study_outputs
    from ml_adv.hpo.result import StudyResult

    study.trials = [finished[i] for i in sorted(finished)]
    ok = [t for t in study.trials if t["status"] == "ok"]
    best = max(ok, key=lambda t: t["score"], default=None)
    result = StudyResult(
        study.method,
        dict(best["config"]) if best else None,
        best["score"] if best else None,
        best["trial"] if best else None,
        list(study.trials),
        resumed,
        0,
        time.perf_counter() - started,
        str(study.run_dir.path) if study.run_dir is not None else None,
    )
    if study.run_dir is not None:
        write_study_outputs(study.run_dir, result, study.header())
    return result


def _finish(
    journal,
    finished: dict,
    trial_id: int,
    rung: int,
    epochs: int,
    config: dict[str, Any],
    outcome: dict[str, Any],
    curve: list,
) -> None:
    if trial_id in finished:
        return
    score = outcome.get("score")
    usable = score is not None and math.isfinite(score) and outcome["status"] != "failed"
    trial = {
        "trial": trial_id,
        "batch": rung,
        "batch_asked": 1,
        "config": config,
        "status": outcome["status"],
        "score": score if usable else None,
        "metrics": outcome.get("metrics", {}),
        "intermediate": [c for c in curve if c is not None],
        "error": outcome.get("error"),
        "seconds": outcome.get("seconds"),
        "loss": -float(score) if usable else None,
        "rung_epochs": epochs,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if journal is not None:
        journal.append(trial)
    finished[trial_id] = trial
