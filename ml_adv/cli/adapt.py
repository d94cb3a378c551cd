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
import time
from pathlib import Path

from ml_adv.cli.common import add_model_arguments, add_run_arguments, choices_help, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ml_adv.domain_adaptation.methods import ADAPTATION_METHODS

    da = parser.add_argument_group("adaptation")
    da.add_argument(
        "--method",
        default="domain_adversarial",
        metavar="NAME",
        help=choices_help("adaptation method", ADAPTATION_METHODS.names()),
    )
    da.add_argument(
        "--source", default="digits_m_source", metavar="NAME", help="labelled source dataset"
    )
    da.add_argument("--target", default="digits_m", metavar="NAME", help="target dataset")
    da.add_argument(
        "--labels-per-class",
        type=int,
        default=10,
        help="labelled target examples per class (fine_tuning / transfer_learning)",
    )
    da.add_argument("--domain-weight", type=float, default=1.0, help="DANN's domain-loss weight")
    da.add_argument(
        "--steps",
        type=positive_int,
        default=600,
        help="optimizer steps of the adaptation (all stages together)",
    )
    # --epochs is the source-only training's; --data is unused here (--source/--target name
    # the domains).
    add_model_arguments(parser, epochs=10)
    add_run_arguments(
        parser.add_argument_group("run directory"), None, "runs/adapt-<method>-<target>"
    )


def labelled_sample(data, per_class: int, seed: int):
    """``per_class`` examples of each class (fewer where a class has fewer), drawn with ``seed``."""
    import numpy as np

    from ml_adv.errors import DataError

    if per_class < 1:
        raise DataError(f"--labels-per-class: expected a positive integer, got {per_class}")
    rng = np.random.default_rng(seed)
    rows = [
        rng.permutation(np.flatnonzero(data.y == c))[:per_class] for c in range(data.num_classes)
    ]
    return data.subset(np.sort(np.concatenate(rows)))


def run(args: argparse.Namespace) -> int:
    """Check, train source-only, adapt, evaluate, plot, report."""
    from ml_adv.cli.common import open_run
    from ml_adv.domain_adaptation.facade import AdvancedDomainAdaptation
    from ml_adv.models.registry import make_spec
    from ml_adv.training.config import TrainConfig

    # Everything is checked before --fresh deletes anything or anything compiles.
    da = AdvancedDomainAdaptation(
        args.method,
        TrainConfig(batch_size=args.batch_size, learning_rate=args.lr, seed=args.seed),
        steps=args.steps,
        domain_weight=args.domain_weight,
    )
    source, source_test, target_test = _set_domains(args, da)
    spec = make_spec(
        args.arch,
        input_shape=source.example_shape,
        input_kind=source.input_kind,
        num_classes=source.num_classes,
        size=args.size,
    )
    config = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr, seed=args.seed
    )
    rd = open_run(
        args,
        f"adapt-{args.method}-{args.target}",
        spec=spec.to_dict(),
        source_config=config.to_dict(),
    )
    print(
        f"ml-adv: {args.arch} ({args.size}) {args.source} -> {args.target} by {args.method} -> "
        f"{rd.path}/",
        flush=True,
    )
    started = time.perf_counter()
    source_model = _train_source_only(spec, source, config, rd)
    adapted = da.adapt_model(source_model, run_dir=rd.tree_for("adaptation"))
    evaluation = da.evaluate_adaptation(adapted)
    similarity = {
        "before": da.similarity_report(source_model, max_examples=500),
        "after": da.similarity_report(adapted, max_examples=500),
    }
    history = da.runs[-1]["history"]
    rd.rewrite_metrics(history)
    plot = _plot_embeddings(args, rd, evaluation, (source_model, adapted), source_test, target_test)
    saved = adapted.save(rd.model_dir, overwrite=True)
    report = {
        "evaluation": evaluation,
        "similarity": similarity,
        "plot": plot,
        "model": saved,
        "seconds": round(time.perf_counter() - started, 2),
    }
    rd.write_report(report)
    _print_summary(args, rd, evaluation, similarity, plot)
    return 0


def _set_domains(args: argparse.Namespace, da):
    """Load the source and target splits and hand them to ``da`` (the labelled target sample
    only to methods that use labels); the source train, source test and target test splits."""
    from ml_adv.data.catalog import load_dataset

    download = not args.no_download
    source, source_test = (
        load_dataset(args.source, split=s, download=download) for s in ("train", "test")
    )
    target, target_test = (
        load_dataset(args.target, split=s, download=download) for s in ("train", "test")
    )
    labeled = labelled_sample(target, args.labels_per_class, args.seed)
    da.set_source_domain(source, test=source_test)
    da.set_target_domain(
        target, labeled=labeled if args.method != "domain_adversarial" else None, test=target_test
    )
    return source, source_test, target_test


def _train_source_only(spec, source, config, rd):
    """Train (or resume) the source-only model in the run's ``source/`` tree."""
    from ml_adv.rundir import Run
    from ml_adv.training.loop import fit
    from ml_adv.training.trained_model import TrainedModel

    # Recorded trees, so --fresh removes the nested runs' checkpoints too.
    trained = fit(spec, source, config, run=Run(rd, progress=False).nested("source"))
    return TrainedModel(spec, trained.state.variables())


def _plot_embeddings(args: argparse.Namespace, rd, evaluation, models, source_test, target_test):
    """PCA panels of source and target test features, source-only and adapted; the plot's path."""
    from ml_adv.domain_adaptation.plots import plot_domain_embeddings
    from ml_adv.domain_adaptation.similarity import features_of

    source_model, adapted = models
    panels = {
        name: (
            features_of(m, source_test, max_examples=400),
            features_of(m, target_test, max_examples=400),
        )
        for name, m in (("source-only", source_model), (args.method, adapted))
    }
    subtitles = {
        "source-only": f"target acc {evaluation['unadapted_target_accuracy']:.3f}",
        args.method: f"target acc {evaluation['target_accuracy']:.3f}",
    }
    return plot_domain_embeddings(
        panels,
        rd.plot_path("embedding"),
        subtitles=subtitles,
        title=f"{args.source} -> {args.target}: features (PCA)",
    )


def _print_summary(args: argparse.Namespace, rd, evaluation, similarity, plot) -> None:
    """The closing table: accuracies before and after, similarity, where the run lies."""
    from ml_adv.cli.common import fmt, print_table

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
                f"{Path(plot).relative_to(rd.path)}, model/)",
            ),
        ]
    )
