"""ECE, reliability bins, metrics and temperature scaling (ml_adv.ensembles.calibration,
.metrics)."""

import jax
import numpy as np
from scipy.optimize import minimize_scalar

from ml_adv.ensembles.calibration import (
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    reliability_bins,
)
from ml_adv.ensembles.metrics import member_metrics, probability_metrics


def test_ece_and_metrics_by_hand():
    probs = np.array([[0.9, 0.1], [0.6, 0.4]], np.float32)
    labels = np.array([0, 1])
    # Bin of 0.9: accuracy 1; bin of 0.6: accuracy 0 -> ECE = 0.5 * 0.1 + 0.5 * 0.6.
    assert np.isclose(float(expected_calibration_error(probs, labels)), 0.35, atol=1e-6)
    bins = jax.device_get(reliability_bins(probs, labels, bins=10))
    assert bins["count"][8] == 1 and bins["count"][5] == 1 and bins["count"].sum() == 2
    m = jax.device_get(probability_metrics(probs, labels))
    assert np.isclose(m["accuracy"], 0.5)
    assert np.isclose(m["nll"], -(np.log(0.9) + np.log(0.4)) / 2, atol=1e-6)
    assert np.isclose(m["brier"], (2 * 0.01 + 2 * 0.36) / 2, atol=1e-6)
    # Explicit predictions override the argmax (voting's tie rule).
    assert np.isclose(float(probability_metrics(probs, labels, np.array([0, 1]))["accuracy"]), 1.0)
    per_member = jax.device_get(member_metrics(np.stack([probs, probs[:, ::-1]]), labels))
    np.testing.assert_allclose(per_member["accuracy"], [0.5, 0.5])


def test_ece_is_the_standard_15_bin_top_label_ece():
    """Against a plain loop: 15 equal-width bins (lo, hi] over the top-class probability (Guo et
    al., 2017)."""
    rng = np.random.default_rng(3)
    probs = np.asarray(jax.nn.softmax(3 * rng.normal(size=(500, 10)).astype(np.float32), axis=-1))
    labels = rng.integers(0, 10, 500)
    conf, hit = probs.max(-1), probs.argmax(-1) == labels
    edges = np.linspace(0, 1, 16)
    ref = sum(
        abs(hit[m].mean() - conf[m].mean()) * m.mean()
        for m in ((conf > lo) & (conf <= hi) for lo, hi in zip(edges[:-1], edges[1:]))
        if m.any()
    )
    assert np.isclose(float(expected_calibration_error(probs, labels)), ref, atol=1e-5)


def test_temperature_scaling_fixes_overconfidence():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 400)
    # Overconfident: a noisy signal scaled up 4x.
    logits = 4.0 * (2.0 * np.eye(4)[labels] + rng.normal(size=(400, 4)))
    probs = np.asarray(jax.nn.softmax(logits.astype(np.float32), axis=-1))
    t = float(fit_temperature(probs, labels))
    assert t > 1.5
    after = np.asarray(apply_temperature(probs, np.float32(t)))
    np.testing.assert_array_equal(after.argmax(-1), probs.argmax(-1))
    before_m, after_m = probability_metrics(probs, labels), probability_metrics(after, labels)
    assert float(after_m["ece"]) < 0.5 * float(before_m["ece"])
    assert float(after_m["nll"]) < float(before_m["nll"])

    # The fitted temperature is the NLL minimiser (checked with scipy on the same objective).
    def nll(log_t):
        return float(
            probability_metrics(
                np.asarray(apply_temperature(probs, np.float32(np.exp(log_t)))), labels
            )["nll"]
        )

    best = np.exp(minimize_scalar(nll, bounds=(-3, 3), method="bounded").x)
    assert abs(t - best) / best < 0.02
