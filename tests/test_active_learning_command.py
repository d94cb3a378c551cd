"""``ml-adv active-learn``: the oracle simulation writes curves, plot and report, and resumes."""

import json

from ml_adv import cli

TINY = ["active-learn", "--strategies", "random,hybrid", "--seeds", "1", "--rounds", "1", "--size", "tiny",
        "--initial", "20", "--query-size", "10", "--epochs", "3", "--update-epochs", "1", "--min-steps", "4"]


def test_active_learn_writes_report_plot_and_resumes(tmp_path, capsys):
    run_dir = tmp_path / "al"
    assert cli.main([*TINY, "--run-dir", str(run_dir)]) == 0
    report = json.loads((run_dir / "report.json").read_text())
    assert set(report["strategies"]) == {"random", "hybrid"}
    for summary in report["strategies"].values():
        assert summary["labels"] == [20, 30] and summary["seeds"] == 1
        assert all(0 <= acc <= 1 for acc in summary["mean"])
    assert (run_dir / "plots" / "learning_curve.png").stat().st_size > 0
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 4 and {m["strategy_name"] for m in metrics} == {"random", "hybrid"}
    out = capsys.readouterr().out
    assert "| hybrid |" in out and "labels to 0.9" in out
    # Started again: every loop is restored from its journal, nothing is retrained.
    first = (run_dir / "loops" / "hybrid-s0" / "journal.jsonl").read_text()
    assert cli.main([*TINY, "--run-dir", str(run_dir)]) == 0
    assert (run_dir / "loops" / "hybrid-s0" / "journal.jsonl").read_text() == first
    assert json.loads((run_dir / "report.json").read_text())["strategies"] == report["strategies"]


def test_unknown_strategy_fails_cleanly(tmp_path, capsys):
    code = cli.main(["active-learn", "--strategies", "random,entropi", "--run-dir", str(tmp_path / "x")])
    assert code == 2
    err = capsys.readouterr().err
    assert "sampling_strategy" in err and "entropi" in err and "entropy" in err
    assert not (tmp_path / "x").exists()
