"""The ``ml-adv`` console script: a thin entry point over the library.

Commands:
    ml-adv quickstart            train a CNN on the built-in real digits data
    ml-adv train --arch lstm ... train any architecture on a built-in or TFDS dataset

Runs write ``runs/<name>/`` (config.json, metrics.jsonl, checkpoints/, plots/,
report.json, model/). Re-running the same command after an interruption resumes
from the last checkpoint; ``--fresh`` starts over.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

QUICKSTART = {"arch": "cnn", "data": "digits", "epochs": 40, "batch_size": 32, "lr": 2e-3,
              "schedule": "warmup_cosine", "run_dir": "runs/quickstart"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ml-adv", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, defaults in (("quickstart", QUICKSTART), ("train", {})):
        p = sub.add_parser(name, help="train a CNN on digits" if name == "quickstart" else "train a model")
        p.add_argument("--arch", default=defaults.get("arch", "cnn"), help="mlp, cnn, lstm, transformer, bert")
        p.add_argument("--data", default=defaults.get("data", "digits"), help="built-in name (digits, digits_m ...) or a TFDS name")
        p.add_argument("--size", default="small", help="model size variant (tiny, small, base ...)")
        p.add_argument("--epochs", type=int, default=defaults.get("epochs", 20))
        p.add_argument("--batch-size", type=int, default=defaults.get("batch_size", 32))
        p.add_argument("--lr", type=float, default=defaults.get("lr", 1e-3))
        p.add_argument("--optimizer", default="adam")
        p.add_argument("--schedule", default=defaults.get("schedule", "constant"))
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--early-stopping", action="store_true")
        p.add_argument("--patience", type=int, default=5)
        p.add_argument("--mixed-precision", action="store_true", help="bfloat16 compute, float32 weights")
        p.add_argument("--grad-accum", type=int, default=1)
        p.add_argument("--data-parallel", action="store_true", help="shard batches over all devices")
        p.add_argument("--augment", action="store_true", help="default augmentation for the input kind")
        p.add_argument("--run-dir", default=defaults.get("run_dir"), help="default: runs/<arch>-<data>-s<seed>")
        p.add_argument("--fresh", action="store_true", help="start over: delete what ml_adv wrote in the run directory (checkpoints, metrics, report, plots, model), nothing else")
    return parser


def _train(args) -> int:
    import asyncio

    from ml_adv.training.facade import AdvancedCustomModelTrainer

    run_dir = Path(args.run_dir or f"runs/{args.arch}-{args.data}-s{args.seed}")
    if args.fresh:
        from ml_adv.rundir import RunDirectory

        RunDirectory.clean(run_dir)  # only what ml_adv recorded; refuses unmarked folders
    trainer = AdvancedCustomModelTrainer(architecture_type=args.arch, size=args.size, run_root=run_dir.parent)
    trainer.set_resource_monitoring(True)
    if args.mixed_precision:
        trainer.set_mixed_precision(True)
    if args.grad_accum > 1:
        trainer.set_gradient_accumulation(args.grad_accum)
    if args.data_parallel:
        trainer.set_distributed_training(True)
    if args.augment:
        trainer.set_data_augmentation(True)
    training_data = {"data": args.data, "epochs": args.epochs, "batch_size": args.batch_size,
                     "learning_rate": args.lr, "optimizer": args.optimizer, "schedule": args.schedule,
                     "seed": args.seed, "early_stopping": args.early_stopping, "patience": args.patience,
                     "run_name": run_dir.name}
    print(f"ml-adv: training {args.arch} ({args.size}) on {args.data!r} -> {run_dir}/", flush=True)
    started = time.perf_counter()
    result = asyncio.run(trainer.train_custom_model(training_data))
    wall = time.perf_counter() - started
    if result.model is not None:
        from ml_adv.rundir import RunDirectory

        rd = RunDirectory(run_dir)
        model_dir = rd.model_dir
        rd.remove("model")
        result.model.save(model_dir)
    _print_table(args, result, wall)
    if not result.success:
        print(f"ml-adv: training failed: {result.error}", file=sys.stderr)
        return 1
    return 0


def _print_table(args, result, wall: float) -> None:
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
        ("compile time", f"{m.get('compile_seconds', float('nan')):.2f} s"),
        ("train steps/s", f"{m.get('steps_per_second', float('nan')):.1f}"),
        ("wall time", f"{wall:.1f} s"),
        ("run directory", result.run_dir),
    ]
    width = max(len(k) for k, _ in rows)
    print("\n| " + "metric".ljust(width) + " | value |")
    print("|" + "-" * (width + 2) + "|-------|")
    for key, value in rows:
        print(f"| {key.ljust(width)} | {value} |")
    print()
    print(json.dumps({"test_accuracy": m.get("test_accuracy"), "wall_seconds": round(wall, 2)}))


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def main(argv: list[str] | None = None) -> int:
    from ml_adv.errors import MlAdvError

    args = _parser().parse_args(argv)
    try:
        return _train(args)
    except MlAdvError as exc:
        print(f"ml-adv: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
