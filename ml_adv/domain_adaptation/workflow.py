"""Source-only training, adaptation and their comparison in one run folder (what
``ml-adv adapt`` runs).

``prepare_adaptation_run`` loads both domains and checks every setting without writing or
compiling anything; ``run_adaptation_workflow`` then trains (or resumes) the source-only model
in ``source/``, adapts it with ``AdvancedDomainAdaptation`` in ``adaptation/`` (DANN on the
unlabelled target training split; fine-tuning / transfer on ``labels_per_class`` labelled
target examples), evaluates both on the source and target test splits and writes
``metrics.jsonl`` (one line per adaptation epoch), ``plots/embedding.png``, the adapted model
under ``model/`` and ``report.json``::

    from ml_adv.domain_adaptation.workflow import AdaptationRunSettings, run_adaptation_workflow
    from ml_adv.rundir import RunDirectory

    settings = AdaptationRunSettings(arch="mlp", size="tiny", epochs=1, steps=88)
    report = run_adaptation_workflow(settings, RunDirectory("runs/my-adaptation"))
    report["evaluation"]["target_accuracy"]

Running it again on the same folder resumes both trainings.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import numpy as np

from ml_adv.data.dataset import ArrayDataset
from ml_adv.errors import DataError
from ml_adv.rundir import RunDirectory
from ml_adv.training.config import TrainConfig

EMBEDDING_EXAMPLES = 400  # test examples per domain in the PCA plot
SIMILARITY_EXAMPLES = 500  # examples per domain for the similarity report


@dataclasses.dataclass(frozen=True)
class AdaptationRunSettings:
    """The domains (built-in or TFDS names), the adaptation ``method`` and its budget
    (``steps``, DANN's ``domain_weight``, ``labels_per_class`` labelled target examples for
    the methods that use labels), and the model with its source-only training (``epochs``)."""

    method: str = "domain_adversarial"
    source: str = "digits_m_source"
    target: str = "digits_m"
    labels_per_class: int = 10
    domain_weight: float = 1.0
    steps: int = 600
    arch: str = "cnn"
    size: str = "small"
    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 1e-3
    seed: int = 0
    download: bool = True


@dataclasses.dataclass
class AdaptationInputs:
    """The checked run: the adaptation facade with its domains set, the model spec, the
    source-only training config and the splits the plot shows."""

    adaptation: Any
    spec: Any
    config: TrainConfig
    source: ArrayDataset
    source_test: ArrayDataset
    target_test: ArrayDataset

    def record(self) -> dict[str, Any]:
        """What ``config.json`` records besides the settings: the spec and the source config."""
        return {"spec": self.spec.to_dict(), "source_config": self.config.to_dict()}


def labelled_sample(data: ArrayDataset, per_class: int, seed: int) -> ArrayDataset:
    """``per_class`` examples of each class (fewer where a class has fewer), drawn with ``seed``."""
    if per_class < 1:
        raise DataError(f"labels_per_class: expected a positive integer, got {per_class}")
    rng = np.random.default_rng(seed)
    rows = [
        rng.permutation(np.flatnonzero(data.y == c))[:per_class] for c in range(data.num_classes)
    ]
    return data.subset(np.sort(np.concatenate(rows)))


def prepare_adaptation_run(settings: AdaptationRunSettings) -> AdaptationInputs:
    """Check every setting, load the source and target splits and hand them to the
    adaptation (the labelled target sample only to methods that use labels); nothing is
    written or compiled, so a mistake costs nothing."""
    from ml_adv.data.catalog import load_dataset
    from ml_adv.domain_adaptation.facade import AdvancedDomainAdaptation
    from ml_adv.models.registry import make_spec

    s = settings
    da = AdvancedDomainAdaptation(
        s.method,
        TrainConfig(batch_size=s.batch_size, learning_rate=s.learning_rate, seed=s.seed),
        steps=s.steps,
        domain_weight=s.domain_weight,
    )
    splits = ("train", "test")
    source, source_test = (load_dataset(s.source, split=p, download=s.download) for p in splits)
    target, target_test = (load_dataset(s.target, split=p, download=s.download) for p in splits)
    labeled = labelled_sample(target, s.labels_per_class, s.seed)
    da.set_source_domain(source, test=source_test)
    da.set_target_domain(
        target, labeled=labeled if s.method != "domain_adversarial" else None, test=target_test
    )
    spec = make_spec(
        s.arch,
        input_shape=source.example_shape,
        input_kind=source.input_kind,
        num_classes=source.num_classes,
        size=s.size,
    )
    config = TrainConfig(
        epochs=s.epochs, batch_size=s.batch_size, learning_rate=s.learning_rate, seed=s.seed
    )
    return AdaptationInputs(da, spec, config, source, source_test, target_test)


def run_adaptation_workflow(
    settings: AdaptationRunSettings,
    run_dir: RunDirectory | str | os.PathLike,
    inputs: AdaptationInputs | None = None,
) -> dict[str, Any]:
    """Train source-only, adapt, evaluate, compare the domains' features, plot, save and
    report in ``run_dir``; returns the report (also written to ``report.json``).

    ``inputs``: what ``prepare_adaptation_run(settings)`` returned, when the caller checked
    the settings before opening the run folder.
    """
    rd = RunDirectory.of(run_dir)
    inputs = inputs or prepare_adaptation_run(settings)
    da = inputs.adaptation
    started = time.perf_counter()
    source_model = train_source_only(inputs.spec, inputs.source, inputs.config, rd)
    adapted = da.adapt_model(source_model, run_dir=rd.tree_for("adaptation"))
    evaluation = da.evaluate_adaptation(adapted)
    similarity = {
        "before": da.similarity_report(source_model, max_examples=SIMILARITY_EXAMPLES),
        "after": da.similarity_report(adapted, max_examples=SIMILARITY_EXAMPLES),
    }
    rd.rewrite_metrics(da.runs[-1]["history"])
    models = {"source-only": source_model, settings.method: adapted}
    plot = _plot_embeddings(settings, rd, evaluation, models, inputs)
    report = {
        "evaluation": evaluation,
        "similarity": similarity,
        "plot": plot,
        "model": adapted.save(rd.model_dir, overwrite=True),
        "seconds": round(time.perf_counter() - started, 2),
    }
    rd.write_report(report)
    return report


def train_source_only(spec, source: ArrayDataset, config: TrainConfig, rd: RunDirectory):
    """Train (or resume) the source-only model in the run's ``source/`` tree; the model."""
    from ml_adv.rundir import Run
    from ml_adv.training.loop import fit
    from ml_adv.training.trained_model import TrainedModel

    # A recorded tree, so that cleaning the run removes the nested run's checkpoints too.
    trained = fit(spec, source, config, run=Run(rd, progress=False).nested("source"))
    return TrainedModel(spec, trained.state.variables())


def _plot_embeddings(settings, rd: RunDirectory, evaluation, models, inputs: AdaptationInputs):
    """PCA panels of source and target test features, source-only and adapted; the plot's path."""
    from ml_adv.domain_adaptation.plots import plot_domain_embeddings
    from ml_adv.domain_adaptation.similarity import features_of

    panels = {
        name: (
            features_of(m, inputs.source_test, max_examples=EMBEDDING_EXAMPLES),
            features_of(m, inputs.target_test, max_examples=EMBEDDING_EXAMPLES),
        )
        for name, m in models.items()
    }
    subtitles = {
        "source-only": f"target acc {evaluation['unadapted_target_accuracy']:.3f}",
        settings.method: f"target acc {evaluation['target_accuracy']:.3f}",
    }
    return plot_domain_embeddings(
        panels,
        rd.plot_path("embedding"),
        subtitles=subtitles,
        title=f"{settings.source} -> {settings.target}: features (PCA)",
    )


__all__ = [
    "AdaptationInputs",
    "AdaptationRunSettings",
    "labelled_sample",
    "prepare_adaptation_run",
    "run_adaptation_workflow",
    "train_source_only",
]
