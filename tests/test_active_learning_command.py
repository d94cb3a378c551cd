"""``ml-adv active-learn``: the oracle simulation writes curves, plot and report, and resumes."""

import json

import pytest

from ml_adv import cli
from ml_adv.data.catalog import load_dataset
from ml_adv.training.trained_model import TrainedModel

# 60 steps at lr 1e-2 of a tiny MLP take milliseconds (compiling dominates) and learn enough
# to be far above chance, so the accuracy check below can fail; 4 steps stayed at chance.
TINY = [
    "active-learn",
    "--strategies",
    "hybrid",
    "--seeds",
    "1",
    "--rounds",
    "1",
    "--size",
    "tiny",
    "--initial",
    "20",
    "--query-size",
    "10",
    "--epochs",
    "3",
    "--update-epochs",
    "1",
    "--min-steps",
    "60",
    "--lr",
    "1e-2",
]


def test_active_learn_writes_report_plot_and_resumes(tmp_path, capsys):
    run_dir = tmp_path / "al"
    assert cli.main([*TINY, "--run-dir", str(run_dir)]) == 0
    report = json.loads((run_dir / "report.json").read_text())
    assert set(report["strategies"]) == {"hybrid"}
    summary = report["strategies"]["hybrid"]
    assert summary["labels"] == [20, 30] and summary["seeds"] == 1
    # The reported accuracy is the final model's on the test split: recomputed from the saved
    # model, and far above chance (10 classes) after 30 labels.
    journal = [
        json.loads(line)
        for line in (run_dir / "loops" / "hybrid-s0" / "journal.jsonl").read_text().splitlines()
    ]
    final = [entry for entry in journal if entry["op"] == "model"][-1]
    assert final["labels"] == 30
    model = TrainedModel.load(run_dir / "loops" / "hybrid-s0" / final["path"])
    accuracy = model.evaluate(load_dataset("digits", split="test"))["accuracy"]
    assert summary["mean"][-1] == summary["final_mean"] == pytest.approx(accuracy, abs=1e-6)
    assert accuracy > 0.4
    assert (run_dir / "plots" / "learning_curve.png").stat().st_size > 0
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 2 and {m["strategy_name"] for m in metrics} == {"hybrid"}
    out = capsys.readouterr().out
    assert "| hybrid " in out and "labels to 0.9" in out
    # Started again: every loop is restored from its journal, nothing is retrained.
    first = (run_dir / "loops" / "hybrid-s0" / "journal.jsonl").read_text()
    assert cli.main([*TINY, "--run-dir", str(run_dir)]) == 0
    assert (run_dir / "loops" / "hybrid-s0" / "journal.jsonl").read_text() == first
    assert json.loads((run_dir / "report.json").read_text())["strategies"] == report["strategies"]


def test_unknown_strategy_fails_cleanly(tmp_path, capsys):
    code = cli.main(
        ["active-learn", "--strategies", "random,entropi", "--run-dir", str(tmp_path / "x")]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "sampling_strategy" in err and "entropi" in err and "entropy" in err
    assert not (tmp_path / "x").exists()


def test_summary_and_plot_compare_strategies_with_seed_bands(tmp_path):
    from ml_adv.active_learning.plots import plot_strategy_curves
    from ml_adv.active_learning.simulate import labels_to_reach, summarise_curves

    def run(*accs):
        return [{"labels": 20 + 10 * i, "val_accuracy": a} for i, a in enumerate(accs)]

    curves = {
        "random": [run(0.5, 0.8, 0.91), run(0.6, 0.85, 0.89)],
        "margin": [run(0.5, 0.92, 0.96), run(0.6, 0.9, 0.95)],
    }
    summary = summarise_curves(curves, targets=(0.9, 0.95))
    assert summary["random"]["labels"] == [20, 30, 40]
    assert summary["random"]["mean"] == pytest.approx([0.55, 0.825, 0.90])
    assert summary["random"]["std"] == pytest.approx([0.05, 0.025, 0.01])
    assert summary["random"]["labels_to_reach"]["0.9"] == {
        "per_seed": [40, None],
        "mean": None,
        "reached": "1/2",
    }
    assert summary["margin"]["labels_to_reach"]["0.9"] == {
        "per_seed": [30, 30],
        "mean": 30.0,
        "reached": "2/2",
    }
    assert summary["margin"]["labels_to_reach"]["0.95"]["per_seed"] == [40, 40]
    assert labels_to_reach(run(0.5, None, 0.7), 0.6) == 40
    png = plot_strategy_curves(summary, tmp_path / "plots" / "curve.png", targets=(0.9,))
    assert (tmp_path / "plots" / "curve.png").stat().st_size > 1000 and png.endswith("curve.png")
