"""Greedy member selection: backward pruning and diversity-seeking forward selection.

Both rules score a subset S of members on held-out data by the validation NLL of the
weighted mixture restricted to S (``weights.mixture_nll``; the weights of S are
renormalised). Every candidate move of one greedy step is scored in one vmapped,
jitted call; the host loop only runs the (at most K) steps.

* ``greedy_prune`` (backward elimination): while more than ``min_members`` remain,
  find the member whose removal gives the lowest NLL; remove it if that NLL is at most
  the current NLL + ``threshold``, otherwise stop. ``threshold = 0`` removes exactly the
  members the ensemble is no worse without; a positive threshold trades up to that much
  NLL per removal for a smaller ensemble.
* ``greedy_diverse_selection`` (forward selection): start from the member with the
  lowest NLL of its own; repeatedly add the member maximising
  ``score(S) = -NLL(S) + diversity_weight * mean pairwise disagreement(S)``, while the
  score strictly improves and fewer than ``max_members`` are selected. A duplicate of a
  selected member never improves the score, so it is never chosen.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ml_adv.ensembles.diversity import disagreement_matrix, mean_pairwise
from ml_adv.ensembles.weights import mixture_nll


@jax.jit
def leave_one_out_nll(probs, weights, labels, active) -> jax.Array:
    """``[K]``: mixture NLL of ``active`` without member k (``inf`` where k is inactive)."""
    k = probs.shape[0]
    masked = jax.vmap(
        lambda i: mixture_nll(probs, weights * (active & (jnp.arange(k) != i)), labels)
    )
    return jnp.where(active, masked(jnp.arange(k)), jnp.inf)


@jax.jit
def subset_score(probs, weights, labels, selected, disagreement, diversity_weight) -> jax.Array:
    """``-NLL(S) + diversity_weight * mean disagreement(S)`` for the members in ``selected``."""
    return -mixture_nll(probs, weights * selected, labels) + diversity_weight * mean_pairwise(
        disagreement, selected
    )


@jax.jit
def addition_scores(probs, weights, labels, selected, diversity_weight) -> jax.Array:
    """``[K]``: ``subset_score`` of ``selected + {k}`` (``-inf`` where k is already selected)."""
    k = probs.shape[0]
    matrix = disagreement_matrix(probs)
    grown = jax.vmap(
        lambda i: subset_score(
            probs, weights, labels, selected | (jnp.arange(k) == i), matrix, diversity_weight
        )
    )
    return jnp.where(selected, -jnp.inf, grown(jnp.arange(k)))


def greedy_prune(
    probs, weights, labels, *, threshold: float, min_members: int = 1
) -> tuple[np.ndarray, list[dict]]:
    """Backward elimination (module docstring). Returns the kept mask ``[K]`` and the removals."""
    k = probs.shape[0]
    active = np.ones(k, bool)
    weights = jnp.asarray(weights)
    current = float(mixture_nll(probs, weights, labels))
    trace = []
    while active.sum() > min_members:
        candidates = np.asarray(leave_one_out_nll(probs, weights, labels, jnp.asarray(active)))
        best = int(np.argmin(candidates))
        if not candidates[best] <= current + threshold:
            break
        active[best] = False
        trace.append({"member": best, "nll_before": current, "nll_after": float(candidates[best])})
        current = float(candidates[best])
    return active, trace


def greedy_diverse_selection(
    probs, weights, labels, *, diversity_weight: float, max_members: int | None = None
) -> tuple[np.ndarray, list[dict]]:
    """Forward selection (module docstring). Returns the selected mask ``[K]`` and the additions."""
    k = probs.shape[0]
    weights = jnp.asarray(weights)
    max_members = k if max_members is None else max_members
    one_hot = jnp.eye(k, dtype=bool)
    own_nll = np.asarray(jax.vmap(lambda m: mixture_nll(probs, weights * m, labels))(one_hot))
    selected = np.zeros(k, bool)
    first = int(np.argmin(own_nll))
    selected[first] = True
    current = -float(own_nll[first])  # a single member has no pairwise disagreement
    trace = [{"member": first, "score": current}]
    while selected.sum() < max_members:
        scores = np.asarray(
            addition_scores(probs, weights, labels, jnp.asarray(selected), diversity_weight)
        )
        best = int(np.argmax(scores))
        if not scores[best] > current:
            break
        selected[best] = True
        current = float(scores[best])
        trace.append({"member": best, "score": current})
    return selected, trace
