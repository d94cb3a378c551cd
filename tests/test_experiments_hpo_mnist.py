"""experiments/hpo_mnist.py: the quick run on tiny IDX fixtures, its records, summary and figure."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from experiments import hpo_mnist as H
from ml_adv.data.idx import write_idx
from ml_adv.data.mnist import IDX_DATASETS

PER_CLASS_TRAIN, PER_CLASS_TEST = 24, 5


def _write_fixture(folder: Path) -> None:
    """A tiny MNIST (24 training and 5 test images per digit) whose images carry their label."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, per in (("train", PER_CLASS_TRAIN), ("test", PER_CLASS_TEST)):
        labels = np.repeat(np.arange(10), per).astype(np.uint8)
        images = rng.integers(0, 64, (len(labels), 28, 28), dtype=np.uint8)
        for i, y in enumerate(labels):  # a bright row per digit: learnable in a few steps
            images[i, 2 + 2 * y] = 255
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels
    folder.mkdir(parents=True, exist_ok=True)
    for key, remote in IDX_DATASETS["mnist"].files.items():
        write_idx(folder / remote.filename, arrays[key])


def _records(root: Path) -> list[dict]:
    # common.load_results skips quick records, so read them as written
    return [json.loads(p.read_text()) for p in sorted((root / H.EXPERIMENT).glob("*.json"))]


@pytest.mark.slow
def test_quick_run_summary_and_figure(tmp_path, monkeypatch):
    _write_fixture(tmp_path / "data" / "mnist")
    monkeypatch.setenv("ML_ADV_DATA_DIR", str(tmp_path / "data"))
    out = tmp_path / "results"
    assert H.main(["--quick", "--out", str(out)]) == 0
    records = _records(out)
    methods = H.available_methods(list(H.METHODS))  # without Optuna when it is not installed
    assert sorted(r["protocol"]["method"] for r in records) == sorted(methods)
    quick = H.BUDGETS["quick"]
    for r in records:
        res = r["results"]
        assert (
            r["quick"]
            and r["seed"] == 0
            and r["protocol"]["member_epochs"] == quick.trials * quick.epochs
        )
        assert len(res["scores"]) == quick.trials and 0 <= res["test_accuracy"] <= 1
        assert res["best_val"] == max(s for s in res["scores"] if s is not None)
        if r["protocol"]["method"] == "pbt":
            assert [p["name"] for p in r["protocol"]["space"]] == ["learning_rate", "weight_decay"]
            assert r["protocol"]["fixed"] == {
                "dropout": 0.25,
                "batch_size": 32,
                "conv_features": [4, 8],
            }
        else:  # the retrain (same data, same seed) reproduces the searched score
            assert len(r["protocol"]["space"]) == 5 and res["retrain_val"] == res["best_val"]

    stamps = {p: p.stat().st_mtime_ns for p in (out / H.EXPERIMENT).glob("*.json")}
    assert H.main(["--quick", "--out", str(out)]) == 0  # finished seeds are skipped
    assert {p: p.stat().st_mtime_ns for p in (out / H.EXPERIMENT).glob("*.json")} == stamps

    body, summary = H.summarize(records, tmp_path / "figures")
    assert set(summary["best_val"]) == set(summary["test"]) == set(H.METHODS)
    for m in H.METHODS:
        assert len(summary["best_val"][m]) == len(summary["test"][m]) == (m in methods)
    curves = H.best_so_far_curves(records)
    for m in methods:  # the figure's last point is the search's best validation accuracy
        assert curves[m]["mean"][-1] == pytest.approx(summary["best_val"][m][0])
    assert (tmp_path / "figures" / H.FIGURE).read_bytes()[:4] == b"\x89PNG"
    assert f"figures/{H.FIGURE}" in body and "Differences from the requested protocol" in body


def _record(method: str, seed: int, best: float, test: float) -> dict:
    budget = H.dataclasses.asdict(H.BUDGETS["cpu"])
    space = H.pbt_space() if method == "pbt" else H.search_space(H.BUDGETS["cpu"])
    scores = [best - 0.1, best, best - 0.05]
    curve = H.sequential_curve(scores, 3)
    return {
        "experiment": "hpo",
        "setting": f"cpu_{method}",
        "seed": seed,
        "quick": False,
        "protocol": {
            "method": method,
            "budget": budget,
            "space": space.to_dict(),
            "member_epochs": 9,
        },
        "results": {
            "best_val": best,
            "test_accuracy": test,
            "retrain_val": None if method == "pbt" else best,
            "scores": scores,
            "curve": curve,
            "search_seconds": 10.0,
        },
    }


def test_summary_from_records(tmp_path):
    vals = {
        "bayesian": (0.95, 0.96),
        "random": (0.94, 0.95),
        "optuna_tpe": (0.955, 0.965),
        "pbt": (0.9, 0.91),
    }
    records = [_record(m, s, v[s], v[s] - 0.01) for m, v in vals.items() for s in (1, 0)]
    body, summary = H.summarize(records, tmp_path)
    assert summary["best_val"]["bayesian"] == [0.95, 0.96]  # in seed order
    assert summary["test"]["random"] == pytest.approx([0.93, 0.94]) and summary["seeds"]["pbt"] == [
        0,
        1,
    ]
    assert summary["best_val"]["genetic"] == [] and summary["budget"] == "cpu"
    # bayesian 0.955 >= random 0.945; TPE 0.96 ± 0.0071: 0.955 is within one std
    assert summary["goals"] == {"bayesian_ge_random": True, "bayesian_within_one_std_of_tpe": True}
    curves = H.best_so_far_curves(records)
    assert curves["bayesian"]["member_epochs"] == [3, 6, 9]
    assert curves["bayesian"]["mean"] == pytest.approx([0.855, 0.955, 0.955])
    assert (tmp_path / H.FIGURE).is_file() and "| bayesian |" in body and "2/2" in body
    assert H.summarize([], tmp_path)[1]["best_val"]["random"] == []


def test_optuna_missing_is_skipped(monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna raises ImportError
    assert H.available_methods(list(H.METHODS)) == [m for m in H.METHODS if m != "optuna_tpe"]
