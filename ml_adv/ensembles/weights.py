"""Member weights: validation of user weights and weights learned on held-out data.

Learned-weight rule: minimise the validation NLL of the weighted mixture
``p(y | x) = sum_k w_k p_k(y | x)`` over the probability simplex. The objective is
convex in ``w`` (the negative log of a linear function), so its minimum is global; we
parametrise ``w = softmax(theta)`` (every ``w`` on the simplex's interior is reachable,
constraints vanish) and run a fixed number of Adam steps (``solver.minimize``) from the
uniform weights, inside one compiled ``lax.scan``. Members that do not help end with
weights near 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ml_adv.ensembles.combine import safe_log
from ml_adv.ensembles.solver import minimize
from ml_adv.errors import ConfigError, describe

WEIGHT_STEPS = 500
WEIGHT_LEARNING_RATE = 0.1


def check_weight(name: str, weight) -> float:
    """A single member weight: a finite number >= 0."""
    if isinstance(weight, bool) or not isinstance(weight, (int, float, np.integer, np.floating)):
        raise ConfigError(f"{name}: expected a finite number >= 0, got {describe(weight)}")
    value = float(weight)
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name}: expected a finite number >= 0, got {value!r}")
    return value


def check_weights(name: str, weights: Sequence[float], count: int) -> np.ndarray:
    """``count`` finite, non-negative weights, not all zero, as float32."""
    try:
        arr = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name}: expected {count} numbers, got {describe(weights)}") from exc
    if arr.shape != (count,):
        raise ConfigError(
            f"{name}: expected {count} weights (one per member), got shape {arr.shape}"
        )
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ConfigError(f"{name}: expected finite weights >= 0, got {arr.tolist()}")
    if count and not np.any(arr > 0):
        raise ConfigError(
            f"{name}: expected at least one positive weight, got all zeros {arr.tolist()}"
        )
    return arr.astype(np.float32)


def _mixture_nll(theta, log_probs_true):
    # log sum_k w_k p_k(y_n), computed as a logsumexp for stability.
    log_w = jax.nn.log_softmax(theta)
    return -jnp.mean(jax.nn.logsumexp(log_w[:, None] + log_probs_true, axis=0))


@jax.jit
def mixture_nll(probs: jax.Array, weights: jax.Array, labels: jax.Array) -> jax.Array:
    """Validation NLL of the weighted mixture (``weights`` need not be normalised)."""
    true = jnp.take_along_axis(safe_log(probs), labels[None, :, None], axis=-1)[..., 0]
    positive = weights > 0
    # log 0 = -inf: a zero-weight member contributes nothing (logsumexp handles -inf).
    theta = jnp.where(positive, jnp.log(jnp.where(positive, weights, 1.0)), -jnp.inf)
    return _mixture_nll(theta, true)


@jax.jit
def fit_simplex_weights(probs: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Weights ``[K]`` on the simplex minimising the mixture NLL, and that NLL.

    Args:
        probs: ``[K, N, C]`` member probabilities on held-out data.
        labels: ``[N]`` integer labels.
    """
    log_probs_true = jnp.take_along_axis(safe_log(probs), labels[None, :, None], axis=-1)[
        ..., 0
    ]  # [K, N]

    theta, nll = minimize(
        lambda theta: _mixture_nll(theta, log_probs_true),
        jnp.zeros((probs.shape[0],), jnp.float32),
        steps=WEIGHT_STEPS,
        learning_rate=WEIGHT_LEARNING_RATE,
    )
    return jax.nn.softmax(theta), nll
