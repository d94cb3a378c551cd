"""The four capabilities together: search, train, adapt, ensemble, then active learning.

Examples:
  ml-adv workflow                        # digits_m_source -> digits_m, under 2 minutes on 2 cores
  ml-adv workflow --data mnist --epochs 3 --adapt-steps 2000

SEED.md's "Advanced Integration" end to end: a short bayesian HPO study on the source
domain picks the learning rate and label smoothing; the trainer trains it on the source;
DANN adapts it to the unlabelled target; a weighted ensemble combines the source and adapted
models (weights learned on --validation-per-class labelled target examples); active-learning
rounds (uncertainty sampling, the pool's held-back labels as the oracle) update the better
of the two on that validation set, and the ensemble, each round. Writes report.json,
plots/learning_curve.png and each phase's state (search/, source/, adaptation/,
active_learning/): running the same command again resumes; --fresh starts over.
"""

from __future__ import annotations

import argparse
import time

from ml_adv.cli.common import add_run_arguments, positive_int

# A fixed, short budget: compile with the fast CPU settings (cli/main.py).
SHORT_RUN = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The workflow's options (each phase's budget) and the run directory."""
    from ml_adv.trainer.workflow import DOMAINS, WorkflowSettings

    d = WorkflowSettings()
    group = parser.add_argument_group("workflow")
    group.add_argument(
        "--data",
        default=d.data,
        choices=sorted(DOMAINS),
        help="domain pair: digits (digits_m_source -> digits_m) or mnist "
        "(mnist_m_source -> mnist_m)",
    )
    group.add_argument("--arch", default=d.arch, help="architecture of every model")
    group.add_argument("--size", default=d.size, help="its size variant")
    for name, help_text in (
        ("trials", "HPO trials"),
        ("search-epochs", "epochs of each trial"),
        ("epochs", "epochs of the source model"),
        ("adapt-steps", "DANN optimizer steps"),
        (
            "validation-per-class",
            "labelled target examples per class for the ensemble's weights and AL validation",
        ),
        ("initial-per-class", "initial AL labels per class"),
        ("rounds", "active-learning rounds"),
        ("query-size", "labels acquired per round"),
    ):
        attribute = name.replace("-", "_")
        group.add_argument(
            f"--{name}", type=positive_int, default=getattr(d, attribute), help=help_text
        )
    group.add_argument("--seed", type=int, default=d.seed, help="seeds every phase")
    group.add_argument(
        "--no-download", action="store_true", help="never download a missing dataset: fail instead"
    )
    add_run_arguments(
        parser.add_argument_group("run directory"), None, "runs/workflow-<data>-s<seed>"
    )


def run(args: argparse.Namespace) -> int:
    """Check the settings, open the run folder, run (or resume) the phases, plot, report."""
    from ml_adv.cli.common import fmt, open_run, print_table, progress, settings_for
    from ml_adv.trainer.workflow import WorkflowSettings, load_domains, run_workflow

    settings = settings_for(WorkflowSettings, args)
    domains = load_domains(settings)  # the data and budgets are checked before the folder opens
    rd = open_run(args, f"workflow-{args.data}-s{args.seed}")
    print(f"ml-adv: workflow on {args.data} -> {rd.path}/", flush=True)
    started = time.perf_counter()
    report = run_workflow(settings, rd, say=progress, domains=domains)
    _plot(report, rd)
    rd.write_json("report.json", report)
    phases = report["phases"]
    print_table(
        [
            ("search: best validation accuracy", fmt(phases["search"]["best_validation_accuracy"])),
            ("source-only: target test accuracy", fmt(phases["source"]["target_test_accuracy"])),
            ("DANN: target test accuracy", fmt(phases["adapt"]["target_test_accuracy"])),
            ("ensemble: target test accuracy", fmt(phases["ensemble"]["target_test_accuracy"])),
            ("active learning improves", f"the {phases['adapt']['kept']} model"),
            (
                f"after active learning ({phases['active_learning']['labels']} labels): model",
                fmt(phases["active_learning"]["model_test_accuracy"]),
            ),
            (
                "after active learning: ensemble",
                fmt(phases["active_learning"]["ensemble_test_accuracy"]),
            ),
            ("wall time (s)", fmt(time.perf_counter() - started, "{:.1f}")),
        ]
    )
    print(f"ml-adv: the run is in {rd.path}/ (report.json, plots/); the same command resumes it")
    return 0


def _plot(report: dict, rd) -> None:
    """The active-learning curve: target validation accuracy against labels."""
    from ml_adv.active_learning.plots import plot_strategy_curves
    from ml_adv.active_learning.simulate import summarise_curves

    curve = report["phases"]["active_learning"]["curve"]
    summary = summarise_curves({"uncertainty (after DANN)": [curve]}, (0.9,))
    plot_strategy_curves(summary, rd.plot_path("learning_curve"), targets=(0.9,))
