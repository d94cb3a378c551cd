"""Loss functions: a registry of per-example losses plus user callables.

Every loss has the signature ``loss(logits [B, C] float32, labels [B] int) -> [B]``
(per-example values; the train step takes the mean). Returning per-example
values lets the same function serve weighting, masking of padded examples and
per-member means in vmapped ensembles. Register your own with
``LOSSES.register("name", fn)`` or pass the callable in ``TrainConfig.loss``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from ml_adv.registry import Registry

LossFn = Callable[[jax.Array, jax.Array], jax.Array]
LOSSES: Registry[LossFn] = Registry("loss")


@LOSSES.register("cross_entropy")
def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Softmax cross-entropy with integer labels."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def smoothed_cross_entropy(
    logits: jax.Array, labels: jax.Array, smoothing: jax.Array | float
) -> jax.Array:
    """Cross-entropy against labels smoothed towards uniform, with a traced ``smoothing``.

    Written as ``(1 - s) * CE(y) + s * mean_c CE(c)``, which equals cross-entropy against
    ``optax.smooth_labels`` targets, and with ``s = 0`` is bit for bit the plain loss: one
    program serves every smoothing value (a population can give each member its own).
    """
    log_norm = jax.nn.logsumexp(logits, axis=-1)
    label_logits = jnp.take_along_axis(logits, labels[:, None], axis=-1)[:, 0]
    uniform = log_norm - jnp.mean(logits, axis=-1)
    smoothing = jnp.asarray(smoothing, logits.dtype)
    return (1.0 - smoothing) * (log_norm - label_logits) + smoothing * uniform


@LOSSES.register("focal")
def focal_loss(logits: jax.Array, labels: jax.Array, gamma: float = 2.0) -> jax.Array:
    """Focal loss (Lin et al. 2017): down-weights well-classified examples."""
    log_p = jax.nn.log_softmax(logits)
    log_pt = jnp.take_along_axis(log_p, labels[:, None], axis=-1)[:, 0]
    return -((1.0 - jnp.exp(log_pt)) ** gamma) * log_pt


@LOSSES.register("multi_margin")
def multi_margin(logits: jax.Array, labels: jax.Array, margin: float = 1.0) -> jax.Array:
    """Multi-class hinge loss (Crammer-Singer): margin between the true logit and the best other."""
    true = jnp.take_along_axis(logits, labels[:, None], axis=-1)[:, 0]
    others = jnp.where(jax.nn.one_hot(labels, logits.shape[-1], dtype=bool), -jnp.inf, logits)
    return jax.nn.relu(margin - true + others.max(axis=-1))


def masked_lm_loss(logits: jax.Array, targets: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean cross-entropy over masked positions, for BERT-style pretraining.

    Args:
        logits: ``[B, L, V]`` masked-LM logits.
        targets: ``[B, L]`` original token ids.
        mask: ``[B, L]`` 1 where a token was masked and must be predicted.
    """
    per_token = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)
    mask = mask.astype(jnp.float32)
    return jnp.sum(per_token * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def resolve_loss(config) -> LossFn:
    """The per-example loss ``(logits, labels) -> [B]`` the config asks for (smoothing fixed)."""
    if config.loss == "cross_entropy":
        smoothing = config.label_smoothing
        return lambda logits, labels: smoothed_cross_entropy(logits, labels, smoothing)
    return LOSSES.resolve(config.loss, argument="loss")


def resolve_traced_loss(config) -> Callable[[jax.Array, jax.Array, dict], jax.Array]:
    """``(logits, labels, hparams) -> [B]``: the built-in cross-entropy reads its smoothing from
    the traced ``hparams['label_smoothing']``; other losses ignore ``hparams``."""
    if config.loss == "cross_entropy":
        return lambda logits, labels, hparams: smoothed_cross_entropy(
            logits, labels, hparams["label_smoothing"]
        )
    loss = LOSSES.resolve(config.loss, argument="loss")
    return lambda logits, labels, hparams: loss(logits, labels)
