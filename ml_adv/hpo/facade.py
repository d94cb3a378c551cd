"""``AdvancedHyperparameterOptimizer``: the SEED facade over ``Study``.

It holds the method, the budget and the search space (all validated at construction),
builds the objective from real data, runs the study and keeps its result. No numerics
live here.

Example:
    >>> from ml_adv.training import TrainConfig
    >>> optimizer = AdvancedHyperparameterOptimizer(
    ...     optimization_method="random", max_trials=2, progress=False
    ... )
    >>> result = optimizer.optimize("digits", architectures=("mlp",), sizes=("tiny",),
    ...                             base_config=TrainConfig(epochs=1))
    >>> len(result.trials), 0 <= result.best_score <= 1
    (2, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ml_adv.errors import ConfigError, NotFittedError, check_positive, describe
from ml_adv.estimator import Estimator
from ml_adv.hpo.methods import resolve_method
from ml_adv.hpo.objective import TrainingObjective
from ml_adv.hpo.pruning import resolve_pruner
from ml_adv.hpo.space import Categorical, Float, SearchSpace
from ml_adv.hpo.study import Study, StudyResult
from ml_adv.training.config import TrainConfig

DEFAULT_BATCH_SIZES = (16, 32, 64)


def default_space(
    architectures: Sequence[str] = ("cnn",),
    sizes: Sequence[str] | None = None,
    *,
    max_batch_size: int | None = None,
    population: bool = False,
) -> SearchSpace:
    """Learning rate (log), batch size, dropout and label smoothing; plus the architecture and
    size when there is more than one to choose from (automated model selection).

    With ``population``, only what a stacked population can vary inside one program:
    the learning rate and label smoothing.
    """
    if population:
        return SearchSpace(
            [Float("learning_rate", 1e-4, 3e-2, log=True), Float("label_smoothing", 0.0, 0.2)]
        )
    batch_sizes = [b for b in DEFAULT_BATCH_SIZES if max_batch_size is None or b <= max_batch_size]
    params = [Float("learning_rate", 1e-4, 3e-2, log=True)]
    if batch_sizes:
        params.append(Categorical("batch_size", batch_sizes))
    params += [Float("dropout", 0.0, 0.5), Float("label_smoothing", 0.0, 0.2)]
    if len(architectures) > 1:
        params.append(Categorical("architecture", list(architectures)))
    if sizes is not None and len(sizes) > 1:
        params.append(Categorical("size", list(sizes)))
    return SearchSpace(params)


def as_space(space) -> SearchSpace | None:
    """None, a ``SearchSpace``, or its JSON declaration (``SearchSpace.from_dict``)."""
    if space is None or isinstance(space, SearchSpace):
        return space
    if isinstance(space, (dict, list, tuple)):
        return SearchSpace.from_dict(space)
    raise ConfigError(
        f"search_space: expected a SearchSpace or its dict declaration, got {describe(space)}"
    )


class AdvancedHyperparameterOptimizer(Estimator):
    """Hyper-parameter search and model selection (SEED API).

    Args:
        optimization_method: "bayesian", "genetic", "grid_search", "random", "population",
            "pbt", or any nevergrad optimizer name (see ``ml_adv.hpo.methods``).
        max_trials: the number of configurations trained (grid search may stop earlier; below
            the grid size it tries a seeded subset spread over every axis, see ``grid_order``).
        search_space: a ``SearchSpace`` or its dict declaration (default: ``default_space``).
        seed: seeds the searcher.
        executor: a ``concurrent.futures.Executor`` or a ``dask.distributed.Client`` for
            parallel trials.
        trials_per_batch: configurations asked and evaluated together.
        pruner: None, "median", "successive_halving" or a pruner object.
        run_dir: resumable study directory (``trials.jsonl``, best config, plots, report).
        stacked: train each batch of ``trials_per_batch`` asked configurations as one stacked
            population (batched asks: ask P, train them together, tell P).
        **method_options: e.g. ``grid_points`` and ``grid_order`` (``"spread"``, the default,
            ``"lexicographic"`` or ``"shuffled"``) for grid search; ``ready``,
            ``fraction``, ``resample_probability``, ``perturb_factors`` for ``pbt``
            (``max_trials`` is then the population size; ``result.model`` is its best member).
    """

    def __init__(
        self,
        optimization_method: str = "bayesian",
        max_trials: int = 50,
        *,
        search_space=None,
        seed: int = 0,
        executor=None,
        trials_per_batch: int | None = None,
        pruner=None,
        run_dir=None,
        progress: bool | None = None,
        stacked: bool = False,
        **method_options: Any,
    ):
        self.entry = resolve_method(optimization_method)
        check_positive("max_trials", max_trials)
        self.optimization_method = optimization_method
        self.max_trials = int(max_trials)
        self.search_space = as_space(search_space)
        self.seed = seed
        self.executor = executor
        self.trials_per_batch = trials_per_batch
        self.pruner = resolve_pruner(pruner)
        self.run_dir = run_dir
        self.progress = progress
        self.method_options = method_options
        self.stacked = stacked
        self.result: StudyResult | None = None

    RUNTIME_PARAMS = ("executor",)  # a live resource: given again to load(path, executor=...)

    def _state(self, folder) -> dict[str, Any]:
        """The last study's trials and best configuration (its model, when it kept one, in
        ``model/``).
        """
        import dataclasses

        from ml_adv.rundir import json_safe

        if self.result is None:
            return {"result": None}
        fields = {
            f.name: getattr(self.result, f.name)
            for f in dataclasses.fields(self.result)
            if f.name != "model"
        }
        if self.result.model is not None and hasattr(self.result.model, "save"):
            self.result.model.save(folder / "model")
        return {"result": json_safe(fields)}

    def _restore_state(self, state: dict[str, Any], folder) -> None:
        if state.get("result") is None:
            return
        model = None
        if (folder / "model").is_dir():
            from ml_adv.training.trained_model import TrainedModel

            model = TrainedModel.load(folder / "model")
        self.result = StudyResult(**state["result"], model=model)

    def study(self, objective, space: SearchSpace | None = None) -> Study:
        """The ``Study`` this optimizer would run for ``objective`` (validated, nothing trained)."""
        space = as_space(space) or self.search_space
        if space is None:
            raise ConfigError(
                "search_space: expected a SearchSpace for a custom objective, got None"
            )
        return Study(
            objective,
            space,
            method=self.optimization_method,
            max_trials=self.max_trials,
            seed=self.seed,
            run_dir=self.run_dir,
            executor=self.executor,
            trials_per_batch=self.trials_per_batch,
            pruner=self.pruner,
            method_options=self.method_options,
            progress=self.progress,
            stacked=self.stacked,
        )

    def optimize(
        self,
        data_or_objective: Any = "digits",
        *,
        architectures: Sequence[str] = ("cnn",),
        size: str = "tiny",
        sizes: Sequence[str] | None = None,
        base_config: TrainConfig | None = None,
        validation_split: float = 0.2,
        search_space=None,
    ) -> StudyResult:
        """Search and return the ``StudyResult`` (best config, its validation score, every trial).

        Args:
            data_or_objective: a built-in dataset name, an ``ArrayDataset`` (its validation
                split is carved from it; pass training data only), a ``TrainingObjective``, or
                any ``config -> score`` callable (then ``search_space`` is required).
            architectures, size, sizes: the models to choose among.
            base_config: the ``TrainConfig`` trial configurations override.
        """
        if isinstance(architectures, str):
            architectures = (architectures,)
        objective = data_or_objective
        if not callable(objective) or isinstance(objective, type):
            base = base_config or TrainConfig(epochs=5)
            if not isinstance(base, TrainConfig):
                raise ConfigError(f"base_config: expected a TrainConfig, got {describe(base)}")
            objective = TrainingObjective.from_data(
                data_or_objective,
                architectures=tuple(architectures),
                validation_split=validation_split,
                base_config=base,
                size=size,
                split_seed=base.seed,
            )
            smallest = min(len(t) for t, _ in objective.views.values())
            space = (
                as_space(search_space)
                or self.search_space
                or default_space(
                    architectures, sizes, max_batch_size=smallest, population=self.entry.population
                )
            )
        else:
            space = as_space(search_space) or self.search_space
            if space is None and isinstance(objective, TrainingObjective):
                smallest = min(len(t) for t, _ in objective.views.values())
                space = default_space(
                    (objective.architecture,),
                    max_batch_size=smallest,
                    population=self.entry.population,
                )
        self.result = self.study(objective, space).run()
        return self.result

    # --------------------------------------------------------------- queries
    def _require(self) -> StudyResult:
        if self.result is None:
            raise NotFittedError("optimizer: no study has run yet; call optimize(...) first")
        return self.result

    def get_best_config(self) -> dict[str, Any] | None:
        return self._require().best_config

    def get_best_score(self) -> float | None:
        return self._require().best_score

    def get_optimization_history(self) -> list[dict[str, Any]]:
        """Every trial: config, status, score, metrics, error, seconds."""
        return [dict(t) for t in self._require().trials]

    def generate_optimization_report(self) -> dict[str, Any]:
        return self._require().summary()
