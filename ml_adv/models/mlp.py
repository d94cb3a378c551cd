"""Multi-layer perceptron classifier.

Input: ``'features'`` ``(D,)``; ``'image'`` ``(H, W, C)`` and ``'sequence'`` ``(L, D)`` with a
fixed L are flattened first. Structure: ``[Dense -> activation -> Dropout] * len(hidden_sizes)``
(the ``encoder``), then a ``Dense(num_classes)`` ``head``.

Module API (same for every family):
  * ``MLP(config).apply(variables, x, train=bool, rngs={'dropout': key}) -> [B, num_classes]``;
  * ``MLP.features(x, train=False) -> [B, hidden_sizes[-1]]``: the penultimate activations
    (after dropout when ``train``), the embedding used by DANN and core-set selection;
  * params: ``{'encoder': {'dense_0', ...}, 'head'}``, so the feature extractor and the
    classifier can be frozen, re-initialised or transferred separately.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
from jaxtyping import Array, Float

from ml_adv.models.layers import (
    ACTIVATIONS,
    build_config,
    check_activation,
    check_input_shape,
    check_int,
    check_int_tuple,
    check_rate,
    float_input,
    set_field,
)
from ml_adv.models.registry import ArchitectureEntry, register_architecture

NAME = "mlp"
INPUT_RANKS = {"features": 1, "image": 3, "sequence": 2}


@dataclasses.dataclass(frozen=True)
class MLPConfig:
    """MLP hyper-parameters (JSON-friendly; validated on construction).

    Attributes:
        num_classes: number of output logits (>= 2).
        hidden_sizes: width of each hidden layer, input side first (at least one).
        dropout: dropout rate after each hidden activation.
        activation: a name from ``ml_adv.models.layers.ACTIVATIONS``.
    """

    num_classes: int = 10
    hidden_sizes: tuple[int, ...] = (128, 64)
    dropout: float = 0.1
    activation: str = "relu"

    def __post_init__(self):
        owner = type(self).__name__
        check_int(owner, "num_classes", self.num_classes, minimum=2)
        set_field(self, "hidden_sizes", check_int_tuple(owner, "hidden_sizes", self.hidden_sizes))
        check_rate(owner, "dropout", self.dropout)
        check_activation(owner, "activation", self.activation)


SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"hidden_sizes": (16,)},
    "small": {"hidden_sizes": (128, 64)},
    "base": {"hidden_sizes": (512, 256)},
}


class MLPEncoder(nn.Module):
    """Flatten, then the hidden layers; returns ``[B, hidden_sizes[-1]]``."""

    config: MLPConfig

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        cfg = self.config
        act = ACTIVATIONS.get(cfg.activation)
        h = float_input(x).reshape((x.shape[0], -1))
        for i, width in enumerate(cfg.hidden_sizes):
            h = act(nn.Dense(width, name=f"dense_{i}")(h))
            h = nn.Dropout(cfg.dropout, deterministic=not train)(h)
        return h


class MLP(nn.Module):
    """MLP classifier: ``encoder`` (hidden layers) + linear ``head``."""

    config: MLPConfig

    def setup(self):
        self.encoder = MLPEncoder(self.config)
        self.head = nn.Dense(self.config.num_classes)

    def features(self, x: Float[Array, "B ..."], train: bool = False) -> Float[Array, "B F"]:
        """Penultimate activations ``[B, hidden_sizes[-1]]``."""
        return self.encoder(x, train)

    def __call__(self, x: Float[Array, "B ..."], train: bool = False) -> Float[Array, "B C"]:
        """Logits ``[B, num_classes]``."""
        return self.head(self.features(x, train))


def make_config(
    *,
    input_shape: tuple[int | None, ...],
    input_kind: str,
    num_classes: int,
    size: str = "small",
    **overrides: Any,
) -> MLPConfig:
    """``MLPConfig`` for data of this shape; ConfigError on unknown/invalid overrides."""
    check_input_shape(NAME, input_shape, input_kind, INPUT_RANKS)
    return build_config(
        MLPConfig,
        architecture=NAME,
        sizes=SIZES,
        size=size,
        derived={"num_classes": num_classes},
        overrides=overrides,
    )


register_architecture(
    ArchitectureEntry(
        name=NAME,
        config_cls=MLPConfig,
        module_cls=MLP,
        input_kinds=tuple(INPUT_RANKS),
        sizes=SIZES,
        make_config=make_config,
        description="multi-layer perceptron on flattened inputs",
    )
)
