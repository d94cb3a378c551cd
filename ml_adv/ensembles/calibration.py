"""Calibration: expected calibration error, reliability bins and temperature scaling.

ECE uses ``ECE_BINS`` equal-width confidence bins (Guo et al., 2017):
``sum_b (n_b / N) |accuracy_b - confidence_b|`` where confidence is the top-class
probability. Temperature scaling divides the ensemble's log-probabilities by one
scalar ``T > 0`` fitted by minimising validation NLL (``solver.minimize`` over ``log T``,
so ``T`` stays positive); it never changes the predicted class, only the confidence.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import optax

from ml_adv.ensembles.combine import safe_log
from ml_adv.ensembles.solver import minimize

ECE_BINS = 15
TEMPERATURE_STEPS = 300
TEMPERATURE_LEARNING_RATE = 0.1  # in log T; |log T| <= 3 is reached in well under 100 steps


@partial(jax.jit, static_argnames=("bins",))
def reliability_bins(
    probs: jax.Array, labels: jax.Array, bins: int = ECE_BINS
) -> dict[str, jax.Array]:
    """Per-bin ``count``, mean ``confidence`` and ``accuracy`` (0 where a bin is empty),
    ``[bins]`` each.
    """
    confidence = jnp.max(probs, axis=-1)
    correct = (jnp.argmax(probs, axis=-1) == labels).astype(probs.dtype)
    # Bin b holds confidences in (b/bins, (b+1)/bins]; confidence is >= 1/C > 0.
    index = jnp.clip(jnp.ceil(confidence * bins).astype(jnp.int32) - 1, 0, bins - 1)
    count = jax.ops.segment_sum(jnp.ones_like(confidence), index, num_segments=bins)
    conf_sum = jax.ops.segment_sum(confidence, index, num_segments=bins)
    acc_sum = jax.ops.segment_sum(correct, index, num_segments=bins)
    safe = jnp.maximum(count, 1.0)
    return {"count": count, "confidence": conf_sum / safe, "accuracy": acc_sum / safe}


@partial(jax.jit, static_argnames=("bins",))
def expected_calibration_error(
    probs: jax.Array, labels: jax.Array, bins: int = ECE_BINS
) -> jax.Array:
    """ECE of ``probs`` ``[N, C]`` against integer ``labels`` ``[N]``."""
    rb = reliability_bins(probs, labels, bins)
    return jnp.sum(rb["count"] * jnp.abs(rb["accuracy"] - rb["confidence"])) / probs.shape[0]


@jax.jit
def apply_temperature(probs: jax.Array, temperature: jax.Array) -> jax.Array:
    """``softmax(log p / T)`` over the last axis."""
    return jax.nn.softmax(safe_log(probs) / temperature, axis=-1)


def _nll_at(log_t, log_probs, labels):
    logits = log_probs / jnp.exp(log_t)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


@jax.jit
def fit_temperature(probs: jax.Array, labels: jax.Array) -> jax.Array:
    """The temperature ``T > 0`` minimising the NLL of ``apply_temperature(probs, T)``."""
    log_probs = safe_log(probs)
    loss = partial(_nll_at, log_probs=log_probs, labels=labels)
    log_t, _ = minimize(
        loss,
        jnp.zeros((), jnp.float32),
        steps=TEMPERATURE_STEPS,
        learning_rate=TEMPERATURE_LEARNING_RATE,
    )
    return jnp.exp(log_t)
