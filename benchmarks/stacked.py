"""Stacked training rows (issue 9): K members as one program against the ways people train them.

``stacked/mlp-w<W>``: K=8 members of an MLP 64 -> W -> W -> 10 (W = 32, 128), batch 64,
100 Adam steps on real digits features (tiled), in one round. Contenders, all on the same
data and model:

* ``ml_adv stacked``: ``init_run(members=K)`` + the scanned, vmapped epoch, placed as
  ``fit_stacked`` places it: with several devices (``ml_adv.use_cpu_cores``, on by default in the
  harness) the members are split over them and the devices run concurrently;
* ``ml_adv stacked, one device``: the same program on one device (only with several devices);
* ``ml_adv member scans``: the same members as one program of per-member scans
  (``members_as="scan"``), the layout ``fit_stacked`` switches to where it measures faster;
* ``per-member loop``: one jitted step per member per batch from Python (how most
  ensemble libraries train);
* ``sequential scans``: K scanned single runs one after another (``fit``'s program, K times);
* ``torch.func``: PyTorch ``stack_module_state`` + ``vmap(grad(functional_call))`` with Adam
  on the stacked tensors.

``stacked/population-lr`` and ``-cnn``: P=16 learning rates of the digits MLP / tiny CNN,
one stacked program against 16 sequential ``fit`` calls (the library path a user would take).
Work is member-steps per second.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.harness import Context, make_row, register
from ml_adv.rundir import Run

STACKED, LOOP, SEQUENTIAL, TORCH_FUNC = (
    "ml_adv stacked",
    "per-member loop",
    "sequential scans",
    "torch.func",
)
MEMBER_SCANS = "ml_adv member scans"
ONE_DEVICE = "ml_adv stacked, one device"


@dataclasses.dataclass(frozen=True)
class Members:
    """The members rows' shape: ``k`` members, ``steps`` Adam steps of ``batch`` in one round."""

    k: int = 8
    batch: int = 64
    steps: int = 100


FULL = Members()
TINY = Members(k=2, batch=16, steps=10)  # the GPU check's CPU dry run


def _data(n: int) -> tuple[np.ndarray, np.ndarray]:
    from ml_adv.data.catalog import load_dataset

    digits = load_dataset("digits_flat", split="train")
    reps = -(-n // len(digits))
    return np.tile(digits.x, (reps, 1))[:n].astype(np.float32), np.tile(digits.y, reps)[:n].astype(
        np.int32
    )


def _spec(width: int):
    from ml_adv import make_spec

    return make_spec(
        "mlp",
        input_shape=(64,),
        input_kind="features",
        num_classes=10,
        hidden_sizes=(width, width),
        dropout=0.0,
    )


def _ml_adv_contenders(width: int, x, y, shape: Members = FULL) -> dict:
    from ml_adv.training import TrainConfig, parallel
    from ml_adv.training.setup import init_run
    from ml_adv.training.steps import epoch_order, make_epoch_fn

    config = TrainConfig(batch_size=shape.batch, learning_rate=1e-3, epochs=1)
    spec = _spec(width)
    data = {"x": jnp.asarray(x), "y": jnp.asarray(y)}
    order = epoch_order(jax.random.PRNGKey(0), len(x), shape.batch)
    stacked = init_run(spec, config, example_x=x[:1], steps_per_epoch=shape.steps, members=shape.k)
    one_device_epoch = (
        make_epoch_fn(stacked.train_step, stacked=True).lower(stacked.state, data, order).compile()
    )
    scans_epoch = (
        make_epoch_fn(stacked.train_step, stacked=True, members_as="scan")
        .lower(stacked.state, data, order)
        .compile()
    )
    single = init_run(spec, config, example_x=x[:1], steps_per_epoch=shape.steps)
    single_epoch = make_epoch_fn(single.train_step).lower(single.state, data, order).compile()
    step = jax.jit(single.train_step, donate_argnums=0)
    mesh = parallel.member_mesh(shape.k)
    if mesh is None:  # one device: fit_stacked's program is the one-device vmap
        spread_state, spread_data, spread_order, stacked_epoch = (
            stacked.state,
            data,
            order,
            one_device_epoch,
        )
    else:  # fit_stacked's placement: members split over the devices, data replicated
        spread_state = jax.device_put(
            jax.tree.map(jnp.copy, stacked.state), parallel.member_sharded(mesh)
        )
        spread_data, spread_order = jax.device_put((data, order), parallel.replicated(mesh))
        stacked_epoch = (
            make_epoch_fn(stacked.train_step, stacked=True, spmd_axis_name=parallel.MEMBER_AXIS)
            .lower(spread_state, spread_data, spread_order)
            .compile()
        )
    copies = [jax.tree.map(jnp.copy, single.state) for _ in range(2 * shape.k)]
    holder = {
        "stacked": spread_state,
        "one_device": jax.tree.map(jnp.copy, stacked.state),
        "scans": jax.tree.map(jnp.copy, stacked.state),
        "singles": copies[: shape.k],
        "loop": copies[shape.k :],
    }
    batches = [{"x": data["x"][idx], "y": data["y"][idx]} for idx in order]

    def run_stacked():
        holder["stacked"], m = stacked_epoch(holder["stacked"], spread_data, spread_order)
        return jax.block_until_ready(m)

    def run_one_device():
        holder["one_device"], m = one_device_epoch(holder["one_device"], data, order)
        return jax.block_until_ready(m)

    def run_member_scans():
        holder["scans"], m = scans_epoch(holder["scans"], data, order)
        return jax.block_until_ready(m)

    def run_sequential():
        for i in range(shape.k):
            holder["singles"][i], m = single_epoch(holder["singles"][i], data, order)
        return jax.block_until_ready(m)

    def run_loop():
        for batch in batches:
            for i in range(shape.k):
                s = holder["loop"][i]
                holder["loop"][i], m = step(s, batch, s.step_key())
        return jax.block_until_ready(m)

    fns = {
        STACKED: run_stacked,
        MEMBER_SCANS: run_member_scans,
        SEQUENTIAL: run_sequential,
        LOOP: run_loop,
    }
    if mesh is not None:
        fns[ONE_DEVICE] = run_one_device
    return fns


def _torch_contender(torch, width: int, x, y, m: Members = FULL, device: str = "cpu"):
    from torch import nn
    from torch.func import functional_call, grad, stack_module_state, vmap

    dev = torch.device(device)
    torch.manual_seed(0)
    models = [
        nn.Sequential(
            nn.Linear(64, width),
            nn.ReLU(),
            nn.Linear(width, width),
            nn.ReLU(),
            nn.Linear(width, 10),
        )
        for _ in range(m.k)
    ]
    params, buffers = stack_module_state(models)
    base = models[0].to(dev)
    params = {k: v.detach().to(dev).requires_grad_(True) for k, v in params.items()}
    opt = torch.optim.Adam(list(params.values()), lr=1e-3)

    def loss_fn(p, b, xb, yb):
        return nn.functional.cross_entropy(functional_call(base, (p, b), (xb,)), yb)

    grads_of = vmap(grad(loss_fn), in_dims=(0, 0, None, None))
    xt, yt = torch.from_numpy(x).to(dev), torch.from_numpy(y.astype(np.int64)).to(dev)

    def run():
        for s in range(m.steps):
            xb, yb = xt[s * m.batch : (s + 1) * m.batch], yt[s * m.batch : (s + 1) * m.batch]
            grads = grads_of({k: v.detach() for k, v in params.items()}, buffers, xb, yb)
            for k, v in params.items():
                v.grad = grads[k]
            opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()

    return run


def _members_row(ctx: Context, width: int, m: Members = FULL) -> list[dict]:
    x, y = _data(m.steps * m.batch)
    fns = _ml_adv_contenders(width, x, y, m)
    if ctx.torch is not None:
        fns[TORCH_FUNC] = _torch_contender(ctx.torch, width, x, y, m, ctx.torch_device)
    timing = ctx.time(fns)
    peers = tuple(n for n in (LOOP, SEQUENTIAL, TORCH_FUNC, MEMBER_SCANS, ONE_DEVICE) if n in fns)
    extra = {
        "members": m.k,
        "batch": m.batch,
        "steps": m.steps,
        "optimizer": "adam",
        "devices": jax.device_count(),
        "torch_device": ctx.torch_device,
    }
    return [
        make_row(
            f"stacked/mlp-w{width}",
            "stacked",
            f"K={m.k} MLP 64-{width}-{width}-10",
            timing,
            rounds=ctx.rounds,
            work_per_round=m.k * m.steps,
            unit="member-steps/s",
            subject=STACKED,
            peers=peers,
            extra=extra,
        )
    ]


def _population_row(
    ctx: Context, arch: str, p: int = 16, epochs: int = 3, examples: int | None = None
) -> list[dict]:
    """P learning rates: one ``fit_stacked`` call against P ``fit`` calls (compiles included,
    as a user sees).

    ``examples`` keeps the first that many training examples (the GPU check's CPU dry run).
    """
    from ml_adv import make_spec
    from ml_adv.data.catalog import load_dataset
    from ml_adv.training import TrainConfig, fit
    from ml_adv.training.stacked import fit_stacked

    if arch == "mlp":
        train, spec = load_dataset("digits_flat", split="train"), _spec(64)
    else:
        train = load_dataset("digits", split="train")
        spec = make_spec(
            "cnn", input_shape=train.example_shape, input_kind="image", num_classes=10, size="tiny"
        )
    if examples is not None:
        train = train.subset(np.arange(min(examples, len(train))))
    config = TrainConfig(batch_size=32, epochs=epochs)
    rates = np.geomspace(1e-4, 3e-2, p)

    def population():
        fit_stacked(
            spec,
            train,
            config,
            members=p,
            member_hparams={"learning_rate": rates},
            run=Run(progress=False),
        )

    def sequential():
        for r in rates:
            fit(spec, train, config.replace(learning_rate=float(r)), run=Run(progress=False))

    timing = ctx.time({"ml_adv population": population, "sequential fit": sequential})
    steps = p * epochs * (len(train) // 32)
    name = "stacked/population-lr" if arch == "mlp" else f"stacked/population-lr-{arch}"
    model = "digits MLP 64-64-64-10" if arch == "mlp" else "digits CNN (tiny)"
    return [
        make_row(
            name,
            "stacked",
            f"P={p} learning rates, {model}, {epochs} epochs",
            timing,
            rounds=ctx.rounds,
            work_per_round=steps,
            unit="member-steps/s",
            subject="ml_adv population",
            peers=("sequential fit",),
            extra={
                "members": p,
                "devices": jax.device_count(),
                "note": "compiles included on both sides",
            },
        )
    ]


register("stacked/mlp-w32", group="stacked")(lambda ctx: _members_row(ctx, 32))
register("stacked/mlp-w128", group="stacked")(lambda ctx: _members_row(ctx, 128))
register("stacked/population-lr", group="stacked", quick=False)(
    lambda ctx: _population_row(ctx, "mlp")
)
register("stacked/population-lr-cnn", group="stacked", quick=False)(
    lambda ctx: _population_row(ctx, "cnn")
)
