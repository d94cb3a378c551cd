"""The ``ml-adv ensemble`` command (ml_adv.cli.ensemble), run with 3-fold cross-validation.

One real run covers the command, k-fold CV through the stacked core (fold masks, one
program) and loading the saved ensemble: the CV score in report.json is recomputed by
hand from the reloaded fold models and checked against the core's own held-out metrics.
"""

import json

import numpy as np
import pytest

from ml_adv import AdvancedModelEnsemble, load_dataset
from ml_adv.cli import main
from ml_adv.ensembles.folds import stratified_fold_ids


def test_ensemble_command_with_cross_validation(tmp_path, capsys):
    run_dir = tmp_path / "ens"
    argv = [
        "ensemble",
        "--arch",
        "mlp",
        "--size",
        "tiny",
        "--folds",
        "3",
        "--epochs",
        "2",
        "--seed",
        "4",
        "--run-dir",
        str(run_dir),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| ensemble + temperature " in out and "| CV (3 folds) mean +- std |" in out
    report = json.loads((run_dir / "report.json").read_text())
    assert (
        report["training"]["failed"] == [False] * 3 and report["training"]["resumed_from"] is None
    )
    assert set(report["test"]["ensemble"]) == {"accuracy", "nll", "brier", "ece"}
    assert report["calibration"]["temperature"] > 0
    assert (run_dir / "plots" / "reliability.png").stat().st_size > 0
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in lines] == ["member"] * 3 + ["ensemble"] * 2

    # The CV score, recomputed from the saved fold models on the command's training split.
    cv = report["training"]["cross_validation"]
    full = load_dataset("digits_flat", split="train")
    train, _ = full.split((0.85, 0.15), seed=4)
    fold_ids = stratified_fold_ids(train.y, 3, seed=4)
    ensemble = AdvancedModelEnsemble.load(report["ensemble_dir"])
    probs = ensemble.member_probabilities(train)
    for i in range(3):
        held = fold_ids == i
        acc = float(np.mean(probs[i][held].argmax(-1) == train.y[held]))
        assert cv["per_fold"]["accuracy"][i] == pytest.approx(acc, abs=1e-6)
    assert cv["mean"]["accuracy"] == pytest.approx(np.mean(cv["per_fold"]["accuracy"]))
    assert cv["std"]["accuracy"] == pytest.approx(np.std(cv["per_fold"]["accuracy"]))
    # The stacked core validated each fold model on its held-out rows too: the two agree.
    core = [m.metrics["val_accuracy"] for m in ensemble.models]
    np.testing.assert_allclose(core, cv["per_fold"]["accuracy"], atol=1e-6)
    assert ensemble.get_ensemble_statistics()["cross_validation"]["folds"] == 3


def test_ensemble_command_rejects_bad_options(tmp_path, capsys):
    assert main(["ensemble", "--method", "median", "--run-dir", str(tmp_path / "x")]) == 2
    assert "combination_method: unknown name 'median'" in capsys.readouterr().err
    assert main(["ensemble", "--folds", "1", "--run-dir", str(tmp_path / "x")]) == 2
    assert "folds: expected an integer >= 2" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
