"""The trainer's ``optimization_method``: search first, then train the best configuration.

``AdvancedCustomModelTrainer.train`` calls ``search_before_training`` when its
``optimization_method`` is not ``"none"``. The search trains candidates on the
trainer's own training part and scores them on its validation part (the
``validation_data`` given, or the split carved from the training data), never on the
test split; the trainer then trains its final model with the best configuration on
the same split, and reports the study in ``TrainingResult.metrics["hpo"]``.

Search options ride in ``training_data`` next to the data (removed before training):
``search_space`` (a ``SearchSpace`` or its dict declaration; default ``default_space``),
``max_trials`` (default 10), ``search_epochs`` (epochs per trial; default the
training's), ``search_seed`` (default 0). The study is resumable in
``run_root/<run_name>/hpo/``.

With ``optimization_method="pbt"`` the answer is a schedule, not one configuration: the
best member's hyper-parameters changed at its exploit/explore steps. The final model
replays that schedule (``replay_schedule``: segment boundaries stretched from the
trial epochs to the trainer's) from a fresh initialisation through
``fit(hparam_schedule=...)``; the report holds the replayed schedule.
"""

from __future__ import annotations

import uuid
from typing import Any

from ml_adv.errors import ConfigError, check_positive, describe
from ml_adv.hpo.facade import as_space, default_space
from ml_adv.hpo.methods import resolve_method
from ml_adv.hpo.objective import TrainingObjective, train_fields
from ml_adv.hpo.study import Study

HPO_KEYS = ("search_space", "max_trials", "search_epochs", "search_seed")
DEFAULT_MAX_TRIALS = 10


def search_before_training(
    trainer, training_data: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the trainer's search; return
    ``(training_data with the best configuration, study report)``.
    """
    from ml_adv.trainer.training_data import resolve_training_data

    data, options, max_trials = _split_search_options(training_data)
    plan = resolve_training_data(
        data,
        architecture=trainer.architecture_type,
        base_config=trainer.strategy.config,
        settings=trainer._overrides,
        augment=trainer._augment_fn,
        default_size=trainer.size,
    )
    space = _search_space(trainer, options, max_batch_size=len(plan.train))
    objective = _search_objective(trainer, plan, options)
    run_name = (
        plan.run_name
        or f"{trainer.architecture_type}-{trainer.optimization_method}-{uuid.uuid4().hex[:8]}"
    )
    study = Study(
        objective,
        space,
        method=trainer.optimization_method,
        max_trials=max_trials,
        seed=options.get("search_seed", 0),
        run_dir=trainer.run_root / run_name / "hpo",
        progress=False,
    )
    result = study.run()
    final = _with_best_config({**data, "run_name": run_name}, result.best_config)
    report = {
        **result.summary(),
        "search_space": space.to_dict(),
        "split": {"train": len(plan.train), "validation": len(plan.val)},
        "trial_epochs": objective.base_config.epochs,
    }
    return final, report


def _split_search_options(training_data) -> tuple[dict[str, Any], dict[str, Any], int]:
    """``training_data`` as ``(the training settings, the search options, max_trials)``,
    checked."""
    if not isinstance(training_data, dict):
        raise ConfigError(
            "training_data: expected a dict with 'data' and hyper-parameters, got "
            f"{describe(training_data)}"
        )
    data = {k: v for k, v in training_data.items() if k not in HPO_KEYS}
    options = {k: training_data[k] for k in HPO_KEYS if k in training_data}
    max_trials = options.get("max_trials", DEFAULT_MAX_TRIALS)
    check_positive("max_trials", max_trials)
    return data, options, max_trials


def _search_space(trainer, options: dict[str, Any], max_batch_size: int):
    """The ``search_space`` option (or the method's default space), which must leave the
    architecture alone: the trainer's is fixed."""
    space = as_space(options.get("search_space")) or default_space(
        (trainer.architecture_type,),
        max_batch_size=max_batch_size,
        population=resolve_method(trainer.optimization_method).population,
    )
    if "architecture" in space:
        raise ConfigError(
            "search_space: the trainer's architecture is fixed by architecture_type; search over "
            "architectures with AdvancedHyperparameterOptimizer, got an 'architecture' parameter"
        )
    return space


def _search_objective(trainer, plan, options: dict[str, Any]) -> TrainingObjective:
    """Each trial's objective: the plan's split and configuration (``search_epochs`` epochs
    when given)."""
    base = plan.config
    if "search_epochs" in options:
        check_positive("search_epochs", options["search_epochs"])
        base = base.replace(epochs=int(options["search_epochs"]))
    return TrainingObjective(
        views={"*": (plan.train, plan.val)},
        base_config=base,
        architecture=trainer.architecture_type,
        size=plan.size,
        model_overrides=dict(plan.model_overrides),
        data_name=plan.train.name,
    )


def _with_best_config(final: dict[str, Any], best_config: dict[str, Any] | None) -> dict[str, Any]:
    """``final`` with the search's best configuration applied: training fields and the size
    directly, everything else as model overrides. Without one (no trial succeeded) ``final``
    is returned as given: the configuration given is trained, and the report says so."""
    if best_config is not None:
        overrides = dict(final.get("model_overrides") or {})
        for key, value in best_config.items():
            if key in train_fields():
                final[key] = value
            elif key == "size":
                final["size"] = value
            else:
                overrides[key] = value
        if overrides:
            final["model_overrides"] = overrides
    return final


def replay_schedule(
    report: dict[str, Any] | None, epochs: int
) -> list[tuple[int, dict[str, float]]] | None:
    """PBT's best schedule as ``fit(hparam_schedule=...)`` segments over ``epochs`` epochs.

    A segment that started at trial epoch ``s`` of ``E`` starts at ``round(s * epochs / E)``;
    segments squeezed onto one epoch keep the later values. None for other methods.
    """
    schedule = ((report or {}).get("pbt") or {}).get("best_schedule")
    if not schedule:
        return None
    trial_epochs = int(report["trial_epochs"])
    segments: list[tuple[int, dict[str, float]]] = []
    for segment in schedule:
        first = min(epochs - 1, int(round(segment["epochs"][0] * epochs / trial_epochs)))
        values = {k: float(v) for k, v in segment["config"].items()}
        if segments and segments[-1][0] >= first:
            segments[-1] = (segments[-1][0], values)
        else:
            segments.append((first, values))
    return segments
