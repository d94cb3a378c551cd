"""Model FLOP utilisation: the encoder train steps as a fraction of this machine's matmul peak.

Peak: a square matmul measured in the same run (float32 2048x2048 on CPU: ``jnp.dot``, NumPy
and PyTorch, MFU taken against the fastest of the three; bfloat16 8192x8192
``jnp.dot`` and ``torch.matmul`` on CUDA under ``--dtype bf16`` / on GPU), 2*n^3 FLOPs per
product. ``benchmarks/gpu_check.py`` reuses ``matmul_peak`` and ``mfu_row`` for the medium and
large encoders. On an H100/H200 the
nominal dense bf16 peak (989 TFLOP/s) is reported too.

Train-step FLOPs are counted analytically, forward + backward = 3 x forward (the backward
pass does two matmuls per forward matmul: input and weight gradients), matmuls only (the
PaLM / MaxText convention; softmax, LayerNorm, GELU, embeddings gathers and the optimizer
are not counted)::

    T          = batch * seq                      tokens per step
    P_block    = 4 d^2 + 2 d ffn                  q, k, v, out projections + the MLP (per layer)
    forward    = 2 T layers P_block               token-wise matmuls
               + 4 batch layers seq^2 d           attention scores QK^T and context AV
               + 2 batch P_head                   per-sequence head (transformer: d*C;
                                                  BERT: pooler d*d + classifier d*C)
    train_step = 3 * forward  (= 6 P T + 12 layers seq d T + 6 batch P_head)

The achieved rate of each contender is ``train_step / (median seconds per step)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.harness import Context, make_row, register, simple_row
from benchmarks.workloads import WORKLOADS

NOMINAL_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0}  # dense, SXM, NVIDIA datasheets


def encoder_train_flops(
    *, batch: int, seq: int, d: int, layers: int, ffn: int, head_params: int
) -> int:
    """Forward + backward matmul FLOPs of one encoder-classifier train step (see module doc)."""
    tokens = batch * seq
    forward = 2 * tokens * layers * (4 * d * d + 2 * d * ffn) + 4 * batch * layers * seq * seq * d
    forward += 2 * batch * head_params
    return 3 * forward


def workload_flops(name: str) -> int:
    """Train-step FLOPs of ``throughput/<name>`` from its ml_adv config."""
    wl = WORKLOADS[name]
    c = wl.spec().config
    seq, batch = wl.input_shape[0], wl.batch
    if wl.arch == "transformer":
        return encoder_train_flops(batch=batch, seq=seq, d=c.d_model, layers=c.num_layers,
                                   ffn=c.mlp_dim,
                                   head_params=c.d_model * c.num_classes)  # fmt: skip
    if wl.arch == "bert":
        d = c.hidden_size
        return encoder_train_flops(batch=batch, seq=seq, d=d, layers=c.num_layers,
                                   ffn=c.intermediate_size,
                                   head_params=d * d + d * c.num_classes)  # fmt: skip
    raise ValueError(f"no FLOP formula for {name!r}")


def _torch_matmul(torch, device: str, dtype: str, a, b, reps: int):
    """``reps`` products on ``device`` (waiting for the device at the end)."""
    dev = torch.device(device)
    tdtype = torch.bfloat16 if dtype == "bf16" else torch.float32
    at = torch.from_numpy(np.asarray(a, np.float32)).to(dev, tdtype)
    bt = torch.from_numpy(np.asarray(b, np.float32)).to(dev, tdtype)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def run():
        out = [at @ bt for _ in range(reps)]
        sync()
        return out

    return run


def _matmul_fns(ctx: Context, n: int, reps: int) -> dict:
    dtype = jnp.bfloat16 if ctx.dtype == "bf16" else jnp.float32
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    b = jax.random.normal(jax.random.key(1), (n, n), dtype)
    dot = jax.jit(jnp.dot)
    fns = {"jnp.dot": lambda: [dot(a, b).block_until_ready() for _ in range(reps)]}
    if ctx.dtype == "f32" and ctx.device == "cpu":
        an, bn = np.array(a), np.array(b)  # writable host copies
        fns["numpy"] = lambda: [an @ bn for _ in range(reps)]
    if ctx.torch is not None:  # the PyTorch peers' device and dtype (CUDA in a GPU run)
        fns["torch"] = _torch_matmul(ctx.torch, ctx.torch_device, ctx.dtype, a, b, reps)
    return fns


def matmul_peak(ctx: Context, *, n: int | None = None, reps: int | None = None) -> list[dict]:
    """The ``mfu/matmul-peak`` row: an ``n``-square matmul in the run's dtype, per library."""
    on_gpu = jax.default_backend() == "gpu"
    n = n or (8192 if on_gpu else 2048)
    reps = reps or (20 if on_gpu else (1 if ctx.quick else 2))
    fns = _matmul_fns(ctx, n, reps)
    ctx.log(f"  matmul peak: {n}x{n} {ctx.dtype}, {reps} products per round")
    timing = ctx.time(fns)
    kind = jax.devices()[0].device_kind
    nominal = next((v for k, v in NOMINAL_BF16_TFLOPS.items() if k in kind), None)
    row = make_row(
        "mfu/matmul-peak", "mfu-peak", f"{n}x{n} matmul {ctx.dtype}", timing, rounds=ctx.rounds,
        work_per_round=2 * n**3 * reps / 1e9, unit="GFLOP/s", subject="jnp.dot",
        peers=tuple(k for k in fns if k != "jnp.dot"),
        extra={"n": n, "dtype": ctx.dtype, "device_kind": kind, "torch_device": ctx.torch_device,
               "nominal_bf16_tflops": nominal if ctx.dtype == "bf16" else None},
    )  # fmt: skip
    return [row]


register("mfu/matmul-peak", group="mfu-peak")(lambda ctx: matmul_peak(ctx))


def mfu_row(ctx: Context, name: str, workload: str, tput: dict, peak_row: dict, title: str) -> dict:
    """``tput`` (a throughput row of ``workload``) as a percentage of ``peak_row``'s peak."""
    # The machine's peak is the best any library reached in this run: jnp.dot on device 0
    # came out below NumPy's in one 2026-12-01 run (131 against 191 GFLOP/s), which made a
    # step sharded over both cores read as over 100% of "peak".
    peak = max(c["value"] for c in peak_row["contenders"].values())  # GFLOP/s
    nominal = peak_row["extra"].get("nominal_bf16_tflops")
    flops = workload_flops(workload)
    batch = WORKLOADS[workload].batch
    values, achieved, vs_nominal = {}, {}, {}
    for cname, c in tput["contenders"].items():
        gflops = flops * c["value"] / batch / 1e9  # value is samples/s
        achieved[cname] = gflops
        values[cname] = 100.0 * gflops / peak
        if nominal:
            vs_nominal[cname] = 100.0 * gflops / (nominal * 1e3)
    return simple_row(
        name, "mfu", title, values, unit="% of matmul peak", higher_is_better=True,
        ratios=dict(tput["ratios"]),
        extra={"flops_per_step": flops, "peak_gflops": peak,
               "peak_dtype": peak_row["extra"].get("dtype"), "achieved_gflops": achieved,
               "percent_of_nominal_peak": vs_nominal or None, "throughput_row": tput["name"],
               "workload": workload, "formula": "see benchmarks/mfu.py"},
    )  # fmt: skip


def _mfu_row(ctx: Context, arch: str) -> list[dict]:
    name = f"{arch}/medium"
    tput, peak = ctx.need(f"throughput/{name}"), ctx.need("mfu/matmul-peak")
    return [mfu_row(ctx, f"mfu/{arch}", name, tput, peak, f"{arch} medium train step")]


register("mfu/transformer", group="mfu")(lambda ctx: _mfu_row(ctx, "transformer"))
register("mfu/bert", group="mfu")(lambda ctx: _mfu_row(ctx, "bert"))
