"""Diversity of an ensemble's members, from stacked probabilities ``[K, N, C]``.

* ``disagreement_matrix``: fraction of examples on which members i and j predict
  different classes (Ho, 1998; Kuncheva & Whitaker, 2003).
* ``kl_to_ensemble`` / ``js_to_ensemble``: each member's mean KL / Jensen-Shannon
  divergence (nats) from the weighted ensemble distribution.
* ``ambiguity``: Krogh & Vedelsby's (1995) ambiguity for the probability vectors,
  ``mean_n sum_k w_k ||p_k - p_bar||^2``. It satisfies exactly
  ``brier(p_bar) = sum_k w_k brier(p_k) - ambiguity``: the ensemble's Brier score is
  the members' average less their spread around it (tested).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ml_adv.ensembles.combine import normalized, safe_log, weighted_average


@jax.jit
def disagreement_matrix(probs: jax.Array) -> jax.Array:
    """``[K, K]`` pairwise disagreement rates (zero diagonal)."""
    preds = jnp.argmax(probs, axis=-1)
    return jnp.mean((preds[:, None, :] != preds[None, :, :]).astype(jnp.float32), axis=-1)


def mean_pairwise(matrix: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Mean off-diagonal entry of ``matrix`` over the members selected by ``mask`` (0 for < 2)."""
    k = matrix.shape[0]
    mask = jnp.ones((k,), bool) if mask is None else mask
    pair = (mask[:, None] & mask[None, :]) & ~jnp.eye(k, dtype=bool)
    return jnp.sum(jnp.where(pair, matrix, 0.0)) / jnp.maximum(jnp.sum(pair), 1)


def _kl(p: jax.Array, q: jax.Array) -> jax.Array:
    """Mean over examples of KL(p || q), for ``[..., N, C]`` arrays."""
    return jnp.mean(jnp.sum(p * (safe_log(p) - safe_log(q)), axis=-1), axis=-1)


@jax.jit
def kl_to_ensemble(probs: jax.Array, weights: jax.Array) -> jax.Array:
    """``[K]``: mean KL(member k || weighted ensemble)."""
    return _kl(probs, weighted_average(probs, weights)[None])


@jax.jit
def js_to_ensemble(probs: jax.Array, weights: jax.Array) -> jax.Array:
    """``[K]``: mean Jensen-Shannon divergence between member k and the weighted ensemble."""
    ens = weighted_average(probs, weights)[None]
    mid = 0.5 * (probs + ens)
    return 0.5 * _kl(probs, mid) + 0.5 * _kl(ens, mid)


@jax.jit
def ambiguity(probs: jax.Array, weights: jax.Array) -> jax.Array:
    """Krogh-Vedelsby ambiguity of the weighted ensemble (see module docstring)."""
    ens = weighted_average(probs, weights)
    spread = jnp.sum((probs - ens[None]) ** 2, axis=-1)  # [K, N]
    return jnp.mean(jnp.einsum("k,kn->n", normalized(weights), spread))


@jax.jit
def diversity_report(probs: jax.Array, weights: jax.Array) -> dict[str, jax.Array]:
    """All diversity measures at once (one compiled program)."""
    matrix = disagreement_matrix(probs)
    kl, js = kl_to_ensemble(probs, weights), js_to_ensemble(probs, weights)
    return {
        "disagreement_matrix": matrix,
        "mean_disagreement": mean_pairwise(matrix),
        "kl_to_ensemble": kl,
        "mean_kl_to_ensemble": jnp.mean(kl),
        "js_to_ensemble": js,
        "mean_js_to_ensemble": jnp.mean(js),
        "ambiguity": ambiguity(probs, weights),
    }
