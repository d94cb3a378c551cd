"""PyTorch eager twins of the five ml_adv model families, built from an ml_adv ``ModelSpec``.

Why build from the spec: the peer must do exactly the maths of the ml_adv model it is
compared with (same layer sizes, activations, pooling, LayerNorm placement and epsilon,
GELU flavour, heads, padding mask), so every size is read from ``spec.config`` rather than
restated here. ``count_trainable`` must equal ``ml_adv.models.count_params(spec)``; the
harness asserts it for every row.

Deliberate choices, each so that the parameter count and the maths match ml_adv:

* CNN: NCHW (PyTorch's native layout; the harness transposes the data once), ``padding=
  "same"``, ``MaxPool2d(pool)`` (VALID, like ml_adv's reshape max-pool).
* LSTM: ``nn.LSTM`` carries two bias vectors (``b_ih`` and ``b_hh``) where Flax's
  ``OptimizedLSTMCell`` has one; ``b_ih`` is zeroed and frozen, so the sum is the one bias.
  Under ``torch.autocast`` it runs as autocast has it on CUDA; on a CPU, where oneDNN has no
  bf16 LSTM on most chips, the recurrence stays float32 (the GPU check's dry run only).
* Transformer (pre-LN) and BERT (post-LN): ``nn.TransformerEncoderLayer`` (what a PyTorch
  user writes; its packed ``in_proj`` has the parameters of Flax's separate q/k/v
  projections), exact GELU, the padding mask (token id 0) passed as
  ``src_key_padding_mask``. BERT keeps its masked-LM head parameters (transform, LayerNorm,
  output bias) so the counts match; the classification step does not use them.
"""

from __future__ import annotations

import math

import torch
from torch import nn

PAD_ID = 0  # ml_adv.models.layers.PAD_ID


def count_trainable(model: nn.Module) -> int:
    """Number of trainable parameters (frozen ones, like the LSTM's zero ``b_ih``, excluded)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _activation(name: str) -> nn.Module:
    table = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU, "elu": nn.ELU}
    if name not in table:
        raise ValueError(
            f"activation: no PyTorch twin for {name!r}; expected one of {sorted(table)}"
        )
    return table[name]()


def _encoder_activation(name: str) -> str:
    if name not in ("gelu", "relu"):
        raise ValueError(
            f"activation: TransformerEncoderLayer supports 'gelu'/'relu', got {name!r}"
        )
    return name  # "gelu" is the exact erf GELU, like ml_adv's "gelu"


class MLP(nn.Module):
    def __init__(self, cfg, in_features: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in cfg.hidden_sizes:
            layers += [nn.Linear(width, h), _activation(cfg.activation)]
            width = h
        layers.append(nn.Linear(width, cfg.num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class CNN(nn.Module):
    """Input NCHW; conv(same) -> act -> maxpool per stage, flatten, dense layers, head."""

    def __init__(self, cfg, input_shape: tuple[int, int, int]):
        super().__init__()
        h, w, c = input_shape
        layers: list[nn.Module] = []
        for ch in cfg.conv_features:
            layers += [
                nn.Conv2d(c, ch, cfg.kernel_size, padding="same"),
                _activation(cfg.activation),
                nn.MaxPool2d(cfg.pool_size),
            ]
            c, h, w = ch, h // cfg.pool_size, w // cfg.pool_size
        layers.append(nn.Flatten())
        width = c * h * w
        for d in cfg.dense_features:
            layers += [nn.Linear(width, d), _activation(cfg.activation)]
            width = d
        layers.append(nn.Linear(width, cfg.num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class LSTM(nn.Module):
    def __init__(self, cfg, in_features: int):
        super().__init__()
        self.cfg = cfg
        self.lstm = nn.LSTM(
            in_features,
            cfg.hidden_size,
            num_layers=cfg.num_layers,
            batch_first=True,
            bidirectional=cfg.bidirectional,
            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
        )
        for name, p in self.lstm.named_parameters():
            if name.startswith("bias_ih"):  # Flax's cell has one bias per gate, not two
                p.data.zero_()
                p.requires_grad_(False)
        directions = 2 if cfg.bidirectional else 1
        self.head = nn.Linear(cfg.hidden_size * directions, cfg.num_classes)

    def forward(self, x):
        if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            # oneDNN has no bf16 LSTM primitive on CPUs without AVX512-BF16 ("could not create
            # a primitive descriptor"): a CPU dry run keeps the recurrence in float32.
            with torch.autocast("cpu", enabled=False):
                out, (h_n, _) = self.lstm(x.float())
        else:
            out, (h_n, _) = self.lstm(x)
        if self.cfg.pooling == "mean":
            pooled = out.mean(dim=1)
        elif self.cfg.bidirectional:  # forward state after the last step, backward after the first
            pooled = torch.cat([h_n[-2], h_n[-1]], dim=-1)
        else:
            pooled = h_n[-1]
        return self.head(pooled)


def _masked_mean(h, valid):
    if valid is None:
        return h.mean(dim=1)
    m = valid.to(h.dtype).unsqueeze(-1)
    return (h * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)


class Transformer(nn.Module):
    """Pre-LN encoder classifier: embed/project + learned positions, blocks, final LN, pool."""

    def __init__(self, cfg, input_shape):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        if cfg.input_kind == "tokens":
            self.embed = nn.Embedding(cfg.vocab_size, d)
        else:
            self.embed = nn.Linear(input_shape[-1], d)
        use_cls = cfg.pooling == "cls"
        self.cls = nn.Parameter(torch.zeros(1, 1, d)) if use_cls else None
        self.pos = nn.Embedding(cfg.max_length + int(use_cls), d)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(
                d, cfg.num_heads, cfg.mlp_dim, dropout=cfg.dropout,
                activation=_encoder_activation(cfg.activation), layer_norm_eps=1e-6,
                batch_first=True, norm_first=True,
            )
            for _ in range(cfg.num_layers)
        )  # fmt: skip
        self.ln_final = nn.LayerNorm(d, eps=1e-6)
        self.head = nn.Linear(d, cfg.num_classes)

    def forward(self, x):
        valid = (x != PAD_ID) if self.cfg.input_kind == "tokens" else None
        h = self.embed(x)
        if self.cls is not None:
            h = torch.cat([self.cls.expand(h.shape[0], -1, -1), h], dim=1)
            if valid is not None:
                valid = torch.cat([torch.ones_like(valid[:, :1]), valid], dim=1)
        h = h + self.pos(torch.arange(h.shape[1], device=h.device))[None]
        pad = None if valid is None else ~valid
        for block in self.blocks:
            h = block(h, src_key_padding_mask=pad)
        h = self.ln_final(h)
        pooled = h[:, 0] if self.cls is not None else _masked_mean(h, valid)
        return self.head(pooled)


class BERT(nn.Module):
    """Post-LN BERT encoder, pooled [CLS] classifier; MLM head parameters kept, unused."""

    def __init__(self, cfg):
        super().__init__()
        d, eps = cfg.hidden_size, cfg.layer_norm_eps
        self.word = nn.Embedding(cfg.vocab_size, d)
        self.position = nn.Embedding(cfg.max_length, d)
        self.token_type = nn.Embedding(cfg.type_vocab_size, d)
        self.embeddings_ln = nn.LayerNorm(d, eps=eps)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                d, cfg.num_heads, cfg.intermediate_size, dropout=cfg.dropout,
                activation=_encoder_activation(cfg.activation), layer_norm_eps=eps,
                batch_first=True, norm_first=False,
            )
            for _ in range(cfg.num_layers)
        )  # fmt: skip
        self.pooler = nn.Linear(d, d)
        self.classifier = nn.Linear(d, cfg.num_classes)
        self.mlm_transform = nn.Linear(d, d)
        self.mlm_ln = nn.LayerNorm(d, eps=eps)
        self.mlm_bias = nn.Parameter(torch.zeros(cfg.vocab_size))

    def forward(self, tokens):
        length = tokens.shape[1]
        h = self.word(tokens) + self.position(torch.arange(length, device=tokens.device))[None]
        h = h + self.token_type(torch.zeros_like(tokens))
        h = self.embeddings_ln(h)
        pad = tokens == PAD_ID
        for layer in self.layers:
            h = layer(h, src_key_padding_mask=pad)
        return self.classifier(torch.tanh(self.pooler(h[:, 0])))


def build(spec) -> nn.Module:
    """The PyTorch twin of ``spec`` (an ml_adv ``ModelSpec``), float32, in train mode, on the
    default device (move it with ``.to(device)``; positions follow the input's device)."""
    cfg, shape = spec.config, tuple(spec.input_shape)
    if spec.architecture == "mlp":
        model = MLP(cfg, math.prod(shape))
    elif spec.architecture == "cnn":
        model = CNN(cfg, shape)
    elif spec.architecture == "lstm":
        model = LSTM(cfg, shape[-1])
    elif spec.architecture == "transformer":
        model = Transformer(cfg, shape)
    elif spec.architecture == "bert":
        model = BERT(cfg)
    else:
        raise ValueError(f"architecture: no PyTorch twin for {spec.architecture!r}")
    return model.train()


def to_torch_layout(spec, x):
    """Host batch in ml_adv layout -> the layout the twin expects (NHWC -> NCHW for the CNN)."""
    if spec.architecture == "cnn":
        x = x.transpose(0, 3, 1, 2)
    t = torch.from_numpy(x.copy())
    return t.long() if spec.input_kind == "tokens" else t
