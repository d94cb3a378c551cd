"""Plain Flax, as a user would write it: the baseline the ml_adv training core must not lose to.

The five model families written straightforwardly with stock Linen layers (``nn.Dense``,
``nn.Conv`` + ``nn.max_pool``, ``nn.RNN(nn.OptimizedLSTMCell)``,
``nn.MultiHeadDotProductAttention``, ``nn.LayerNorm``), the sizes read from the ml_adv
``ModelSpec`` so the maths and the parameter count match (checked by the harness), a
``flax.training.train_state.TrainState``, and a ``@jax.jit`` train step called once per batch
from Python: no ``lax.scan`` over steps, no buffer donation, no on-device batch gathering.
That is the Flax-examples recipe (MNIST / ImageNet / WMT), so the gap to it is what a user
gains from the library.

``dtype`` is the computation dtype (``jnp.bfloat16`` for mixed precision: float32 params,
bf16 matmuls), the usual Linen idiom. GELU is the exact (erf) one, as in ml_adv and PyTorch.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

gelu = functools.partial(nn.gelu, approximate=False)
_ACT = {"relu": nn.relu, "gelu": gelu, "tanh": jnp.tanh, "silu": nn.silu, "elu": nn.elu}


class MLP(nn.Module):
    hidden: tuple[int, ...]
    num_classes: int
    act: str = "relu"
    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        x = x.reshape((x.shape[0], -1))
        for h in self.hidden:
            x = _ACT[self.act](nn.Dense(h, dtype=self.dtype)(x))
        return nn.Dense(self.num_classes, dtype=self.dtype)(x)


class CNN(nn.Module):
    convs: tuple[int, ...]
    dense: tuple[int, ...]
    num_classes: int
    kernel: int = 3
    pool: int = 2
    act: str = "relu"
    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        p = (self.pool, self.pool)
        for c in self.convs:
            x = _ACT[self.act](
                nn.Conv(c, (self.kernel, self.kernel), padding="SAME", dtype=self.dtype)(x)
            )
            x = nn.max_pool(x, p, strides=p)
        x = x.reshape((x.shape[0], -1))
        for d in self.dense:
            x = _ACT[self.act](nn.Dense(d, dtype=self.dtype)(x))
        return nn.Dense(self.num_classes, dtype=self.dtype)(x)


class LSTM(nn.Module):
    hidden: int
    num_classes: int
    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        (_, h), _ = nn.RNN(nn.OptimizedLSTMCell(self.hidden, dtype=self.dtype), return_carry=True)(
            x
        )
        return nn.Dense(self.num_classes, dtype=self.dtype)(h)


class Block(nn.Module):
    heads: int
    mlp_dim: int
    pre_norm: bool
    eps: float
    dtype: Any = None

    @nn.compact
    def __call__(self, x, mask):
        ln = functools.partial(nn.LayerNorm, epsilon=self.eps, dtype=self.dtype)
        attn = nn.MultiHeadDotProductAttention(num_heads=self.heads, dtype=self.dtype)

        def mlp(h):
            h = gelu(nn.Dense(self.mlp_dim, dtype=self.dtype)(h))
            return nn.Dense(x.shape[-1], dtype=self.dtype)(h)

        if self.pre_norm:
            h = ln()(x)
            x = x + attn(h, h, mask=mask)
            return x + mlp(ln()(x))
        x = ln()(x + attn(x, x, mask=mask))
        return ln()(x + mlp(x))


class Transformer(nn.Module):
    """Token ids -> embedding + learned positions -> pre-LN blocks -> LN -> masked mean -> head."""

    vocab: int
    max_len: int
    d: int
    heads: int
    layers: int
    mlp_dim: int
    num_classes: int
    dtype: Any = None

    @nn.compact
    def __call__(self, tokens):
        valid = tokens != 0
        h = nn.Embed(self.vocab, self.d, dtype=self.dtype)(tokens)
        h = h + nn.Embed(self.max_len, self.d, dtype=self.dtype)(jnp.arange(tokens.shape[1]))[None]
        mask = nn.make_attention_mask(valid, valid)
        for _ in range(self.layers):
            h = Block(self.heads, self.mlp_dim, True, 1e-6, self.dtype)(h, mask)
        h = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype)(h)
        m = valid[..., None].astype(h.dtype)
        pooled = (h * m).sum(1) / jnp.maximum(m.sum(1), 1)
        return nn.Dense(self.num_classes, dtype=self.dtype)(pooled)


class BERT(nn.Module):
    """Post-LN BERT classifier; the MLM head's params are created at init only (as in ml_adv)."""

    vocab: int
    max_len: int
    type_vocab: int
    d: int
    heads: int
    layers: int
    mlp_dim: int
    num_classes: int
    eps: float = 1e-12
    dtype: Any = None

    @nn.compact
    def __call__(self, tokens):
        emb = functools.partial(nn.Embed, features=self.d, dtype=self.dtype)
        h = emb(self.vocab)(tokens) + emb(self.max_len)(jnp.arange(tokens.shape[1]))[None]
        h = h + emb(self.type_vocab)(jnp.zeros_like(tokens))
        h = nn.LayerNorm(epsilon=self.eps, dtype=self.dtype)(h)
        valid = tokens != 0
        mask = nn.make_attention_mask(valid, valid)
        for _ in range(self.layers):
            h = Block(self.heads, self.mlp_dim, False, self.eps, self.dtype)(h, mask)
        if self.is_initializing():  # MLM head: same parameters as ml_adv's BERT, unused here
            nn.LayerNorm(epsilon=self.eps, name="mlm_ln")(nn.Dense(self.d, name="mlm_transform")(h))
            self.param("mlm_bias", nn.initializers.zeros_init(), (self.vocab,))
        pooled = jnp.tanh(nn.Dense(self.d, dtype=self.dtype, name="pooler")(h[:, 0]))
        return nn.Dense(self.num_classes, dtype=self.dtype, name="classifier")(pooled)


def build(spec, dtype=None) -> nn.Module:
    """The plain-Flax twin of an ml_adv ``ModelSpec`` (token inputs for transformer/BERT)."""
    c, arch = spec.config, spec.architecture
    if arch == "mlp":
        return MLP(tuple(c.hidden_sizes), c.num_classes, c.activation, dtype)
    if arch == "cnn":
        return CNN(
            tuple(c.conv_features), tuple(c.dense_features), c.num_classes,
            c.kernel_size, c.pool_size, c.activation, dtype,
        )  # fmt: skip
    if arch == "lstm":
        if c.num_layers != 1 or c.bidirectional or c.pooling != "last":
            raise ValueError(
                "lstm: the plain-Flax twin covers 1 layer, unidirectional, last-state pooling"
            )
        return LSTM(c.hidden_size, c.num_classes, dtype)
    if arch == "transformer":
        if c.input_kind != "tokens" or c.pooling != "mean":
            raise ValueError(
                "transformer: the plain-Flax twin covers token inputs with mean pooling"
            )
        return Transformer(c.vocab_size, c.max_length, c.d_model, c.num_heads, c.num_layers,
                           c.mlp_dim, c.num_classes, dtype)  # fmt: skip
    if arch == "bert":
        return BERT(c.vocab_size, c.max_length, c.type_vocab_size, c.hidden_size, c.num_heads,
                    c.num_layers, c.intermediate_size, c.num_classes, c.layer_norm_eps,
                    dtype)  # fmt: skip
    raise ValueError(f"architecture: no plain-Flax twin for {arch!r}")


def create_state(model: nn.Module, example_x, tx: optax.GradientTransformation, seed: int = 0):
    """``flax.training.train_state.TrainState`` with freshly initialised params."""
    params = model.init(jax.random.key(seed), example_x)["params"]
    return train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)


@jax.jit
def train_step(state: train_state.TrainState, x, y):
    """One Adam(W) step on softmax cross-entropy; the textbook Flax train step."""

    def loss_fn(params):
        logits = state.apply_fn({"params": params}, x).astype(jnp.float32)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grads), loss
