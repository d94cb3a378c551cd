"""A deep ensemble from start to report in one run folder (what ``ml-adv ensemble`` runs).

``prepare_ensemble_run`` loads the data and checks every setting without writing or
compiling anything; ``run_ensemble_workflow`` then trains (or resumes) the K members (or the
k fold models) as one program through ``AdvancedModelEnsemble``, learns the weights where the
rule does, calibrates, evaluates on the test split and writes ``metrics.jsonl``,
``plots/reliability.png``, the saved ensemble under ``ensemble/`` and ``report.json``::

    from ml_adv.ensembles.workflow import EnsembleRunSettings, run_ensemble_workflow
    from ml_adv.rundir import RunDirectory

    settings = EnsembleRunSettings(arch="mlp", size="tiny", members=3, epochs=2)
    report = run_ensemble_workflow(settings, RunDirectory("runs/my-ensemble"))
    report["test"]["ensemble"]["accuracy"]

Running it again on the same folder resumes training from the last checkpoint.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import numpy as np

from ml_adv.data.dataset import ArrayDataset
from ml_adv.rundir import RunDirectory
from ml_adv.training.config import TrainConfig

METRICS = ("accuracy", "nll", "brier", "ece")
CURVES = ("best member", "ensemble", "ensemble + temperature")


@dataclasses.dataclass(frozen=True)
class EnsembleRunSettings:
    """What the run trains and how: ``members`` models of ``arch`` (``size``) on ``data``
    combined by ``method``; ``folds`` >= 2 trains the k fold models of cross-validation
    instead (0: off). A stratified ``validation_split`` of the training split is held out
    for learned weights, stacking and temperature scaling (``calibrate``)."""

    arch: str = "cnn"
    size: str = "small"
    data: str = "digits"
    members: int = 5
    method: str = "averaging"
    folds: int = 0
    calibrate: bool = True
    validation_split: float = 0.15
    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 1e-3
    seed: int = 0
    download: bool = True


@dataclasses.dataclass
class EnsembleInputs:
    """The checked run: the rule, the training config, the model spec and the data splits."""

    rule: Any
    config: TrainConfig
    spec: Any
    train: ArrayDataset
    val: ArrayDataset
    test: ArrayDataset

    def record(self) -> dict[str, Any]:
        """What ``config.json`` records besides the settings: the model spec and the config."""
        return {"spec": self.spec.to_dict(), "train_config": self.config.to_dict()}


def prepare_ensemble_run(settings: EnsembleRunSettings) -> EnsembleInputs:
    """Check every setting and load the data (the architecture's view of ``data``); nothing
    is written or compiled, so a mistake costs nothing."""
    from ml_adv.data.catalog import load_dataset, view_for
    from ml_adv.ensembles.combine import resolve_rule
    from ml_adv.ensembles.folds import check_folds
    from ml_adv.models.registry import make_spec

    s = settings
    rule = resolve_rule(s.method)
    if s.folds:
        check_folds(s.folds)
    config = TrainConfig(
        epochs=s.epochs, batch_size=s.batch_size, learning_rate=s.learning_rate, seed=s.seed
    )
    name = view_for(s.data, s.arch)
    full, test = (load_dataset(name, split=p, download=s.download) for p in ("train", "test"))
    train, val = full.split((1 - s.validation_split, s.validation_split), seed=s.seed)
    spec = make_spec(
        s.arch,
        input_shape=train.example_shape,
        input_kind=train.input_kind,
        num_classes=train.num_classes,
        size=s.size,
    )
    return EnsembleInputs(rule, config, spec, train, val, test)


def run_ensemble_workflow(
    settings: EnsembleRunSettings,
    run_dir: RunDirectory | str | os.PathLike,
    inputs: EnsembleInputs | None = None,
    *,
    report_settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train (or resume), weight, calibrate, evaluate, plot, save and report in ``run_dir``;
    returns the report (also written to ``report.json``).

    ``inputs``: what ``prepare_ensemble_run(settings)`` returned, when the caller checked the
    settings before opening the run folder. ``report_settings``: what the report records as
    its ``settings`` (default: ``settings`` as a dict; ``ml-adv ensemble`` records its options).
    """
    from ml_adv.ensembles.facade import AdvancedModelEnsemble

    rd = RunDirectory.of(run_dir)
    inputs = inputs or prepare_ensemble_run(settings)
    _ = rd.checkpoint_dir  # recorded, so that cleaning removes the stacked run's checkpoints
    started = time.perf_counter()
    ensemble = AdvancedModelEnsemble(settings.method, seed=settings.seed)
    if settings.folds:
        ensemble.set_cross_validation(settings.folds)
    training = ensemble.fit(
        inputs.spec,
        inputs.train,
        inputs.config,
        members=None if settings.folds else settings.members,
        val=None if settings.folds else inputs.val,
        run_dir=rd,
    )
    before, after, calibration, probs = _evaluate(settings, ensemble, inputs)
    title = f"{settings.arch} x {len(ensemble)} on {settings.data} (test)"
    plot = _plot_reliability(rd, probs, inputs.test, title)
    _write_metrics(rd, before, after)
    if (rd.path / "ensemble").exists():  # a resumed or repeated run replaces the saved ensemble
        rd.remove("ensemble")
    saved = ensemble.save(rd.tree_for("ensemble"))
    report = {
        "command": "ensemble",
        "settings": report_settings or dataclasses.asdict(settings),
        "training": training,
        "test": summarise(before, after),
        "calibration": calibration,
        "diversity": before["diversity"],
        "weights": before["weights"],
        "plot": plot,
        "ensemble_dir": saved,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    rd.write_report(report)
    return report


def _evaluate(settings: EnsembleRunSettings, ensemble, inputs: EnsembleInputs):
    """Weight (where the rule learns), evaluate, calibrate (unless ``calibrate`` is off) and
    evaluate again; the performance before and after, the calibration and the test
    probabilities of the best member, the ensemble and the calibrated ensemble."""
    if inputs.rule.uses_weights or inputs.rule.needs_meta_learner:
        ensemble.update_model_weights(inputs.val)
    before = ensemble.get_ensemble_performance(inputs.test)
    probs = {"ensemble": ensemble.predict_proba(inputs.test)}
    members = before["members"]
    best = max(members, key=lambda m: members[m]["accuracy"])
    index = ensemble.model_ids.index(best)
    probs["best member"] = ensemble.member_probabilities(inputs.test)[index]
    calibration, after = None, None
    if settings.calibrate:
        calibration = ensemble.calibrate(inputs.val)
        after = ensemble.get_ensemble_performance(inputs.test)
        probs["ensemble + temperature"] = ensemble.predict_proba(inputs.test)
    return before, after, calibration, probs


def _plot_reliability(rd: RunDirectory, probs, test: ArrayDataset, title: str) -> str:
    """The reliability diagram of each model in ``probs``; the plot's path."""
    from ml_adv.ensembles.calibration import expected_calibration_error, reliability_bins
    from ml_adv.ensembles.plots import plot_reliability

    curves = {
        label: {
            **{k: np.asarray(v) for k, v in reliability_bins(probs[label], test.y).items()},
            "ece": float(expected_calibration_error(probs[label], test.y)),
        }
        for label in CURVES
        if label in probs
    }
    return plot_reliability(curves, rd.plot_path("reliability"), title=title)


def _write_metrics(rd: RunDirectory, before: dict[str, Any], after: dict[str, Any] | None) -> None:
    """metrics.jsonl: one line per member, the ensemble and the calibrated ensemble."""
    rd.rewrite_metrics(
        [{"model": mid, "kind": "member", **m} for mid, m in before["members"].items()]
        + [{"model": "ensemble", "kind": "ensemble", **before["ensemble"]}]
        + (
            [{"model": "ensemble+temperature", "kind": "ensemble", **after["ensemble"]}]
            if after
            else []
        )
    )


def summarise(before: dict[str, Any], after: dict[str, Any] | None) -> dict[str, Any]:
    """The report's ``test`` entry: each member, their mean and std, the ensemble (and the
    calibrated ensemble) from ``get_ensemble_performance`` before (and after) calibration."""
    members = before["members"].values()
    out = {
        "members": before["members"],
        "member_mean": {m: float(np.mean([v[m] for v in members])) for m in METRICS},
        "member_std": {m: float(np.std([v[m] for v in members])) for m in METRICS},
        "ensemble": before["ensemble"],
    }
    if after is not None:
        out["ensemble_calibrated"] = after["ensemble"]
    return out


__all__ = ["EnsembleInputs", "EnsembleRunSettings", "prepare_ensemble_run", "run_ensemble_workflow"]
