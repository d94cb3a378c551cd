"""Train-step throughput rows: ml_adv (scanned epoch and per-step) vs plain Flax vs PyTorch.

One row per workload (``workloads.WORKLOADS``), value in samples/s. Each row also emits a
``compile/<arch>/<size>`` row: the ml_adv epoch's ahead-of-time compile time (what ``fit``
reports as ``compile_seconds``) and, for every contender, the warm-up round's excess over a
steady round (compilation plus first-call costs).

The parameter counts of all contenders must agree with ``ml_adv.models.count_params``: a
mismatch means the peers no longer implement the same model, and the row refuses to run.
"""

from __future__ import annotations

import math

from benchmarks.contenders import (
    FLAX,
    ML_ADV,
    ML_ADV_STEP,
    TORCH,
    TORCH_COMPILE,
    flax_contender,
    ml_adv_contenders,
    torch_contender,
)
from benchmarks.harness import Context, make_row, register, simple_row
from benchmarks.workloads import ARCHS, SIZES, WORKLOADS, Workload


class ParamCountMismatch(AssertionError):
    pass


MAX_EPOCH_BYTES = 128e6  # one epoch of data at most this big; longer rounds run more epochs


def plan(ctx: Context, wl: Workload) -> tuple[int, int]:
    """``(steps per epoch, epochs per round)`` for the round's step count.

    Why epochs: a scaled-up GPU round (e.g. 5,000 MLP steps of 128 x 784 floats) would
    otherwise need gigabytes of synthetic data; a round of several epochs is what ``fit``
    does anyway.
    """
    steps = ctx.steps if ctx.steps is not None else wl.quick_steps if ctx.quick else wl.steps
    steps = max(1, math.ceil(steps * (1 if ctx.steps is not None else ctx.steps_scale)))
    max_steps = max(1, int(MAX_EPOCH_BYTES // (wl.example_bytes * wl.batch)))
    epochs = math.ceil(steps / max_steps)
    return math.ceil(steps / epochs), epochs


def build_contenders(ctx: Context, wl: Workload, epoch_steps: int, epochs: int) -> list:
    """All contenders of one workload, parameter counts checked."""
    bf16 = ctx.dtype == "bf16"
    x, y = wl.data(epoch_steps * wl.batch)
    out = ml_adv_contenders(wl, x, y, epochs, bf16)
    out.append(flax_contender(wl, x, y, epochs, bf16))
    if ctx.torch is not None:
        out.append(torch_contender(ctx.torch, wl, x, y, epochs))
        if ctx.torch_compile:
            out.append(torch_contender(ctx.torch, wl, x, y, epochs, compiled=True))
    counts = {c.name: c.params for c in out}
    if len(set(counts.values())) != 1:
        raise ParamCountMismatch(f"{wl.name}: parameter counts differ between contenders: {counts}")
    return out


def run_workload(ctx: Context, wl: Workload) -> list[dict]:
    epoch_steps, epochs = plan(ctx, wl)
    steps = epoch_steps * epochs
    ctx.log(f"  {wl.name}: {wl.description}; {steps} steps per round ({epochs} epoch(s))")
    contenders = build_contenders(ctx, wl, epoch_steps, epochs)
    timing = ctx.time({c.name: c.run_round for c in contenders})
    names = [c.name for c in contenders]
    peers = tuple(n for n in (TORCH, FLAX, TORCH_COMPILE) if n in names)
    config = {
        "description": wl.description, "batch": wl.batch, "steps_per_round": steps, "epochs_per_round": epochs,
        "input_shape": list(wl.input_shape), "input_kind": wl.input_kind,
        "optimizer": wl.optimizer, "weight_decay": wl.weight_decay, "dtype": ctx.dtype,
        "params": contenders[0].params, "ml_adv_size": wl.ml_adv_size, "ml_adv_layout": contenders[0].layout,
    }  # fmt: skip
    row = make_row(
        f"throughput/{wl.name}", "throughput", f"{wl.arch} {wl.size}", timing,
        rounds=ctx.rounds, work_per_round=steps * wl.batch, unit="samples/s",
        subject=ML_ADV, peers=peers, extra=config,
    )  # fmt: skip
    # ml_adv's per-step path against the peers too (it is the library's other training path)
    step_row = make_row("_", "_", "_", timing, rounds=ctx.rounds, work_per_round=steps * wl.batch,
                        unit="samples/s", subject=ML_ADV_STEP, peers=peers)  # fmt: skip
    row["ratios"].update(step_row["ratios"])
    row["paired_ratios"].update(step_row["paired_ratios"])

    overhead = {
        n: max(0.0, c["first_round_s"] - c["median_s"]) for n, c in row["contenders"].items()
        if c.get("first_round_s") is not None
    }  # fmt: skip
    values = {"ml_adv epoch AOT compile": contenders[0].compile_s}
    values.update({f"{c.name} first step (compile)": c.compile_s for c in contenders if c.name == TORCH_COMPILE})
    values.update({f"{n} first-round excess": v for n, v in overhead.items()})
    compile_row = simple_row(
        f"compile/{wl.name}", "compile", f"{wl.arch} {wl.size}", values, unit="s", higher_is_better=False,
        extra={"note": "first-round excess = warm-up round minus median round (jit compile + first-call costs)"},
    )  # fmt: skip
    return [row, compile_row]


def _register(wl: Workload) -> None:
    # --quick keeps the fast-compiling digits rows and every medium row (fewer steps);
    # the digits encoders are left to the full run (their compiles dominate a quick budget).
    quick = wl.size == "medium" or (wl.size == "digits" and wl.arch in ("mlp", "cnn", "lstm"))
    register(f"throughput/{wl.name}", group="throughput", quick=quick, default=wl.size != "tiny")(
        lambda ctx, wl=wl: run_workload(ctx, wl)
    )


for _size in SIZES:
    for _arch in ARCHS:
        _register(WORKLOADS[f"{_arch}/{_size}"])
