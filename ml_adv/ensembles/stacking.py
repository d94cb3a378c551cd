"""Stacking: a meta-learner over member predictions (Wolpert, 1992).

The meta-learner is an L2-regularised multinomial logistic regression whose features
are the members' log-probabilities, concatenated (``[N, K*C]``). It must be fitted on
predictions the members made on data they were not trained on (held-out data, i.e.
out-of-fold for the members), otherwise it learns to trust overfitted members.

``cross_validated_meta`` also scores the meta-learner honestly: with stratified fold
ids, it fits one meta-learner per fold on the other folds (all folds at once, ``vmap``
over example masks, no Python loop) and predicts the held-out fold, giving
out-of-fold stacked probabilities for every example.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import optax

from ml_adv.ensembles.combine import safe_log

META_STEPS = 200
META_L2 = 1e-3


def stack_features(probs: jax.Array) -> jax.Array:
    """``[K, N, C]`` member probabilities -> ``[N, K*C]`` log-probability features."""
    k, n, c = probs.shape
    return jnp.transpose(safe_log(probs), (1, 0, 2)).reshape(n, k * c)


def meta_proba(meta: dict[str, jax.Array], probs: jax.Array) -> jax.Array:
    """Stacked ensemble probabilities ``[N, C]`` from the meta-learner's params."""
    return jax.nn.softmax(stack_features(probs) @ meta["kernel"] + meta["bias"][None], axis=-1)


meta_proba_jit = jax.jit(meta_proba)


def _fit(features, labels, example_weight, num_classes, l2):
    def loss(meta):
        logits = features @ meta["kernel"] + meta["bias"][None]
        nll = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        data = jnp.sum(example_weight * nll) / jnp.maximum(jnp.sum(example_weight), 1.0)
        return data + l2 * jnp.sum(meta["kernel"] ** 2)

    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(loss)

    def step(carry, _):
        meta, state = carry
        value, grad = value_and_grad(meta, state=state)
        updates, state = opt.update(grad, state, meta, value=value, grad=grad, value_fn=loss)
        return (optax.apply_updates(meta, updates), state), value

    meta0 = {
        "kernel": jnp.zeros((features.shape[1], num_classes), jnp.float32),
        "bias": jnp.zeros((num_classes,), jnp.float32),
    }
    (meta, _), _ = jax.lax.scan(step, (meta0, opt.init(meta0)), None, length=META_STEPS)
    return meta


@partial(jax.jit, static_argnames=("l2",))
def fit_meta_learner(probs: jax.Array, labels: jax.Array, l2: float = META_L2) -> dict[str, jax.Array]:
    """Fit the meta-learner on member probabilities ``[K, N, C]`` and labels ``[N]``."""
    features = stack_features(probs)
    return _fit(features, labels, jnp.ones(labels.shape, jnp.float32), probs.shape[-1], l2)


@partial(jax.jit, static_argnames=("folds", "l2"))
def cross_validated_meta(
    probs: jax.Array, labels: jax.Array, fold_ids: jax.Array, folds: int, l2: float = META_L2
) -> jax.Array:
    """Out-of-fold stacked probabilities ``[N, C]``: row n comes from the meta-learner
    fitted without fold ``fold_ids[n]``; the ``folds`` fits run as one vmapped program."""
    features = stack_features(probs)
    train_masks = (fold_ids[None, :] != jnp.arange(folds)[:, None]).astype(jnp.float32)  # [F, N]
    metas = jax.vmap(lambda m: _fit(features, labels, m, probs.shape[-1], l2))(train_masks)
    per_fold = jax.vmap(lambda meta: jax.nn.softmax(features @ meta["kernel"] + meta["bias"][None], -1))(metas)
    return jnp.take_along_axis(per_fold, fold_ids[None, :, None], axis=0)[0]
