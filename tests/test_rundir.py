"""RunDirectory: records what ml_adv writes; clean removes exactly that and nothing else."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from ml_adv.errors import ConfigError
from ml_adv.rundir import MARKER, RunDirectory, dumps


def _fake_run(rd: RunDirectory) -> None:
    """Every kind of artifact a training run writes, including orbax-like trees."""
    rd.write_config({"lr": 1e-3, "schedule": "constant"})
    rd.append_metrics({"epoch": 1, "loss": 0.5})
    rd.append_metrics({"epoch": 2, "loss": float("nan")})
    rd.write_report({"steps_per_second": float("nan"), "acc": np.float32(0.75), "n": np.int64(3)})
    rd.plot_path("learning_curve").write_bytes(b"png")
    ckpt = rd.checkpoint_dir
    for tree in ("latest/3/state", "best/2/state"):
        (ckpt / tree).mkdir(parents=True)
        (ckpt / tree / "array").write_bytes(b"x")
    rd.model_dir.mkdir()
    (rd.model_dir / "tree").write_bytes(b"w")
    rd.path_for("trials/0.json").write_text("{}")


def test_user_files_survive_clean_everywhere(tmp_path):
    run = tmp_path / "run"
    rd = RunDirectory(run)
    _fake_run(rd)
    # the user's own files, at the top and inside folders ml_adv also uses
    (run / "notes.txt").write_text("mine")
    (run / "plots" / "my_figure.png").write_bytes(b"mine")
    (run / "checkpoints" / "README").write_text("mine")
    removed = RunDirectory.clean(run)
    assert {
        "config.json",
        "metrics.jsonl",
        "report.json",
        "plots/learning_curve.png",
        "checkpoints/latest",
        "checkpoints/best",
        "model",
        "trials/0.json",
    } <= set(removed)
    left = sorted(p.relative_to(run).as_posix() for p in run.rglob("*"))
    assert left == [
        "checkpoints",
        "checkpoints/README",
        "notes.txt",
        "plots",
        "plots/my_figure.png",
    ]


def test_clean_removes_a_folder_it_created_entirely(tmp_path):
    run = tmp_path / "a" / "run"
    _fake_run(RunDirectory(run))
    RunDirectory.clean(run)
    assert not run.exists()
    assert (tmp_path / "a").exists()  # a parent it did not own as a run directory stays


def test_adopted_folder_is_not_removed(tmp_path):
    run = tmp_path / "existing"
    run.mkdir()
    rd = RunDirectory(run)
    rd.write_config({})
    RunDirectory.clean(run)
    assert run.is_dir() and not any(run.iterdir())


def test_unmarked_folder_is_refused(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "precious.csv").write_text("1,2")
    with pytest.raises(ConfigError, match="run_dir.*not an ml_adv run directory"):
        RunDirectory.clean(tmp_path / "data")
    assert (tmp_path / "data" / "precious.csv").exists()
    assert RunDirectory.clean(tmp_path / "missing") == []


@pytest.mark.parametrize("where", [".", "..", "~", "/"])
def test_dangerous_locations_are_refused(where, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    (work / MARKER).write_text(
        json.dumps({"format": "ml_adv.run/1", "files": [], "trees": [], "dirs": []})
    )
    with pytest.raises(ConfigError, match="run_dir"):
        RunDirectory.clean(where)
    with pytest.raises(ConfigError, match="run_dir"):
        RunDirectory(where)
    assert (work / MARKER).exists()


def test_hostile_marker_cannot_escape(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    run = tmp_path / "run"
    RunDirectory(run)
    marker = json.loads((run / MARKER).read_text())
    marker["files"] += ["../outside.txt", str(outside)]
    marker["trees"] += [".."]
    (run / MARKER).write_text(json.dumps(marker))
    RunDirectory.clean(run)
    assert outside.read_text() == "keep"


def test_symlinked_tree_is_unlinked_not_followed(tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "keep").write_text("x")
    rd = RunDirectory(tmp_path / "run")
    os.symlink(target, rd.model_dir)
    RunDirectory.clean(tmp_path / "run")
    assert (target / "keep").exists()


def test_nested_runs_are_cleaned_by_their_own_records(tmp_path):
    parent = RunDirectory(tmp_path / "hpo")
    parent.write_json("summary.json", {})
    child = RunDirectory(tmp_path / "hpo" / "trial-0")
    child.write_config({})
    (tmp_path / "hpo" / "trial-0" / "mine.txt").write_text("x")
    RunDirectory.clean(tmp_path / "hpo")
    assert sorted(p.name for p in (tmp_path / "hpo").rglob("*")) == ["mine.txt", "trial-0"]


def test_strict_json_and_metrics(tmp_path):
    rd = RunDirectory(tmp_path / "run")
    rd.write_report({"steps_per_second": float("nan"), "x": np.arange(3), "p": Path("a")})
    report = json.loads((tmp_path / "run" / "report.json").read_text(), parse_constant=pytest.fail)
    assert report == {"steps_per_second": None, "x": [0, 1, 2], "p": "a"}
    rd.append_metrics({"epoch": 1, "loss": float("inf")})
    rd.append_metrics({"epoch": 2, "loss": 0.25})
    assert rd.read_jsonl("metrics.jsonl") == [
        {"epoch": 1, "loss": None},
        {"epoch": 2, "loss": 0.25},
    ]
    with open(tmp_path / "run" / "metrics.jsonl", "a") as fh:
        fh.write('{"epoch": 3, "lo')  # killed mid-append
    assert len(rd.read_jsonl("metrics.jsonl")) == 2
    rd.rewrite_metrics([{"epoch": 1}])
    assert rd.read_jsonl("metrics.jsonl") == [{"epoch": 1}]
    assert dumps({"a": float("-inf")}) == '{"a": null}'


def test_records_are_shared_between_objects_and_remove(tmp_path):
    a, b = RunDirectory(tmp_path / "run"), RunDirectory(tmp_path / "run")
    a.write_config({})
    b.write_report({})
    assert set(RunDirectory(tmp_path / "run").recorded()["files"]) == {"config.json", "report.json"}
    assert a.remove("report.json") and not (tmp_path / "run" / "report.json").exists()
    (tmp_path / "run" / "user.txt").write_text("x")
    with pytest.raises(ConfigError, match="not written by ml_adv"):
        a.remove("user.txt")
    for bad in ("../x", "/etc/passwd", "", MARKER):
        with pytest.raises(ConfigError, match="name"):
            a.path_for(bad)


def test_file_as_run_dir_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="run_dir.*file"):
        RunDirectory(tmp_path / "f")
    with pytest.raises(ConfigError, match="run_dir"):
        RunDirectory(3)


def _record_many(args):
    path, worker = args
    rd = RunDirectory(path)
    for i in range(20):
        rd.path_for(f"w{worker}/{i}.json")


def test_concurrent_processes_lose_no_record(tmp_path):
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    RunDirectory(tmp_path / "run")
    # spawn, not fork: the test process may already run JAX's threads
    with ProcessPoolExecutor(3, mp_context=get_context("spawn")) as pool:
        list(pool.map(_record_many, [(tmp_path / "run", w) for w in range(3)]))
    assert len(RunDirectory(tmp_path / "run").recorded()["files"]) == 60
