"""experiments/baselines.py: the quick protocol on tiny IDX fixtures, then the summary."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from experiments import baselines
from experiments.common import load_results
from ml_adv.data import download as D
from ml_adv.data.idx import write_idx
from ml_adv.data.mnist import IDX_DATASETS
from ml_adv.errors import ConfigError

N_TRAIN, N_TEST = 96, 40


def write_tiny_idx(data_dir, names=("mnist", "fashion_mnist")) -> None:
    """The four IDX files of each dataset in ``names``: a bright bar placed by the label."""
    for k, name in enumerate(names):
        rng = np.random.default_rng(k)
        arrays = {}
        for split, n in (("train", N_TRAIN), ("test", N_TEST)):
            labels = (np.arange(n) % 10).astype(np.uint8)
            images = rng.integers(0, 40, (n, 28, 28), dtype=np.uint8)
            for i, c in enumerate(labels):
                images[i, 4 + 2 * c : 8 + 2 * c, 6 + 4 * k : 20] = 255
            arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels
        folder = data_dir / name
        folder.mkdir(parents=True)
        for key, remote in IDX_DATASETS[name].files.items():
            write_idx(folder / remote.filename, arrays[key])


@pytest.fixture
def tiny_data(tmp_path, monkeypatch):
    write_tiny_idx(tmp_path / "data")
    monkeypatch.setenv(D.DATA_DIR_ENV, str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path


@pytest.mark.slow  # 30-60 CPU seconds: mostly compiling the stacked programs
def test_quick_run_then_summary(tiny_data):
    out = tiny_data / "results"
    assert baselines.main(["--quick", "--out", str(out)]) == 0
    folder = out / baselines.EXPERIMENT
    names = sorted(p.name for p in folder.glob("*.json"))
    pairs = [baselines.setting_name(d, a) for d, a in baselines.RECIPES]
    quick = baselines.QUICK_SETTINGS
    assert names == sorted(f"{s}-seed{seed}.json" for s in quick for seed in (0, 1, 2))
    records = [json.loads((folder / n).read_text()) for n in names]
    assert load_results(baselines.EXPERIMENT, out) == []  # quick records never mix with real ones
    for r in records:
        assert r["quick"] and r["protocol"]["epochs"] == baselines.QUICK_EPOCHS
        assert r["protocol"]["members"] == 3 and r["results"]["member"] == r["seed"]
        assert 0.0 <= r["results"]["test_accuracy"] <= 1.0 and len(r["results"]["history"]) == 1
    # Three seeds of one pair are three members with their own initialisation: different models.
    accs = {r["setting"]: [] for r in records}
    nlls = {r["setting"]: [] for r in records}
    for r in records:
        accs[r["setting"]].append(r["results"]["test_accuracy"])
        nlls[r["setting"]].append(r["results"]["test_nll"])
    assert all(len(set(v)) > 1 for v in nlls.values())

    figures = tiny_data / "figures"
    body, summary = baselines.summarize(records, figures)
    assert set(summary) == {f"{p}_test_accuracy" for p in pairs}
    assert "mnist_cnn_test_accuracy" in summary and "fashion_mnist_cnn_test_accuracy" in summary
    for p in pairs:  # per-seed lists, straight from the records; pairs not run are empty
        assert summary[f"{p}_test_accuracy"] == accs.get(p, [])
    png = figures / "baselines_accuracy.png"
    assert png.is_file() and "experiments/results/figures/baselines_accuracy.png" in body
    assert "99.25%" in body and "Differences from the reference protocols" in body

    # The figure follows the records: other accuracies, another picture.
    before = png.read_bytes()
    changed = copy.deepcopy(records)
    for r in changed:
        r["results"]["test_accuracy"] = 0.9 + 0.01 * r["seed"]
    _, summary2 = baselines.summarize(changed, figures)
    assert png.read_bytes() != before and summary2["mnist_mlp_test_accuracy"] == [0.9, 0.91, 0.92]

    # A second run finds every seed done and trains nothing.
    stamp = {n: (folder / n).stat().st_mtime_ns for n in names}
    assert baselines.main(["--quick", "--out", str(out), "--only", "mnist_mlp"]) == 0
    assert {n: (folder / n).stat().st_mtime_ns for n in names} == stamp


def test_summary_without_records_has_the_shape(tmp_path):
    body, summary = baselines.summarize([], tmp_path)
    assert summary["mnist_cnn_test_accuracy"] == [] and len(summary) == 8
    assert "not run" in body and not (tmp_path / "baselines_accuracy.png").exists()


def test_unknown_setting_fails_fast():
    with pytest.raises(ConfigError, match="--only: expected some of"):
        baselines.parse_setting("mnist_resnet")
