"""Cross-validation scoring and the checks before stacked training (ml_adv.ensembles.deep).

Real stacked training runs elsewhere, once each: the plain deep ensemble in the facade
tests' module fixture, k-fold CV end to end in test_ensembles_command.py.
"""

import numpy as np
import pytest

from ml_adv import TrainConfig, load_dataset, make_spec
from ml_adv.ensembles.deep import cross_validation_scores, train_ensemble
from ml_adv.errors import ConfigError, DataError


def test_cross_validation_scores_by_hand():
    labels = np.array([0, 1, 0, 1])
    fold_ids = np.array([0, 0, 1, 1])
    # Member 0 is scored on rows 0, 1 only (its fold): right with p=0.9, then wrong (p(1)=0.2).
    # Member 1 is scored on rows 2, 3 only: right with p=0.9 and p=0.6. Rows outside a
    # member's fold are set so that counting them would change every number.
    probs = np.array([
        [[0.9, 0.1], [0.8, 0.2], [0.0, 1.0], [1.0, 0.0]],
        [[0.0, 1.0], [1.0, 0.0], [0.9, 0.1], [0.4, 0.6]],
    ], np.float32)
    report = cross_validation_scores(probs, labels, fold_ids)
    assert report["per_fold"]["accuracy"] == pytest.approx([0.5, 1.0])
    assert report["per_fold"]["nll"] == pytest.approx(
        [-(np.log(0.9) + np.log(0.2)) / 2, -(np.log(0.9) + np.log(0.6)) / 2], rel=1e-5)
    assert report["per_fold"]["brier"] == pytest.approx([(0.02 + 1.28) / 2, (0.02 + 0.32) / 2], rel=1e-5)
    assert report["mean"]["accuracy"] == pytest.approx(0.75) and report["std"]["accuracy"] == pytest.approx(0.25)
    # Out-of-fold predictions: rows 0, 1 from member 0, rows 2, 3 from member 1.
    assert report["out_of_fold"]["accuracy"] == pytest.approx(0.75)


def test_bad_training_requests_fail_before_compiling():
    train = load_dataset("digits_flat", split="train").subset(np.arange(100))
    spec = make_spec("mlp", input_shape=(64,), input_kind="features", num_classes=10, size="tiny")
    with pytest.raises(DataError, match="data: expected an ArrayDataset"):
        train_ensemble(spec, (train.x, train.y), TrainConfig(), members=2, folds=None, seed=0)
    with pytest.raises(ConfigError, match="one member per fold"):
        train_ensemble(spec, train, TrainConfig(), members=5, folds=3, seed=0)
    with pytest.raises(ConfigError, match="members: expected a positive integer"):
        train_ensemble(spec, train, TrainConfig(), members=0, folds=None, seed=0)
    with pytest.raises(DataError, match="at least 50 examples"):
        train_ensemble(spec, train, TrainConfig(), members=None, folds=50, seed=0)
