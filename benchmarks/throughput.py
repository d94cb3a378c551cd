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
from benchmarks.workloads import GPU_ONLY_SIZES, WORKLOADS, Workload


class ParamCountMismatch(AssertionError):
    pass


MAX_EPOCH_BYTES = 128e6  # one epoch of data at most this big; longer rounds run more epochs


def plan(ctx: Context, wl: Workload, steps: int | None = None) -> tuple[int, int]:
    """``(steps per epoch, epochs per round)`` for the round's step count.

    ``steps`` (e.g. the GPU check's, sized for a GPU) overrides the workload's and ``--steps``.
    Why epochs: a scaled-up GPU round (e.g. 5,000 MLP steps of 128 x 784 floats) would
    otherwise need gigabytes of synthetic data; a round of several epochs is what ``fit``
    does anyway.
    """
    if steps is None:
        steps = ctx.steps if ctx.steps is not None else wl.quick_steps if ctx.quick else wl.steps
        steps = max(1, math.ceil(steps * (1 if ctx.steps is not None else ctx.steps_scale)))
    max_steps = max(1, int(MAX_EPOCH_BYTES // (wl.example_bytes * wl.batch)))
    epochs = math.ceil(steps / max_steps)
    return math.ceil(steps / epochs), epochs


def precision_facts(ctx: Context) -> dict[str, str]:
    """What the row's precision means on each side (recorded in the row; names the row set)."""
    import jax

    jax_precision = str(getattr(jax.config, "jax_default_matmul_precision", None) or "default")
    if ctx.dtype == "bf16":
        return {"precision": "bf16",
                "ml_adv": "mixed precision: bf16 compute, f32 master weights and optimizer state",
                "torch": "torch.autocast(bfloat16) around forward and loss, f32 weights and "
                         "optimizer state",
                "jax_default_matmul_precision": jax_precision}  # fmt: skip
    on_gpu = ctx.device == "gpu"
    return {"precision": "f32/TF32" if on_gpu else "f32",
            "ml_adv": "float32, JAX's default matmul precision"
                      + (" (TF32-like on a GPU)" if on_gpu else " (full float32 on a CPU)"),
            "torch": "float32, TF32 matmuls and convolutions allowed" if ctx.torch_device == "cuda"
                     else "float32",
            "jax_default_matmul_precision": jax_precision}  # fmt: skip


def build_contenders(ctx: Context, wl: Workload, x, y, epochs: int) -> list:
    """The contenders ``ctx`` wants for one workload, parameter counts checked."""
    bf16 = ctx.dtype == "bf16"
    out = ml_adv_contenders(wl, x, y, epochs, bf16, step=ctx.wants(ML_ADV_STEP))
    if ctx.wants(FLAX):
        out.append(flax_contender(wl, x, y, epochs, bf16))
    if ctx.torch is not None and ctx.wants(TORCH):
        out.append(torch_contender(ctx.torch, wl, x, y, epochs, device=ctx.torch_device, bf16=bf16))
    if ctx.torch is not None and ctx.torch_compile and ctx.wants(TORCH_COMPILE):
        out.append(
            torch_contender(
                ctx.torch, wl, x, y, epochs, compiled=True, device=ctx.torch_device, bf16=bf16
            )
        )
    check_params(wl, out)
    return out


def check_params(wl: Workload, contenders: list) -> None:
    counts = {c.name: c.params for c in contenders}
    if len(set(counts.values())) != 1:
        raise ParamCountMismatch(f"{wl.name}: parameter counts differ between contenders: {counts}")


def run_workload(
    ctx: Context,
    wl: Workload,
    *,
    name: str | None = None,
    title: str | None = None,
    steps: int | None = None,
    keep: dict | None = None,
) -> list[dict]:
    """The throughput row and its compile row; ``keep`` receives the contenders and data
    (``add_torch_compile`` times ``torch.compile`` against them later)."""
    epoch_steps, epochs = plan(ctx, wl, steps)
    steps = epoch_steps * epochs
    name = name or f"throughput/{wl.name}"
    title = title or f"{wl.arch} {wl.size}"
    ctx.log(
        f"  {wl.name}: {wl.description}; {steps} steps per round ({epochs} epoch(s)), {ctx.dtype}"
    )
    x, y = wl.data(epoch_steps * wl.batch)
    contenders = build_contenders(ctx, wl, x, y, epochs)
    timing = ctx.time({c.name: c.run_round for c in contenders})
    names = [c.name for c in contenders]
    peers = tuple(n for n in (TORCH, FLAX, TORCH_COMPILE) if n in names)
    config = {
        "description": wl.description, "batch": wl.batch, "steps_per_round": steps,
        "epochs_per_round": epochs,
        "input_shape": list(wl.input_shape), "input_kind": wl.input_kind, "workload": wl.name,
        "optimizer": wl.optimizer, "weight_decay": wl.weight_decay, "dtype": ctx.dtype,
        "params": contenders[0].params, "ml_adv_size": wl.ml_adv_size,
        "ml_adv_layout": contenders[0].layout,
        "torch_device": ctx.torch_device if ctx.torch is not None else None, **precision_facts(ctx),
    }  # fmt: skip
    row = make_row(
        name, "throughput", title, timing,
        rounds=ctx.rounds, work_per_round=steps * wl.batch, unit="samples/s",
        subject=ML_ADV, peers=peers, extra=config,
    )  # fmt: skip
    # ml_adv's per-step path against the peers too (it is the library's other training path)
    if ML_ADV_STEP in names:
        step_row = make_row("_", "_", "_", timing, rounds=ctx.rounds,
                            work_per_round=steps * wl.batch, unit="samples/s",
                            subject=ML_ADV_STEP, peers=peers)  # fmt: skip
        row["ratios"].update(step_row["ratios"])
        row["paired_ratios"].update(step_row["paired_ratios"])

    overhead = {
        n: max(0.0, c["first_round_s"] - c["median_s"]) for n, c in row["contenders"].items()
        if c.get("first_round_s") is not None
    }  # fmt: skip
    values = {"ml_adv epoch AOT compile": contenders[0].compile_s}
    values.update(
        {
            f"{c.name} first step (compile)": c.compile_s
            for c in contenders
            if c.name == TORCH_COMPILE
        }
    )
    values.update({f"{n} first-round excess": v for n, v in overhead.items()})
    compile_row = simple_row(
        name.replace("throughput/", "compile/", 1), "compile", title, values, unit="s",
        higher_is_better=False,
        extra={"note": "first-round excess = warm-up round minus median round "
                       "(jit compile + first-call costs)"},
    )  # fmt: skip
    if keep is not None:
        keep.update(wl=wl, x=x, y=y, epochs=epochs, steps=steps, contenders=contenders)
    return [row, compile_row]


def add_torch_compile(ctx: Context, row: dict, compile_row: dict | None, kept: dict) -> None:
    """Time ``PyTorch compile`` against the kept ``ml_adv`` contender and add it to ``row``.

    Why later and separately: inductor compiles take tens of seconds per model, so a budgeted
    run times every eager row first and these where time is left. The ratio comes from
    rounds that alternate the two, like every other ratio; ml_adv's value in those rounds is
    kept in ``extra``.
    """
    wl = kept["wl"]
    compiled = torch_contender(
        ctx.torch,
        wl,
        kept["x"],
        kept["y"],
        kept["epochs"],
        compiled=True,
        device=ctx.torch_device,
        bf16=ctx.dtype == "bf16",
    )
    ml_adv = kept["contenders"][0]
    check_params(wl, [ml_adv, compiled])
    timing = ctx.time({ML_ADV: ml_adv.run_round, TORCH_COMPILE: compiled.run_round})
    sub = make_row(row["name"], row["group"], row["title"], timing, rounds=ctx.rounds,
                   work_per_round=kept["steps"] * wl.batch, unit=row["unit"], subject=ML_ADV,
                   peers=(TORCH_COMPILE,))  # fmt: skip
    row["contenders"][TORCH_COMPILE] = sub["contenders"][TORCH_COMPILE]
    row["ratios"].update(sub["ratios"])
    row["paired_ratios"].update(sub["paired_ratios"])
    row["extra"]["torch_compile_rounds"] = {
        "ml_adv_value": sub["contenders"][ML_ADV]["value"],
        "cycles": sub["cycles"],
        "compile_s": compiled.compile_s,
    }
    if compile_row is not None:
        key = f"{TORCH_COMPILE} first step (compile)"
        compile_row["contenders"][key] = {"value": compiled.compile_s}


def _register(wl: Workload) -> None:
    # --quick keeps the fast-compiling digits rows and every medium row (fewer steps);
    # the digits encoders are left to the full run (their compiles dominate a quick budget).
    quick = wl.size == "medium" or (wl.size == "digits" and wl.arch in ("mlp", "cnn", "lstm"))
    default = wl.size not in ("tiny", *GPU_ONLY_SIZES)
    register(f"throughput/{wl.name}", group="throughput", quick=quick, default=default)(
        lambda ctx, wl=wl: run_workload(ctx, wl)
    )


for _wl in WORKLOADS.values():
    _register(_wl)
