"""Ensemble inference rows (issue 10): K=8 members' class probabilities on one batch.

Contenders, on the same members (random weights: inference cost does not depend on them)
and the same inputs:

* ``ml_adv stacked``: ``AdvancedModelEnsemble.member_probabilities``: the members share a
  spec, so their variables are stacked and one compiled, chunked forward program runs them
  all (its default member batch: all K vmapped on accelerators, one member after another
  on CPU, ``ensembles/inference.py``);
* ``ml_adv vmapped``: the same program with all K members vmapped, whatever the backend;
* ``separate predict_proba``: K ``TrainedModel.predict_proba`` calls, one per member (how
  ensembles are usually evaluated);
* ``torch.func``: PyTorch ``stack_module_state`` + ``vmap(functional_call)`` under
  ``no_grad`` on the same MLP (MLP rows only: the CNN's layers have no exact twin there).

Rows: ``ensemble/infer-mlp-digits`` (MLP 64-128-64-10, 2,048 digits rows), ``ensemble/
infer-mlp-medium`` (MLP 784-512-256-10, 4,096 rows) and ``ensemble/infer-cnn-digits``
(the small digits CNN, 2,048 rows). Work is member-samples per second (K x rows).
"""

from __future__ import annotations

import jax
import numpy as np

from benchmarks.harness import Context, make_row, register

K = 8
STACKED, VMAPPED, SEPARATE, TORCH_FUNC = (
    "ml_adv stacked",
    "ml_adv vmapped",
    "separate predict_proba",
    "torch.func",
)


def _digits(n: int, kind: str) -> np.ndarray:
    from ml_adv.data.catalog import load_dataset

    x = load_dataset("digits_flat" if kind == "features" else "digits", split="train").x
    return np.tile(x, (-(-n // len(x)),) + (1,) * (x.ndim - 1))[:n].astype(np.float32)


def _members(spec) -> list:
    from ml_adv import TrainedModel

    module = spec.build()
    return [
        TrainedModel(
            spec,
            dict(module.init(jax.random.PRNGKey(i), spec.example_input(), train=False)),
            model_id=f"m{i}",
        )
        for i in range(K)
    ]


def _ml_adv_contenders(spec, x) -> dict:
    from ml_adv import AdvancedModelEnsemble
    from ml_adv.ensembles.inference import group_members, group_probs

    members = _members(spec)
    ensemble = AdvancedModelEnsemble("averaging")
    for m in members:
        ensemble.add_model(m)
    (group,) = group_members(members)
    return {
        STACKED: lambda: ensemble.member_probabilities(
            x
        ),  # host array: the call waits for the result
        VMAPPED: lambda: np.asarray(group_probs(group, x, member_batch=K)),
        SEPARATE: lambda: [m.predict_proba(x) for m in members],
    }


def _torch_contender(torch, widths: tuple[int, ...], x: np.ndarray):
    from torch import nn
    from torch.func import functional_call, stack_module_state, vmap

    torch.manual_seed(0)

    def mlp():
        layers, width = [], widths[0]
        for out in widths[1:-1]:
            layers += [nn.Linear(width, out), nn.ReLU()]
            width = out
        return nn.Sequential(*layers, nn.Linear(width, widths[-1]))

    models = [mlp().eval() for _ in range(K)]
    params, buffers = stack_module_state(models)
    base = models[0]
    forward = vmap(
        lambda p, b, xb: torch.softmax(functional_call(base, (p, b), (xb,)), -1),
        in_dims=(0, 0, None),
    )
    xt = torch.from_numpy(x)

    def run():
        with torch.no_grad():
            return forward(params, buffers, xt)

    return run


def _row(
    ctx: Context, name: str, title: str, spec, x: np.ndarray, torch_widths: tuple[int, ...] | None
):
    fns = _ml_adv_contenders(spec, x)
    cpu_peer = ctx.torch is not None and ctx.torch_device == "cpu"  # this peer runs on a CPU only
    if cpu_peer and torch_widths is not None:
        fns[TORCH_FUNC] = _torch_contender(ctx.torch, torch_widths, x)
    timing = ctx.time(fns)
    peers = tuple(n for n in (VMAPPED, SEPARATE, TORCH_FUNC) if n in fns)
    return [
        make_row(
            name,
            "ensemble",
            title,
            timing,
            rounds=ctx.rounds,
            work_per_round=K * len(x),
            unit="member-samples/s",
            subject=STACKED,
            peers=peers,
            extra={"members": K, "rows": len(x), "spec": spec.to_dict()},
        )
    ]


def _mlp_spec(inputs: int, hidden: tuple[int, ...]):
    from ml_adv import make_spec

    return make_spec(
        "mlp",
        input_shape=(inputs,),
        input_kind="features",
        num_classes=10,
        hidden_sizes=hidden,
        dropout=0.0,
    )


@register("ensemble/infer-mlp-digits", group="ensemble")
def mlp_digits(ctx: Context) -> list[dict]:
    return _row(
        ctx,
        "ensemble/infer-mlp-digits",
        f"K={K} MLP 64-128-64-10, 2,048 digits rows",
        _mlp_spec(64, (128, 64)),
        _digits(2048, "features"),
        (64, 128, 64, 10),
    )


@register("ensemble/infer-mlp-medium", group="ensemble")
def mlp_medium(ctx: Context) -> list[dict]:
    x = np.random.default_rng(0).random((4096, 784), dtype=np.float32)
    return _row(
        ctx,
        "ensemble/infer-mlp-medium",
        f"K={K} MLP 784-512-256-10, 4,096 rows",
        _mlp_spec(784, (512, 256)),
        x,
        (784, 512, 256, 10),
    )


@register("ensemble/infer-cnn-digits", group="ensemble")
def cnn_digits(ctx: Context) -> list[dict]:
    from ml_adv import make_spec

    spec = make_spec("cnn", input_shape=(8, 8, 1), input_kind="image", num_classes=10, size="small")
    return _row(
        ctx,
        "ensemble/infer-cnn-digits",
        f"K={K} digits CNN (small), 2,048 rows",
        spec,
        _digits(2048, "image"),
        None,
    )
