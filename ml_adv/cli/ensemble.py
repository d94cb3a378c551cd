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
import time
from typing import Any

from ml_adv.cli.common import add_model_arguments, add_run_arguments, choices_help, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ml_adv.ensembles.combine import COMBINATION_RULES

    ens = parser.add_argument_group("ensemble")
    ens.add_argument(
        "--members", type=positive_int, default=5, help="K members trained as one program"
    )
    ens.add_argument(
        "--method",
        default="averaging",
        metavar="NAME",
        help=choices_help("combination method", COMBINATION_RULES.names()),
    )
    ens.add_argument(
        "--folds",
        type=int,
        default=0,
        help="k-fold cross-validation: k fold models (member i leaves out fold i); 0: off",
    )
    ens.add_argument("--no-calibration", action="store_true", help="skip temperature scaling")
    ens.add_argument(
        "--validation-split",
        type=float,
        default=0.15,
        help="held-out fraction of the training split",
    )
    add_model_arguments(parser, epochs=10)
    add_run_arguments(
        parser.add_argument_group("run directory"), None, "runs/ensemble-<arch>-<data>"
    )


def _load(args):
    from ml_adv.data.catalog import load_dataset, view_for

    name, download = view_for(args.data, args.arch), not args.no_download
    return load_dataset(name, split="train", download=download), load_dataset(
        name, split="test", download=download
    )


def run(args: argparse.Namespace) -> int:
    """Validate, clean with --fresh, train (or resume), weight, calibrate, evaluate, plot,
    report.
    """
    from ml_adv.cli.common import open_run, settings
    from ml_adv.ensembles.combine import resolve_rule
    from ml_adv.ensembles.folds import check_folds
    from ml_adv.models.registry import make_spec
    from ml_adv.training.config import TrainConfig

    # Everything is checked before --fresh deletes anything or anything compiles.
    rule = resolve_rule(args.method)
    if args.folds:
        check_folds(args.folds)
    config = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr, seed=args.seed
    )
    full, test = _load(args)
    train, val = full.split((1 - args.validation_split, args.validation_split), seed=args.seed)
    spec = make_spec(
        args.arch,
        input_shape=train.example_shape,
        input_kind=train.input_kind,
        num_classes=train.num_classes,
        size=args.size,
    )
    rd = open_run(
        args,
        f"ensemble-{args.arch}-{args.data}",
        spec=spec.to_dict(),
        train_config=config.to_dict(),
    )
    # Records checkpoints/ so that --fresh removes the stacked run's checkpoints.
    _ = rd.checkpoint_dir
    print(
        f"ml-adv: {args.folds or args.members} x {args.arch} ({args.size}) on {args.data!r} as one "
        f"program -> {rd.path}/",
        flush=True,
    )
    started = time.perf_counter()
    ensemble, training = _train(args, spec, train, val, config, rd)
    before, after, calibration, probs = _evaluate(args, ensemble, rule, val, test)
    plot = _plot(args, rd, len(ensemble), probs, test)
    _write_metrics(rd, before, after)
    saved = _save(rd, ensemble)
    summary = _summary(before, after)
    rd.write_report(
        {
            "command": "ensemble",
            "settings": settings(args),
            "training": training,
            "test": summary,
            "calibration": calibration,
            "diversity": before["diversity"],
            "weights": before["weights"],
            "plot": plot,
            "ensemble_dir": saved,
            "wall_seconds": round(time.perf_counter() - started, 1),
        }
    )
    _print_table(summary, training)
    return 0


def _train(args: argparse.Namespace, spec, train, val, config, rd):
    """Train (or resume) the members (or the fold models) as one program; the ensemble and
    its training record."""
    from ml_adv.ensembles.facade import AdvancedModelEnsemble

    ensemble = AdvancedModelEnsemble(args.method, seed=args.seed)
    if args.folds:
        ensemble.set_cross_validation(args.folds)
    training = ensemble.fit(
        spec,
        train,
        config,
        members=None if args.folds else args.members,
        val=None if args.folds else val,
        run_dir=rd,
    )
    return ensemble, training


def _evaluate(args: argparse.Namespace, ensemble, rule, val, test):
    """Weight (where the rule learns), evaluate, calibrate (unless --no-calibration) and
    evaluate again; the performance before and after, the calibration and the test
    probabilities of the best member, the ensemble and the calibrated ensemble."""
    if rule.uses_weights or rule.needs_meta_learner:
        ensemble.update_model_weights(val)
    before = ensemble.get_ensemble_performance(test)
    probs = {"ensemble": ensemble.predict_proba(test)}
    members = before["members"]
    best = max(members, key=lambda m: members[m]["accuracy"])
    probs["best member"] = ensemble.member_probabilities(test)[ensemble.model_ids.index(best)]
    calibration, after = None, None
    if not args.no_calibration:
        calibration = ensemble.calibrate(val)
        after = ensemble.get_ensemble_performance(test)
        probs["ensemble + temperature"] = ensemble.predict_proba(test)
    return before, after, calibration, probs


def _plot(args: argparse.Namespace, rd, size: int, probs, test):
    """The reliability diagram of each model in ``probs``; the plot's path."""
    import numpy as np

    from ml_adv.ensembles.calibration import expected_calibration_error, reliability_bins
    from ml_adv.ensembles.plots import plot_reliability

    curves = {
        label: {
            **{k: np.asarray(v) for k, v in reliability_bins(probs[label], test.y).items()},
            "ece": float(expected_calibration_error(probs[label], test.y)),
        }
        for label in ("best member", "ensemble", "ensemble + temperature")
        if label in probs
    }
    return plot_reliability(
        curves,
        rd.plot_path("reliability"),
        title=f"{args.arch} x {size} on {args.data} (test)",
    )


def _write_metrics(rd, before: dict[str, Any], after: dict[str, Any] | None) -> None:
    """metrics.jsonl: one line per member, the ensemble and the calibrated ensemble."""
    rd.rewrite_metrics(
        [{"model": mid, "kind": "member", **m} for mid, m in before["members"].items()]
        + [{"model": "ensemble", "kind": "ensemble", **before["ensemble"]}]
        + (
            [{"model": "ensemble+temperature", "kind": "ensemble", **after["ensemble"]}]
            if after
            else []
        )
    )


def _save(rd, ensemble) -> str:
    """Save the ensemble under ensemble/ (replacing a resumed or repeated run's); its path."""
    if (rd.path / "ensemble").exists():  # a resumed or repeated run replaces the saved ensemble
        rd.remove("ensemble")
    return ensemble.save(rd.tree_for("ensemble"))


def _summary(before: dict[str, Any], after: dict[str, Any] | None) -> dict[str, Any]:
    import numpy as np

    members = before["members"].values()
    out = {
        "members": before["members"],
        "member_mean": {
            m: float(np.mean([v[m] for v in members])) for m in ("accuracy", "nll", "brier", "ece")
        },
        "member_std": {
            m: float(np.std([v[m] for v in members])) for m in ("accuracy", "nll", "brier", "ece")
        },
        "ensemble": before["ensemble"],
    }
    if after is not None:
        out["ensemble_calibrated"] = after["ensemble"]
    return out


def _print_table(summary: dict[str, Any], training: dict[str, Any]) -> None:
    from ml_adv.cli.common import print_table

    metrics = ("accuracy", "nll", "brier", "ece")
    rows = [
        (
            "member mean +- std",
            *(
                f"{summary['member_mean'][m]:.4f} +- {summary['member_std'][m]:.4f}"
                for m in metrics
            ),
        ),
        ("ensemble", *(f"{summary['ensemble'][m]:.4f}" for m in metrics)),
    ]
    if "ensemble_calibrated" in summary:
        rows.append(
            (
                "ensemble + temperature",
                *(f"{summary['ensemble_calibrated'][m]:.4f}" for m in metrics),
            )
        )
    cv = training.get("cross_validation")
    if cv:
        rows.append(
            (
                f"CV ({cv['folds']} folds) mean +- std",
                *(
                    f"{cv['mean'][m]:.4f} +- {cv['std'][m]:.4f}" if m in cv["mean"] else "-"
                    for m in metrics
                ),
            )
        )
    print_table(rows, header=("test", *metrics))
