"""Studies: the trial journal, replay on resume (also after SIGKILL), failures, executors."""

import json
import math
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from ml_adv.errors import ConfigError
from ml_adv.hpo.journal import TrialJournal
from ml_adv.hpo.space import Categorical, Float, Int, SearchSpace
from ml_adv.hpo.study import Study

SPACE = SearchSpace([Float("x", -3.0, 3.0), Int("n", 1, 5), Categorical("c", ["a", "b"])])
# With ordered choices too: the bayesian searcher makes each one coordinate (TransitionChoice).
ORDERED = SearchSpace([*SPACE.params, Categorical("batch", [16, 32, 64])])


def score(config):
    return -((config["x"] - 1.0) ** 2) - abs(config["n"] - 3) + (config["c"] == "b")


class Interrupt:
    """Raises KeyboardInterrupt (not caught as a trial failure) at the k-th call, like a kill."""

    def __init__(self, at):
        self.at, self.calls = at, 0

    def __call__(self, config):
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        return score(config)


def configs(result):
    return [t["config"] for t in result.trials]


@pytest.mark.parametrize(
    "method, batch, space",
    [
        ("bayesian", 1, SPACE),
        ("bayesian", 1, ORDERED),
        ("genetic", 1, SPACE),
        ("genetic", 3, SPACE),
        ("random", 2, SPACE),
    ],
)
def test_an_interrupted_study_resumes_without_losing_or_repeating_trials(
    tmp_path, method, batch, space
):
    trials = 7 if method == "bayesian" else 10
    kwargs = dict(method=method, max_trials=trials, seed=0, trials_per_batch=batch, progress=False)
    reference = Study(score, space, **kwargs).run()
    interrupted = Interrupt(at=5)  # in the middle of the second batch of 3
    with pytest.raises(KeyboardInterrupt):
        Study(interrupted, space, run_dir=tmp_path / "s", **kwargs).run()
    _, journaled = TrialJournal(tmp_path / "s" / "trials.jsonl").read()
    assert len(journaled) == 4
    interrupted.at = None  # the same objective, started again
    resumed = Study(interrupted, space, run_dir=tmp_path / "s", **kwargs).run()
    assert resumed.resumed_trials == 4 and resumed.replay_mismatches == 0
    assert [t["trial"] for t in resumed.trials] == list(range(trials))
    # the optimizer state was replayed exactly: the same configurations as an uninterrupted study
    assert configs(resumed) == configs(reference)
    _, journaled = TrialJournal(tmp_path / "s" / "trials.jsonl").read()
    assert sorted(t["trial"] for t in journaled) == list(range(trials))
    calls = interrupted.calls
    again = Study(
        interrupted, space, run_dir=tmp_path / "s", **kwargs
    ).run()  # finished: nothing re-runs
    assert again.resumed_trials == trials and configs(again) == configs(reference)
    assert interrupted.calls == calls


def test_journal_belongs_to_one_study(tmp_path):
    Study(score, SPACE, method="random", max_trials=2, run_dir=tmp_path, progress=False).run()
    for change in ({"method": "genetic"}, {"seed": 1}, {"max_trials": 3}):
        kwargs = {"method": "random", "max_trials": 2, "seed": 0, **change}
        with pytest.raises(ConfigError, match="different study"):
            Study(score, SPACE, run_dir=tmp_path, progress=False, **kwargs).run()
    other_space = SearchSpace([Float("x", -3.0, 4.0), Int("n", 1, 5), Categorical("c", ["a", "b"])])
    with pytest.raises(ConfigError, match="different study"):
        Study(
            score, other_space, method="random", max_trials=2, run_dir=tmp_path, progress=False
        ).run()


def test_journal_lines_are_strict_json_and_a_torn_last_line_is_dropped(tmp_path):
    journal = TrialJournal(tmp_path / "trials.jsonl")
    assert journal.start({"method": "random"}) == []
    journal.append({"trial": 0, "score": float("nan"), "config": {"h": (16, 8)}})
    with open(journal.path, "ab") as fh:
        fh.write(b'{"type": "trial", "trial": 1, "sco')  # a kill in the middle of a write
    header, trials = journal.read()
    assert header["method"] == "random" and len(trials) == 1
    assert trials[0]["score"] is None and trials[0]["config"] == {"h": [16, 8]}
    assert journal.start({"method": "random"})[0]["trial"] == 0
    assert journal.path.read_bytes().endswith(b"\n")  # the torn tail was cut before the next append
    journal.append({"trial": 1})
    assert [t["trial"] for t in journal.read()[1]] == [0, 1]
    for line in journal.path.read_text().splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))


def test_failed_and_non_finite_trials_are_recorded_and_the_study_goes_on(tmp_path):
    def flaky(config):
        if config["c"] == "a" and config["n"] >= 4:
            raise RuntimeError("out of memory (simulated)")
        if config["x"] > 2.5:
            return float("nan")
        return score(config)

    result = Study(
        flaky,
        SPACE,
        method="grid_search",
        max_trials=100,
        run_dir=tmp_path,
        method_options={"grid_points": 6},
        progress=False,
    ).run()
    statuses = {t["status"] for t in result.trials}
    assert statuses == {"ok", "failed"} and len(result.trials) == SPACE.grid_size(6)
    raised = [t for t in result.trials if t["error"] and "out of memory" in t["error"]]
    nan = [t for t in result.trials if t["error"] and "non-finite" in t["error"]]
    assert raised and nan and all(t["status"] == "failed" for t in raised + nan)
    for i, t in enumerate(result.trials):  # failures are told the worst loss told before them
        told = [u["loss"] for u in result.trials[:i]]
        if t["status"] == "failed":
            assert t["loss"] == max(told, default=0.0)
        else:
            assert t["loss"] == -t["score"]
    assert math.isfinite(result.best_score) and result.best_config["x"] <= 2.5
    report = json.loads((tmp_path / "report.json").read_text())
    assert (
        report["failed"] == len(raised) + len(nan) and report["best_config"] == result.best_config
    )
    assert (tmp_path / "best_config.json").exists() and (
        tmp_path / "plots" / "best_so_far.png"
    ).exists()
    assert (tmp_path / "plots" / "parallel_coordinates.png").exists()


def test_trials_run_on_a_process_pool():
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(2, mp_context=ctx) as pool:
        parallel = Study(
            score, SPACE, method="genetic", max_trials=6, executor=pool, progress=False
        ).run()
    sequential = Study(
        score, SPACE, method="genetic", max_trials=6, trials_per_batch=2, progress=False
    ).run()
    assert [t["batch"] for t in parallel.trials] == [0, 0, 1, 1, 2, 2]
    assert configs(parallel) == configs(sequential)
    assert [t["score"] for t in parallel.trials] == [t["score"] for t in sequential.trials]


KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    from ml_adv.hpo import Study, SearchSpace, Float, Int, Categorical

    def slow(config):
        time.sleep(0.25)
        return -(config["x"] - 1.0) ** 2 - abs(config["n"] - 3) + (config["c"] == "b")

    space = SearchSpace([Float("x", -3.0, 3.0), Int("n", 1, 5), Categorical("c", ["a", "b"])])
    Study(
        slow, space, method="genetic", max_trials=8, seed=0, run_dir=sys.argv[1], progress=False
    ).run()
""")


def test_a_study_killed_with_sigkill_resumes_with_the_same_command(tmp_path):
    script = tmp_path / "study.py"
    script.write_text(KILL_SCRIPT)
    run_dir, journal = tmp_path / "run", tmp_path / "run" / "trials.jsonl"
    # The script runs from tmp_path: ml_adv comes from this checkout, installed or not.
    repo = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": path}
    proc = subprocess.Popen([sys.executable, str(script), str(run_dir)], env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if journal.exists() and journal.read_text().count('"type": "trial"') >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the study ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_after = TrialJournal(journal).read()[1]
    assert 3 <= len(killed_after) < 8
    subprocess.run([sys.executable, str(script), str(run_dir)], env=env, check=True, timeout=120)
    _, trials = TrialJournal(journal).read()
    assert [t["trial"] for t in trials] == list(range(8))  # none lost, none repeated
    assert trials[: len(killed_after)] == killed_after  # finished trials were kept, not re-run
    reference = Study(score, SPACE, method="genetic", max_trials=8, seed=0, progress=False).run()
    assert [SPACE.canonical(t["config"]) for t in trials] == configs(reference)
    report = json.loads((run_dir / "report.json").read_text())
    assert report["resumed_trials"] == len(killed_after) and report["trials"] == 8
