"""Probabilistic scores of one prediction ``[N, C]`` or of K members ``[K, N, C]``.

Accuracy, NLL (with probabilities floored at ``PROB_FLOOR``, so hard vote shares score
a large finite value), Brier score (sum over classes of the squared error against the
one-hot label, averaged over examples; 0 is perfect, 2 the worst) and ECE.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ml_adv.ensembles.calibration import expected_calibration_error
from ml_adv.ensembles.combine import safe_log


def nll(probs: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean negative log-likelihood of the true class."""
    return -jnp.mean(jnp.take_along_axis(safe_log(probs), labels[:, None], axis=-1))


def brier(probs: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean multi-class Brier score."""
    onehot = jax.nn.one_hot(labels, probs.shape[-1], dtype=probs.dtype)
    return jnp.mean(jnp.sum((probs - onehot) ** 2, axis=-1))


@jax.jit
def probability_metrics(
    probs: jax.Array, labels: jax.Array, predictions: jax.Array | None = None
) -> dict[str, jax.Array]:
    """``{'accuracy', 'nll', 'brier', 'ece'}`` of ``probs`` ``[N, C]``.

    ``predictions`` (``[N]`` class ids) overrides ``argmax(probs)`` for the accuracy, for
    rules such as voting whose decision has its own tie rule.
    """
    hits = jnp.argmax(probs, axis=-1) if predictions is None else predictions
    return {
        "accuracy": jnp.mean((hits == labels).astype(jnp.float32)),
        "nll": nll(probs, labels),
        "brier": brier(probs, labels),
        "ece": expected_calibration_error(probs, labels),
    }


@jax.jit
def member_metrics(probs: jax.Array, labels: jax.Array) -> dict[str, jax.Array]:
    """``probability_metrics`` of each member of ``probs`` ``[K, N, C]``: ``[K]`` per metric."""
    return jax.vmap(probability_metrics, in_axes=(0, None))(probs, labels)


def to_host(tree) -> dict:
    """Metric arrays as Python floats / lists (JSON-ready)."""
    return jax.tree.map(lambda a: a.tolist(), jax.device_get(tree))
