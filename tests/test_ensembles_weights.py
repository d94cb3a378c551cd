"""Weight validation and learned weights (ml_adv.ensembles.weights)."""

import jax
import numpy as np
import pytest
from scipy.optimize import minimize

from ml_adv.ensembles.weights import check_weight, check_weights, fit_simplex_weights, mixture_nll
from ml_adv.errors import ConfigError


def test_weight_validation():
    assert check_weight("weight", 0) == 0.0
    for bad in (-1.0, float("nan"), float("inf"), "1", True):
        with pytest.raises(ConfigError, match="weight: expected a finite number >= 0"):
            check_weight("weight", bad)
    with pytest.raises(ConfigError, match="at least one positive weight"):
        check_weights("weights", [0, 0], 2)
    with pytest.raises(ConfigError, match="expected 3 weights"):
        check_weights("weights", [1, 1], 3)
    with pytest.raises(ConfigError, match="finite weights >= 0"):
        check_weights("weights", [1, -0.5], 2)


def test_learned_weights_match_scipy_on_the_simplex():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 200)
    onehot = np.eye(3)[labels]
    # Member 0 informative, member 1 weakly informative, member 2 noise: optimum is interior-ish.
    logits = np.stack(
        [
            3 * onehot + rng.normal(size=(200, 3)) * 1.5,
            onehot + rng.normal(size=(200, 3)),
            rng.normal(size=(200, 3)),
        ]
    ).astype(np.float32)
    probs = np.asarray(jax.nn.softmax(logits, axis=-1))
    weights, nll = fit_simplex_weights(probs, labels)
    weights = np.asarray(weights)
    assert np.isclose(weights.sum(), 1.0, atol=1e-6) and np.all(weights >= 0)

    def objective(w):
        return float(mixture_nll(probs, np.asarray(w, np.float32), labels))

    ref = minimize(
        objective,
        np.ones(3) / 3,
        method="SLSQP",
        bounds=[(0, 1)] * 3,
        constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1}],
    )
    assert float(nll) <= ref.fun + 1e-4
    assert np.isclose(float(nll), objective(weights), atol=1e-5)
    assert weights[0] > weights[2]
    # Better than uniform weights.
    assert float(nll) < objective(np.ones(3) / 3)


def test_mixture_nll_ignores_zero_weight_members():
    probs = np.array([[[0.9, 0.1]], [[0.0, 1.0]]], np.float32)
    assert np.isclose(
        float(mixture_nll(probs, np.array([1.0, 0.0], np.float32), np.array([0]))),
        -np.log(0.9),
        atol=1e-6,
    )
