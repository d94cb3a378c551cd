"""Masked-token (BERT-style) pretraining of a token encoder.

``mask_tokens`` applies BERT's corruption rule (Devlin et al. 2019): choose
``mask_rate`` of the non-special tokens; of those, 80% become ``[MASK]``, 10% a
random token, 10% stay; the model must predict the originals at the chosen
positions. ``pretrain_masked_lm`` trains a BERT ``ModelSpec`` with that
objective, through the general core: ``objectives.masked_lm_objective`` in the
same set-up (``init_run``) and scanned epoch as every other run. The resulting params contain every
classification-head parameter too (BERT's ``init`` creates both heads), so
they pass unchanged to ``fit(..., init_params=...)`` for fine-tuning.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from ml_adv.data.dataset import ArrayDataset
from ml_adv.errors import ConfigError, DataError
from ml_adv.rundir import Run
from ml_adv.training.config import TrainConfig
from ml_adv.training.loop import fit
from ml_adv.training.objectives import mask_tokens, masked_lm_objective  # noqa: F401  (mask_tokens re-exported)


def make_mlm_train_step(spec, *, mask_rate: float, mixed_precision: bool = False):
    """Pure ``train_step(state, batch, key)`` for the masked-LM objective (labels ``y`` unused)."""
    from ml_adv.training.objectives import masked_lm_objective  # noqa: F401  (mask_tokens re-exported)
    from ml_adv.training.steps import guard_for_architecture, make_train_step

    objective = masked_lm_objective(
        spec.build().apply,
        vocab_size=spec.config.vocab_size,
        mask_rate=mask_rate,
        compute_dtype=jnp.bfloat16 if mixed_precision else None,
    )
    return make_train_step(objective, guard=guard_for_architecture(spec.architecture))


@dataclasses.dataclass
class PretrainResult:
    """Pretrained variables and per-epoch masked-LM loss / accuracy."""

    variables: dict[str, Any]
    history: list[dict[str, float]]


def pretrain_masked_lm(
    spec, data: ArrayDataset, config: TrainConfig | None = None, *, mask_rate: float = 0.15
) -> PretrainResult:
    """Pretrain a BERT ``spec`` on the token ids of ``data`` with the masked-LM objective.

    Example:
        >>> from ml_adv.data import load_dataset
        >>> from ml_adv.models import AdvancedModelArchitecture
        >>> tokens = load_dataset("digits_tokens", split="train").subset(range(128))
        >>> spec = AdvancedModelArchitecture("bert", size="tiny").design_architecture(
        ...     21, 10, input_shape=(65,), input_kind="tokens")
        >>> pre = pretrain_masked_lm(spec, tokens, TrainConfig(epochs=1))
        >>> tuned = fit(spec, tokens, TrainConfig(epochs=1), init_params=pre.variables["params"],
        ...             run=Run(progress=False))
    """
    config = TrainConfig() if config is None else config
    if spec.architecture != "bert":
        raise ConfigError(
            f"spec: masked-LM pretraining needs a 'bert' spec, got {spec.architecture!r}"
        )
    if data.input_kind != "tokens":
        raise DataError(
            f"data: masked-LM pretraining needs token ids, got input_kind {data.input_kind!r}"
        )
    if not 0 < mask_rate < 1:
        raise ConfigError(f"mask_rate: expected a value in (0, 1), got {mask_rate}")
    spec.validate_inputs(data.x[:1], argument="data.x")
    data.check_batch_size(config.batch_size)
    objective = masked_lm_objective(
        spec.build().apply,
        vocab_size=spec.config.vocab_size,
        mask_rate=mask_rate,
        compute_dtype=jnp.bfloat16 if config.mixed_precision else None,
    )
    result = fit(spec, data, config, objective=objective, run=Run(progress=False))
    history = [
        {"epoch": r["epoch"], "mlm_loss": r["train_loss"], "mlm_accuracy": r["train_accuracy"]}
        for r in result.history
    ]
    return PretrainResult(result.state.variables(), history)
