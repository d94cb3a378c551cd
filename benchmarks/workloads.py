"""The train-step workloads: one model, input shape, batch and optimizer per (architecture, size).

Sizes:
  * ``digits``: ml_adv's "small" configs on the shapes of the built-in digits views
    (image 8x8x1, flat 64, sequence 8 steps x 8, 65 tokens of a 21-id vocabulary), batch 32:
    the sizes the examples and tests train, where per-step overhead dominates.
  * ``medium``: the REFERENCE.md shapes (CNN conv32-pool-conv64-pool-dense128-dense10 on
    28x28x1, batch 128; LSTM 256 hidden, 128 inputs, 64 steps, batch 64; Transformer 4 layers
    d=256 4 heads ffn 1024, 128 tokens, batch 32; BERT with the same encoder; MLP 784-512-256-10,
    batch 128), where the kernels dominate.
  * ``tiny``: ml_adv's "tiny" configs on toy shapes, only for smoke tests and for dry runs of
    the GPU path on a CPU; never in the default or quick selections.
  * ``large``: a GPU-sized encoder for the Transformer and BERT (12 layers, d_model 1024,
    16 heads, ffn 4096, 512 tokens of a 32,000-id vocabulary, batch 32; ~150M encoder
    parameters, ~16 TFLOP per train step), trained in bf16 by ``benchmarks/gpu_check.py``:
    the medium encoders are far too small to fill a GPU, so their MFU says little there.
    Never in the default or quick selections (a CPU step would take minutes).

Data is synthetic (uniform features, token ids in ``[1, vocab)`` so no position is padding):
speed does not depend on the values, and every contender trains on the same host arrays.
Dropout is 0 everywhere (attention dropout too), so ml_adv, plain Flax and PyTorch compute
the same maths. Adam(1e-3) for MLP/CNN/LSTM, AdamW(1e-3, weight decay 0.01) for the
encoders, eps 1e-8 in both frameworks.

``steps`` is the number of train steps in one timed round (full mode) and ``quick_steps`` in
``--quick``; both were sized on the 2-core reference machine so a round of the slowest
contender takes roughly 0.2-1.5 s: long enough to dwarf timer and scheduler noise and for
the load monitor's 10 ms ticks (harness.py), short enough to alternate contenders many times.
A round is one epoch, so ``steps`` is also the epoch length of the scanned contender, and
per-epoch costs are charged to that many steps. The largest is that XLA:CPU maps and
page-faults each execution's scratch buffer afresh (596 MB and ~130 ms for the medium
transformer, ~58 MB and ~13 ms for the medium CNN and LSTM: ``benchmarks/README.md``),
which a scanned epoch pays once per epoch and a per-step loop once per step. A real epoch is
hundreds of steps (MNIST at batch 128: 469), so the medium rows run the longest epochs the
time budget allows: 16 steps for the CNN and LSTM (4-step epochs cost them 14% and 8% per
step), 4 for the encoders, whose steps take ~0.3 s.

``--quick`` runs the same epochs as the full mode (fewer rounds and rows, not shorter
rounds), so a quick row's per-step ratio predicts the full row's. Until 2026-11-30 it ran
half-length epochs (the encoders 2 steps), which charged the per-execution cost above to
half as many steps and understated the scanned core in quick rows.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

ARCHS = ("mlp", "cnn", "lstm", "transformer", "bert")
SIZES = ("digits", "medium", "tiny", "large")
GPU_ONLY_SIZES = ("large",)  # never selected by default: far too big for a CPU step


@dataclasses.dataclass(frozen=True)
class Workload:
    arch: str
    size: str
    ml_adv_size: str
    input_dim: int
    input_shape: tuple[int, ...]
    input_kind: str
    batch: int
    steps: int
    quick_steps: int
    optimizer: str = "adam"
    weight_decay: float = 0.0
    num_classes: int = 10
    overrides: tuple[tuple[str, Any], ...] = ()
    description: str = ""

    @property
    def name(self) -> str:
        return f"{self.arch}/{self.size}"

    @property
    def example_bytes(self) -> int:
        """Bytes of one example (float32 features or int32 tokens) plus its int32 label."""
        return 4 * math.prod(self.input_shape) + 4

    @property
    def vocab(self) -> int:
        return self.input_dim if self.input_kind == "tokens" else 0

    def spec(self):
        """The ml_adv ``ModelSpec`` (dropout off) built through the public facade."""
        from ml_adv.models import AdvancedModelArchitecture

        overrides = dict(self.overrides)
        overrides["dropout"] = 0.0
        if self.arch in ("transformer", "bert"):
            overrides["attention_dropout"] = 0.0
        arch = AdvancedModelArchitecture(self.arch, size=self.ml_adv_size, **overrides)
        return arch.design_architecture(
            self.input_dim,
            self.num_classes,
            input_shape=self.input_shape,
            input_kind=self.input_kind,
        )

    def data(self, num_examples: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Synthetic ``(x, y)`` host arrays: ``x`` float32 in [0, 1) or int32 token ids."""
        rng = np.random.default_rng(seed)
        shape = (num_examples, *self.input_shape)
        if self.input_kind == "tokens":
            x = rng.integers(1, self.vocab, shape, dtype=np.int32)
        else:
            x = rng.random(shape, dtype=np.float32)
        y = rng.integers(0, self.num_classes, num_examples, dtype=np.int32)
        return x, y


_ENCODER = dict(optimizer="adamw", weight_decay=0.01)
_MEDIUM_ENCODER = (("num_heads", 4), ("num_layers", 4), ("max_length", 128))
_LARGE_ENCODER = (("num_heads", 16), ("num_layers", 12), ("max_length", 512))
_LARGE_DESCRIPTION = "512 tokens (vocab 32000), d1024 12 layers 16 heads ffn 4096, batch 32"

WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in [
        # ---- digits shapes, ml_adv "small" configs
        Workload("mlp", "digits", "small", 64, (64,), "features", 32, 2000, 2000,
                 description="64-128-64-10, batch 32"),
        Workload("cnn", "digits", "small", 8, (8, 8, 1), "image", 32, 300, 300,
                 description="8x8x1 conv32-pool-conv64-pool-dense128, batch 32"),
        Workload("lstm", "digits", "small", 8, (8, 8), "sequence", 32, 400, 400,
                 description="8 steps x 8, hidden 64, batch 32"),
        Workload("transformer", "digits", "small", 21, (65,), "tokens", 32, 12, 12, **_ENCODER,
                 description="65 tokens (vocab 21), d64 2 layers 4 heads ffn 128, batch 32"),
        Workload("bert", "digits", "small", 21, (65,), "tokens", 32, 6, 6, **_ENCODER,
                 description="65 tokens (vocab 21), d128 2 layers 2 heads ffn 512, batch 32"),
        # ---- medium: the REFERENCE.md shapes
        Workload("mlp", "medium", "base", 784, (784,), "features", 128, 200, 200,
                 description="784-512-256-10, batch 128"),
        Workload("cnn", "medium", "base", 28, (28, 28, 1), "image", 128, 16, 16,
                 description="28x28x1 conv32-pool-conv64-pool-dense128, batch 128"),
        Workload("lstm", "medium", "base", 128, (64, 128), "sequence", 64, 16, 16,
                 description="64 steps x 128, hidden 256, batch 64"),
        Workload("transformer", "medium", "base", 1000, (128,), "tokens", 32, 4, 4, **_ENCODER,
                 description="128 tokens (vocab 1000), d256 4 layers 4 heads ffn 1024, batch 32"),
        Workload("bert", "medium", "small", 1000, (128,), "tokens", 32, 4, 4, **_ENCODER,
                 overrides=(("hidden_size", 256), ("intermediate_size", 1024), *_MEDIUM_ENCODER),
                 description="128 tokens (vocab 1000), d256 4 layers 4 heads ffn 1024, batch 32"),
        # ---- large: GPU-sized encoders (gpu_check.py, bf16); steps per round sized for a GPU
        Workload("transformer", "large", "base", 32000, (512,), "tokens", 32, 10, 10, **_ENCODER,
                 overrides=(("d_model", 1024), ("mlp_dim", 4096), *_LARGE_ENCODER),
                 description=_LARGE_DESCRIPTION),
        Workload("bert", "large", "base", 32000, (512,), "tokens", 32, 10, 10, **_ENCODER,
                 overrides=(("hidden_size", 1024), ("intermediate_size", 4096), *_LARGE_ENCODER),
                 description=_LARGE_DESCRIPTION),
        # ---- tiny: smoke tests and CPU dry runs of the GPU path
        Workload("mlp", "tiny", "tiny", 16, (16,), "features", 8, 4, 2,
                 description="16-16-10, batch 8"),
        Workload("cnn", "tiny", "tiny", 8, (8, 8, 1), "image", 8, 4, 2,
                 description="8x8x1 conv4-conv8"),
        Workload("lstm", "tiny", "tiny", 4, (4, 4), "sequence", 8, 4, 2, description="4 steps x 4"),
        Workload("transformer", "tiny", "tiny", 16, (8,), "tokens", 8, 4, 2, **_ENCODER,
                 description="8 tokens, d16"),
        Workload("bert", "tiny", "tiny", 16, (8,), "tokens", 8, 4, 2, **_ENCODER,
                 description="8 tokens, d16"),
    ]
}  # fmt: skip
