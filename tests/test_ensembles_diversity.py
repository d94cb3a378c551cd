"""Diversity measures (ml_adv.ensembles.diversity)."""

import jax
import numpy as np

from ml_adv.ensembles.diversity import (
    ambiguity,
    disagreement_matrix,
    diversity_report,
    js_to_ensemble,
    kl_to_ensemble,
    mean_pairwise,
)
from ml_adv.ensembles.metrics import brier

PROBS = np.array(
    [
        [[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]],
        [[0.2, 0.5, 0.3], [0.3, 0.4, 0.3]],
        [[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]],
    ],
    np.float32,
)


def test_disagreement_by_hand():
    # Predictions: member 0 -> [0, 2], member 1 -> [1, 1], member 2 -> [0, 2].
    expected = np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], np.float32)
    np.testing.assert_allclose(disagreement_matrix(PROBS), expected)
    assert np.isclose(float(mean_pairwise(expected)), 4 / 6)
    assert np.isclose(float(mean_pairwise(expected, np.array([True, False, True]))), 0.0)


def test_divergences_by_hand():
    w = np.ones(2, np.float32)
    probs = np.array([[[1.0, 0.0]], [[0.0, 1.0]]], np.float32)  # ensemble: [0.5, 0.5]
    np.testing.assert_allclose(kl_to_ensemble(probs, w), [np.log(2)] * 2, rtol=1e-5)
    # JS(p, m) with m the mixture: 0.5 KL(p || 0.75/0.25) + 0.5 KL(m || 0.75/0.25).
    js = 0.5 * np.log(1 / 0.75) + 0.5 * (0.5 * np.log(0.5 / 0.75) + 0.5 * np.log(0.5 / 0.25))
    np.testing.assert_allclose(js_to_ensemble(probs, w), [js] * 2, rtol=1e-5)
    # Identical members: no divergence, no ambiguity, no disagreement.
    same = np.repeat(PROBS[:1], 3, axis=0)
    report = jax.device_get(diversity_report(same, np.ones(3, np.float32)))
    assert report["mean_disagreement"] == 0 and abs(report["ambiguity"]) < 1e-7
    np.testing.assert_allclose(report["kl_to_ensemble"], 0, atol=1e-6)


def test_ambiguity_decomposition():
    """Krogh-Vedelsby: ensemble Brier = weighted member Brier - ambiguity, exactly."""
    rng = np.random.default_rng(0)
    probs = np.asarray(jax.nn.softmax(rng.normal(size=(4, 50, 5)).astype(np.float32) * 2, axis=-1))
    labels = rng.integers(0, 5, 50)
    w = np.array([0.1, 0.4, 0.3, 0.2], np.float32)
    ens = np.einsum("k,knc->nc", w, probs)
    members = np.array([float(brier(p, labels)) for p in probs])
    assert np.isclose(
        float(brier(ens, labels)), float(w @ members) - float(ambiguity(probs, w)), atol=1e-5
    )
    assert float(ambiguity(probs, w)) > 0
