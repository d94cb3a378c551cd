"""SEED.md's "Advanced Integration" as one resumable pipeline (``ml-adv workflow``).

The four capabilities chained on a source and a target domain, each phase through its
facade exactly as a user's script would call it:

1. **search**: a short HPO study on the source training split picks the learning rate and
   label smoothing, which every trial's compiled program takes as arrays
   (``AdvancedHyperparameterOptimizer``);
2. **source**: the trainer trains that configuration on the source domain
   (``AdvancedCustomModelTrainer``);
3. **adapt**: DANN adapts it to the unlabelled target training split
   (``AdvancedDomainAdaptation("domain_adversarial")``);
4. **ensemble**: a weighted ensemble of the source and adapted models, its weights learned
   on a small labelled target validation set (``AdvancedModelEnsemble("weighted")``);
5. **active learning**: rounds of uncertainty sampling over the target pool with a
   simulated oracle (the pool's held-back labels); each round updates the model
   incrementally (``update_model``): the adapted one, or the source model where that scores
   higher on the labelled target validation set. It then puts the model in the ensemble in
   place of the adapted member (``ensemble.update_model``) and learns the weights again.

Every phase keeps its state in the run folder (the study's trial journal, the trainer's and
DANN's checkpoints, the active-learning journal), so running the same command again after a
kill resumes where it stopped. Target test labels are used only to report accuracies.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ml_adv.data.catalog import load_dataset
from ml_adv.data.dataset import ArrayDataset
from ml_adv.errors import ConfigError, check_positive
from ml_adv.rundir import RunDirectory
from ml_adv.training.config import TrainConfig

# Built-in domain pairs: source -> target (the MNIST-M construction on each).
DOMAINS = {
    "digits": ("digits_m_source", "digits_m"),
    "mnist": ("mnist_m_source", "mnist_m"),
}


@dataclasses.dataclass(frozen=True)
class WorkflowSettings:
    """What the workflow runs: the domains, the model, and each phase's budget."""

    data: str = "digits"
    arch: str = "cnn"
    size: str = "small"
    trials: int = 6
    search_epochs: int = 3
    epochs: int = 10
    adapt_steps: int = 300
    validation_per_class: int = 10
    initial_per_class: int = 2
    rounds: int = 3
    query_size: int = 20
    seed: int = 0
    download: bool = True
    progress: bool = False

    def __post_init__(self):
        if self.data not in DOMAINS:
            raise ConfigError(f"data: expected one of {sorted(DOMAINS)}, got {self.data!r}")
        for name in (
            "trials",
            "search_epochs",
            "epochs",
            "adapt_steps",
            "validation_per_class",
            "initial_per_class",
            "rounds",
            "query_size",
        ):
            check_positive(name, getattr(self, name))


@dataclasses.dataclass
class Domains:
    """The source splits and the target's: unlabelled train, labelled validation, AL pool, test."""

    source: ArrayDataset
    source_test: ArrayDataset
    target: ArrayDataset
    validation: ArrayDataset
    initial: ArrayDataset
    pool: ArrayDataset
    test: ArrayDataset


def load_domains(settings: WorkflowSettings) -> Domains:
    """Load both domains; split the target's training split into validation, seed labels, pool.

    The validation and initial labelled sets are class-balanced draws (seeded); the pool is the
    rest of the target training split, whose labels only the simulated oracle reads.
    """
    source_name, target_name = DOMAINS[settings.data]
    split = {
        s: load_dataset(source_name, split=s, download=settings.download) for s in ("train", "test")
    }
    target = load_dataset(target_name, split="train", download=settings.download)
    test = load_dataset(target_name, split="test", download=settings.download)
    rng = np.random.default_rng(settings.seed)
    per_class = settings.validation_per_class + settings.initial_per_class
    chosen = [
        rng.permutation(np.flatnonzero(target.y == c))[:per_class]
        for c in range(target.num_classes)
    ]
    validation = np.concatenate([c[: settings.validation_per_class] for c in chosen])
    initial = np.concatenate([c[settings.validation_per_class :] for c in chosen])
    pool = np.setdiff1d(np.arange(len(target)), np.concatenate([validation, initial]))
    if settings.rounds * settings.query_size > len(pool):
        raise ConfigError(
            f"rounds: {settings.rounds} rounds of {settings.query_size} need "
            f"{settings.rounds * settings.query_size} pool examples, the pool has {len(pool)}"
        )
    return Domains(
        split["train"],
        split["test"],
        target,
        target.subset(np.sort(validation)),
        target.subset(np.sort(initial)),
        target.subset(pool),
        test,
    )


def search(settings: WorkflowSettings, domains: Domains, rd: RunDirectory) -> dict[str, Any]:
    """Phase 1: a bayesian study on the source (its journal resumes finished trials).

    It searches the hyper-parameters the compiled program takes as arrays (learning rate,
    label smoothing), so every trial after the first reuses the first one's program: 6
    trials on the digits take ~45 s, against ~180 s for a space with batch size and dropout,
    where each trial compiles its own program.
    """
    from ml_adv.hpo.facade import AdvancedHyperparameterOptimizer, default_space

    optimizer = AdvancedHyperparameterOptimizer(
        "bayesian",
        settings.trials,
        seed=settings.seed,
        run_dir=rd.tree_for("search"),
        progress=settings.progress,
    )
    base = TrainConfig(epochs=settings.search_epochs, seed=settings.seed)
    result = optimizer.optimize(
        domains.source,
        architectures=(settings.arch,),
        size=settings.size,
        base_config=base,
        search_space=default_space(population=True),
    )
    if result.best_config is None:
        raise ConfigError("search: every trial failed; see the study's journal in search/")
    return {
        "best_config": result.best_config,
        "best_validation_accuracy": result.best_score,
        "trials": len(result.trials),
        "resumed_trials": result.resumed_trials,
    }


def train_source(
    settings: WorkflowSettings, domains: Domains, best: dict[str, Any], rd: RunDirectory
):
    """Phase 2: the chosen configuration on the source domain; the trainer and its model."""
    from ml_adv.hpo.objective import train_fields
    from ml_adv.trainer.facade import AdvancedCustomModelTrainer

    trainer = AdvancedCustomModelTrainer(settings.arch, size=settings.size, run_root=rd.path)
    fields = {k: v for k, v in best.items() if k in train_fields()}
    overrides = {
        k: v
        for k, v in best.items()
        if k not in train_fields() and k not in ("architecture", "size")
    }
    result = trainer.train(
        {
            "data": domains.source,
            "test_data": domains.source_test,
            "epochs": settings.epochs,
            "seed": settings.seed,
            "model_overrides": overrides,
            **fields,
        },
        run_dir=rd.tree_for("source"),
    )
    if not result.success:
        raise ConfigError(f"source: training failed: {result.error}")
    return trainer, result.model


def adapt(settings: WorkflowSettings, domains: Domains, model, batch_size: int, rd: RunDirectory):
    """Phase 3: DANN on the unlabelled target training split; the facade and the adapted model."""
    from ml_adv.domain_adaptation.facade import AdvancedDomainAdaptation

    config = TrainConfig(batch_size=batch_size, seed=settings.seed)
    da = AdvancedDomainAdaptation(
        "domain_adversarial", config, steps=settings.adapt_steps, progress=settings.progress
    )
    da.set_source_domain(domains.source, test=domains.source_test)
    da.set_target_domain(domains.target, test=domains.test)
    adapted = da.adapt_model(model, run_dir=rd.tree_for("adaptation"))
    return da, adapted


def keep_better(domains: Domains, source_model, adapted_model):
    """The model active learning goes on to improve: the adapted one unless the source model
    scores higher on the labelled target validation set (DANN can hurt, as on the digits
    pair). Chosen on validation, never on test. Returns the model and a record: which was
    kept (``"adapted"`` or ``"source"``) and both validation accuracies.
    """
    record = {
        "source_validation_accuracy": _accuracy(source_model, domains.validation),
        "adapted_validation_accuracy": _accuracy(adapted_model, domains.validation),
    }
    if record["source_validation_accuracy"] > record["adapted_validation_accuracy"]:
        return source_model, {**record, "kept": "source"}
    return adapted_model, {**record, "kept": "adapted"}


def combine(domains: Domains, source_model, adapted_model):
    """Phase 4: a weighted ensemble of both models, weights learned on the target validation set."""
    from ml_adv.ensembles.facade import AdvancedModelEnsemble

    ensemble = AdvancedModelEnsemble("weighted", seed=0)
    ensemble.add_model(source_model, weight=0.4)
    ensemble.add_model(adapted_model, weight=0.6)
    ensemble.update_model_weights(domains.validation)
    return ensemble


def improve(
    settings: WorkflowSettings,
    domains: Domains,
    model,
    ensemble,
    rd: RunDirectory,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Phase 5: active-learning rounds; each updates ``model`` and puts it in the ensemble in
    place of the adapted member."""
    from ml_adv.active_learning.facade import AdvancedActiveLearning

    al = AdvancedActiveLearning(
        "uncertainty",
        model=model,
        validation_data=domains.validation,
        run_dir=rd.tree_for("active_learning"),
        seed=settings.seed,
    )
    al.add_labeled_data(domains.initial.x, domains.initial.y)
    al.add_unlabeled_data(domains.pool.x)
    while al.store.rounds < settings.rounds:  # a restored journal continues where it stopped
        _, indices = al.select_samples(settings.query_size)
        al.update_model(domains.pool.y[indices])  # the simulated oracle
        _replace_adapted_member(ensemble, al.model, domains)
        model_acc, ensemble_acc = (
            _accuracy(al.model, domains.test),
            _accuracy(ensemble, domains.test),
        )
        say(
            f"active learning round {al.store.rounds}: {al.store.num_labelled} labels, model "
            f"{model_acc:.4f}, ensemble {ensemble_acc:.4f}"
        )
    if ensemble.models[1] is not al.model:  # resumed after the last round: the journal's model
        _replace_adapted_member(ensemble, al.model, domains)
    return {
        "curve": al.get_learning_curve(),
        "labels": al.store.num_labelled,
        "model_test_accuracy": _accuracy(al.model, domains.test),
        "ensemble_test_accuracy": _accuracy(ensemble, domains.test),
        "ensemble_weights": [float(w) for w in ensemble.effective_weights()],
        "statistics": al.get_active_learning_statistics(),
    }


def _replace_adapted_member(ensemble, model, domains: Domains) -> None:
    """``ensemble.update_model`` on the second member, then learn the weights again."""
    ensemble.update_model(ensemble.model_ids[1], model)
    ensemble.update_model_weights(domains.validation)


def _accuracy(model_or_ensemble, data: ArrayDataset) -> float:
    """Test accuracy of a ``TrainedModel`` or an ensemble (its combined prediction)."""
    if hasattr(model_or_ensemble, "evaluate"):
        return float(model_or_ensemble.evaluate(data)["accuracy"])
    return float(model_or_ensemble.get_ensemble_performance(data)["ensemble"]["accuracy"])


def run_workflow(
    settings: WorkflowSettings,
    rd: RunDirectory,
    say: Callable[[str], None] = print,
    domains: Domains | None = None,
) -> dict[str, Any]:
    """Run (or resume) the five phases in ``rd``; returns the report (the caller writes it).

    ``domains``: what ``load_domains(settings)`` returns, when the caller loaded (and so
    checked) the data before opening the run folder.
    """
    started, phases = time.perf_counter(), {}
    lap_start = [started]

    def lap() -> float:
        """Seconds since the previous phase ended (each phase's ``seconds`` in the report)."""
        now = time.perf_counter()
        seconds, lap_start[0] = round(now - lap_start[0], 1), now
        return seconds

    domains = load_domains(settings) if domains is None else domains
    phases["search"] = {**search(settings, domains, rd), "seconds": lap()}
    say(
        f"search: best validation accuracy {phases['search']['best_validation_accuracy']:.4f} "
        f"with {phases['search']['best_config']}"
    )
    trainer, source_model = train_source(settings, domains, phases["search"]["best_config"], rd)
    phases["source"] = {
        "source_test_accuracy": _accuracy(source_model, domains.source_test),
        "target_test_accuracy": _accuracy(source_model, domains.test),
        "seconds": lap(),
    }
    say(f"source: target test accuracy {phases['source']['target_test_accuracy']:.4f}")
    batch = int(phases["search"]["best_config"].get("batch_size", 32))
    da, adapted = adapt(settings, domains, source_model, batch, rd)
    phases["adapt"] = {
        "target_test_accuracy": _accuracy(adapted, domains.test),
        "evaluation": da.evaluate_adaptation(adapted),
        "seconds": lap(),
    }
    say(f"adapt: target test accuracy {phases['adapt']['target_test_accuracy']:.4f}")
    learner, choice = keep_better(domains, source_model, adapted)
    phases["adapt"].update(choice)
    if phases["adapt"]["kept"] == "source":
        say(
            "adapt: DANN scores below the source model on the labelled target validation set; "
            "active learning improves the source model"
        )
    ensemble = combine(domains, source_model, adapted)
    phases["ensemble"] = {
        "target_test_accuracy": _accuracy(ensemble, domains.test),
        "weights": [float(w) for w in ensemble.effective_weights()],
        "seconds": lap(),
    }
    say(f"ensemble: target test accuracy {phases['ensemble']['target_test_accuracy']:.4f}")
    phases["active_learning"] = {
        **improve(settings, domains, learner, ensemble, rd, say),
        "improved": phases["adapt"]["kept"],
        "seconds": lap(),
    }
    return {
        "settings": dataclasses.asdict(settings),
        "phases": phases,
        "training_history": trainer.get_training_history(),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }


__all__ = ["DOMAINS", "WorkflowSettings", "load_domains", "run_workflow"]
