"""The ``ml-adv ensemble`` command (ml_adv.ensembles.command)."""

import json

from ml_adv.cli import main


def test_ensemble_command_writes_the_run(tmp_path, capsys):
    run_dir = tmp_path / "ens"
    argv = ["ensemble", "--arch", "mlp", "--size", "tiny", "--members", "2", "--epochs", "2", "--run-dir", str(run_dir)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| ensemble + temperature |" in out
    report = json.loads((run_dir / "report.json").read_text())
    assert report["training"]["failed"] == [False, False] and report["training"]["resumed_from"] is None
    assert set(report["test"]["ensemble"]) == {"accuracy", "nll", "brier", "ece"}
    assert report["calibration"]["temperature"] > 0
    assert (run_dir / "plots" / "reliability.png").stat().st_size > 0
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in lines] == ["member", "member", "ensemble", "ensemble"]
    assert (run_dir / "ensemble").is_dir() and (run_dir / "checkpoints" / "latest").is_dir()


def test_ensemble_command_rejects_bad_options(tmp_path, capsys):
    assert main(["ensemble", "--method", "median", "--run-dir", str(tmp_path / "x")]) == 2
    assert "combination_method: unknown name 'median'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
