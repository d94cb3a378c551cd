"""Adapt a source-trained model to a target domain and report.

Examples:
  ml-adv adapt --method domain_adversarial --source digits_m_source --target digits_m
  ml-adv adapt --method fine_tuning --labels-per-class 10 --arch cnn --size tiny --steps 300

Steps: train the source-only model on the source's train split; adapt it (DANN on the
unlabelled target train split; fine-tuning / transfer on --labels-per-class labelled
target examples); evaluate both on the source and target test splits. Writes
config.json, metrics.jsonl (one line per adaptation epoch), plots/embedding.png (PCA of
source and target features before and after adaptation), report.json and the adapted
model under model/. The source-only run checkpoints into source/ and the adaptation into
adaptation/: running the same command again resumes both; --fresh starts over.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ml_adv.cli.common import (
    add_model_arguments,
    add_options,
    add_run_arguments,
    choices_help,
    positive_int,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ml_adv.domain_adaptation.methods import ADAPTATION_METHODS
    from ml_adv.domain_adaptation.workflow import AdaptationRunSettings

    # flag [METAVAR], AdaptationRunSettings field (its default), type, help
    rows = (
        (
            "--method NAME",
            "method",
            None,
            choices_help("adaptation method", ADAPTATION_METHODS.names()),
        ),
        ("--source NAME", "source", None, "labelled source dataset"),
        ("--target NAME", "target", None, "target dataset"),
        (
            "--labels-per-class",
            "labels_per_class",
            int,
            "labelled target examples per class (fine_tuning / transfer_learning)",
        ),
        ("--domain-weight", "domain_weight", float, "DANN's domain-loss weight"),
        (
            "--steps",
            "steps",
            positive_int,
            "optimizer steps of the adaptation (all stages together)",
        ),
    )
    add_options(parser.add_argument_group("adaptation"), rows, vars(AdaptationRunSettings()))
    # --epochs is the source-only training's; --data is unused here (--source/--target name
    # the domains).
    add_model_arguments(parser, epochs=10)
    add_run_arguments(
        parser.add_argument_group("run directory"), None, "runs/adapt-<method>-<target>"
    )


def run(args: argparse.Namespace) -> int:
    """Check, open the run folder (cleaned with --fresh), run the workflow, print a table."""
    from ml_adv.cli.common import fmt, open_run, print_table, settings_for
    from ml_adv.domain_adaptation import workflow

    settings = settings_for(workflow.AdaptationRunSettings, args)
    # Everything is checked before --fresh deletes anything or anything compiles.
    inputs = workflow.prepare_adaptation_run(settings)
    rd = open_run(args, f"adapt-{args.method}-{args.target}", **inputs.record())
    print(
        f"ml-adv: {args.arch} ({args.size}) {args.source} -> {args.target} by {args.method} -> "
        f"{rd.path}/",
        flush=True,
    )
    report = workflow.run_adaptation_workflow(settings, rd, inputs)
    evaluation, similarity = report["evaluation"], report["similarity"]
    print_table(
        [
            ("source test accuracy", fmt(evaluation["source_accuracy"])),
            ("target test accuracy, source-only", fmt(evaluation["unadapted_target_accuracy"])),
            (f"target test accuracy, {args.method}", fmt(evaluation["target_accuracy"])),
            (
                "MMD similarity before -> after",
                f"{similarity['before']['mmd_similarity']:.3f} -> "
                f"{similarity['after']['mmd_similarity']:.3f}",
            ),
            (
                "worse than source-only on labelled target",
                fmt(evaluation.get("worse_than_unadapted"), "{}"),
            ),
            (
                "run directory",
                f"{rd.path}/ (report.json, metrics.jsonl, "
                f"{Path(report['plot']).relative_to(rd.path)}, model/)",
            ),
        ]
    )
    return 0
