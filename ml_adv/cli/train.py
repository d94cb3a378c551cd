"""Train any architecture on a built-in dataset, a TFDS dataset or your own .npz / .csv file.

Examples:
  ml-adv train --arch lstm --data digits
  ml-adv train --arch cnn --data mnist --epochs 5 --batch-size 128
  ml-adv train --arch cnn --epochs 15 --lr 2e-3 --schedule warmup_cosine --warmup-fraction 0.05
  ml-adv train --arch mlp --data my_table.csv --label-column label --early-stopping --patience 3

A dataset that comes in several views (digits, mnist, fashion_mnist) is shown to each
architecture in the view it takes (images for cnn, rows for lstm, patches for the
transformer, patch tokens for bert, flat pixels for mlp); a .npz file holds arrays x, y
(and optionally x_test, y_test), a .csv file a header and one example per row. 15% of the
training split is held out for validation, and the test split (if any) is evaluated at the
end. A missing MNIST or TFDS dataset is downloaded (--no-download: fail instead).
Re-running the same command resumes from the last checkpoint; --fresh starts over.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

from ml_adv.cli.common import (
    add_model_arguments,
    add_options,
    add_run_arguments,
    dest,
    fmt,
    fraction,
    positive_float,
    positive_int,
)

MONITORS = ("val_accuracy", "val_loss", "train_accuracy", "train_loss")
# TrainConfig fields that make_trainer sets through the trainer's setters, not training_data.
BY_SETTER = ("grad_accum_steps", "mixed_precision", "data_parallel", "augment")

# The options that set one TrainConfig field each, by help group: ``(flag [METAVAR], field,
# read, help)`` rows (``common.add_options``), each defaulting to the field's value and passed
# on under the field's name (``training_data_from_args``).
EARLY_STOPPING_OPTIONS = (
    ("--early-stopping", "early_stopping", bool, "stop when --monitor stops improving"),
    ("--patience", "patience", positive_int, "epochs without improvement before stopping"),
    (
        "--monitor METRIC",
        "monitor",
        MONITORS,
        "metric for early stopping and the best checkpoint "
        "(losses are minimised, accuracies maximised)",
    ),
)
HARDWARE_OPTIONS = (
    ("--mixed-precision", "mixed_precision", bool, "bfloat16 compute, float32 weights"),
    (
        "--data-parallel",
        "data_parallel",
        bool,
        "shard batches over all devices (default: only where measured faster, see core_split)",
    ),
    ("--augment", "augment", bool, "default augmentation for the input kind"),
    (
        "--scan-unroll N",
        "scan_unroll",
        positive_int,
        "train steps per iteration of the compiled epoch loop (helps launch-bound small "
        "models on a GPU)",
    ),
)


def config_options() -> dict[str, tuple]:
    """The TrainConfig options by help group; the optimization group names the registries'
    choices."""
    from ml_adv.training.losses import LOSSES
    from ml_adv.training.optim import OPTIMIZERS, SCHEDULES

    optimization = (
        ("--optimizer NAME", "optimizer", OPTIMIZERS.names(), "optimizer"),
        ("--schedule NAME", "schedule", SCHEDULES.names(), "learning-rate schedule"),
        (
            "--warmup-fraction FRACTION",
            "warmup_fraction",
            fraction(False),
            "fraction of all steps spent warming up (warmup_* schedules)",
        ),
        ("--weight-decay", "weight_decay", float, "decoupled weight decay"),
        ("--loss NAME", "loss", LOSSES.names(), "loss"),
        (
            "--label-smoothing FRACTION",
            "label_smoothing",
            fraction(False),
            "label smoothing of the cross_entropy loss",
        ),
        (
            "--grad-clip-norm",
            "grad_clip_norm",
            positive_float,
            "clip gradients to this global norm (None: no clipping)",
        ),
        (
            "--grad-accum",
            "grad_accum_steps",
            positive_int,
            "accumulate gradients over this many batches per update",
        ),
    )
    return {
        "optimization": optimization,
        "early stopping": EARLY_STOPPING_OPTIONS,
        "speed and hardware": HARDWARE_OPTIONS,
    }


# Reading your own data file and holding out validation; several processes or hosts.
DATA_OPTIONS = (
    (
        "--label-column NAME",
        None,
        None,
        "the label column of a .csv --data file (default: the last)",
    ),
    (
        "--validation-split FRACTION",
        "validation_split",
        fraction(True),
        "fraction of the training split held out for validation",
    ),
)
HOST_OPTIONS = (
    ("--coordinator HOST:PORT", None, None, "process 0's address"),
    ("--num-processes N", None, positive_int, None),
    ("--process-id I", None, int, "0 .. N-1; 0 coordinates"),
)


def add_arguments(parser: argparse.ArgumentParser, defaults: dict[str, Any] | None = None) -> None:
    """The train options; ``defaults`` overrides shared defaults (the quickstart's)."""
    from ml_adv.trainer.training_data import DEFAULT_VALIDATION_SPLIT
    from ml_adv.training.config import TrainConfig

    d = dict(defaults or {})
    cfg = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    cfg.update(
        schedule=d.get("schedule", cfg["schedule"]), validation_split=DEFAULT_VALIDATION_SPLIT
    )
    add_model_arguments(parser, **{k: v for k, v in d.items() if k not in ("schedule", "run_dir")})
    add_options(parser.add_argument_group("your own data"), DATA_OPTIONS, cfg)
    for group, rows in config_options().items():
        add_options(parser.add_argument_group(group), rows, cfg)
    hosts = "several processes or hosts (data parallel; every process runs the same command)"
    add_options(parser.add_argument_group(hosts), HOST_OPTIONS, cfg)
    add_run_arguments(
        parser.add_argument_group("run directory"), d.get("run_dir"), "runs/<arch>-<data>-s<seed>"
    )


def run_name(args: argparse.Namespace) -> str:
    """``<arch>-<data>-s<seed>`` (a data file counts by its name without the suffix)."""
    return f"{args.arch}-{Path(args.data).stem}-s{args.seed}"


def data_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """``{"data": name}``, or for a ``.npz``/``.csv`` file its arrays (``ml_adv.data.files``)."""
    from ml_adv.data.files import is_data_file, load_arrays

    if not is_data_file(args.data):
        return {"data": args.data, "download": not args.no_download}
    arrays = load_arrays(args.data, label_column=args.label_column)
    out: dict[str, Any] = {"data": (arrays["x"], arrays["y"])}
    if "x_test" in arrays:
        out["test_data"] = (arrays["x_test"], arrays["y_test"])
    return out


def training_data_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The trainer's ``training_data`` dict for parsed ``args`` (what the README's commands run)."""
    by_field = {
        field: getattr(args, dest(flag))
        for rows in config_options().values()
        for flag, field, _, _ in rows
        if field not in BY_SETTER
    }
    return {
        **data_from_args(args),
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.lr,
        "seed": args.seed,
        **by_field,
        "monitor_mode": "min" if args.monitor.endswith("loss") else "max",
        "validation_split": args.validation_split,
        "size": args.size,
    }


def make_trainer(args: argparse.Namespace):
    """An ``AdvancedCustomModelTrainer`` set up as ``args`` asks."""
    from ml_adv.trainer.facade import AdvancedCustomModelTrainer

    trainer = AdvancedCustomModelTrainer(architecture_type=args.arch, size=args.size)
    trainer.set_resource_monitoring(True)
    trainer.set_mixed_precision(bool(args.mixed_precision))
    if args.grad_accum > 1:
        trainer.set_gradient_accumulation(args.grad_accum)
    # Several processes train one model only by splitting its batches.
    if args.data_parallel or (args.num_processes or 1) > 1:  # else "auto" (core_split)
        trainer.set_distributed_training(True)
    trainer.set_data_augmentation(bool(args.augment))
    return trainer


def run(args: argparse.Namespace) -> int:
    """Validate everything, open the run folder (cleaned with --fresh), train, save the
    model, print a table.
    """
    from ml_adv.cli.common import open_run
    from ml_adv.trainer.facade import AdvancedTrainingStrategy
    from ml_adv.trainer.training_data import TRAIN_FIELDS

    training_data = training_data_from_args(args)
    # Every option is checked before --fresh deletes anything or anything compiles.
    AdvancedTrainingStrategy(**{k: v for k, v in training_data.items() if k in TRAIN_FIELDS})
    trainer = make_trainer(args)
    trainer.check(training_data)  # the data fits the model: nothing is written before that holds
    rd = open_run(args, run_name(args))
    print(f"ml-adv: training {args.arch} ({args.size}) on {args.data!r} -> {rd.path}/", flush=True)
    started = time.perf_counter()
    result = trainer.train(training_data, run_dir=rd)
    wall = time.perf_counter() - started
    if result.model is not None:
        model_dir = rd.model_dir  # recorded first, so the previous model can be replaced
        rd.remove("model")
        result.model.save(model_dir)
    _print_table(args, result, wall)
    print(
        f"ml-adv: the run is in {rd.path}/ (report.json, metrics.jsonl, plots/, "
        f"checkpoints/{', model/' if result.model is not None else ''}); the same command resumes "
        "it, --fresh starts over"
    )
    if not result.success:
        print(f"ml-adv: training failed: {result.error}", file=sys.stderr)
        return 1
    return 0


def _print_table(args, result, wall: float) -> None:
    from ml_adv.cli.common import print_table
    from ml_adv.rundir import dumps

    m = result.metrics
    if m.get("resumed_from") and m["resumed_from"] >= m.get("epochs_run", 0):
        print(
            f"{result.run_dir} already holds a finished run ({m['resumed_from']} epochs): showing "
            "it; pass --fresh to train again"
        )
    elif m.get("resumed_from"):
        print(f"resumed from epoch {m['resumed_from']}")
    print_table(
        [
            ("architecture", f"{args.arch} ({args.size})"),
            ("data", args.data),
            ("epochs run", f"{m.get('epochs_run', '-')} (best {m.get('best_epoch', '-')})"),
            ("train loss", fmt(m.get("train_loss"))),
            ("val accuracy", fmt(m.get("val_accuracy"))),
            ("test accuracy", fmt(m.get("test_accuracy"))),
            ("test loss (NLL)", fmt(m.get("test_loss"))),
            ("compile time", fmt(m.get("compile_seconds"), "{:.2f} s")),
            ("train steps/s", fmt(m.get("steps_per_second"), "{:.1f}")),
            ("wall time", f"{wall:.1f} s"),
            ("run directory", result.run_dir),
        ]
    )
    print(dumps({"test_accuracy": m.get("test_accuracy"), "wall_seconds": round(wall, 2)}))
