"""Predictive uncertainty for out-of-distribution detection: entropy and AUROC.

A deep ensemble should be more uncertain on inputs unlike its training data
(Lakshminarayanan et al., 2017): ``predictive_entropy`` of the averaged probabilities is
the score, and ``auroc`` measures how well it separates in-distribution inputs (the
negatives) from out-of-distribution ones (the positives): the probability that a random
positive scores higher than a random negative, ties counting one half (the Mann-Whitney
U statistic divided by ``n_pos * n_neg``; equal to the area under the ROC curve).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import entr
from jaxtyping import Array, Float

from ml_adv.errors import DataError, describe


@jax.jit
def predictive_entropy(probs: Float[Array, "*batch C"]) -> Float[Array, "*batch"]:
    """Entropy (nats) of each probability vector (last axis); ``0 log 0 = 0``, at most ``log C``."""
    return jnp.sum(entr(probs), axis=-1)


def _scores(argument: str, scores) -> np.ndarray:
    arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0 or not np.isfinite(arr).all():
        raise DataError(
            f"{argument}: expected a non-empty 1-D array of finite scores, got {describe(scores)}"
        )
    return arr


def auroc(negative_scores, positive_scores) -> float:
    """Area under the ROC curve of a score that should be higher for the positives.

    Args:
        negative_scores: ``[N]`` scores of the in-distribution examples.
        positive_scores: ``[M]`` scores of the out-of-distribution examples.

    Example:
        >>> auroc([0.1, 0.2], [0.3, 0.2])   # three of the four pairs won, one tied
        0.875
    """
    neg = np.sort(_scores("negative_scores", negative_scores))
    pos = _scores("positive_scores", positive_scores)
    below = np.searchsorted(neg, pos, side="left")
    ties = np.searchsorted(neg, pos, side="right") - below
    return float((below.sum() + 0.5 * ties.sum()) / (neg.size * pos.size))
