"""Search hyper-parameters (and the architecture) on a built-in or TFDS dataset.

Examples:
  ml-adv hpo --arch cnn --data digits --method bayesian --trials 30
  ml-adv hpo --arch mlp,cnn --size tiny,small --method genetic --trials 40 --pruner median
  ml-adv hpo --arch mlp --method grid_search --trials 12 --space '{"learning_rate": ["log", 1e-4, 1e-2]}'
  ml-adv hpo --arch cnn --method random --trials 16 --workers 2
  ml-adv hpo --arch mlp --method genetic --trials 32 --stacked 8 --space '{"learning_rate": ["log", 1e-4, 3e-2]}'
  ml-adv hpo --arch mlp --method population --trials 27
  ml-adv hpo --arch mlp --method pbt --trials 8 --epochs 12 --ready 2 --fraction 0.25

Each trial trains on the training split minus a validation part (--validation-split)
and is scored on that part; the test split is never used. Writes trials.jsonl (one
line per finished trial, flushed and fsync'd), best_config.json, plots/best_so_far.png,
plots/parallel_coordinates.png and report.json under the run directory. Killed and
started again with the same command, the study replays trials.jsonl and runs only the
trials that never finished; --fresh starts over.
"""  # noqa: E501 (the example commands are printed verbatim by --help)

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ml_adv.cli.common import (
    add_model_arguments,
    add_options,
    add_run_arguments,
    choices_help,
    positive_int,
)
from ml_adv.errors import ConfigError

# The search's numeric options: flag [METAVAR], SearchRunSettings field (its default), type, help.
OPTIONS = (
    ("--grid-points", "grid_points", positive_int, "values per float axis (grid_search)"),
    ("--workers", "workers", positive_int, "run this many trials at once in a process pool"),
    (
        "--stacked P",
        "stacked",
        positive_int,
        "ask P configurations at a time and train them as one stacked program "
        "(configurations that differ only in learning rate / label smoothing share it)",
    ),
    (
        "--ready EPOCHS",
        "ready",
        positive_int,
        "pbt: epochs between two exploit/explore steps (default 2)",
    ),
    (
        "--fraction",
        "fraction",
        float,
        "pbt: the bottom fraction copies members of the top fraction, in (0, 0.5] (default 0.25)",
    ),
    (
        "--validation-split FRACTION",
        "validation_split",
        float,
        "fraction of the training split each trial is scored on",
    ),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ml_adv.hpo.methods import SEARCH_METHODS
    from ml_adv.hpo.pruning import PRUNERS
    from ml_adv.hpo.workflow import SearchRunSettings

    d = vars(SearchRunSettings())
    search = parser.add_argument_group("search")
    search.add_argument(
        "--method",
        default=d["method"],
        metavar="NAME",
        help=choices_help(
            "search method (or any nevergrad optimizer name)", SEARCH_METHODS.names()
        ),
    )
    search.add_argument(
        "--trials", type=positive_int, default=d["trials"], help="number of trials (max_trials)"
    )
    search.add_argument(
        "--space",
        default=None,
        metavar="JSON",
        help="search space as JSON or a path to a JSON file, e.g. "
        '\'{"learning_rate": ["log", 1e-4, 1e-2], "batch_size": [16, 32]}\' '
        "(default: learning rate, batch size, dropout, label smoothing, and the "
        "architecture/size when several are given)",
    )
    search.add_argument(
        "--pruner",
        default="none",
        choices=["none", *PRUNERS.names()],
        help="stop unpromising trials on their per-epoch validation accuracy",
    )
    add_options(search, OPTIONS, d)
    # --epochs, --batch-size and --lr are each trial's (a search's space may override the last two);
    # trials are short and small, so 5 epochs of the tiny size unless asked otherwise.
    add_model_arguments(parser, several=True, size="tiny", epochs=5)
    add_run_arguments(
        parser.add_argument_group("run directory"), None, "runs/hpo-<arch>-<data>-<method>"
    )


def _space(text: str | None):
    """--space: JSON, or a path to a JSON file, as the declaration it holds."""
    if text is None:
        return None
    is_path = not text.lstrip().startswith(("{", "[")) and Path(text).is_file()
    try:
        return json.loads(Path(text).read_text() if is_path else text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--space: expected JSON or a JSON file, got {text!r} ({exc})") from None


def run(args: argparse.Namespace) -> int:
    """Check, open the run folder (cleaned with --fresh), run (or resume) the study, print a
    table; the exit status is 0 when some trial succeeded."""
    from ml_adv.cli.common import open_run, settings_for
    from ml_adv.hpo import workflow

    chosen = settings_for(
        workflow.SearchRunSettings,
        args,
        architectures=args.arch,
        sizes=args.size,
        space=_space(args.space),
        pruner=None if args.pruner == "none" else args.pruner,
    )
    # The data, method, space and options are checked before --fresh deletes anything.
    with workflow.prepare_search_run(chosen) as inputs:
        rd = open_run(args, f"hpo-{'-'.join(args.arch)}-{args.data}-{args.method}")
        print(
            f"ml-adv: {args.method} search over {inputs.space.names} ({args.trials} trials, "
            f"{args.epochs} epochs each) -> {rd.path}/",
            flush=True,
        )
        started = time.perf_counter()
        result = workflow.run_search_workflow(chosen, rd, inputs)
    _print_summary(args, result, rd, time.perf_counter() - started)
    return 0 if result.best_config is not None else 1


def _print_summary(args: argparse.Namespace, result, rd, wall: float) -> None:
    from ml_adv.cli.common import fmt, print_table

    s = result.summary()
    if result.resumed_trials:
        print(f"resumed: {result.resumed_trials} finished trial(s) replayed from trials.jsonl")
    rows = [
        ("method", args.method),
        ("trials", f"{s['trials']} (ok {s['ok']}, failed {s['failed']}, pruned {s['pruned']})"),
        ("best val accuracy", "-" if result.best_score is None else f"{result.best_score:.4f}"),
        ("best trial", fmt(result.best_trial, "{}")),
        ("best config", json.dumps(result.best_config)),
        ("wall time", f"{wall:.1f} s"),
        ("run directory", str(rd.path)),
    ]
    if "pbt" in s:  # the schedule is PBT's answer: report.json holds it, with every copy
        copies = sum(len(t["lineage"]) for t in result.trials)
        rows.insert(-2, ("exploit copies", f"{copies} over {len(s['pbt']['intervals'])} intervals"))
    print_table(rows)
