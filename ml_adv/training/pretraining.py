"""Masked-token (BERT-style) pretraining of a token encoder.

``mask_tokens`` applies BERT's corruption rule (Devlin et al. 2019): choose
``mask_rate`` of the non-special tokens; of those, 80% become ``[MASK]``, 10% a
random token, 10% stay; the model must predict the originals at the chosen
positions. ``pretrain_masked_lm`` trains a BERT ``ModelSpec`` with that
objective, reusing the compiled epoch machinery of ``steps.py`` (one
``lax.scan`` per epoch, state donated). The resulting params contain every
classification-head parameter too (BERT's ``init`` creates both heads), so
they pass unchanged to ``fit(..., init_params=...)`` for fine-tuning.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ml_adv.data.dataset import ArrayDataset
from ml_adv.errors import ConfigError, DataError
from ml_adv.training.config import TrainConfig
from ml_adv.training.losses import masked_lm_loss
from ml_adv.training.optim import build_optimizer
from ml_adv.training.state import TrainState, create_train_state
from ml_adv.training.steps import (
    cast_floats,
    epoch_order,
    guard_for_architecture,
    guarded_update,
    make_epoch_fn,
)

MASK_ID = 3
NUM_SPECIAL = 4  # PAD=0, CLS=1, SEP=2, MASK=3 in every built-in vocabulary


def mask_tokens(tokens: jax.Array, key: jax.Array, *, vocab_size: int, mask_rate: float = 0.15,
                mask_id: int = MASK_ID, num_special: int = NUM_SPECIAL) -> tuple[jax.Array, jax.Array]:
    """BERT corruption: returns ``(corrupted_tokens, target_mask)``; special tokens are never chosen."""
    choose_key, kind_key, random_key = jax.random.split(key, 3)
    candidates = tokens >= num_special
    chosen = jax.random.bernoulli(choose_key, mask_rate, tokens.shape) & candidates
    kind = jax.random.uniform(kind_key, tokens.shape)
    random_tokens = jax.random.randint(random_key, tokens.shape, num_special, vocab_size)
    corrupted = jnp.where(chosen & (kind < 0.8), mask_id, tokens)
    corrupted = jnp.where(chosen & (kind >= 0.8) & (kind < 0.9), random_tokens, corrupted)
    return corrupted, chosen


def make_mlm_train_step(*, vocab_size: int, mask_rate: float, mixed_precision: bool = False):
    """Pure ``train_step(state, batch, key)`` for the masked-LM objective (labels ``y`` unused)."""
    from ml_adv.models.bert import BERT

    compute_dtype = jnp.bfloat16 if mixed_precision else None

    def train_step(state: TrainState, batch, key):
        mask_key, dropout_key = jax.random.split(key)
        tokens = batch["x"]
        corrupted, target_mask = mask_tokens(tokens, mask_key, vocab_size=vocab_size, mask_rate=mask_rate)

        def objective(params):
            p = params if compute_dtype is None else cast_floats(params, compute_dtype)
            logits = state.apply_fn(state.variables(p), corrupted, train=True, method=BERT.masked_lm,
                                    rngs={"dropout": dropout_key})
            return masked_lm_loss(logits, tokens, target_mask), (logits, target_mask)

        (loss, (logits, target_mask)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
        guard = guard_for_architecture("bert")  # one place decides the guard per architecture
        new, finite, _ = guarded_update(state, grads, loss, state.model_state, guard=guard)
        weights = target_mask.astype(jnp.float32)
        correct = (jnp.argmax(logits, -1) == tokens).astype(jnp.float32)
        accuracy = jnp.sum(correct * weights) / jnp.maximum(jnp.sum(weights), 1.0)
        return new, {"loss": loss, "accuracy": accuracy, "nonfinite": (~finite).astype(jnp.float32)}

    return train_step


@dataclasses.dataclass
class PretrainResult:
    """Pretrained variables and per-epoch masked-LM loss / accuracy."""

    variables: dict[str, Any]
    history: list[dict[str, float]]


def pretrain_masked_lm(spec, data: ArrayDataset, config: TrainConfig | None = None, *,
                       mask_rate: float = 0.15) -> PretrainResult:
    """Pretrain a BERT ``spec`` on the token ids of ``data`` with the masked-LM objective.

    Example:
        >>> tokens = load_dataset("digits_tokens", split="all")
        >>> spec = AdvancedModelArchitecture("bert").design_architecture(21, 10, input_shape=(65,), input_kind="tokens")
        >>> pre = pretrain_masked_lm(spec, tokens, TrainConfig(epochs=5))
        >>> fit(spec, train, TrainConfig(), init_params=pre.variables["params"])
    """
    config = TrainConfig() if config is None else config
    if spec.architecture != "bert":
        raise ConfigError(f"spec: masked-LM pretraining needs a 'bert' spec, got {spec.architecture!r}")
    if data.input_kind != "tokens":
        raise DataError(f"data: masked-LM pretraining needs token ids, got input_kind {data.input_kind!r}")
    if not 0 < mask_rate < 1:
        raise ConfigError(f"mask_rate: expected a value in (0, 1), got {mask_rate}")
    spec.validate_inputs(data.x[:1], argument="data.x")
    data.check_batch_size(config.batch_size)
    steps_per_epoch = len(data) // config.batch_size
    tx = build_optimizer(config, max(1, config.epochs * steps_per_epoch // config.grad_accum_steps))
    init_key, dropout_key, shuffle_key = jax.random.split(jax.random.PRNGKey(config.seed), 3)
    state = create_train_state(spec.build(), data.x[:1], tx, init_key=init_key, rng=dropout_key)
    step = make_mlm_train_step(vocab_size=spec.config.vocab_size, mask_rate=mask_rate,
                               mixed_precision=config.mixed_precision)
    run_epoch = make_epoch_fn(step)
    arrays = {"x": jnp.asarray(data.x), "y": jnp.asarray(data.y)}
    history = []
    for epoch in range(config.epochs):
        order = epoch_order(jax.random.fold_in(shuffle_key, epoch), len(data), config.batch_size)
        state, metrics = run_epoch(state, arrays, order)
        metrics = jax.device_get(metrics)
        good = metrics["nonfinite"] == 0
        history.append({"epoch": epoch + 1, "mlm_loss": float(np.mean(metrics["loss"][good])),
                        "mlm_accuracy": float(np.mean(metrics["accuracy"][good]))})
    return PretrainResult(state.variables(), history)
