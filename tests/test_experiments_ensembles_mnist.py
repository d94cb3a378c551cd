"""experiments/ensembles_mnist.py: the quick protocol on tiny IDX fixtures, then the summary."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from test_experiments_baselines import write_tiny_idx

from experiments import ensembles_mnist as E
from experiments.common import load_results
from ml_adv.data import download as D


@pytest.fixture
def tiny_data(tmp_path, monkeypatch):
    write_tiny_idx(tmp_path / "data")
    monkeypatch.setenv(D.DATA_DIR_ENV, str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path


@pytest.mark.slow  # 30-60 CPU seconds: mostly compiling the stacked programs
def test_quick_run_then_summary(tiny_data):
    out = tiny_data / "results"
    assert E.main(["--quick", "--out", str(out), "--seeds", "0", "1"]) == 0
    folder = out / E.EXPERIMENT
    names = sorted(p.name for p in folder.glob("*.json"))
    assert names == sorted(f"{s}-seed{seed}.json" for s in E.SETTINGS for seed in (0, 1))
    records = [json.loads((folder / n).read_text()) for n in names]
    assert load_results(E.EXPERIMENT, out) == []  # quick records never mix with real ones
    mlp = [r for r in records if r["setting"] == "mnist_mlp"]
    for r in mlp:
        test, ood = r["results"]["test"], r["results"]["ood"]
        assert r["quick"] and r["protocol"]["adversarial_training"] is False
        assert len(test["members"]["nll"]) == 10 and set(test) == {"members", "2", "3", "5", "10"}
        assert set(ood["by_m"]) == {"1", "2", "3", "5", "10"} and len(ood["member_auroc"]) == 10
        for m, v in ood["by_m"].items():  # every test image counted (M = 1: mean over members)
            assert np.isclose(sum(v["hist_in"]), r["protocol"]["test_examples"]), m
            assert 0.0 <= v["auroc"] <= 1.0
        assert len(ood["edges"]) == E.HIST_BINS + 1
    # The two seeds are two different ensembles.
    assert mlp[0]["results"]["test"]["10"]["nll"] != mlp[1]["results"]["test"]["10"]["nll"]

    figures = tiny_data / "figures"
    body, summary = E.summarize(records, figures)
    for key in ("nll", "ood_auroc", "accuracy", "brier", "ece"):
        assert set(summary[key]) == {"1", "2", "3", "5", "10"}, key
        assert all(len(v) == 2 for v in summary[key].values()), key
    for r, nll1, nll5 in zip(mlp, summary["nll"]["1"], summary["nll"]["5"]):
        # "single model": the mean over the members, each scored on its own
        assert nll1 == pytest.approx(np.mean(r["results"]["test"]["members"]["nll"]))
        assert nll5 == r["results"]["test"]["5"]["nll"]
    assert summary["ood_auroc"]["10"] == [r["results"]["ood"]["by_m"]["10"]["auroc"] for r in mlp]
    cnn = summary["fashion_mnist_cnn"]
    assert set(cnn["single"]) == set(cnn["ensemble"]) == set(E.METRICS)
    assert len(cnn["ensemble"]["nll"]) == 2
    for name in ("ensembles_vs_m.png", "ensembles_entropy.png"):
        assert (figures / name).is_file() and f"experiments/results/figures/{name}" in body
    assert "Adversarial training is OFF" in body and "Differences from the paper" in body

    # The figures follow the records: other NLLs and histograms, other pictures.
    pngs = ("ensembles_vs_m.png", "ensembles_entropy.png")
    before = {n: (figures / n).read_bytes() for n in pngs}
    changed = copy.deepcopy(records)
    for r in changed:
        if r["setting"] == "mnist_mlp":
            r["results"]["test"]["10"]["nll"] = 5.0
            r["results"]["ood"]["by_m"]["10"]["hist_out"] = [7] + [0] * (E.HIST_BINS - 1)
    _, summary2 = E.summarize(changed, figures)
    assert summary2["nll"]["10"] == [5.0, 5.0]
    assert all((figures / n).read_bytes() != b for n, b in before.items())


def test_summary_without_records_has_the_shape(tmp_path):
    body, summary = E.summarize([], tmp_path)
    assert summary["nll"] == {} and summary["ood_auroc"] == {}
    assert summary["fashion_mnist_cnn"]["single"]["nll"] == []
    assert "not run" in body and not list(tmp_path.glob("*.png"))


def test_entropy_summary_by_hand():
    """Members that are sure on MNIST and unsure on Fashion-MNIST: AUROC 1 for every M."""
    sure = np.tile(np.eye(10, dtype=np.float32)[None, :4], (10, 1, 1)) * 0.98 + 0.002
    unsure = np.full((10, 3, 10), 0.1, np.float32)
    s = E.entropy_summary(sure, unsure)
    assert s["member_auroc"] == [1.0] * 10 and all(v["auroc"] == 1.0 for v in s["by_m"].values())
    assert s["by_m"]["1"]["hist_out"][-1] == 3 and sum(s["by_m"]["10"]["hist_in"]) == 4
