"""Training objectives: what one step minimises, separate from how the step and epoch run.

An objective is a pure function

    objective(params, model_state, batch, key, hparams) -> (loss, aux)

with ``aux = {"model_state": new_model_state, "metrics": {name: scalar}}``. ``batch`` is
whatever the epoch gathers: ``{"x", "y"}`` for one stream, ``{"source": {...}, "target":
{...}}`` for several. ``hparams`` holds the run's traced objective hyper-parameters
(``TrainState.hparams``, e.g. ``label_smoothing``): a fifth argument beyond the
``(params, model_state, batch, key)`` shape, because per-member values in a population
must be arrays in the state, not constants in the program.

The train step (``steps.make_train_step``) differentiates the objective, guards the update
and reports ``loss``, ``grad_norm``, ``nonfinite`` plus the objective's metrics. Supervised
classification, masked-token pretraining and domain-adversarial training are objectives
over the same scanned epoch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from ml_adv.models.layers import float_input
from ml_adv.tokens import MASK_ID, NUM_SPECIAL
from ml_adv.training.losses import masked_lm_loss

Objective = Callable[[Any, Any, Any, jax.Array, dict], tuple[jax.Array, dict]]

DEFAULT_HPARAMS = {"label_smoothing": 0.0}


def cast_floats(tree: Any, dtype) -> Any:
    """Cast every floating-point leaf of ``tree`` to ``dtype``; uint8 pixels become ``x / 255``
    in it.

    Other integers (token ids, labels) are untouched. uint8 leaves are scaled here, not left
    to the model's ``float_input``, so a mixed-precision model reads them in ``dtype``.
    """

    def cast(a):
        if a.dtype == jnp.uint8:
            return float_input(a, dtype)
        return a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a

    return jax.tree.map(cast, tree)


def forward(
    apply_fn,
    params,
    model_state,
    x,
    *,
    train: bool,
    dropout_key=None,
    compute_dtype=None,
    method=None,
) -> tuple[jax.Array, Any]:
    """Forward pass returning float32 outputs and the updated model state (mutable collections)."""
    if compute_dtype is not None:
        params, x = cast_floats(params, compute_dtype), cast_floats(x, compute_dtype)
    variables = {"params": params, **model_state}
    kwargs = {"rngs": {"dropout": dropout_key}} if dropout_key is not None else {}
    if method is not None:
        kwargs["method"] = method
    mutable = list(model_state) if train else False
    if mutable:
        out, new_model_state = apply_fn(variables, x, train=train, mutable=mutable, **kwargs)
    else:
        out, new_model_state = apply_fn(variables, x, train=train, **kwargs), model_state
    return out.astype(jnp.float32), new_model_state


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return jnp.mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32))


def supervised_objective(apply_fn, loss_fn, *, compute_dtype=None) -> Objective:
    """Mean per-example classification loss on ``batch['x']`` / ``batch['y']``.

    Args:
        apply_fn: ``module.apply``.
        loss_fn: ``(logits, labels, hparams) -> [B]`` (``losses.resolve_traced_loss``).
        compute_dtype: e.g. ``jnp.bfloat16`` for mixed precision (float32 master params).
    """

    def objective(params, model_state, batch, key, hparams):
        dropout_key = jax.random.split(key)[1]  # [0] is the step's augmentation key
        logits, new_model_state = forward(
            apply_fn,
            params,
            model_state,
            batch["x"],
            train=True,
            dropout_key=dropout_key,
            compute_dtype=compute_dtype,
        )
        loss = jnp.mean(loss_fn(logits, batch["y"], hparams))
        return loss, {
            "model_state": new_model_state,
            "metrics": {"accuracy": accuracy(logits, batch["y"])},
        }

    return objective


def mask_tokens(
    tokens: jax.Array,
    key: jax.Array,
    *,
    vocab_size: int,
    mask_rate: float = 0.15,
    mask_id: int = MASK_ID,
    num_special: int = NUM_SPECIAL,
) -> tuple[jax.Array, jax.Array]:
    """BERT corruption: returns ``(corrupted_tokens, target_mask)``; special tokens are never
    chosen."""
    choose_key, kind_key, random_key = jax.random.split(key, 3)
    candidates = tokens >= num_special
    chosen = jax.random.bernoulli(choose_key, mask_rate, tokens.shape) & candidates
    kind = jax.random.uniform(kind_key, tokens.shape)
    random_tokens = jax.random.randint(random_key, tokens.shape, num_special, vocab_size)
    corrupted = jnp.where(chosen & (kind < 0.8), mask_id, tokens)
    corrupted = jnp.where(chosen & (kind >= 0.8) & (kind < 0.9), random_tokens, corrupted)
    return corrupted, chosen


def masked_lm_objective(
    apply_fn, *, vocab_size: int, mask_rate: float, compute_dtype=None
) -> Objective:
    """BERT masked-token prediction on ``batch['x']`` token ids (labels unused).

    The corruption (``pretraining.mask_tokens``) is drawn from ``key`` inside the step.
    """
    from ml_adv.models.bert import BERT

    def objective(params, model_state, batch, key, hparams):
        mask_key, dropout_key = jax.random.split(key)
        tokens = batch["x"]
        corrupted, target_mask = mask_tokens(
            tokens, mask_key, vocab_size=vocab_size, mask_rate=mask_rate
        )
        logits, _ = forward(
            apply_fn,
            params,
            model_state,
            corrupted,
            train=True,
            dropout_key=dropout_key,
            compute_dtype=compute_dtype,
            method=BERT.masked_lm,
        )
        loss = masked_lm_loss(logits, tokens, target_mask)
        weights = target_mask.astype(jnp.float32)
        correct = (jnp.argmax(logits, -1) == tokens).astype(jnp.float32)
        acc = jnp.sum(correct * weights) / jnp.maximum(jnp.sum(weights), 1.0)
        return loss, {"model_state": model_state, "metrics": {"accuracy": acc}}

    return objective
