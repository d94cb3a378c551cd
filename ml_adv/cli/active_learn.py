"""Simulate active learning on a dataset and compare strategies (an oracle gives the labels).

Examples:
  ml-adv active-learn --data digits --strategies random,entropy,bald,coreset --rounds 10
  ml-adv active-learn --strategies random,hybrid --seeds 5 --initial 20 --query-size 20 --arch cnn

Every (strategy, seed) pair starts from the same seeded random initial labelled set
(--initial samples of the training split); the rest of the training split is the pool,
and its true labels are the oracle. Each round selects --query-size samples, records
their labels and warm-starts the model for a few epochs; accuracy is measured on the
test split. Writes plots/learning_curve.png (mean +- std over seeds per strategy),
metrics.jsonl (one line per model), report.json (curves, labels needed to reach 90%
and 95%) and one journal per loop under loops/. Killed and started again with the same
command, each loop resumes from its journal; --fresh starts over.
"""

from __future__ import annotations

import argparse
import time

from ml_adv.cli.common import (
    add_model_arguments,
    add_run_arguments,
    choices_help,
    comma_names,
    positive_int,
)

TARGETS = (0.9, 0.95)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ml_adv.active_learning.strategies import STRATEGIES

    loop = parser.add_argument_group("active learning")
    loop.add_argument(
        "--strategies",
        type=comma_names,
        default=("random", "entropy", "bald", "coreset"),
        metavar="NAMES",
        help=choices_help("comma-separated sampling strategies", STRATEGIES.names()),
    )
    loop.add_argument(
        "--rounds", type=positive_int, default=10, help="select/label/update rounds per loop"
    )
    loop.add_argument(
        "--query-size", type=positive_int, default=20, help="samples labelled per round"
    )
    loop.add_argument(
        "--initial", type=positive_int, default=20, help="random initial labelled samples"
    )
    loop.add_argument(
        "--seeds",
        type=positive_int,
        default=3,
        help="loops per strategy (seeds --seed .. --seed + N - 1)",
    )
    loop.add_argument(
        "--mc-samples", type=positive_int, default=10, help="MC-dropout samples for BALD"
    )
    loop.add_argument(
        "--members",
        type=positive_int,
        default=1,
        help="train a committee of this many stacked members (BALD from members, not MC dropout); "
        "a committee retrains from scratch each round, so raise --min-steps (e.g. 500)",
    )
    loop.add_argument(
        "--update-epochs", type=positive_int, default=5, help="epochs of each warm-started update"
    )
    loop.add_argument(
        "--min-steps", type=positive_int, default=100, help="at least this many steps per round"
    )
    # An MLP by default: a round retrains in well under a second, so strategies compare quickly.
    add_model_arguments(parser, arch="mlp", epochs=30)
    add_run_arguments(parser.add_argument_group("run directory"), None, "runs/active-learn-<data>")


def run(args: argparse.Namespace) -> int:
    """Validate, clean with --fresh, run (or resume) every loop, plot, report, print a table."""
    from ml_adv.active_learning.plots import plot_strategy_curves
    from ml_adv.active_learning.simulate import summarise_curves
    from ml_adv.cli.common import open_run, settings
    from ml_adv.data.catalog import load_dataset

    config = _loop_config(args)
    download = not args.no_download
    train, test = (load_dataset(args.data, split=s, download=download) for s in ("train", "test"))
    rd = open_run(args, f"active-learn-{args.data}")
    print(
        f"ml-adv: active learning on {args.data}: {', '.join(args.strategies)} x {args.seeds} "
        f"seed(s), {args.initial} + {args.rounds} x {args.query_size} labels -> {rd.path}/",
        flush=True,
    )
    started = time.perf_counter()
    curves, records = _run_loops(args, config, train, test, rd)
    rd.rewrite_metrics(records)
    summary = summarise_curves(curves, TARGETS)
    plot = plot_strategy_curves(
        summary,
        rd.plot_path("learning_curve"),
        targets=TARGETS,
        title=f"{args.data}: {args.arch}/{args.size}, {args.seeds} seed(s)",
    )
    rd.write_report(
        {
            "command": "active-learn",
            "data": args.data,
            "strategies": summary,
            "settings": settings(args),
            "wall_seconds": round(time.perf_counter() - started, 1),
            "plot": plot,
        }
    )
    _print_table(summary)
    return 0


def _loop_config(args: argparse.Namespace):
    """The checked strategies' shared ``ActiveLearningConfig`` (unknown names fail here, before
    anything is deleted or trained)."""
    from ml_adv.active_learning.loop import ActiveLearningConfig
    from ml_adv.active_learning.strategies import resolve_strategy
    from ml_adv.training.config import TrainConfig

    for name in args.strategies:
        resolve_strategy(name)  # unknown names fail before anything is deleted or trained
    return ActiveLearningConfig(
        train=TrainConfig(
            epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr, seed=args.seed
        ),
        update_epochs=args.update_epochs,
        min_steps=args.min_steps,
        mc_samples=args.mc_samples,
        members=args.members,
    )


def _run_loops(args: argparse.Namespace, config, train, test, rd):
    """Run (or resume) one loop per (strategy, seed); the curves by strategy and every record."""
    from ml_adv.active_learning.simulate import simulate_loop

    curves: dict[str, list] = {}
    records = []
    for name in args.strategies:
        for seed in range(args.seed, args.seed + args.seeds):
            t0 = time.perf_counter()
            curve = simulate_loop(
                name,
                train,
                test,
                rounds=args.rounds,
                query_size=args.query_size,
                initial=args.initial,
                seed=seed,
                architecture=args.arch,
                size=args.size,
                config=config,
                run_dir=rd.tree_for(f"loops/{name}-s{seed}"),
            )
            curves.setdefault(name, []).append(curve)
            records.extend(curve)
            print(
                f"  {name:>16} seed {seed}: {curve[-1]['labels']} labels -> test accuracy "
                f"{curve[-1]['val_accuracy']:.4f} ({time.perf_counter() - t0:.1f} s)",
                flush=True,
            )
    return curves, records


def _print_table(summary) -> None:
    from ml_adv.cli.common import print_table

    rows = []
    for name, s in summary.items():
        reach = [s["labels_to_reach"][f"{t:g}"] for t in TARGETS]
        rows.append(
            (
                name,
                f"{s['final_mean']:.4f} +- {s['std'][-1]:.4f}",
                *(
                    f"{r['mean']:.0f}" if r["mean"] is not None else f"not reached ({r['reached']})"
                    for r in reach
                ),
            )
        )
    print_table(
        rows, header=("strategy", "final acc (mean +- std)", *(f"labels to {t:g}" for t in TARGETS))
    )
