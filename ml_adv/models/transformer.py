"""Pre-LayerNorm Transformer encoder classifier.

Inputs (``config.input_kind``):
  * ``'sequence'`` ``(L, D)`` floats, projected to ``d_model`` by a Dense layer;
  * ``'tokens'`` ``(L,)`` int ids in ``[0, vocab_size)``, embedded by ``nn.Embed``; id 0 is
    padding: it is masked out of attention and of mean pooling.
Learned positional embeddings cover ``max_length`` positions (L may vary up to it).

Structure (the ``encoder``): input projection/embedding + positional embedding, dropout,
``num_layers`` pre-LN ``EncoderBlock``s (``x + Attn(LN(x))``, ``x + MLP(LN(x))``), a final
LayerNorm, then pooling: ``"mean"`` over non-padding positions, or ``"cls"``: a learned vector
prepended to the sequence whose final state is used (it takes one extra positional slot).
Then a ``Dense(num_classes)`` ``head``. Pre-LN was chosen because it trains stably without a
learning-rate warm-up, which matters for the product API's one-line training calls.

Module API: ``Transformer(config).apply(variables, x, train=bool, rngs={'dropout': key})`` ->
logits ``[B, num_classes]``; ``Transformer.features(x, train=False)`` -> pooled ``[B, d_model]``;
params ``{'encoder': {'input_proj' | 'token_embed', 'pos_embed', 'block_0', ..., 'ln_final'},
'head'}``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Shaped

from ml_adv.errors import ConfigError, ShapeError
from ml_adv.models.layers import (
    EncoderBlock,
    build_config,
    check_activation,
    check_choice,
    check_input_shape,
    check_int,
    check_rate,
    float_input,
    masked_mean,
    padding_mask,
    resolve_max_length,
)
from ml_adv.models.registry import ArchitectureEntry, register_architecture

NAME = "transformer"
INPUT_RANKS = {"sequence": 2, "tokens": 1}
POOLINGS = ("mean", "cls")
EMBED_INIT = nn.initializers.normal(stddev=0.02)


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Transformer hyper-parameters (JSON-friendly; validated on construction).

    Attributes:
        num_classes: number of output logits (>= 2).
        input_kind: ``"sequence"`` (float features per step) or ``"tokens"`` (int ids).
        vocab_size: number of token ids for ``"tokens"`` input; must be 0 for ``"sequence"``.
        max_length: longest sequence accepted (size of the positional table).
        d_model: model width (a multiple of ``num_heads``).
        num_heads: attention heads.
        num_layers: encoder blocks.
        mlp_dim: hidden width of each block's MLP.
        dropout: dropout on embeddings, attention output and MLP.
        attention_dropout: dropout on the attention weights.
        pooling: ``"mean"`` or ``"cls"``.
        activation: MLP activation, a name from ``ACTIVATIONS``.
    """

    num_classes: int = 10
    input_kind: str = "sequence"
    vocab_size: int = 0
    max_length: int = 128
    d_model: int = 64
    num_heads: int = 4
    num_layers: int = 2
    mlp_dim: int = 128
    dropout: float = 0.1
    attention_dropout: float = 0.0
    pooling: str = "mean"
    activation: str = "gelu"

    def __post_init__(self):
        owner = type(self).__name__
        check_int(owner, "num_classes", self.num_classes, minimum=2)
        check_choice(owner, "input_kind", self.input_kind, tuple(INPUT_RANKS))
        if self.input_kind == "tokens":
            check_int(owner, "vocab_size", self.vocab_size, minimum=2)
        elif self.vocab_size != 0:
            raise ConfigError(
                f"{owner}.vocab_size: only used with input_kind='tokens'; expected 0 for "
                f"'sequence' inputs, got {self.vocab_size!r}"
            )
        for name in ("max_length", "d_model", "num_heads", "num_layers", "mlp_dim"):
            check_int(owner, name, getattr(self, name))
        if self.d_model % self.num_heads:
            raise ConfigError(
                f"{owner}.d_model: expected a multiple of num_heads={self.num_heads}, "
                f"got {self.d_model}"
            )
        check_rate(owner, "dropout", self.dropout)
        check_rate(owner, "attention_dropout", self.attention_dropout)
        check_choice(owner, "pooling", self.pooling, POOLINGS)
        check_activation(owner, "activation", self.activation)


SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"d_model": 16, "num_heads": 2, "num_layers": 1, "mlp_dim": 32, "max_length": 32},
    "small": {"d_model": 64, "num_heads": 4, "num_layers": 2, "mlp_dim": 128, "max_length": 128},
    "base": {"d_model": 256, "num_heads": 4, "num_layers": 4, "mlp_dim": 1024, "max_length": 128},
}
# Vocabulary size used for token inputs when neither the data nor the user gives one.
DEFAULT_VOCAB_SIZE = {"tiny": 64, "small": 512, "base": 32000}


class TransformerEncoder(nn.Module):
    """Embedding, pre-LN blocks, final LayerNorm and pooling; returns ``[B, d_model]``."""

    config: TransformerConfig

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        cfg = self.config
        want_ndim = 2 if cfg.input_kind == "tokens" else 3
        if x.ndim != want_ndim:
            raise ShapeError(
                f"x: transformer with {cfg.input_kind!r} input expects a {want_ndim}-D batch, "
                f"got shape {x.shape}"
            )
        if cfg.input_kind == "tokens":
            valid = padding_mask(x)
            h = nn.Embed(
                cfg.vocab_size, cfg.d_model, embedding_init=EMBED_INIT, name="token_embed"
            )(x)
        else:
            valid = None
            h = nn.Dense(cfg.d_model, name="input_proj")(float_input(x))
        batch, length = h.shape[0], h.shape[1]
        if length > cfg.max_length:
            raise ShapeError(
                f"x: transformer accepts sequences of length <= {cfg.max_length}, got {length}"
            )
        use_cls = cfg.pooling == "cls"
        if use_cls:
            cls = self.param("cls", EMBED_INIT, (1, 1, cfg.d_model))
            h = jnp.concatenate(
                [jnp.broadcast_to(cls.astype(h.dtype), (batch, 1, cfg.d_model)), h], axis=1
            )
            if valid is not None:
                valid = jnp.concatenate([jnp.ones((batch, 1), bool), valid], axis=1)
        positions = nn.Embed(
            cfg.max_length + int(use_cls), cfg.d_model, embedding_init=EMBED_INIT, name="pos_embed"
        )(jnp.arange(h.shape[1]))
        h = h + positions[None].astype(h.dtype)
        h = nn.Dropout(cfg.dropout, deterministic=not train)(h)
        mask = None if valid is None else nn.make_attention_mask(valid, valid)
        for i in range(cfg.num_layers):
            h = EncoderBlock(
                num_heads=cfg.num_heads,
                mlp_dim=cfg.mlp_dim,
                dropout=cfg.dropout,
                attention_dropout=cfg.attention_dropout,
                pre_norm=True,
                activation=cfg.activation,
                name=f"block_{i}",
            )(h, mask, train)
        h = nn.LayerNorm(name="ln_final")(h)
        return h[:, 0] if use_cls else masked_mean(h, valid)


class Transformer(nn.Module):
    """Transformer classifier: ``encoder`` (embedding + pre-LN blocks + pooling) + ``head``."""

    config: TransformerConfig

    def setup(self):
        self.encoder = TransformerEncoder(self.config)
        self.head = nn.Dense(self.config.num_classes)

    def features(self, x: Shaped[Array, "B L ..."], train: bool = False) -> Float[Array, "B F"]:
        """Pooled sequence features ``[B, d_model]``."""
        return self.encoder(x, train)

    def __call__(self, x: Shaped[Array, "B L ..."], train: bool = False) -> Float[Array, "B C"]:
        """Logits ``[B, num_classes]``."""
        return self.head(self.features(x, train))


def make_config(
    *,
    input_shape: tuple[int | None, ...],
    input_kind: str,
    num_classes: int,
    size: str = "small",
    **overrides: Any,
) -> TransformerConfig:
    """``TransformerConfig`` for ``(L, D)`` float or ``(L,)`` token inputs (L may be None).

    ``max_length`` grows to the data's L unless overridden; for token inputs ``vocab_size``
    defaults to ``DEFAULT_VOCAB_SIZE[size]`` (pass the data's vocabulary size instead).
    """
    shape = check_input_shape(
        NAME, input_shape, input_kind, INPUT_RANKS, free_length=("sequence", "tokens")
    )
    derived: dict[str, Any] = {"num_classes": num_classes, "input_kind": input_kind}
    if input_kind == "tokens" and "vocab_size" not in overrides and size in DEFAULT_VOCAB_SIZE:
        derived["vocab_size"] = DEFAULT_VOCAB_SIZE[size]
    if size in SIZES:
        derived.update(resolve_max_length(NAME, shape[0], SIZES[size]["max_length"], overrides))
    if "input_kind" in overrides:
        raise ConfigError(
            f"config_overrides: 'input_kind' comes from the data ({input_kind!r}); got override "
            f"{overrides['input_kind']!r}"
        )
    return build_config(
        TransformerConfig,
        architecture=NAME,
        sizes=SIZES,
        size=size,
        derived=derived,
        overrides=overrides,
    )


register_architecture(
    ArchitectureEntry(
        name=NAME,
        config_cls=TransformerConfig,
        module_cls=Transformer,
        input_kinds=tuple(INPUT_RANKS),
        sizes=SIZES,
        make_config=make_config,
        description="pre-LayerNorm Transformer encoder over float sequences or token ids",
    )
)
