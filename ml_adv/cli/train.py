"""Train any architecture on a built-in dataset or a locally prepared TFDS dataset.

Examples:
  ml-adv train --arch lstm --data digits
  ml-adv train --arch cnn --epochs 15 --lr 2e-3 --schedule warmup_cosine --warmup-fraction 0.05
  ml-adv train --arch mlp --data digits --early-stopping --patience 3 --run-dir runs/mlp

The built-in digits data is shown to each architecture in the view it takes
(images for cnn, rows for lstm, pixel tokens for transformer/bert, flat pixels for
mlp); 15% of the training split is held out for validation, and the built-in test
split is evaluated at the end. Any other --data name is read from a TFDS dataset
prepared locally in the ArrayRecord format (TFDS_DATA_DIR or ~/tensorflow_datasets);
nothing is downloaded. Re-running the same command resumes from the last checkpoint;
--fresh starts over.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path
from typing import Any

# The train command's own defaults; the remaining ones are TrainConfig's (one place).
TRAIN_DEFAULTS: dict[str, Any] = {"arch": "cnn", "data": "digits", "size": "small", "epochs": 20,
                                  "batch_size": 32, "lr": 1e-3, "schedule": "constant", "run_dir": None}
MONITORS = ("val_accuracy", "val_loss", "train_accuracy", "train_loss")


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}") from None
        if not (value > 0 and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}")
        return value

    parse.__name__ = f"positive {kind.__name__}"
    return parse


def _fraction(low_open: bool):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        ok = (0 < value < 1) if low_open else (0 <= value < 1)
        if not ok:
            raise argparse.ArgumentTypeError(f"expected a number in {'(0, 1)' if low_open else '[0, 1)'}, got {text!r}")
        return value

    parse.__name__ = "fraction"
    return parse


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer below 2**63, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser, defaults: dict[str, Any] | None = None) -> None:
    """The train options; ``defaults`` overrides ``TRAIN_DEFAULTS`` (the quickstart uses it)."""
    from ml_adv.cli.common import add_run_arguments, choices_help
    from ml_adv.data.catalog import available_datasets
    from ml_adv.models import ARCHITECTURES
    from ml_adv.training.config import TrainConfig
    from ml_adv.training.losses import LOSSES
    from ml_adv.training.optim import OPTIMIZERS, SCHEDULES

    d = {**TRAIN_DEFAULTS, **(defaults or {})}
    cfg = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    sizes = sorted({s for name in ARCHITECTURES.names() for s in ARCHITECTURES.get(name).sizes})

    model = parser.add_argument_group("model and data")
    model.add_argument("--arch", default=d["arch"], choices=ARCHITECTURES.names(), metavar="NAME",
                       help=choices_help("architecture", ARCHITECTURES.names()))
    model.add_argument("--size", default=d["size"], choices=sizes, metavar="NAME",
                       help=choices_help("model size variant", sizes))
    model.add_argument("--data", default=d["data"], metavar="NAME",
                       help=choices_help("dataset: a built-in name, a TFDS name (cifar10 ...), or your own "
                                         ".npz (arrays x, y[, x_test, y_test]) or .csv file; built-ins",
                                         available_datasets()))
    model.add_argument("--label-column", default=None, metavar="NAME",
                       help="the label column of a .csv --data file (default: the last)")
    model.add_argument("--no-download", action="store_true",
                       help="never download a missing dataset (MNIST files, TFDS preparation): fail instead")
    model.add_argument("--validation-split", type=_fraction(True), default=0.15, metavar="FRACTION",
                       help="fraction of the training split held out for validation")

    opt = parser.add_argument_group("optimization")
    opt.add_argument("--epochs", type=_positive(int), default=d["epochs"], help="maximum passes over the data")
    opt.add_argument("--batch-size", type=_positive(int), default=d["batch_size"], help="examples per step")
    opt.add_argument("--lr", type=_positive(float), default=d["lr"], help="peak learning rate")
    opt.add_argument("--optimizer", default=cfg["optimizer"], choices=OPTIMIZERS.names(), metavar="NAME",
                     help=choices_help("optimizer", OPTIMIZERS.names()))
    opt.add_argument("--schedule", default=d["schedule"], choices=SCHEDULES.names(), metavar="NAME",
                     help=choices_help("learning-rate schedule", SCHEDULES.names()))
    opt.add_argument("--warmup-fraction", type=_fraction(False), default=cfg["warmup_fraction"],
                     metavar="FRACTION", help="fraction of all steps spent warming up (warmup_* schedules)")
    opt.add_argument("--weight-decay", type=float, default=cfg["weight_decay"], help="decoupled weight decay")
    opt.add_argument("--loss", default=cfg["loss"], choices=LOSSES.names(), metavar="NAME",
                     help=choices_help("loss", LOSSES.names()))
    opt.add_argument("--label-smoothing", type=_fraction(False), default=cfg["label_smoothing"],
                     metavar="FRACTION", help="label smoothing of the cross_entropy loss")
    opt.add_argument("--grad-clip-norm", type=_positive(float), default=cfg["grad_clip_norm"],
                     help="clip gradients to this global norm (None: no clipping)")
    opt.add_argument("--grad-accum", type=_positive(int), default=cfg["grad_accum_steps"],
                     help="accumulate gradients over this many batches per update")
    opt.add_argument("--seed", type=_non_negative_int, default=cfg["seed"],
                     help="seeds initialisation, dropout, augmentation and shuffling")

    stop = parser.add_argument_group("early stopping")
    stop.add_argument("--early-stopping", action="store_true", help="stop when --monitor stops improving")
    stop.add_argument("--patience", type=_positive(int), default=cfg["patience"],
                      help="epochs without improvement before stopping")
    stop.add_argument("--monitor", default=cfg["monitor"], choices=MONITORS, metavar="METRIC",
                      help=choices_help("metric for early stopping and the best checkpoint "
                                        "(losses are minimised, accuracies maximised)", list(MONITORS)))

    hw = parser.add_argument_group("speed and hardware")
    hw.add_argument("--mixed-precision", action="store_true", help="bfloat16 compute, float32 weights")
    hw.add_argument("--data-parallel", action="store_true",
                    help="shard batches over all devices (default: only where measured faster, see core_split)")
    hw.add_argument("--augment", action="store_true", help="default augmentation for the input kind")

    run = parser.add_argument_group("run directory")
    add_run_arguments(run, d["run_dir"], "runs/<arch>-<data>-s<seed>")


def default_run_dir(args: argparse.Namespace) -> Path:
    return Path(args.run_dir or f"runs/{args.arch}-{Path(args.data).stem}-s{args.seed}")


def data_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """``{"data": name}``, or for a ``.npz``/``.csv`` file its arrays (``ml_adv.data.files``)."""
    from ml_adv.data.files import is_data_file, load_arrays

    if not is_data_file(args.data):
        return {"data": args.data, "download": not getattr(args, "no_download", False)}
    arrays = load_arrays(args.data, label_column=getattr(args, "label_column", None))
    out: dict[str, Any] = {"data": (arrays["x"], arrays["y"])}
    if "x_test" in arrays:
        out["test_data"] = (arrays["x_test"], arrays["y_test"])
    return out


def training_data_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The trainer's ``training_data`` dict for parsed ``args`` (what the README's commands run)."""
    return {**data_from_args(args), "epochs": args.epochs, "batch_size": args.batch_size, "learning_rate": args.lr,
            "optimizer": args.optimizer, "schedule": args.schedule, "warmup_fraction": args.warmup_fraction,
            "weight_decay": args.weight_decay, "loss": args.loss, "label_smoothing": args.label_smoothing,
            "grad_clip_norm": args.grad_clip_norm, "seed": args.seed, "early_stopping": args.early_stopping,
            "patience": args.patience, "monitor": args.monitor,
            "monitor_mode": "min" if args.monitor.endswith("loss") else "max",
            "validation_split": args.validation_split, "size": args.size, "run_name": default_run_dir(args).name}


def make_trainer(args: argparse.Namespace, run_dir: Path):
    """An ``AdvancedCustomModelTrainer`` set up as ``args`` asks."""
    from ml_adv.trainer.facade import AdvancedCustomModelTrainer

    trainer = AdvancedCustomModelTrainer(architecture_type=args.arch, size=args.size, run_root=run_dir.parent)
    trainer.set_resource_monitoring(True)
    trainer.set_mixed_precision(bool(args.mixed_precision))
    if args.grad_accum > 1:
        trainer.set_gradient_accumulation(args.grad_accum)
    if args.data_parallel:  # else the default: "auto" (training.core_split)
        trainer.set_distributed_training(True)
    trainer.set_data_augmentation(bool(args.augment))
    return trainer


def run(args: argparse.Namespace) -> int:
    """Validate everything, clean the run directory if ``--fresh``, train, save the model, print a table."""
    import asyncio

    from ml_adv.cli.common import clean_if_fresh
    from ml_adv.rundir import RunDirectory, check_location
    from ml_adv.trainer.facade import AdvancedTrainingStrategy
    from ml_adv.trainer.training_data import TRAIN_FIELDS

    run_dir = default_run_dir(args)
    training_data = training_data_from_args(args)
    # Every option is checked before --fresh deletes anything or anything compiles.
    AdvancedTrainingStrategy(**{k: v for k, v in training_data.items() if k in TRAIN_FIELDS})
    trainer = make_trainer(args, run_dir)
    check_location(run_dir, "run_dir")  # refuse '.', home, '/' before anything else
    clean_if_fresh(run_dir, args.fresh)  # the trainer creates the run directory once the data checks out
    print(f"ml-adv: training {args.arch} ({args.size}) on {args.data!r} -> {run_dir}/", flush=True)
    started = time.perf_counter()
    result = asyncio.run(trainer.train_custom_model(training_data))
    wall = time.perf_counter() - started
    if result.model is not None:
        rd = RunDirectory(run_dir)
        model_dir = rd.model_dir
        rd.remove("model")
        result.model.save(model_dir)
    _print_table(args, result, wall)
    print(f"ml-adv: the run is in {run_dir}/ (report.json, metrics.jsonl, plots/, checkpoints/"
          f"{', model/' if result.model is not None else ''}); the same command resumes it, --fresh starts over")
    if not result.success:
        print(f"ml-adv: training failed: {result.error}", file=sys.stderr)
        return 1
    return 0


def _print_table(args, result, wall: float) -> None:
    from ml_adv.rundir import dumps

    m = result.metrics
    if m.get("resumed_from") and m["resumed_from"] >= m.get("epochs_run", 0):
        print(f"{result.run_dir} already holds a finished run ({m['resumed_from']} epochs): showing it; "
              "pass --fresh to train again")
    elif m.get("resumed_from"):
        print(f"resumed from epoch {m['resumed_from']}")
    rows = [
        ("architecture", f"{args.arch} ({args.size})"),
        ("data", args.data),
        ("epochs run", f"{m.get('epochs_run', '-')} (best {m.get('best_epoch', '-')})"),
        ("train loss", _fmt(m.get("train_loss"))),
        ("val accuracy", _fmt(m.get("val_accuracy"))),
        ("test accuracy", _fmt(m.get("test_accuracy"))),
        ("test loss (NLL)", _fmt(m.get("test_loss"))),
        ("compile time", _fmt(m.get("compile_seconds"), "{:.2f} s")),
        ("train steps/s", _fmt(m.get("steps_per_second"), "{:.1f}")),
        ("wall time", f"{wall:.1f} s"),
        ("run directory", result.run_dir),
    ]
    width = max(len(k) for k, _ in rows)
    print("\n| " + "metric".ljust(width) + " | value |")
    print("|" + "-" * (width + 2) + "|-------|")
    for key, value in rows:
        print(f"| {key.ljust(width)} | {value} |")
    print()
    print(dumps({"test_accuracy": m.get("test_accuracy"), "wall_seconds": round(wall, 2)}))


def _fmt(value, pattern: str = "{:.4f}") -> str:
    # A resumed, already finished run has no timings: show "-" rather than "nan".
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return pattern.format(value)
