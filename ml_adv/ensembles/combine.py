"""Combination rules: pure, jitted functions over stacked member probabilities.

Every rule takes ``probs`` ``[K, N, C]`` (member k's class probabilities for example n)
and ``weights`` ``[K]`` (non-negative, any scale: rules normalise them) and returns the
ensemble's ``[N, C]`` probabilities; ``vote`` also returns hard class ids.

* ``"averaging"``: the plain mean of member probabilities (weights ignored).
* ``"weighted"``: the weighted mean ``sum_k w_k p_k / sum_k w_k``.
* ``"voting"``: weighted hard votes. Each member votes for its argmax class with its
  weight; the ensemble's probabilities are the vote shares. **Tie rule**: among the
  classes whose vote share is within ``TIE_TOLERANCE`` of the largest, the one with the
  highest weighted-mean probability wins; if that is tied too, the lowest class id.
  (Vote shares are sums of float weights, so 0.5 + 0.5 and 1.0 may differ in the last
  bit; the tolerance makes such ties ties.)
* ``"stacking"``: a meta-learner over the members' log-probabilities (``stacking.py``).

Rules live in ``COMBINATION_RULES`` (a ``Registry``); a user may pass a callable
``(probs [K, N, C], weights [K]) -> [N, C]`` instead of a name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from ml_adv.registry import Registry

# Vote shares within this of the maximum count as tied (shares sum to 1).
TIE_TOLERANCE = 1e-6
# Probabilities are floored here before a log, so a hard 0 (a vote share, an
# underflowed softmax) gives a large finite NLL (-log 1e-7 = 16.1) instead of inf.
PROB_FLOOR = 1e-7


def normalized(weights: jax.Array) -> jax.Array:
    """``weights / sum(weights)``."""
    return weights / jnp.sum(weights)


def safe_log(probs: jax.Array) -> jax.Array:
    return jnp.log(jnp.clip(probs, PROB_FLOOR, 1.0))


@jax.jit
def average(probs: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """Mean of member probabilities ``[K, N, C] -> [N, C]`` (``weights`` ignored)."""
    del weights
    return jnp.mean(probs, axis=0)


@jax.jit
def weighted_average(probs: jax.Array, weights: jax.Array) -> jax.Array:
    """Weighted mean of member probabilities ``[K, N, C] -> [N, C]``."""
    return jnp.einsum("k,knc->nc", normalized(weights), probs)


@jax.jit
def vote_shares(probs: jax.Array, weights: jax.Array) -> jax.Array:
    """Weighted share of hard votes per class ``[N, C]`` (rows sum to one)."""
    votes = jax.nn.one_hot(jnp.argmax(probs, axis=-1), probs.shape[-1], dtype=probs.dtype)
    return jnp.einsum("k,knc->nc", normalized(weights), votes)


@jax.jit
def vote(probs: jax.Array, weights: jax.Array) -> jax.Array:
    """Weighted hard-vote winners ``[N]`` with the module's tie rule."""
    shares = vote_shares(probs, weights)
    tied_top = shares >= jnp.max(shares, axis=-1, keepdims=True) - TIE_TOLERANCE
    soft = weighted_average(probs, weights)
    # argmax returns the first maximum, i.e. the lowest class id among exact soft ties.
    return jnp.argmax(jnp.where(tied_top, soft, -jnp.inf), axis=-1).astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class CombinationRule:
    """A named rule: ``proba(probs, weights) -> [N, C]``; ``predict`` overrides argmax when set."""

    name: str
    proba: Callable[[jax.Array, jax.Array], jax.Array] | None
    predict: Callable[[jax.Array, jax.Array], jax.Array] | None = None
    uses_weights: bool = True
    needs_meta_learner: bool = False


COMBINATION_RULES: Registry[CombinationRule] = Registry("combination_method")
COMBINATION_RULES.register("averaging", CombinationRule("averaging", average, uses_weights=False))
COMBINATION_RULES.register("weighted", CombinationRule("weighted", weighted_average))
COMBINATION_RULES.register("voting", CombinationRule("voting", vote_shares, predict=vote))
# Stacking's probabilities come from the fitted meta-learner (stacking.py), not from a rule.
COMBINATION_RULES.register(
    "stacking", CombinationRule("stacking", None, uses_weights=False, needs_meta_learner=True)
)


def resolve_rule(method) -> CombinationRule:
    """A registered rule by name, or a user callable ``(probs, weights) -> [N, C]`` wrapped
    as one.
    """
    if isinstance(method, CombinationRule):
        return method
    if isinstance(method, str):
        return COMBINATION_RULES.get(method, argument="combination_method")
    found = COMBINATION_RULES.resolve(method, argument="combination_method")
    name = getattr(found, "__name__", "custom")
    return CombinationRule(name, jax.jit(found))
