"""``ml-adv hpo``: run directory contents, resume with the same command, bad input."""

import json

from ml_adv.cli import main


def test_hpo_command_writes_the_run_directory_and_resumes(tmp_path, capsys):
    run_dir = tmp_path / "hpo"
    argv = [
        "hpo",
        "--arch",
        "mlp",
        "--data",
        "digits",
        "--method",
        "random",
        "--trials",
        "2",
        "--epochs",
        "1",
        "--space",
        '{"learning_rate": ["log", 3e-3, 3e-2], "label_smoothing": [0.0, 0.1]}',
        "--run-dir",
        str(run_dir),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "best val accuracy" in out and str(run_dir) in out
    for name in (
        "trials.jsonl",
        "best_config.json",
        "report.json",
        "plots/best_so_far.png",
        "plots/parallel_coordinates.png",
    ):
        assert (run_dir / name).is_file(), name
    lines = (run_dir / "trials.jsonl").read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[0])["type"] == "study"
    report = json.loads((run_dir / "report.json").read_text())
    best = json.loads((run_dir / "best_config.json").read_text())
    assert (
        report["trials"] == 2 and best["config"] == report["best_config"] and 0 < best["score"] <= 1
    )
    assert main(argv) == 0  # the same command again: replays the journal, trains nothing
    assert "resumed: 2 finished trial(s)" in capsys.readouterr().out
    assert (run_dir / "trials.jsonl").read_text().splitlines() == lines


def test_hpo_command_rejects_bad_input_before_training(tmp_path, capsys):
    base = ["hpo", "--arch", "mlp", "--trials", "2", "--run-dir", str(tmp_path / "x")]
    assert main([*base, "--method", "annealing"]) == 2
    assert "optimization_method" in capsys.readouterr().err
    assert main([*base, "--space", '{"learning_rate": ["log", 0, 1]}']) == 2
    assert "low > 0" in capsys.readouterr().err
    assert main([*base, "--space", '{"learning_rate": ["log", 1e-3, 1e-2']) == 2
    assert "--space" in capsys.readouterr().err
    assert (
        main([*base, "--method", "pbt", "--fraction", "0.7"]) == 2
    )  # PBT's options, checked up front
    assert "fraction" in capsys.readouterr().err
    assert not (tmp_path / "x" / "trials.jsonl").exists()
