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

from ml_adv.cli.common import add_model_arguments, add_run_arguments, choices_help, positive_int
from ml_adv.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    search = parser.add_argument_group("search")
    _add_method_arguments(search)
    _add_parallel_arguments(search)
    _add_pbt_arguments(search)
    search.add_argument(
        "--validation-split",
        type=float,
        default=0.2,
        metavar="FRACTION",
        help="fraction of the training split each trial is scored on",
    )
    # --epochs, --batch-size and --lr are each trial's (a search's space may override the last two);
    # trials are short and small, so 5 epochs of the tiny size unless asked otherwise.
    add_model_arguments(parser, several=True, size="tiny", epochs=5)
    add_run_arguments(
        parser.add_argument_group("run directory"), None, "runs/hpo-<arch>-<data>-<method>"
    )


def _add_method_arguments(search) -> None:
    """``--method --trials --space --pruner --grid-points``: what is searched, and how."""
    from ml_adv.hpo.methods import SEARCH_METHODS
    from ml_adv.hpo.pruning import PRUNERS

    search.add_argument(
        "--method",
        default="bayesian",
        metavar="NAME",
        help=choices_help(
            "search method (or any nevergrad optimizer name)", SEARCH_METHODS.names()
        ),
    )
    search.add_argument(
        "--trials", type=positive_int, default=30, help="number of trials (max_trials)"
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
    search.add_argument(
        "--grid-points", type=positive_int, default=3, help="values per float axis (grid_search)"
    )


def _add_parallel_arguments(search) -> None:
    """``--workers --stacked``: several trials at once, in processes or as one program."""
    search.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        help="run this many trials at once in a process pool",
    )
    search.add_argument(
        "--stacked",
        type=positive_int,
        default=None,
        metavar="P",
        help="ask P configurations at a time and train them as one stacked program "
        "(configurations that differ only in learning rate / label smoothing share it)",
    )


def _add_pbt_arguments(search) -> None:
    """``--ready --fraction``: population-based training's schedule."""
    search.add_argument(
        "--ready",
        type=positive_int,
        default=None,
        metavar="EPOCHS",
        help="pbt: epochs between two exploit/explore steps (default 2)",
    )
    search.add_argument(
        "--fraction",
        type=float,
        default=None,
        help="pbt: the bottom fraction copies members of the top fraction, in (0, 0.5] "
        "(default 0.25)",
    )


def _space(text: str | None):
    from ml_adv.hpo.space import SearchSpace

    if text is None:
        return None
    source = (
        Path(text).read_text()
        if not text.lstrip().startswith(("{", "[")) and Path(text).is_file()
        else text
    )
    try:
        return SearchSpace.from_dict(json.loads(source))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--space: expected JSON or a JSON file, got {text!r} ({exc})") from None


def run(args: argparse.Namespace) -> int:
    """Validate, clean with --fresh, run (or resume) the study, print a table."""
    from ml_adv.hpo.facade import default_space
    from ml_adv.hpo.methods import resolve_method

    objective = _objective(args)
    smallest = min(len(t) for t, _ in objective.views.values())
    population = resolve_method(args.method).population
    space = _space(args.space) or default_space(
        args.arch, args.size, max_batch_size=smallest, population=population
    )
    result, rd, started = _search(args, objective, space, _method_options(args))
    return _print_summary(args, result, rd, started)


def _objective(args: argparse.Namespace):
    """Each trial's ``TrainingObjective``: the data split once, the base training config."""
    from ml_adv.hpo.objective import TrainingObjective
    from ml_adv.training.config import TrainConfig

    base = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr, seed=args.seed
    )
    return TrainingObjective.from_data(
        args.data,
        architectures=args.arch,
        validation_split=args.validation_split,
        base_config=base,
        size=args.size[0],
        split_seed=args.seed,
        download=not args.no_download,
    )


def _method_options(args: argparse.Namespace) -> dict:
    """The method's own options: grid_search's --grid-points, pbt's --ready and --fraction."""
    options = {"grid_points": args.grid_points} if args.method == "grid_search" else {}
    if args.method == "pbt":
        options = {
            k: v for k, v in (("ready", args.ready), ("fraction", args.fraction)) if v is not None
        }
    return options


def _search(args: argparse.Namespace, objective, space, options: dict):
    """Check the study, open the run, run (or resume) the trials; the result, the run
    directory and when the search started."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from ml_adv.cli.common import open_run
    from ml_adv.hpo.facade import AdvancedHyperparameterOptimizer

    # Trials run in spawned processes: forking a process that already runs JAX threads is unsafe.
    executor = (
        ProcessPoolExecutor(args.workers, mp_context=get_context("spawn"))
        if args.workers > 1
        else None
    )
    try:
        optimizer = AdvancedHyperparameterOptimizer(
            args.method,
            args.trials,
            search_space=space,
            seed=args.seed,
            executor=executor,
            pruner=None if args.pruner == "none" else args.pruner,
            stacked=args.stacked is not None,
            trials_per_batch=args.stacked,
            **options,
        )
        # Validates the space against the data before --fresh deletes anything.
        optimizer.study(objective)
        optimizer.run_dir = rd = open_run(
            args, f"hpo-{'-'.join(args.arch)}-{args.data}-{args.method}"
        )
        print(
            f"ml-adv: {args.method} search over {space.names} ({args.trials} trials, {args.epochs} "
            f"epochs each) -> {rd.path}/",
            flush=True,
        )
        started = time.perf_counter()
        result = optimizer.optimize(objective, search_space=space)
    finally:
        if executor is not None:
            executor.shutdown()
    return result, rd, started


def _print_summary(args: argparse.Namespace, result, rd, started: float) -> int:
    """The closing table; the exit status: 0 when some trial succeeded."""
    from ml_adv.cli.common import print_table

    summary = result.summary()
    if result.resumed_trials:
        print(f"resumed: {result.resumed_trials} finished trial(s) replayed from trials.jsonl")
    rows = [
        ("method", args.method),
        (
            "trials",
            f"{summary['trials']} (ok {summary['ok']}, failed {summary['failed']}, "
            f"pruned {summary['pruned']})",
        ),
        ("best val accuracy", "-" if result.best_score is None else f"{result.best_score:.4f}"),
        ("best trial", "-" if result.best_trial is None else str(result.best_trial)),
        ("best config", json.dumps(result.best_config)),
        ("wall time", f"{time.perf_counter() - started:.1f} s"),
        ("run directory", str(rd.path)),
    ]
    if "pbt" in summary:  # the schedule is PBT's answer: report.json holds it, with every copy
        copies = sum(len(t["lineage"]) for t in result.trials)
        rows.insert(
            -2, ("exploit copies", f"{copies} over {len(summary['pbt']['intervals'])} intervals")
        )
    print_table(rows)
    return 0 if result.best_config is not None else 1
