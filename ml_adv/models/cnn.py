"""Convolutional classifier for images ``(H, W, C)``.

Structure: for each entry of ``conv_features``: a ``kernel_size``x``kernel_size`` SAME conv,
activation, and a ``pool_size`` max pool (stride = window, VALID); then flatten,
``[Dense -> activation -> Dropout]`` for each entry of ``dense_features`` (the ``encoder``), and a
``Dense(num_classes)`` ``head``. The default ("small", also "base") is
conv32-pool-conv64-pool-dense128-dense(num_classes): 8x8 digits go 8 -> 4 -> 2, 28x28 images
28 -> 14 -> 7. "base" is the REFERENCE benchmark model for 28x28x1 inputs.

Every convolution is built by ``conv_layer`` so a faster drop-in ``Conv`` (same param names
``kernel`` ``(kh, kw, cin, cout)`` and ``bias``) can replace ``nn.Conv`` in one place.

Module API: ``CNN(config).apply(variables, x, train=bool, rngs={'dropout': key})`` -> logits
``[B, num_classes]``; ``CNN.features(x, train=False)`` -> ``[B, dense_features[-1]]`` (or the
flattened conv output when ``dense_features`` is empty); params ``{'encoder', 'head'}``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
from jaxtyping import Array, Float

from ml_adv.errors import ConfigError
from ml_adv.kernels.conv import Conv
from ml_adv.kernels.pooling import max_pool
from ml_adv.models.layers import (
    ACTIVATIONS,
    build_config,
    check_activation,
    check_choice,
    check_input_shape,
    check_int,
    check_int_tuple,
    check_rate,
    float_input,
    set_field,
)
from ml_adv.models.registry import ArchitectureEntry, register_architecture

NAME = "cnn"
INPUT_RANKS = {"image": 3}
PADDINGS = ("SAME", "VALID")


def conv_layer(features: int, kernel_size: int, name: str, padding: str = "SAME") -> nn.Module:
    """The one place convolutions are made: a square conv with bias (``SAME`` or ``VALID``).

    ``ml_adv.kernels.conv.Conv`` is a drop-in for ``nn.Conv`` (same parameter names,
    shapes and initialisation) whose weight gradient is computed as matmuls on the
    CPU backend, where XLA's own conv weight gradient is slow; GPU/TPU keep the
    native conv (see conv.py).
    """
    return Conv(features, (kernel_size, kernel_size), padding=padding, name=name)


@dataclasses.dataclass(frozen=True)
class CNNConfig:
    """CNN hyper-parameters (JSON-friendly; validated on construction).

    Attributes:
        num_classes: number of output logits (>= 2).
        conv_features: output channels of each conv stage (each stage is conv + pool).
        kernel_size: side of the square conv kernels.
        pool_size: side and stride of the max-pool window after each conv.
        dense_features: widths of the dense layers after flattening (may be empty).
        dropout: dropout rate after each dense activation.
        activation: a name from ``ml_adv.models.layers.ACTIVATIONS``.
        padding: ``"SAME"`` (keeps the side) or ``"VALID"`` (no padding, as in Keras'
            default and the papers' MNIST networks).
        pool_after: per conv stage, whether a max pool follows it (default: every stage);
            ``(False, True)`` gives conv-conv-pool.
        conv_dropout: dropout rate after the last conv stage, before flattening.
        head_hidden: hidden widths of the head (``Dense -> activation`` each, then the
            output layer). Empty (the default): a linear head. DANN's label predictor is
            an MLP head on the conv features (``dense_features=()``, ``head_hidden=(100, 100)``).
    """

    num_classes: int = 10
    conv_features: tuple[int, ...] = (32, 64)
    kernel_size: int = 3
    pool_size: int = 2
    dense_features: tuple[int, ...] = (128,)
    dropout: float = 0.1
    activation: str = "relu"
    padding: str = "SAME"
    pool_after: tuple[bool, ...] | None = None
    conv_dropout: float = 0.0
    head_hidden: tuple[int, ...] = ()

    def __post_init__(self):
        owner = type(self).__name__
        check_int(owner, "num_classes", self.num_classes, minimum=2)
        set_field(
            self, "conv_features", check_int_tuple(owner, "conv_features", self.conv_features)
        )
        check_int(owner, "kernel_size", self.kernel_size)
        check_int(owner, "pool_size", self.pool_size)
        set_field(
            self,
            "dense_features",
            check_int_tuple(owner, "dense_features", self.dense_features, allow_empty=True),
        )
        check_rate(owner, "dropout", self.dropout)
        check_activation(owner, "activation", self.activation)
        check_choice(owner, "padding", self.padding, PADDINGS)
        if self.pool_after is not None:
            pools = tuple(self.pool_after) if isinstance(self.pool_after, (list, tuple)) else None
            if (
                pools is None
                or len(pools) != len(self.conv_features)
                or not all(isinstance(p, bool) for p in pools)
            ):
                raise ConfigError(
                    f"{owner}.pool_after: expected one True/False per conv stage "
                    f"({len(self.conv_features)}), got {self.pool_after!r}"
                )
            set_field(self, "pool_after", pools)
        check_rate(owner, "conv_dropout", self.conv_dropout)
        set_field(
            self,
            "head_hidden",
            check_int_tuple(owner, "head_hidden", self.head_hidden, allow_empty=True),
        )

    @property
    def pools(self) -> tuple[bool, ...]:
        """Whether each conv stage is followed by a max pool."""
        return self.pool_after if self.pool_after is not None else (True,) * len(self.conv_features)


SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"conv_features": (4, 8), "dense_features": (16,)},
    "small": {"conv_features": (32, 64), "dense_features": (128,)},
    "base": {"conv_features": (32, 64), "dense_features": (128,)},
    # Gal, Islam and Ghahramani (2017), the active-learning MNIST network (their Keras code):
    # conv32-conv32 (4x4, VALID), max-pool, dropout 0.25, dense 128, dropout 0.5.
    "gal": {
        "conv_features": (32, 32),
        "kernel_size": 4,
        "padding": "VALID",
        "pool_after": (False, True),
        "conv_dropout": 0.25,
        "dense_features": (128,),
        "dropout": 0.5,
    },
    # Ganin et al. (2016), the DANN MNIST network: conv32 5x5, pool, conv48 5x5, pool (the
    # feature extractor, where the domain classifier attaches), label predictor 100-100-10.
    "dann": {
        "conv_features": (32, 48),
        "kernel_size": 5,
        "padding": "VALID",
        "dense_features": (),
        "dropout": 0.0,
        "head_hidden": (100, 100),
    },
}


class CNNEncoder(nn.Module):
    """Conv/pool stages, flatten, dense layers; returns ``[B, F]``."""

    config: CNNConfig

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        cfg = self.config
        act = ACTIVATIONS.get(cfg.activation)
        h = float_input(x)
        for i, (channels, pool) in enumerate(zip(cfg.conv_features, cfg.pools)):
            h = act(conv_layer(channels, cfg.kernel_size, name=f"conv_{i}", padding=cfg.padding)(h))
            if pool:
                h = max_pool(h, cfg.pool_size)
        if cfg.conv_dropout:
            h = nn.Dropout(cfg.conv_dropout, deterministic=not train)(h)
        h = h.reshape((h.shape[0], -1))
        for i, width in enumerate(cfg.dense_features):
            h = act(nn.Dense(width, name=f"dense_{i}")(h))
            h = nn.Dropout(cfg.dropout, deterministic=not train)(h)
        return h


class MLPHead(nn.Module):
    """``[Dense -> activation]`` per hidden width, then ``Dense(num_classes)``."""

    hidden: tuple[int, ...]
    num_classes: int
    activation: str

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        act = ACTIVATIONS.get(self.activation)
        for i, width in enumerate(self.hidden):
            h = act(nn.Dense(width, name=f"hidden_{i}")(h))
        return nn.Dense(self.num_classes, name="out")(h)


class CNN(nn.Module):
    """CNN classifier: ``encoder`` (conv stages + dense layers) + ``head`` (linear, or an MLP)."""

    config: CNNConfig

    def setup(self):
        cfg = self.config
        self.encoder = CNNEncoder(cfg)
        self.head = (
            MLPHead(cfg.head_hidden, cfg.num_classes, cfg.activation)
            if cfg.head_hidden
            else nn.Dense(cfg.num_classes)
        )

    def features(self, x: Float[Array, "B H W C"], train: bool = False) -> Float[Array, "B F"]:
        """Penultimate activations ``[B, F]``."""
        return self.encoder(x, train)

    def __call__(self, x: Float[Array, "B H W C"], train: bool = False) -> Float[Array, "B C"]:
        """Logits ``[B, num_classes]``."""
        return self.head(self.features(x, train))


def make_config(
    *,
    input_shape: tuple[int, int, int],
    input_kind: str,
    num_classes: int,
    size: str = "small",
    **overrides: Any,
) -> CNNConfig:
    """``CNNConfig`` for ``(H, W, C)`` images; ConfigError if the image is too small to pool."""
    shape = check_input_shape(NAME, input_shape, input_kind, INPUT_RANKS)
    config = build_config(
        CNNConfig,
        architecture=NAME,
        sizes=SIZES,
        size=size,
        derived={"num_classes": num_classes},
        overrides=overrides,
    )
    side = min(shape[0], shape[1])
    for i, pool in enumerate(config.pools):  # follow the side through the stages
        side = side - (config.kernel_size - 1 if config.padding == "VALID" else 0)
        side = side // config.pool_size if pool else side
        if side < 1:
            raise ConfigError(
                f"conv_features: stage {i} of {len(config.pools)} "
                f"({config.padding} {config.kernel_size}x{config.kernel_size} convs, "
                f"pools of {config.pool_size}) leaves nothing of an image of side "
                f"{min(shape[0], shape[1])} (input_shape {shape})"
            )
    return config


register_architecture(
    ArchitectureEntry(
        name=NAME,
        config_cls=CNNConfig,
        module_cls=CNN,
        input_kinds=tuple(INPUT_RANKS),
        sizes=SIZES,
        make_config=make_config,
        description="conv + max-pool stages, then dense layers (images H x W x C)",
    )
)
