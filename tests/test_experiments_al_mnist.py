"""experiments.al_mnist: the quick run on tiny IDX fixtures, its result files and its summary."""

from __future__ import annotations

import json

import numpy as np
import pytest

from experiments import al_mnist
from ml_adv.data.idx import write_idx
from ml_adv.data.mnist import IDX_DATASETS

pytestmark = pytest.mark.slow  # compiles the paper's CNN for seven strategies: ~1 min on 2 cores


def _fixtures(folder, n_train=400, n_test=200) -> None:
    """A tiny MNIST of noise (28x28 uint8, labels 0-9 in turn): no loop learns enough to stop."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 10).astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    for key, remote in IDX_DATASETS["mnist"].files.items():
        write_idx(folder / remote.filename, arrays[key])


def _records(root):
    return [json.loads(p.read_text()) for p in sorted((root / al_mnist.EXPERIMENT).glob("*.json"))]


def test_quick_run_writes_one_file_per_loop_and_its_summary(tmp_path, monkeypatch):
    _fixtures(tmp_path / "data" / "mnist")
    monkeypatch.setenv("ML_ADV_DATA_DIR", str(tmp_path / "data"))
    out = tmp_path / "out"
    assert al_mnist.main(["--quick", "--out", str(out), "--seeds", "0"]) == 0
    records = _records(out)
    assert sorted(r["setting"] for r in records) == sorted(al_mnist.STRATEGIES)
    for r in records:
        res = r["results"]
        assert r["quick"] and r["seed"] == 0 and r["protocol"]["max_labels"] == 40
        assert [p["labels"] for p in res["curve"]] == [20, 30, 40][: len(res["curve"])]
        assert len(res["acquired"]) == res["final_labels"] == res["curve"][-1]["labels"]
        assert len(set(res["acquired"])) == len(res["acquired"])
        # the summary's per-seed numbers are read off the curve
        for tag, level in al_mnist.LEVELS:
            hit = [p["labels"] for p in res["curve"] if p["test_error"] <= level]
            assert res[f"labels_to_{tag}_error"] == (hit[0] if hit else None)

    figures = tmp_path / "figures"
    body, part = al_mnist.summarize(records, figures)
    assert set(part) == {"labels_to_10pct_error", "labels_to_5pct_error"}
    for key, per_strategy in part.items():
        assert set(per_strategy) == set(al_mnist.STRATEGIES)
        for r in records:
            assert per_strategy[r["setting"]] == [r["results"][key]]
    assert (figures / al_mnist.FIGURE).is_file() and "Differences from the paper" in body
    # a second run finds every loop done and trains nothing
    assert al_mnist.main(["--quick", "--out", str(out), "--seeds", "0"]) == 0
    assert _records(out) == records


def _fake(strategy, seed, reach10, reach5, top=1000):
    """A record whose curve crosses 10% at ``reach10`` and 5% at ``reach5`` labels (None: never)."""
    curve = []
    for n in range(20, top + 1, 10):
        error = (
            0.2
            if reach10 is None or n < reach10
            else 0.07
            if reach5 is None or n < reach5
            else 0.04
        )
        curve.append({"labels": n, "test_error": error})
        if reach5 is not None and n >= reach5:
            break
    protocol = {
        "model": "cnn/gal",
        "initial": 20,
        "query_size": 10,
        "max_labels": top,
        "pool_subset": 2000,
        "validation": 100,
        "mc_samples": 20,
        "steps_per_round": 50,
        "stop_error": 0.05,
        "test_subset": 2000,
        "paper_protocol": False,
        "train": {"learning_rate": 1e-3, "batch_size": 32, "weight_decay": 0.0},
    }
    return {
        "setting": strategy,
        "seed": seed,
        "protocol": protocol,
        "seconds": 100.0,
        "results": {
            "curve": curve,
            "labels_to_10pct_error": reach10,
            "labels_to_5pct_error": reach5,
        },
    }


def test_summary_tables_goals_and_figure_come_from_the_records(tmp_path):
    records = [_fake("random", s, 250, [800, 900, None][s]) for s in range(3)]
    records += [_fake("bald", s, 150, 330 + 10 * s) for s in range(3)]
    body, part = al_mnist.summarize(records, tmp_path)
    assert part == {
        "labels_to_10pct_error": {"random": [250, 250, 250], "bald": [150, 150, 150]},
        "labels_to_5pct_error": {"random": [800, 900, None], "bald": [330, 340, 350]},
    }
    assert "340 ± 10 (330, 340, 350)" in body and "850 ± 71 (2/3 seeds) (800, 900, never)" in body
    assert "mean 340 over 3/3 seeds: **met**" in body
    # random's never counts as 1,000 labels: 340 / 900 = 38%, an upper bound
    assert "needs 38% of random's labels" in body and "upper bound" in body
    first = (tmp_path / al_mnist.FIGURE).read_bytes()
    records[3] = _fake("bald", 0, 150, 600)
    body, _ = al_mnist.summarize(records, tmp_path)
    assert (tmp_path / al_mnist.FIGURE).read_bytes() != first
    assert "**not met**" in body
    assert al_mnist.summarize([], tmp_path)[1] == {
        "labels_to_10pct_error": {},
        "labels_to_5pct_error": {},
    }
