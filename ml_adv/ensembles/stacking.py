"""Stacking: a meta-learner over member predictions (Wolpert, 1992).

The meta-learner is an L2-regularised multinomial logistic regression whose features
are the members' log-probabilities, concatenated (``[N, K*C]``). It must be fitted on
predictions the members made on data they were not trained on (held-out data, i.e.
out-of-fold for the members), otherwise it learns to trust overfitted members.

``fit_stacking`` also scores the meta-learner honestly: with stratified fold ids, one
meta-learner per fold is fitted on the other folds and predicts its held-out fold,
giving out-of-fold stacked probabilities for every example. The final meta-learner
(all rows) and the fold fits are one vmapped program over example masks: no Python
loop, one compilation.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import optax

from ml_adv.ensembles.combine import safe_log
from ml_adv.ensembles.solver import minimize

META_STEPS = 1000
META_LEARNING_RATE = 0.05
META_L2 = 1e-3


def stack_features(probs: jax.Array) -> jax.Array:
    """``[K, N, C]`` member probabilities -> ``[N, K*C]`` log-probability features."""
    k, n, c = probs.shape
    return jnp.transpose(safe_log(probs), (1, 0, 2)).reshape(n, k * c)


def _logits(meta, features):
    return features @ meta["kernel"] + meta["bias"][None]


def meta_proba(meta: dict[str, jax.Array], probs: jax.Array) -> jax.Array:
    """Stacked ensemble probabilities ``[N, C]`` from the meta-learner's params."""
    return jax.nn.softmax(_logits(meta, stack_features(probs)), axis=-1)


meta_proba_jit = jax.jit(meta_proba)


def fit_masked(features, labels, example_weight, num_classes: int, l2: float):
    """Meta-learner params fitted on the rows where ``example_weight`` is 1."""

    def loss(meta):
        nll = optax.softmax_cross_entropy_with_integer_labels(_logits(meta, features), labels)
        data = jnp.sum(example_weight * nll) / jnp.maximum(jnp.sum(example_weight), 1.0)
        return data + l2 * jnp.sum(meta["kernel"] ** 2)

    meta0 = {
        "kernel": jnp.zeros((features.shape[1], num_classes), jnp.float32),
        "bias": jnp.zeros((num_classes,), jnp.float32),
    }
    return minimize(loss, meta0, steps=META_STEPS, learning_rate=META_LEARNING_RATE)[0]


@partial(jax.jit, static_argnames=("folds", "l2"))
def fit_stacking(
    probs: jax.Array, labels: jax.Array, fold_ids: jax.Array, folds: int, l2: float = META_L2
):
    """``(meta-learner fitted on all rows, out-of-fold probabilities [N, C])``.

    Row n of the out-of-fold probabilities comes from the meta-learner fitted without
    fold ``fold_ids[n]``.
    """
    features = stack_features(probs)
    n = labels.shape[0]
    masks = jnp.concatenate(
        [fold_ids[None, :] != jnp.arange(folds)[:, None], jnp.ones((1, n), bool)]
    )
    metas = jax.vmap(
        lambda m: fit_masked(features, labels, m.astype(jnp.float32), probs.shape[-1], l2)
    )(masks)
    per_fold = jax.vmap(lambda meta: jax.nn.softmax(_logits(meta, features), -1))(
        metas
    )  # [folds + 1, N, C]
    oof = jnp.take_along_axis(per_fold[:folds], fold_ids[None, :, None], axis=0)[0]
    return jax.tree.map(lambda a: a[folds], metas), oof
