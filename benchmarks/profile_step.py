"""Where a train step's time goes: forward, backward, optimizer, for ml_adv and PyTorch.

Run:  python -m benchmarks.profile_step cnn/medium [lstm/medium ...] [--rounds 7]

For one workload (``workloads.WORKLOADS``) on one fixed batch it times, alternating like the
harness: the forward pass with the loss (``train=True``), forward + backward
(``value_and_grad``), the library's whole train step (``make_train_step``, jitted, donated)
and, for PyTorch, the same three phases (forward under autograd, ``backward()``, then
``opt.step()``). The differences give backward-only and optimizer-plus-overhead times. Use
it on the rows where ml_adv trails PyTorch to see which phase loses; for convolutions,
``python -m benchmarks.conv_bench`` splits further, layer by layer.
"""

from __future__ import annotations

import argparse
import os

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.harness import time_rounds
from benchmarks.workloads import WORKLOADS, Workload


def jax_phases(wl: Workload, x: np.ndarray, y: np.ndarray) -> dict:
    from ml_adv.training import TrainConfig, build_optimizer, create_train_state, make_train_step
    from ml_adv.training.losses import resolve_loss
    from ml_adv.training.setup import default_objective

    module = wl.spec().build()
    config = TrainConfig(optimizer=wl.optimizer, weight_decay=wl.weight_decay, batch_size=wl.batch)
    tx = build_optimizer(config, 1000)
    key = jax.random.PRNGKey(0)
    state = create_train_state(module, x[:1], tx, init_key=key, rng=jnp.copy(key))
    batch = {"x": jnp.asarray(x), "y": jnp.asarray(y)}
    loss_fn = resolve_loss(config)

    def loss(params):
        logits = module.apply({"params": params}, batch["x"], train=True, rngs={"dropout": key})
        return jnp.mean(loss_fn(logits.astype(jnp.float32), batch["y"]))

    fwd = jax.jit(loss)
    grad = jax.jit(jax.value_and_grad(loss))
    step = jax.jit(make_train_step(default_objective(module, config)), donate_argnums=0)
    holder = {
        "state": create_train_state(module, x[:1], tx, init_key=key, rng=jnp.copy(key))
    }  # donated

    def run_step():
        holder["state"], m = step(holder["state"], batch, key)
        jax.block_until_ready(m)

    return {
        "forward": lambda: jax.block_until_ready(fwd(state.params)),
        "forward+backward": lambda: jax.block_until_ready(grad(state.params)),
        "train step": run_step,
    }


def torch_phases(torch, wl: Workload, x: np.ndarray, y: np.ndarray) -> dict:
    from benchmarks.peers import torch_models

    spec = wl.spec()
    model = torch_models.build(spec)
    params = [p for p in model.parameters() if p.requires_grad]
    opt_cls = torch.optim.AdamW if wl.optimizer == "adamw" else torch.optim.Adam
    opt = opt_cls(
        params, lr=1e-3, **({"weight_decay": wl.weight_decay} if wl.optimizer == "adamw" else {})
    )
    xt, yt = torch_models.to_torch_layout(spec, x), torch.from_numpy(y.astype(np.int64))
    ce = torch.nn.functional.cross_entropy

    def fwd():
        return ce(model(xt), yt)

    def fwd_bwd():
        opt.zero_grad(set_to_none=True)
        fwd().backward()

    def step():
        fwd_bwd()
        opt.step()

    return {"forward": fwd, "forward+backward": fwd_bwd, "train step": step}


def profile(name: str, rounds: int, torch=None) -> dict:
    wl = WORKLOADS[name]
    x, y = wl.data(wl.batch)
    fns = {f"ml_adv {k}": v for k, v in jax_phases(wl, x, y).items()}
    if torch is not None:
        fns.update({f"torch {k}": v for k, v in torch_phases(torch, wl, x, y).items()})
    reps = 3  # calls per timed round, so short phases are measurable

    def repeat(fn):
        return lambda: [fn() for _ in range(reps)]

    timing = time_rounds(
        {k: repeat(v) for k, v in fns.items()}, rounds=rounds, warmup=2, max_cycles=rounds
    )
    ms = {k: 1e3 * float(np.median(v)) / reps for k, v in timing.times_s.items()}
    print(f"\n{name}: {wl.description} (median ms per call, {rounds} rounds)")
    print(f"{'phase':18s} {'ml_adv':>9s} {'torch':>9s} {'torch/ml_adv':>12s}")
    rows = {}
    for phase in ("forward", "forward+backward", "train step"):
        rows[phase] = (ms[f"ml_adv {phase}"], ms.get(f"torch {phase}"))
    rows["backward only"] = tuple(
        None if b is None or a is None else b - a
        for a, b in zip(rows["forward"], rows["forward+backward"])
    )
    rows["optimizer+rest"] = tuple(
        None if b is None or a is None else b - a
        for a, b in zip(rows["forward+backward"], rows["train step"])
    )
    for phase, (a, b) in rows.items():
        ratio = "" if b is None or not a or a <= 0 else f"{b / a:12.2f}"
        print(f"{phase:18s} {a:9.2f} {'-' if b is None else f'{b:9.2f}':>9s} {ratio}")
    return {"workload": name, "ms": ms}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("workloads", nargs="+", choices=sorted(WORKLOADS))
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--no-torch", action="store_true")
    args = ap.parse_args(argv)
    torch = None
    if not args.no_torch:
        try:
            import torch

            torch.set_num_threads(os.cpu_count() or 1)
        except ImportError:
            torch = None
    for name in args.workloads:
        profile(name, args.rounds, torch)


if __name__ == "__main__":
    main()
