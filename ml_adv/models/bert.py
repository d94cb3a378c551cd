"""BERT: a post-LayerNorm Transformer encoder over token ids, with classification and MLM heads.

Input: ``'tokens'`` ``(L,)`` int ids in ``[0, vocab_size)``; id 0 is padding (masked out of
attention). The first token plays the role of [CLS]: its final state feeds the pooler. Optional
``segment_ids`` ``[B, L]`` in ``[0, type_vocab_size)`` (default zeros) select the token-type
embedding.

Structure (names as in the original BERT): token + position + token-type embeddings,
LayerNorm, dropout; ``num_layers`` post-LN ``EncoderBlock``s with GELU; a pooler
(``Dense(hidden) + tanh`` on position 0); dropout and a ``Dense(num_classes)`` classifier.
Parameters: ``{'encoder': embeddings, blocks, pooler; 'head': the classifier; 'mlm': the
masked-LM head}``, the same ``encoder``/``head`` split as every built-in family.
The masked-LM head is ``Dense(hidden) + GELU + LayerNorm``, then logits tied to the token
embedding matrix (``Embed.attend``) plus an output bias.

Methods (all take ``segment_ids=None`` and ``train=False``):
  * ``__call__(tokens)`` -> classification logits ``[B, num_classes]``. When initialising, it
    also runs the MLM head, so ``BERT(cfg).init(key, tokens)`` creates the params of both heads
    and weights pretrained with ``masked_lm`` fine-tune for classification without re-init;
  * ``masked_lm(tokens)`` -> ``[B, L, vocab_size]`` MLM logits
    (``module.apply(variables, tokens, method=BERT.masked_lm)``);
  * ``encode(tokens)`` -> final hidden states ``[B, L, hidden_size]``;
  * ``features(tokens)`` -> pooled ``[B, hidden_size]`` (the penultimate features used by DANN
    and core-set selection).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from ml_adv.errors import ConfigError, ShapeError
from ml_adv.models.layers import (
    ACTIVATIONS,
    EncoderBlock,
    attention_mask,
    build_config,
    check_activation,
    check_input_shape,
    check_int,
    check_rate,
    resolve_max_length,
)
from ml_adv.models.registry import ArchitectureEntry, register_architecture

NAME = "bert"
INPUT_RANKS = {"tokens": 1}
INIT = nn.initializers.normal(stddev=0.02)  # BERT's truncated-normal(0.02), untruncated


@dataclasses.dataclass(frozen=True)
class BERTConfig:
    """BERT hyper-parameters (JSON-friendly; validated on construction).

    Attributes:
        num_classes: number of classification logits (>= 2).
        vocab_size: number of token ids (id 0 is padding).
        max_length: longest sequence accepted (size of the position table).
        type_vocab_size: number of segment (token type) ids.
        hidden_size: model width (a multiple of ``num_heads``).
        num_heads: attention heads.
        num_layers: encoder blocks.
        intermediate_size: hidden width of each block's MLP.
        dropout: dropout on embeddings, attention output, MLP and before the classifier.
        attention_dropout: dropout on the attention weights.
        activation: MLP and MLM-transform activation, a name from ``ACTIVATIONS``.
        layer_norm_eps: LayerNorm epsilon (1e-12 in BERT).
    """

    num_classes: int = 2
    vocab_size: int = 512
    max_length: int = 128
    type_vocab_size: int = 2
    hidden_size: int = 128
    num_heads: int = 2
    num_layers: int = 2
    intermediate_size: int = 512
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation: str = "gelu"
    layer_norm_eps: float = 1e-12

    def __post_init__(self):
        owner = type(self).__name__
        check_int(owner, "num_classes", self.num_classes, minimum=2)
        check_int(owner, "vocab_size", self.vocab_size, minimum=2)
        for name in (
            "max_length",
            "type_vocab_size",
            "hidden_size",
            "num_heads",
            "num_layers",
            "intermediate_size",
        ):
            check_int(owner, name, getattr(self, name))
        if self.hidden_size % self.num_heads:
            raise ConfigError(
                f"{owner}.hidden_size: expected a multiple of num_heads={self.num_heads}, "
                f"got {self.hidden_size}"
            )
        check_rate(owner, "dropout", self.dropout)
        check_rate(owner, "attention_dropout", self.attention_dropout)
        check_activation(owner, "activation", self.activation)
        eps = self.layer_norm_eps
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
            raise ConfigError(f"{owner}.layer_norm_eps: expected a number in (0, 1), got {eps!r}")


SIZES: dict[str, dict[str, Any]] = {
    "tiny": {
        "vocab_size": 64,
        "max_length": 32,
        "hidden_size": 16,
        "num_heads": 2,
        "num_layers": 1,
        "intermediate_size": 32,
    },
    "small": {
        "vocab_size": 512,
        "max_length": 128,
        "hidden_size": 128,
        "num_heads": 2,
        "num_layers": 2,
        "intermediate_size": 512,
    },
    "base": {  # BERT-base
        "vocab_size": 30522,
        "max_length": 512,
        "hidden_size": 768,
        "num_heads": 12,
        "num_layers": 12,
        "intermediate_size": 3072,
    },
}


class BERTEncoder(nn.Module):
    """Embeddings, the encoder blocks and the pooler: everything but the task heads."""

    config: BERTConfig

    def setup(self):
        cfg = self.config
        self.word_embeddings = nn.Embed(cfg.vocab_size, cfg.hidden_size, embedding_init=INIT)
        self.position_embeddings = nn.Embed(cfg.max_length, cfg.hidden_size, embedding_init=INIT)
        self.token_type_embeddings = nn.Embed(
            cfg.type_vocab_size, cfg.hidden_size, embedding_init=INIT
        )
        self.embeddings_ln = nn.LayerNorm(epsilon=cfg.layer_norm_eps)
        self.layers = [
            EncoderBlock(
                num_heads=cfg.num_heads,
                mlp_dim=cfg.intermediate_size,
                dropout=cfg.dropout,
                attention_dropout=cfg.attention_dropout,
                pre_norm=False,
                activation=cfg.activation,
                layer_norm_eps=cfg.layer_norm_eps,
            )
            for _ in range(cfg.num_layers)
        ]
        self.pooler = nn.Dense(cfg.hidden_size, kernel_init=INIT)
        self.dropout = nn.Dropout(cfg.dropout)

    def __call__(
        self, tokens: jax.Array, train: bool = False, segment_ids: jax.Array | None = None
    ) -> jax.Array:
        """Final hidden states ``[B, L, hidden_size]``."""
        cfg = self.config
        if tokens.ndim != 2:
            raise ShapeError(
                f"tokens: bert expects a [B, L] batch of token ids, got shape {tokens.shape}"
            )
        length = tokens.shape[1]
        if length > cfg.max_length:
            raise ShapeError(
                f"tokens: bert accepts sequences of length <= {cfg.max_length}, got {length}"
            )
        if segment_ids is None:
            segment_ids = jnp.zeros_like(tokens)
        elif segment_ids.shape != tokens.shape:
            raise ShapeError(
                f"segment_ids: expected the shape of tokens {tokens.shape}, got {segment_ids.shape}"
            )
        h = self.word_embeddings(tokens)
        h = h + self.position_embeddings(jnp.arange(length))[None].astype(h.dtype)
        h = h + self.token_type_embeddings(segment_ids).astype(h.dtype)
        h = self.dropout(self.embeddings_ln(h), deterministic=not train)
        mask = attention_mask(tokens)
        for layer in self.layers:
            h = layer(h, mask, train)
        return h

    def pool(self, hidden: jax.Array) -> jax.Array:
        return jnp.tanh(self.pooler(hidden[:, 0]))

    def attend(self, h: jax.Array) -> jax.Array:
        """Logits over the vocabulary with the tied token-embedding matrix."""
        return self.word_embeddings.attend(h)


class MLMHead(nn.Module):
    """BERT's masked-LM transform (Dense + activation + LayerNorm) and output bias."""

    config: BERTConfig

    @nn.compact
    def __call__(self, hidden: jax.Array, attend) -> jax.Array:
        cfg = self.config
        act = ACTIVATIONS.get(cfg.activation)
        h = nn.LayerNorm(epsilon=cfg.layer_norm_eps, name="ln")(
            act(nn.Dense(cfg.hidden_size, kernel_init=INIT, name="transform")(hidden))
        )
        logits = attend(h)
        bias = self.param("bias", nn.initializers.zeros_init(), (cfg.vocab_size,))
        return logits + bias[None, None].astype(logits.dtype)


class BERT(nn.Module):
    """BERT: ``encoder`` (embeddings, blocks, pooler), classification ``head`` and tied ``mlm``
    head."""

    config: BERTConfig

    def setup(self):
        self.encoder = BERTEncoder(self.config)
        self.head = nn.Dense(self.config.num_classes, kernel_init=INIT)
        self.mlm = MLMHead(self.config)
        self.dropout = nn.Dropout(self.config.dropout)

    def encode(
        self,
        tokens: Int[Array, "B L"],
        train: bool = False,
        *,
        segment_ids: Int[Array, "B L"] | None = None,
    ) -> Float[Array, "B L H"]:
        """Final hidden states ``[B, L, hidden_size]``."""
        return self.encoder(tokens, train, segment_ids)

    def _classify(self, hidden: jax.Array, train: bool) -> jax.Array:
        return self.head(self.dropout(self.encoder.pool(hidden), deterministic=not train))

    def _mlm_logits(self, hidden: jax.Array) -> jax.Array:
        return self.mlm(hidden, self.encoder.attend)

    def features(
        self,
        tokens: Int[Array, "B L"],
        train: bool = False,
        *,
        segment_ids: Int[Array, "B L"] | None = None,
    ) -> Float[Array, "B H"]:
        """Pooled [CLS] features ``[B, hidden_size]``."""
        return self.encoder.pool(self.encode(tokens, train, segment_ids=segment_ids))

    def masked_lm(
        self,
        tokens: Int[Array, "B L"],
        *,
        segment_ids: Int[Array, "B L"] | None = None,
        train: bool = False,
    ) -> Float[Array, "B L V"]:
        """Masked-LM logits ``[B, L, vocab_size]``."""
        hidden = self.encode(tokens, train, segment_ids=segment_ids)
        if self.is_initializing():  # so init through this method also creates the classifier
            self._classify(hidden, train)
        return self._mlm_logits(hidden)

    def __call__(
        self,
        tokens: Int[Array, "B L"],
        train: bool = False,
        *,
        segment_ids: Int[Array, "B L"] | None = None,
    ) -> Float[Array, "B C"]:
        """Classification logits ``[B, num_classes]``."""
        hidden = self.encode(tokens, train, segment_ids=segment_ids)
        if self.is_initializing():  # so init creates the MLM head too (pretrain -> fine-tune)
            self._mlm_logits(hidden)
        return self._classify(hidden, train)


def make_config(
    *,
    input_shape: tuple[int | None],
    input_kind: str,
    num_classes: int,
    size: str = "small",
    **overrides: Any,
) -> BERTConfig:
    """``BERTConfig`` for ``(L,)`` token inputs (L may be None); ``max_length`` grows to L."""
    shape = check_input_shape(NAME, input_shape, input_kind, INPUT_RANKS, free_length=("tokens",))
    derived: dict[str, Any] = {"num_classes": num_classes}
    if size in SIZES:
        derived.update(resolve_max_length(NAME, shape[0], SIZES[size]["max_length"], overrides))
    return build_config(
        BERTConfig,
        architecture=NAME,
        sizes=SIZES,
        size=size,
        derived=derived,
        overrides=overrides,
    )


register_architecture(
    ArchitectureEntry(
        name=NAME,
        config_cls=BERTConfig,
        module_cls=BERT,
        input_kinds=tuple(INPUT_RANKS),
        sizes=SIZES,
        make_config=make_config,
        description="BERT-style post-LN encoder over token ids with pooled classifier and MLM head",
    )
)
