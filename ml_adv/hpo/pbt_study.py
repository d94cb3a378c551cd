"""A PBT study (method ``pbt``): the population trained as ``fit_stacked`` trains it, one
stacked compiled program, with ``pbt_loop.PBTHook`` deciding at each interval end; then one
journaled trial per member and the ``StudyResult``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ml_adv.hpo.pbt import RECORD, PBTOptions, check_study, rank
from ml_adv.hpo.pbt_loop import Lineage, PBTHook


def _initial_configs(study) -> list[dict[str, Any]]:
    from ml_adv.hpo.methods import make_searcher

    searcher = make_searcher("random", study.space, study.max_trials, seed=study.seed)
    return [searcher.ask().config for _ in range(study.max_trials)]


def _open_journal(study):
    """``(journal, interval records, finished trials)`` (empty for a fresh study)."""
    from ml_adv.hpo.journal import TrialJournal

    if study.run_dir is None:
        return None, [], []
    journal = TrialJournal(study.run_dir.path_for("trials.jsonl"))
    trials = journal.start(study.header())
    return journal, journal.read_records(RECORD), trials


def _train(study, hook: PBTHook) -> None:
    """The population as ``fit_stacked`` trains it (one stacked program), with ``hook``."""
    from ml_adv.rundir import Run
    from ml_adv.training.stacked import fit_stacked

    initial = _initial_configs(study)  # the same for a resumed study (seeded)
    configs = hook.configs = hook.configs or initial
    # The program is built from the first initial configuration, so a resumed study checks its
    # checkpoints against the same config; every member's own values are arrays in the state.
    spec, config, train, hook.val = study.objective.build(initial[0])
    fit_stacked(
        spec,
        train,
        config.replace(early_stopping=False),  # members are replaced by copies, never stopped
        members=study.max_trials,
        member_hparams={n: [float(c[n]) for c in configs] for n in configs[0]},
        hooks=[hook],
        # Keep every checkpoint back to the last interval end: a resumed study goes on from there.
        run=Run(study.run_dir, progress=study.progress, keep=hook.options.ready + 1),
    )


def run_pbt_study(study, *, on_interval=None):
    """Run (or resume) PBT for ``study`` (method ``pbt``); ``on_interval(record)`` is called after
    each interval is journaled and its state checkpointed (progress hooks, tests)."""
    options = check_study(study)
    started = time.perf_counter()
    journal, records, finished = _open_journal(study)
    hook = PBTHook(study, options, records, journal, on_interval)
    done = len(records) == len(hook.bounds) or (records and records[-1]["stopped"])
    if not done:
        _train(study, hook)
    return _finish(study, hook, finished, time.perf_counter() - started)


def _finish(study, hook: PBTHook, finished, wall: float):
    """Journal one trial per member (those not journaled yet) and build the ``StudyResult``."""
    from ml_adv.hpo.report import write_study_outputs
    from ml_adv.hpo.result import StudyResult

    records, members = hook.records, study.max_trials
    resumed = {t["trial"] for t in finished}
    trials = [_member_trial(i, records, hook.lineage) for i in range(members)]
    for trial in trials:
        if hook.journal is not None and trial["trial"] not in resumed:
            hook.journal.append(trial)
    last = records[-1]
    first = int(
        rank(
            [np.nan if v is None else v for v in last["scores"]],
            [np.nan if v is None else v for v in last["val_loss"]],
        )[0]
    )
    best = trials[first] if trials[first]["status"] == "ok" else None
    model = hook.model
    if (
        best is not None
        and model is None
        and study.run_dir is not None
        and study.run_dir.model_dir.exists()
    ):
        from ml_adv.training.trained_model import TrainedModel  # a finished study started again

        model = TrainedModel.load(study.run_dir.model_dir)
    details = {
        "pbt": {
            "options": _options(hook.options),
            "epochs": hook.epochs,
            "intervals": [
                {k: r[k] for k in ("interval", "epochs", "scores", "sources")} for r in records
            ],
            "best_schedule": best["schedule"] if best else None,
        }
    }
    result = StudyResult(
        study.method,
        dict(best["config"]) if best else None,
        best["score"] if best else None,
        best["trial"] if best else None,
        trials,
        len(resumed),
        0,
        wall,
        str(study.run_dir.path) if study.run_dir is not None else None,
        details=details,
        model=model,
    )
    study.trials = trials
    if study.run_dir is not None:
        write_study_outputs(study.run_dir, result, study.header())
    return result


def _member_trial(i: int, records, lineage: Lineage) -> dict[str, Any]:
    last = records[-1]
    score, failed = last["scores"][i], last["failed"][i] or last["scores"][i] is None
    metrics = {
        "val_accuracy": score,
        "val_loss": last["val_loss"][i],
        "train_loss": last["train_loss"][i],
        "epochs_run": last["epochs"][1],
    }
    return {
        "trial": i,
        "batch": 0,
        "batch_asked": len(last["scores"]),
        "config": dict(last["configs"][i]),
        "status": "failed" if failed else "ok",
        "score": None if failed else score,
        "metrics": metrics,
        "intermediate": [c for c in lineage.curves[i] if c is not None],
        "error": "non-finite loss in the last interval: the member was frozen" if failed else None,
        "seconds": round(sum(r["seconds"] for r in records) / len(last["scores"]), 4),
        "loss": None if failed else -float(score),
        "schedule": lineage.schedule[i],
        "lineage": lineage.copies[i],
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def _options(options: PBTOptions) -> dict[str, Any]:
    return {
        "ready": options.ready,
        "fraction": options.fraction,
        "resample_probability": options.resample_probability,
        "perturb_factors": list(options.perturb_factors),
    }
