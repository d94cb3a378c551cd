"""Predictive entropy and AUROC for out-of-distribution detection (ml_adv.ensembles.uncertainty)."""

import jax
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ml_adv.ensembles.uncertainty import auroc, predictive_entropy
from ml_adv.errors import DataError


def test_predictive_entropy_by_hand_and_bounds():
    probs = np.array([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0.0]], np.float32)
    np.testing.assert_allclose(
        np.asarray(predictive_entropy(probs)), [0.0, np.log(3), np.log(2)], atol=1e-6
    )
    stacked = np.asarray(
        jax.nn.softmax(np.random.default_rng(0).normal(size=(4, 7, 10)).astype(np.float32))
    )
    h = np.asarray(predictive_entropy(stacked))
    assert h.shape == (4, 7) and (h >= 0).all() and (h <= np.log(10) + 1e-6).all()


def test_auroc_matches_sklearn_with_ties():
    rng = np.random.default_rng(1)
    neg = rng.integers(0, 20, 300).astype(float)  # integer scores: many ties
    pos = rng.integers(5, 25, 200).astype(float)
    ref = roc_auc_score(np.r_[np.zeros(300), np.ones(200)], np.r_[neg, pos])
    assert np.isclose(auroc(neg, pos), ref, atol=1e-12)
    assert auroc([0.1, 0.2], [0.3, 0.2]) == 0.875
    assert auroc([0.0], [1.0]) == 1.0 and auroc([1.0], [0.0]) == 0.0 and auroc([1.0], [1.0]) == 0.5


@pytest.mark.parametrize("bad", [[], [[0.1, 0.2]], [0.1, float("nan")]])
def test_auroc_rejects_bad_scores(bad):
    with pytest.raises(DataError, match="positive_scores: expected a non-empty 1-D array"):
        auroc([0.1], bad)
