"""Conv training speed on CPU: XLA autodiff vs ml_adv.kernels.conv vs PyTorch eager.

Run:  python -m benchmarks.conv_bench [--reps 15] [--inner 5] [--torch-threads N]
      [--json PATH] [--skip-cnn] [--skip-layers]

Two sections, each timing its variants side by side in one process: every
variant is compiled and warmed up first, then the repeats alternate between
variants (so load from other processes on a shared machine hits all of them
alike), and the median of the repeats is reported (the best repeat too).

1. Conv layers, forward + backward (y, dL/dx, dL/dW, float32, NHWC for JAX,
   NCHW for PyTorch) on the reference CNN shapes (batch 128: 28x28x1->32 and
   14x14x32->64) and the digits shapes (batch 64: 8x8x1->32, 4x4x32->64), 3x3
   SAME: plain autodiff of ``lax.conv_general_dilated``; ``conv2d`` with the
   matmul weight gradient (``impl="matmul_grad"``, what ``"auto"`` picks on
   CPU; its weight gradient is one matmul per kernel row, or one batch-as-channels
   conv for small stride-1 cases), plus each weight-gradient formulation on its
   own (row matmuls, the conv, one matmul per offset, one im2col matmul) so the
   choice can be re-checked on another machine; PyTorch
   ``F.conv2d`` + ``backward``. GFLOP/s counts 3 x the forward FLOPs.
2. A whole CNN train step (conv32-relu-pool-conv64-relu-pool-dense128-dense10,
   28x28x1, batch 128, Adam 1e-3, softmax cross-entropy): Flax with
   ``nn.Conv``, Flax with ``ml_adv`` ``Conv``, PyTorch eager; plus, for
   diagnosis, both Flax variants with the 2x2 max-pool written as a reshape +
   max instead of ``nn.max_pool`` (whose ``reduce_window`` gradient dominates
   the step on XLA:CPU), and one with only the thin first conv on the matmul
   gradient (``impl="xla"`` on conv2). samples/s and ratio vs PyTorch.

PyTorch is optional (``pip install torch==2.13.0``, the ``bench`` extra); it is
imported only here and skipped with a note when missing.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import time
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from ml_adv.kernels.conv import Conv, conv2d

LAYER_SHAPES = [
    # (name, N, H, W, Cin, Cout)
    ("cnn conv1", 128, 28, 28, 1, 32),
    ("cnn conv2", 128, 14, 14, 32, 64),
    ("digits conv1", 64, 8, 8, 1, 32),
    ("digits conv2", 64, 4, 4, 32, 64),
    ("rgb conv1", 128, 32, 32, 3, 32),  # CIFAR-like thin RGB input, for reference
]
DN = ("NHWC", "HWIO", "NHWC")


def _try_torch(threads: int):
    try:
        import torch
    except ImportError:
        print("PyTorch not installed: `pip install torch==2.13.0` to compare (skipped).")
        return None
    torch.set_num_threads(threads)
    return torch


def _time_alternating(
    fns: dict[str, Callable[[], object]], reps: int, inner: int, warmup: int = 3
) -> dict[str, dict[str, float]]:
    """Median/min seconds per call; each fn must block until its result is ready."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            times[name].append((time.perf_counter() - t0) / inner)
    return {
        k: {"median_s": float(np.median(v)), "min_s": float(np.min(v))} for k, v in times.items()
    }


# --------------------------------------------------------------------------- layers


def _jax_layer_fns(x, w, dy) -> dict[str, Callable[[], object]]:
    def vjp_of(f):
        def run(x, w, dy):
            y, pull = jax.vjp(f, x, w)
            return (y, *pull(dy))

        return jax.jit(run)

    def ours(method):
        return vjp_of(lambda x, w: conv2d(x, w, impl="matmul_grad", _wgrad=method))

    variants = {
        "xla autodiff": vjp_of(
            lambda x, w: lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=DN)
        ),
        "ml_adv conv2d": ours("auto"),
        "  wgrad=row": ours("row"),
        "  wgrad=conv": ours("conv"),
        "  wgrad=offset": ours("offset"),
        "  wgrad=im2col": ours("im2col"),
    }
    return {k: (lambda f=f: jax.block_until_ready(f(x, w, dy))) for k, f in variants.items()}


def _torch_layer_fn(torch, x, w, dy):
    tx = torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2)))).requires_grad_()
    tw = torch.from_numpy(np.ascontiguousarray(np.transpose(w, (3, 2, 0, 1)))).requires_grad_()
    tdy = torch.from_numpy(np.ascontiguousarray(np.transpose(dy, (0, 3, 1, 2))))
    pad = w.shape[0] // 2

    def run():
        tx.grad = None
        tw.grad = None
        y = torch.nn.functional.conv2d(tx, tw, padding=pad)
        y.backward(tdy)
        return y

    return run


def bench_layers(torch, reps: int, inner: int) -> list[dict]:
    rows = []
    rng = np.random.default_rng(0)
    for name, n, h, w_, cin, cout in LAYER_SHAPES:
        x = rng.standard_normal((n, h, w_, cin), dtype=np.float32)
        w = rng.standard_normal((3, 3, cin, cout), dtype=np.float32) * 0.1
        dy = rng.standard_normal((n, h, w_, cout), dtype=np.float32)
        fns = _jax_layer_fns(jnp.asarray(x), jnp.asarray(w), jnp.asarray(dy))
        if torch is not None:
            fns["pytorch"] = _torch_layer_fn(torch, x, w, dy)
        res = _time_alternating(fns, reps, inner)
        flops = 3 * 2 * n * h * w_ * 9 * cin * cout
        ref = res.get("pytorch", {}).get("median_s")
        for k, r in res.items():
            rows.append(
                {
                    "shape": f"{name} {n}x{h}x{w_}x{cin}->{cout}",
                    "variant": k,
                    "ms": r["median_s"] * 1e3,
                    "gflops": flops / r["median_s"] / 1e9,
                    "gflops_best": flops / r["min_s"] / 1e9,
                    "vs_pytorch": (ref / r["median_s"]) if ref else None,
                    "vs_xla": res["xla autodiff"]["median_s"] / r["median_s"],
                }
            )
    return rows


# --------------------------------------------------------------------------- CNN


def _pool_reduce_window(x):
    return nn.max_pool(x, (2, 2), (2, 2))


def _pool_reshape(x):
    # Same values as nn.max_pool 2x2/2 (even sizes); its gradient is a fused
    # compare/select instead of reduce_window's select-and-scatter.
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def _flax_cnn(conv1, conv2, pool):
    class CNN(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = pool(nn.relu(conv1(features=32, kernel_size=(3, 3))(x)))
            x = pool(nn.relu(conv2(features=64, kernel_size=(3, 3))(x)))
            x = x.reshape(x.shape[0], -1)
            x = nn.relu(nn.Dense(128)(x))
            return nn.Dense(10)(x)

    return CNN()


def _flax_step_fn(model, x, y):
    tx = optax.adam(1e-3)
    params = model.init(jax.random.key(0), x)
    state = [params, tx.init(params)]

    @jax.jit
    def step(params, opt_state, x, y):
        def loss_fn(p):
            logits = model.apply(p, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    def run():
        state[0], state[1], loss = step(state[0], state[1], x, y)
        return loss.block_until_ready()

    return run


def _torch_step_fn(torch, x, y):
    torch.manual_seed(0)
    tnn = torch.nn
    model = tnn.Sequential(
        tnn.Conv2d(1, 32, 3, padding=1), tnn.ReLU(), tnn.MaxPool2d(2),
        tnn.Conv2d(32, 64, 3, padding=1), tnn.ReLU(), tnn.MaxPool2d(2),
        tnn.Flatten(), tnn.Linear(64 * 7 * 7, 128), tnn.ReLU(), tnn.Linear(128, 10),
    )  # fmt: skip
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    tx = torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))
    ty = torch.from_numpy(y.astype(np.int64))

    def run():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(tx), ty)
        loss.backward()
        opt.step()
        return loss

    return run


def bench_cnn(torch, reps: int, inner: int, batch: int = 128) -> list[dict]:
    rng = np.random.default_rng(0)
    x = rng.random((batch, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    xj, yj = jnp.asarray(x), jnp.asarray(y)
    xla_conv = functools.partial(Conv, impl="xla")
    models = {
        "flax nn.Conv": (nn.Conv, nn.Conv, _pool_reduce_window),
        "flax ml_adv Conv": (Conv, Conv, _pool_reduce_window),
        "flax nn.Conv + reshape pool": (nn.Conv, nn.Conv, _pool_reshape),
        "flax ml_adv Conv + reshape pool": (Conv, Conv, _pool_reshape),
        "  same, conv2 impl=xla": (Conv, xla_conv, _pool_reshape),
    }
    fns = {k: _flax_step_fn(_flax_cnn(*v), xj, yj) for k, v in models.items()}
    if torch is not None:
        fns["pytorch eager"] = _torch_step_fn(torch, x, y)
    res = _time_alternating(fns, reps, inner)
    ref = res.get("pytorch eager", {}).get("median_s")
    return [
        {
            "variant": k,
            "ms": r["median_s"] * 1e3,
            "samples_per_s": batch / r["median_s"],
            "samples_per_s_best": batch / r["min_s"],
            "vs_pytorch": (ref / r["median_s"]) if ref else None,
            "vs_flax_nn_conv": res["flax nn.Conv"]["median_s"] / r["median_s"],
        }
        for k, r in res.items()
    ]


# --------------------------------------------------------------------------- main


def _fmt(v, spec):
    return "-" if v is None else format(v, spec)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=15, help="alternating repeats (median taken)")
    ap.add_argument("--inner", type=int, default=5, help="calls per timed repeat")
    ap.add_argument("--torch-threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--skip-layers", action="store_true")
    ap.add_argument("--skip-cnn", action="store_true")
    args = ap.parse_args(argv)

    torch = _try_torch(args.torch_threads)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    env = {
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "torch": getattr(torch, "__version__", None),
        "torch_threads": args.torch_threads if torch is not None else None,
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "loadavg_at_start": load,
        "reps": args.reps,
        "inner": args.inner,
    }
    print("env:", json.dumps(env))
    out: dict = {"env": env}

    if not args.skip_layers:
        rows = bench_layers(torch, args.reps, args.inner)
        out["layers"] = rows
        print("\nConv forward+backward (y, dx, dW), float32, median of alternating repeats")
        print(
            f"{'shape':34s} {'variant':16s} {'ms':>8s} {'GFLOP/s':>8s} {'best':>7s} "
            f"{'vs torch':>8s} {'vs xla':>7s}"
        )
        for r in rows:
            print(
                f"{r['shape']:34s} {r['variant']:16s} {r['ms']:8.3f} {r['gflops']:8.1f} "
                f"{r['gflops_best']:7.1f} {_fmt(r['vs_pytorch'], '8.2f')} {r['vs_xla']:7.2f}"
            )

    if not args.skip_cnn:
        rows = bench_cnn(torch, args.reps, args.inner)
        out["cnn"] = rows
        print("\nCNN train step (batch 128, 28x28x1, Adam), median of alternating repeats")
        print(
            f"{'variant':32s} {'ms':>8s} {'samples/s':>10s} {'best':>8s} "
            f"{'vs torch':>8s} {'vs nn.Conv':>10s}"
        )
        for r in rows:
            print(
                f"{r['variant']:32s} {r['ms']:8.2f} {r['samples_per_s']:10.0f} "
                f"{r['samples_per_s_best']:8.0f} {_fmt(r['vs_pytorch'], '8.2f')} "
                f"{r['vs_flax_nn_conv']:10.2f}"
            )
    if load is not None and hasattr(os, "getloadavg"):
        out["env"]["loadavg_at_end"] = os.getloadavg()
        print(
            "\nload average start/end:",
            load,
            out["env"]["loadavg_at_end"],
            f"on {os.cpu_count()} CPUs (timings are noisy when it exceeds the CPU count)",
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
