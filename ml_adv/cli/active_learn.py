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

from ml_adv.cli.common import (
    add_model_arguments,
    add_run_arguments,
    choices_help,
    comma_names,
    positive_int,
)

# The loop's counts: option, help; each defaults to ActiveLearningRunSettings' value.
COUNTS = (
    ("rounds", "select/label/update rounds per loop"),
    ("query-size", "samples labelled per round"),
    ("initial", "random initial labelled samples"),
    ("seeds", "loops per strategy (seeds --seed .. --seed + N - 1)"),
    ("mc-samples", "MC-dropout samples for BALD"),
    (
        "members",
        "train a committee of this many stacked members (BALD from members, not MC dropout); "
        "a committee retrains from scratch each round, so raise --min-steps (e.g. 500)",
    ),
    ("update-epochs", "epochs of each warm-started update"),
    ("min-steps", "at least this many steps per round"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ml_adv.active_learning.strategies import STRATEGIES
    from ml_adv.active_learning.workflow import ActiveLearningRunSettings

    d = ActiveLearningRunSettings()
    loop = parser.add_argument_group("active learning")
    loop.add_argument(
        "--strategies",
        type=comma_names,
        default=d.strategies,
        metavar="NAMES",
        help=choices_help("comma-separated sampling strategies", STRATEGIES.names()),
    )
    for name, help_text in COUNTS:
        default = getattr(d, name.replace("-", "_"))
        loop.add_argument(f"--{name}", type=positive_int, default=default, help=help_text)
    # An MLP by default: a round retrains in well under a second, so strategies compare quickly.
    add_model_arguments(parser, arch="mlp", epochs=30)
    add_run_arguments(parser.add_argument_group("run directory"), None, "runs/active-learn-<data>")


def run(args: argparse.Namespace) -> int:
    """Check, open the run folder (cleaned with --fresh), run every loop, print a table."""
    from ml_adv.active_learning import workflow
    from ml_adv.cli.common import open_run, progress, settings, settings_for

    chosen = settings_for(workflow.ActiveLearningRunSettings, args)
    # Unknown strategies fail here, before --fresh deletes anything or anything trains.
    inputs = workflow.prepare_active_learning_run(chosen)
    rd = open_run(args, f"active-learn-{args.data}")
    print(
        f"ml-adv: active learning on {args.data}: {', '.join(args.strategies)} x {args.seeds} "
        f"seed(s), {args.initial} + {args.rounds} x {args.query_size} labels -> {rd.path}/",
        flush=True,
    )
    report = workflow.run_active_learning_workflow(
        chosen, rd, inputs, say=progress, report_settings=settings(args)
    )
    _print_table(report["strategies"], workflow.TARGETS)
    return 0


def _print_table(summary: dict, targets: tuple[float, ...]) -> None:
    from ml_adv.cli.common import print_table

    def reach(r: dict) -> str:
        return f"{r['mean']:.0f}" if r["mean"] is not None else f"not reached ({r['reached']})"

    rows = [
        (
            name,
            f"{s['final_mean']:.4f} +- {s['std'][-1]:.4f}",
            *(reach(s["labels_to_reach"][f"{t:g}"]) for t in targets),
        )
        for name, s in summary.items()
    ]
    header = ("strategy", "final acc (mean +- std)", *(f"labels to {t:g}" for t in targets))
    print_table(rows, header=header)
