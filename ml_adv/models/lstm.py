"""LSTM sequence classifier for float sequences ``(L, D)`` (any length L).

Structure (the ``encoder``): ``num_layers`` stacked ``nn.RNN(nn.OptimizedLSTMCell(hidden_size))``
layers, optionally bidirectional (forward and time-reversed outputs concatenated), dropout
between layers; the sequence is summarised by ``pooling``:
  * ``"last"``: the final hidden state of the top layer (for a bidirectional layer, the
    forward state after the last step and the backward state after the first);
  * ``"mean"``: the mean of the top layer's outputs over time.
Then dropout and a ``Dense(num_classes)`` ``head``.

Lowering: each float32 layer runs either as Flax's cell under autodiff or as
``lstm_layer.lstm_sequence`` (the same maths and parameters, with the weight gradients as
GEMMs after the backward loop), whichever measured faster for its shape on this CPU
(``ml_adv.kernels.autotune``; Flax's cell without measuring).

Precision: the cell's gate matmuls run in the input dtype (bf16 under mixed precision), while
the carry (c, h) is kept in float32 (``OptimizedLSTMCell``'s ``param_dtype`` carry): summing
hundreds of bf16 cell-state updates would drift, and float32 carries cost nothing measurable.

Module API: ``LSTM(config).apply(variables, x, train=bool, rngs={'dropout': key})`` -> logits
``[B, num_classes]``; ``LSTM.features(x, train=False)`` -> ``[B, hidden_size * (2 if
bidirectional else 1)]``; params ``{'encoder': {'lstm_0', 'lstm_0_reverse', ...}, 'head'}``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ml_adv.kernels.lstm_layer import LSTMCellParams, lstm_sequence, measured_lowering
from ml_adv.models.layers import (
    build_config,
    check_bool,
    check_choice,
    check_input_shape,
    check_int,
    check_rate,
    float_input,
)
from ml_adv.models.registry import ArchitectureEntry, register_architecture

NAME = "lstm"
INPUT_RANKS = {"sequence": 2}
POOLINGS = ("last", "mean")


@dataclasses.dataclass(frozen=True)
class LSTMConfig:
    """LSTM hyper-parameters (JSON-friendly; validated on construction).

    Attributes:
        num_classes: number of output logits (>= 2).
        hidden_size: LSTM units per direction.
        num_layers: stacked LSTM layers.
        bidirectional: also run each layer backwards in time and concatenate.
        pooling: ``"last"`` (final hidden state) or ``"mean"`` (mean over time).
        dropout: dropout rate between layers and on the pooled features.
    """

    num_classes: int = 10
    hidden_size: int = 64
    num_layers: int = 1
    bidirectional: bool = False
    pooling: str = "last"
    dropout: float = 0.1

    def __post_init__(self):
        owner = type(self).__name__
        check_int(owner, "num_classes", self.num_classes, minimum=2)
        check_int(owner, "hidden_size", self.hidden_size)
        check_int(owner, "num_layers", self.num_layers)
        check_bool(owner, "bidirectional", self.bidirectional)
        check_choice(owner, "pooling", self.pooling, POOLINGS)
        check_rate(owner, "dropout", self.dropout)


SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"hidden_size": 8, "num_layers": 1},
    "small": {"hidden_size": 64, "num_layers": 1},
    "base": {"hidden_size": 256, "num_layers": 1},
}


class FusedLSTM(nn.Module):
    """One float32 LSTM layer through ``lstm_layer.lstm_sequence``, with ``nn.RNN``'s parameters
    and outputs."""

    hidden_size: int
    reverse: bool = False

    @nn.compact
    def __call__(self, x: jax.Array):
        w_i, w_h, b = LSTMCellParams(self.hidden_size, name="cell")(x.shape[-1])
        return lstm_sequence(x, w_i, w_h, b, reverse=self.reverse)


class LSTMEncoder(nn.Module):
    """Stacked (bi)LSTM + pooling; returns ``[B, hidden_size * directions]``."""

    config: LSTMConfig

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        cfg = self.config
        h = float_input(x)
        dtype = h.dtype
        finals = []
        for i in range(cfg.num_layers):
            if i > 0:
                h = nn.Dropout(cfg.dropout, deterministic=not train)(h)
            directions = [(f"lstm_{i}", False)]
            if cfg.bidirectional:
                directions.append((f"lstm_{i}_reverse", True))
            outputs, finals = [], []
            for name, reverse in directions:
                if measured_lowering(h.shape, cfg.hidden_size, dtype, reverse=reverse) == "fused":
                    (_, last_h), out = FusedLSTM(cfg.hidden_size, reverse, name=name)(h)
                else:
                    rnn = nn.RNN(
                        nn.OptimizedLSTMCell(cfg.hidden_size, dtype=dtype, parent=None),
                        return_carry=True,
                        reverse=reverse,
                        keep_order=True,
                        name=name,
                    )
                    (_, last_h), out = rnn(h)
                outputs.append(out.astype(dtype))
                finals.append(last_h.astype(dtype))
            h = outputs[0] if len(outputs) == 1 else jnp.concatenate(outputs, axis=-1)
        if cfg.pooling == "last":
            pooled = finals[0] if len(finals) == 1 else jnp.concatenate(finals, axis=-1)
        else:
            pooled = jnp.mean(h, axis=1)
        return nn.Dropout(cfg.dropout, deterministic=not train)(pooled)


class LSTM(nn.Module):
    """LSTM classifier: ``encoder`` (stacked LSTM + pooling) + linear ``head``."""

    config: LSTMConfig

    def setup(self):
        self.encoder = LSTMEncoder(self.config)
        self.head = nn.Dense(self.config.num_classes)

    def features(self, x: Float[Array, "B L D"], train: bool = False) -> Float[Array, "B F"]:
        """Pooled sequence features ``[B, hidden_size * directions]``."""
        return self.encoder(x, train)

    def __call__(self, x: Float[Array, "B L D"], train: bool = False) -> Float[Array, "B C"]:
        """Logits ``[B, num_classes]``."""
        return self.head(self.features(x, train))


def make_config(
    *,
    input_shape: tuple[int | None, int],
    input_kind: str,
    num_classes: int,
    size: str = "small",
    **overrides: Any,
) -> LSTMConfig:
    """``LSTMConfig`` for ``(L, D)`` sequences (L may be None); ConfigError on bad overrides."""
    check_input_shape(NAME, input_shape, input_kind, INPUT_RANKS, free_length=("sequence",))
    return build_config(
        LSTMConfig,
        architecture=NAME,
        sizes=SIZES,
        size=size,
        derived={"num_classes": num_classes},
        overrides=overrides,
    )


register_architecture(
    ArchitectureEntry(
        name=NAME,
        config_cls=LSTMConfig,
        module_cls=LSTM,
        input_kinds=tuple(INPUT_RANKS),
        sizes=SIZES,
        make_config=make_config,
        description="stacked (bi)LSTM over float sequences (L, D), any length",
    )
)
