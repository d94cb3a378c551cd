"""``ml-adv workflow``: SEED.md's integrated workflow end to end on built-in data, and resumed.

Tiny budgets (a 2-trial search, one source epoch, a few DANN steps, one active-learning
round): this checks that the phases chain through the facades and that a second run of the
same command picks everything up from the run folder, not the accuracies (EXPERIMENTS.md).
"""

from __future__ import annotations

import json

import pytest

from ml_adv.cli.main import main

TINY = [
    "--size",
    "tiny",
    "--trials",
    "2",
    "--search-epochs",
    "1",
    "--epochs",
    "1",
    "--adapt-steps",
    "8",
    "--rounds",
    "1",
    "--query-size",
    "10",
    "--validation-per-class",
    "2",
    "--initial-per-class",
    "1",
]


@pytest.mark.slow
def test_workflow_runs_every_phase_then_resumes_from_the_run_folder(tmp_path, capsys):
    run_dir = tmp_path / "wf"
    assert main(["workflow", *TINY, "--run-dir", str(run_dir)]) == 0
    first = json.loads((run_dir / "report.json").read_text())
    phases = first["phases"]
    assert set(phases) == {"search", "source", "adapt", "ensemble", "active_learning"}
    assert all(phase["seconds"] >= 0 for phase in phases.values())  # where the time goes
    assert phases["search"]["trials"] == 2 and phases["search"]["resumed_trials"] == 0
    # Only the hyper-parameters the compiled program takes as arrays are searched.
    assert set(phases["search"]["best_config"]) == {"learning_rate", "label_smoothing"}
    # Active learning improves whichever model scores higher on the labelled validation set.
    adapt = phases["adapt"]
    better = adapt["source_validation_accuracy"] > adapt["adapted_validation_accuracy"]
    assert adapt["kept"] == ("source" if better else "adapted")
    assert phases["active_learning"]["improved"] == adapt["kept"]
    # 10 classes x 1 initial label, then one round of 10 queried labels.
    assert phases["active_learning"]["labels"] == 20
    assert len(phases["active_learning"]["ensemble_weights"]) == 2
    assert abs(sum(phases["active_learning"]["ensemble_weights"]) - 1) < 1e-5
    assert first["training_history"] and (run_dir / "plots" / "learning_curve.png").is_file()
    out = capsys.readouterr().out
    assert "active learning round 1: 20 labels" in out and "| after active learning" in out

    # The same command again: the study's trials come from its journal, the source and DANN
    # runs from their checkpoints, the active-learning round from its journal.
    assert main(["workflow", *TINY, "--run-dir", str(run_dir)]) == 0
    second = json.loads((run_dir / "report.json").read_text())
    assert second["phases"]["search"]["resumed_trials"] == 2
    assert "active learning round" not in capsys.readouterr().out
    for phase in ("source", "adapt", "ensemble"):
        assert (
            second["phases"][phase]["target_test_accuracy"] == phases[phase]["target_test_accuracy"]
        )
    assert (
        second["phases"]["active_learning"]["model_test_accuracy"]
        == (phases["active_learning"]["model_test_accuracy"])
    )


def test_bad_settings_fail_before_anything_runs(tmp_path, capsys):
    assert (
        main(
            ["workflow", "--rounds", "400", "--query-size", "400", "--run-dir", str(tmp_path / "x")]
        )
        == 2
    )
    assert "rounds:" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
