"""The quickstart's training time per ``TrainConfig.scan_unroll``, and its per-step ceiling.

``ml-adv quickstart`` trains the small CNN on the digits images (40 epochs, batch 32, lr 2e-3
warmup-cosine, 15% held out, a checkpoint and an evaluation every epoch). On an H200 it took
21.6 s at 2,727 steps/s against 14 s on a 2-core CPU (issue 27): its steps are short kernel
launches. ``scan_unroll`` puts several train steps in one iteration of the epoch's loop.

Rows:

* ``quickstart/unroll-<u>`` (seconds): the command's configuration, trained through the call
  the command makes (``ml_adv.cli.train.make_trainer(...).train``: run directory, checkpoints,
  per-epoch evaluation, final test evaluation) with ``scan_unroll=u``. Contenders: ``training``
  (what the command prints as "wall time"), ``compile`` (fit's ``compile_seconds``: the
  epoch programs, the guard trial's second program and any autotuning), ``training less
  compile``, and ``in compiled epochs`` (steps / fit's steps/s); the rest of the training
  time is evaluation, checkpoints and host work between epochs. The first of these rows in a
  process also pays autotuning and XLA's warm-up.
* ``quickstart/steps`` (steps/s): fit's train steps/s for each unroll (compile excluded), and
  the ceiling: the same train step as one compiled program over all epochs' steps
  (``make_epoch_fn`` over the concatenated epoch orders, one call, nothing on the host between
  epochs), at unroll 1 and at the largest unroll. ``device loop, unroll u / fit, unroll u``
  is what the host loop costs the steps; ``fit, unroll u / fit, unroll 1`` is what unrolling buys.
* ``quickstart/command`` (seconds): a fresh ``python -m ml_adv.cli quickstart --fresh``
  process (unroll 1: the command has no unroll option), its printed "wall time", compile time
  and the process's wall time (Python, JAX and import start-up included), against the 2-core
  CPU reference of benchmarks/README.md (14.0 s training, 17.6 s with start-up).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from benchmarks.harness import Context, make_row, simple_row

CPU_REFERENCE_S = 14.0  # benchmarks/README.md: the quickstart on a 2-core CPU (14.0-15.4 s)
CPU_REFERENCE_PROCESS_S = 17.6  # the same with Python and JAX start-up
FIT, LOOP = "fit, unroll {u}", "device loop, unroll {u}"


def quickstart_args(run_dir: Path, extra: tuple[str, ...] = ()) -> argparse.Namespace:
    """The command's parsed options (its defaults, ``extra`` on top), run directory ``run_dir``."""
    from ml_adv.cli import quickstart as quickstart_command

    parser = argparse.ArgumentParser()
    quickstart_command.add_arguments(parser)
    return parser.parse_args(["--run-dir", str(run_dir), *extra])


def train_once(args: argparse.Namespace, unroll: int) -> dict:
    """Train as ``ml-adv quickstart`` does, with ``scan_unroll=unroll``; the command's figures."""
    from ml_adv.cli import train as train_command

    trainer = train_command.make_trainer(args)
    training_data = {**train_command.training_data_from_args(args), "scan_unroll": unroll}
    started = time.perf_counter()
    result = trainer.train(
        training_data, run_dir=args.run_dir
    )  # what the command's asyncio call runs, in this thread
    wall = time.perf_counter() - started
    if not result.success:
        raise RuntimeError(f"quickstart (scan_unroll={unroll}) failed: {result.error}")
    m = result.metrics
    steps = int(result.history[-1]["step"])
    return {
        "wall_s": wall,
        "compile_s": m["compile_seconds"],
        "steps_per_second": m["steps_per_second"],
        "steps": steps,
        "epochs": m["epochs_run"],
        "test_accuracy": m.get("test_accuracy"),
    }


def unroll_row(ctx: Context, args: argparse.Namespace, unroll: int, results: dict) -> list[dict]:
    """``quickstart/unroll-<u>``; the figures also go to ``results[unroll]`` (for the steps row)."""
    r = train_once(args, unroll)
    results[unroll] = r
    in_epochs = r["steps"] / r["steps_per_second"]
    values = {
        "training": r["wall_s"],
        "compile": r["compile_s"],
        "training less compile": r["wall_s"] - r["compile_s"],
        "in compiled epochs": in_epochs,
    }
    ctx.log(
        f"  quickstart scan_unroll={unroll}: {r['wall_s']:.1f} s, compile {r['compile_s']:.1f} s, "
        f"{r['steps_per_second']:,.0f} steps/s"
    )
    return [
        simple_row(
            f"quickstart/unroll-{unroll}",
            "quickstart",
            f"quickstart, scan_unroll={unroll}",
            values,
            unit="s",
            higher_is_better=False,
            extra={
                **r,
                "unroll": unroll,
                "options": vars(args) | {"run_dir": None},
                "cpu_reference_training_s": CPU_REFERENCE_S,
                "note": "training = the command's 'wall time'; the rest of it beyond the "
                "compiled epochs and compile is evaluation, checkpoints and host work",
            },
        )
    ]


def device_loop(ctx: Context, args: argparse.Namespace, unrolls: tuple[int, ...]) -> dict:
    """Timing closures: every epoch's steps as one compiled scan, one per unroll."""
    from ml_adv.cli import train as train_command
    from ml_adv.models import AdvancedModelArchitecture
    from ml_adv.trainer.training_data import resolve_training_data
    from ml_adv.training.loop import device_data
    from ml_adv.training.setup import init_run
    from ml_adv.training.steps import epoch_order, make_epoch_fn

    plan = resolve_training_data(
        train_command.training_data_from_args(args),
        architecture=args.arch,
        base_config=_base_config(),
        settings={},
        augment=None,
        default_size=args.size,
    )
    train, config = plan.train, plan.config
    spec = AdvancedModelArchitecture(args.arch, size=plan.size).design_architecture(
        plan.input_dim,
        plan.output_dim,
        input_shape=train.example_shape,
        input_kind=train.input_kind,
    )
    steps = len(train) // config.batch_size
    setup = init_run(spec, config, example_x=train.x[:1], steps_per_epoch=steps)
    data = device_data(train)
    order = np.concatenate(
        [
            epoch_order(jax.random.fold_in(setup.shuffle_key, e), len(train), config.batch_size)
            for e in range(config.epochs)
        ]
    )
    fns, compile_s = {}, {}
    for u in unrolls:
        holder = {"state": jax.tree.map(jax.numpy.copy, setup.state)}
        t0 = time.perf_counter()
        program = (
            make_epoch_fn(setup.train_step, unroll=u).lower(holder["state"], data, order).compile()
        )
        compile_s[u] = time.perf_counter() - t0

        def run(program=program, holder=holder):
            holder["state"], metrics = program(holder["state"], data, order)
            return jax.block_until_ready(metrics)

        fns[LOOP.format(u=u)] = run
    return {"fns": fns, "steps": len(order), "compile_s": compile_s}


def _base_config():
    from ml_adv.trainer.facade import AdvancedTrainingStrategy

    return AdvancedTrainingStrategy().config  # the trainer's base, as the command's trainer has it


def steps_row(
    ctx: Context, args: argparse.Namespace, results: dict, loop_unrolls: tuple[int, ...]
) -> list[dict]:
    """``quickstart/steps``: fit's steps/s per unroll against the device-loop ceiling."""
    loop = device_loop(ctx, args, loop_unrolls)
    timing = ctx.time(loop["fns"])
    timed = make_row(
        "quickstart/steps",
        "quickstart-steps",
        "quickstart train steps",
        timing,
        rounds=ctx.rounds,
        work_per_round=loop["steps"],
        unit="steps/s",
    )
    values = {FIT.format(u=u): r["steps_per_second"] for u, r in sorted(results.items())}
    values.update({k: c["value"] for k, c in timed["contenders"].items()})
    row = simple_row(
        "quickstart/steps",
        "quickstart-steps",
        "quickstart train steps",
        values,
        unit="steps/s",
        higher_is_better=True,
        ratios=_steps_ratios(values, sorted(results), loop_unrolls),
        extra={
            "device_loop": {
                k: {kk: vv for kk, vv in c.items() if kk != "value"}
                for k, c in timed["contenders"].items()
            },
            "device_loop_steps": loop["steps"],
            "device_loop_compile_s": loop["compile_s"],
            "note": "fit: steps / time inside the compiled epochs (compile excluded); device "
            "loop: every epoch's steps in one compiled scan, one call",
        },
    )
    return [row]


def _steps_ratios(values: dict, fits: list[int], loop_unrolls: tuple[int, ...]) -> dict:
    """What unrolling buys (fit u / fit 1) and what the host loop costs (device loop u / fit u)."""
    fit = {u: values[FIT.format(u=u)] for u in fits}
    base = FIT.format(u=1)
    ratios = {f"{FIT.format(u=u)}/{base}": fit[u] / fit[1] for u in fits if u != 1 and 1 in fit}
    for u in loop_unrolls:
        if u in fit:
            ratios[f"{LOOP.format(u=u)}/{FIT.format(u=u)}"] = values[LOOP.format(u=u)] / fit[u]
    return ratios


_TABLE = re.compile(r"^\|\s*(compile time|train steps/s|wall time)\s*\|\s*([0-9.]+)")


def command_row(ctx: Context, extra: tuple[str, ...], timeout_s: float) -> list[dict]:
    """``quickstart/command``: a fresh ``ml-adv quickstart`` process, timed from outside."""
    with tempfile.TemporaryDirectory(prefix="ml_adv_quickstart_") as tmp:
        run_dir = str(Path(tmp) / "qs")
        cmd = [
            sys.executable,
            "-m",
            "ml_adv.cli",
            "quickstart",
            "--fresh",
            "--run-dir",
            run_dir,
            *extra,
        ]
        # ml_adv from this checkout, also where it is not installed (the GPU machine)
        paths = [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in paths if p))
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
        process_s = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(
            f"ml-adv quickstart exited {proc.returncode}: {(proc.stderr or proc.stdout)[-800:]}"
        )
    lines = proc.stdout.splitlines()
    printed = {m.group(1): float(m.group(2)) for m in map(_TABLE.match, lines) if m}
    # the one-line summary the command prints under its table
    summary = next((json.loads(line) for line in reversed(lines) if line.startswith("{")), {})
    values = {
        "training": printed.get("wall time"),
        "compile": printed.get("compile time"),
        "process": process_s,
    }
    ratios = {}
    if values["training"]:
        ratios["ml-adv quickstart/2-core CPU"] = CPU_REFERENCE_S / values["training"]
    ctx.log(f"  ml-adv quickstart: training {values['training']} s, process {process_s:.1f} s")
    return [
        simple_row(
            "quickstart/command",
            "quickstart",
            "ml-adv quickstart (fresh process)",
            values,
            unit="s",
            higher_is_better=False,
            ratios=ratios,
            extra={
                "command": " ".join(cmd[1:]),
                "steps_per_second": printed.get("train steps/s"),
                "test_accuracy": summary.get("test_accuracy"),
                "cpu_reference_training_s": CPU_REFERENCE_S,
                "cpu_reference_process_s": CPU_REFERENCE_PROCESS_S,
                "note": "ratio > 1: faster than the 2-core CPU's 14.0 s (benchmarks/README.md)",
            },
        )
    ]
