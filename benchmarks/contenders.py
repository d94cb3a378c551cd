"""The contenders of a train-step row, each a closure that runs one timed round and blocks.

* ``ml_adv`` : the library's core path, a whole epoch compiled as one ``lax.scan``
  (``make_epoch_fn``, state donated, batches gathered on device from the host-drawn
  ``epoch_order``), compiled ahead of time exactly as ``fit`` does (``.lower().compile()``,
  the time is recorded).
* ``ml_adv step`` : the library's per-step path (``make_step_fn`` + ``run_epoch_stepwise``:
  one jitted, donated call per batch, data on device).
* ``plain Flax`` : ``peers/flax_plain.py``: ``TrainState`` + ``@jax.jit`` step per batch,
  batches gathered on the host with NumPy fancy indexing (the Flax-examples loop).
* ``PyTorch`` : ``peers/torch_models.py`` in eager mode on ``device`` ("cpu" or "cuda"): the
  epoch's data moved there once, each step's batch gathered there by tensor indexing (a
  permutation drawn on the device), the round ending with ``loss.item()`` (which waits for the
  device). ``bf16``: ``torch.autocast(device_type, bfloat16)`` around the forward pass and the
  loss, float32 weights and optimizer state (the mixed precision ml_adv's ``bf16`` rows use);
  on a CPU too, so a CPU dry run exercises the same code.
* ``PyTorch compile`` : the same model through ``torch.compile`` (inductor, default mode),
  compiled by one explicit step before timing (its time is the row's compile figure). On a
  2-core CPU the compile takes tens of seconds per model, so it runs in full mode only
  unless ``--torch-compile on``.

Every contender trains the same model (parameter counts asserted equal) on the same host
arrays (one epoch of data) with the same batch, optimizer and dtype, reshuffling every epoch;
one timed round is ``epochs`` epochs for all of them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable

import jax
import numpy as np
import optax

from benchmarks.workloads import Workload

ML_ADV, ML_ADV_STEP, FLAX, TORCH = "ml_adv", "ml_adv step", "plain Flax", "PyTorch"
TORCH_COMPILE = "PyTorch compile"


@dataclasses.dataclass
class Contender:
    """One way of running a round: ``run_round()`` does the round's steps and blocks."""

    name: str
    run_round: Callable[[], object]
    params: int
    compile_s: float | None = None  # explicit AOT compile time, when the contender has one
    layout: str | None = None  # ml_adv: fit()'s layout for this program (training.core_split)


def _tx(wl: Workload) -> optax.GradientTransformation:
    if wl.optimizer == "adamw":
        return optax.adamw(1e-3, weight_decay=wl.weight_decay)
    return optax.adam(1e-3)


def ml_adv_contenders(
    wl: Workload, x: np.ndarray, y: np.ndarray, epochs: int, bf16: bool, *, step: bool = True
) -> list[Contender]:
    """The scanned-epoch and (with ``step``) per-step contenders, each with its own donated state.

    ``x``/``y`` are one epoch of data; a round is ``epochs`` epochs.
    """
    from ml_adv.data import ArrayDataset
    from ml_adv.models import count_params
    from ml_adv.training import TrainConfig, core_split, parallel
    from ml_adv.training.loop import device_data
    from ml_adv.training.runner import GUARD_TRIAL_ROUNDS, EpochRunner
    from ml_adv.training.sampling import EpochPlan
    from ml_adv.training.setup import init_run
    from ml_adv.training.steps import (
        GUARDS,
        epoch_order,
        make_epoch_fn,
        make_step_fn,
        run_epoch_stepwise,
    )

    train = ArrayDataset(x, y)
    spec = wl.spec()
    config = TrainConfig(
        learning_rate=1e-3, batch_size=wl.batch, epochs=1, optimizer=wl.optimizer,
        weight_decay=wl.weight_decay, mixed_precision=bf16,
    )  # fmt: skip
    params = count_params(spec)

    # The library's one set-up, as in fit(), with fit()'s default layout: one device, or the
    # batch over the per-core devices where that measured faster (training.core_split).
    def make_setup(mesh):
        return init_run(
            spec, config, example_x=x[:1], steps_per_epoch=len(x) // wl.batch, mesh=mesh
        )

    setup = make_setup(None)
    plan = EpochPlan((len(x),), wl.batch, setup.shuffle_key)
    mesh, setup = core_split.resolve(
        config, setup, make_setup, lambda m: device_data(train, m), plan, plan.streams, x[:1], None
    )
    data = device_data(train, mesh)
    train_step, shuffle_key = setup.train_step, setup.shuffle_key

    def new_state():  # a copy per contender: each state is donated, they must not share a buffer
        state = jax.tree.map(jax.numpy.copy, setup.state)
        return state if mesh is None else jax.device_put(state, parallel.replicated(mesh))

    # --- scanned epoch, AOT-compiled as in fit()
    def epoch_indices(epoch):  # the host-drawn permutation is part of the round, as in fit()
        return epoch_order(jax.random.fold_in(shuffle_key, epoch), len(x), wl.batch)

    scan = {"state": new_state(), "epoch": 0}
    t0 = time.perf_counter()
    epoch_fn = make_epoch_fn(train_step).lower(scan["state"], data, epoch_indices(0)).compile()
    compile_s = time.perf_counter() - t0
    # fit()'s runner decides the non-finite guard on its first epochs (autotuning on, new
    # program on this CPU); run that trial here, untimed, and time the program fit would run.
    runner = EpochRunner(train_step, guard_steps=setup.guard_steps)
    for _ in range(2 * GUARD_TRIAL_ROUNDS * len(GUARDS) + 1):
        scan["state"], _ = runner(scan["state"], data, epoch_indices(scan["epoch"]))
        scan["epoch"] += 1
        if not runner.deciding:
            break
    if runner.train_step is not train_step:
        train_step = runner.train_step
        epoch_fn = make_epoch_fn(train_step).lower(scan["state"], data, epoch_indices(0)).compile()

    def run_scan():
        for _ in range(epochs):
            scan["state"], metrics = epoch_fn(scan["state"], data, epoch_indices(scan["epoch"]))
            scan["epoch"] += 1
        return jax.block_until_ready((scan["state"], metrics))

    # --- one jitted, donated call per step (its state only when that contender is wanted)
    stepwise = {"state": new_state() if step else None, "epoch": 0, "fn": make_step_fn(train_step)}

    def run_steps():
        for _ in range(epochs):
            order = epoch_indices(stepwise["epoch"])
            stepwise["state"], metrics = run_epoch_stepwise(
                stepwise["fn"], stepwise["state"], data, order
            )
            stepwise["epoch"] += 1
        return jax.block_until_ready((stepwise["state"], metrics))

    layout = core_split.SHARDED if mesh is not None else core_split.ONE_DEVICE
    out = [Contender(ML_ADV, run_scan, params, compile_s, layout)]
    if step:
        out.append(Contender(ML_ADV_STEP, run_steps, params, layout=layout))
    return out


def flax_contender(
    wl: Workload, x: np.ndarray, y: np.ndarray, epochs: int, bf16: bool
) -> Contender:
    import jax.numpy as jnp

    from benchmarks.peers import flax_plain

    model = flax_plain.build(wl.spec(), jnp.bfloat16 if bf16 else None)
    holder = {"state": flax_plain.create_state(model, x[:1], _tx(wl))}
    params = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(holder["state"].params))
    rng = np.random.default_rng(1)

    steps = len(x) // wl.batch

    def run():
        state = holder["state"]
        for _ in range(epochs):
            for idx in rng.permutation(len(x))[: steps * wl.batch].reshape(steps, wl.batch):
                state, loss = flax_plain.train_step(state, x[idx], y[idx])
        holder["state"] = state
        return jax.block_until_ready((state, loss))

    return Contender(FLAX, run, params)


def set_torch_tf32(torch) -> dict[str, str]:
    """TF32 matmuls and convolutions for float32 CUDA work (the float32 rows' "TF32" precision).

    torch >= 2.9 has ``fp32_precision`` and refuses a mix of it with the legacy
    ``allow_tf32`` flags, so the new API is used where it exists (``"tf32"`` there is what
    ``allow_tf32 = True`` means). Also turns on ``cudnn.benchmark``, as PyTorch training
    scripts do: cuDNN picks its fastest convolution per shape, as ml_adv's autotune does.
    """
    backends = torch.backends
    torch.backends.cudnn.benchmark = True
    if hasattr(backends.cuda.matmul, "fp32_precision"):
        backends.cuda.matmul.fp32_precision = "tf32"
        backends.cudnn.conv.fp32_precision = "tf32"
        return {
            "api": "fp32_precision",
            "matmul": backends.cuda.matmul.fp32_precision,
            "cudnn_conv": backends.cudnn.conv.fp32_precision,
            "cudnn_benchmark": "True",
        }
    backends.cuda.matmul.allow_tf32 = True
    backends.cudnn.allow_tf32 = True
    return {
        "api": "allow_tf32",
        "matmul": str(backends.cuda.matmul.allow_tf32),
        "cudnn": str(backends.cudnn.allow_tf32),
        "cudnn_benchmark": "True",
    }


def _torch_optimizer(torch, wl: Workload, params):
    if wl.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=1e-3, weight_decay=wl.weight_decay)
    return torch.optim.Adam(params, lr=1e-3)


def torch_contender(
    torch,
    wl: Workload,
    x: np.ndarray,
    y: np.ndarray,
    epochs: int,
    *,
    compiled: bool = False,
    device: str = "cpu",
    bf16: bool = False,
) -> Contender:
    """PyTorch eager, or with ``compiled`` the model through ``torch.compile`` (one explicit
    warm-up step compiles it; that time is the contender's ``compile_s``), on ``device``,
    in float32 or (``bf16``) under ``torch.autocast``. See the module docstring."""
    from benchmarks.peers import torch_models

    spec = wl.spec()
    dev = torch.device(device)
    torch.manual_seed(0)
    model = torch_models.build(spec).to(dev)
    opt = _torch_optimizer(torch, wl, [p for p in model.parameters() if p.requires_grad])
    forward = torch.compile(model) if compiled else model
    # One epoch of data on the device, once; each step gathers its batch there.
    xt = torch_models.to_torch_layout(spec, x).to(dev)
    yt = torch.from_numpy(y.astype(np.int64)).to(dev)
    gen = torch.Generator(device=dev).manual_seed(1)
    loss_fn = torch.nn.functional.cross_entropy
    steps = len(x) // wl.batch

    def autocast():
        if not bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=dev.type, dtype=torch.bfloat16)

    def step(idx):
        opt.zero_grad(set_to_none=True)
        with autocast():
            loss = loss_fn(forward(xt[idx]), yt[idx])
        loss.backward()
        opt.step()
        return loss

    compile_s = None
    if compiled:
        t0 = time.perf_counter()
        step(torch.arange(wl.batch, device=dev)).item()
        compile_s = time.perf_counter() - t0

    def run():
        for _ in range(epochs):
            order = torch.randperm(len(x), generator=gen, device=dev)[: steps * wl.batch]
            for idx in order.reshape(steps, wl.batch):
                loss = step(idx)
        return loss.item()  # waits for the device: the round ends when its last step has run

    name = TORCH_COMPILE if compiled else TORCH
    return Contender(name, run, torch_models.count_trainable(model), compile_s)
