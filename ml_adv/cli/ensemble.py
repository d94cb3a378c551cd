"""Train a deep ensemble as one program, evaluate it, calibrate it and report.

Examples:
  ml-adv ensemble --arch cnn --members 5 --data digits
  ml-adv ensemble --arch mlp --size tiny --members 8 --epochs 20 --method weighted
  ml-adv ensemble --arch cnn --folds 5            # 5-fold CV: the fold models form the ensemble

K members of one architecture train together (fit_stacked: one vmapped, scanned program).
A stratified --validation-split of the training split is held out for learned weights,
stacking and temperature scaling; the built-in test split is evaluated before and after
calibration. Writes metrics.jsonl (one line per member and for the ensemble),
plots/reliability.png (best member, ensemble, calibrated ensemble), report.json and the
saved ensemble under ensemble/. Re-running the same command resumes training from the
last checkpoint; --fresh starts over.
"""

from __future__ import annotations

import argparse

from ml_adv.cli.common import (
    add_model_arguments,
    add_options,
    add_run_arguments,
    choices_help,
    positive_int,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ml_adv.ensembles.combine import COMBINATION_RULES
    from ml_adv.ensembles.workflow import EnsembleRunSettings

    # flag [METAVAR], EnsembleRunSettings field (its default), type, help
    rows = (
        ("--members", "members", positive_int, "K members trained as one program"),
        (
            "--method NAME",
            "method",
            None,
            choices_help("combination method", COMBINATION_RULES.names()),
        ),
        (
            "--folds",
            "folds",
            int,
            "k-fold cross-validation: k fold models (member i leaves out fold i); 0: off",
        ),
        ("--no-calibration", None, bool, "skip temperature scaling"),
        (
            "--validation-split",
            "validation_split",
            float,
            "held-out fraction of the training split",
        ),
    )
    add_options(parser.add_argument_group("ensemble"), rows, vars(EnsembleRunSettings()))
    add_model_arguments(parser, epochs=10)
    add_run_arguments(
        parser.add_argument_group("run directory"), None, "runs/ensemble-<arch>-<data>"
    )


def run(args: argparse.Namespace) -> int:
    """Check, open the run folder (cleaned with --fresh), run the workflow, print a table."""
    from ml_adv.cli.common import open_run, print_table, settings, settings_for
    from ml_adv.ensembles import workflow

    chosen = settings_for(workflow.EnsembleRunSettings, args, calibrate=not args.no_calibration)
    # Everything is checked before --fresh deletes anything or anything compiles.
    inputs = workflow.prepare_ensemble_run(chosen)
    rd = open_run(args, f"ensemble-{args.arch}-{args.data}", **inputs.record())
    print(
        f"ml-adv: {args.folds or args.members} x {args.arch} ({args.size}) on {args.data!r} as one "
        f"program -> {rd.path}/",
        flush=True,
    )
    report = workflow.run_ensemble_workflow(chosen, rd, inputs, report_settings=settings(args))
    print_table(_rows(report), header=("test", *workflow.METRICS))
    return 0


def _rows(report: dict) -> list[tuple[str, ...]]:
    """member mean +- std, the ensemble (calibrated too), the CV score: the metrics' cells."""
    from ml_adv.ensembles.workflow import METRICS

    def cells(mean: dict, std: dict | None = None) -> tuple[str, ...]:
        return tuple(
            f"{mean[m]:.4f}" + (f" +- {std[m]:.4f}" if std else "") if m in mean else "-"
            for m in METRICS
        )

    test, cv = report["test"], report["training"].get("cross_validation")
    rows = [
        ("member mean +- std", *cells(test["member_mean"], test["member_std"])),
        ("ensemble", *cells(test["ensemble"])),
    ]
    if "ensemble_calibrated" in test:
        rows.append(("ensemble + temperature", *cells(test["ensemble_calibrated"])))
    if cv:
        rows.append((f"CV ({cv['folds']} folds) mean +- std", *cells(cv["mean"], cv["std"])))
    return rows
