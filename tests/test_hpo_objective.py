"""Training objectives: end-to-end studies on real digits, model selection, pruning in fit."""

import numpy as np
import pytest

from ml_adv.data import load_dataset
from ml_adv.errors import ConfigError, NotFittedError
from ml_adv.hpo import AdvancedHyperparameterOptimizer, MedianPruner, TrainingObjective
from ml_adv.hpo.space import Categorical, Float, Int, SearchSpace
from ml_adv.hpo.study import Study
from ml_adv.training.config import TrainConfig

# Traced hyper-parameters only: every trial reuses one compiled program (setup's program cache).
SPACE = SearchSpace(
    [Float("learning_rate", 3e-3, 3e-2, log=True), Float("label_smoothing", 0.0, 0.2)]
)


@pytest.fixture(scope="module")
def flat_objective():
    data = load_dataset("digits_flat", split="train").subset(np.arange(300))
    return TrainingObjective.from_data(
        data, architectures=("mlp",), base_config=TrainConfig(epochs=1, batch_size=32), size="tiny"
    )


def test_the_validation_split_is_carved_from_the_training_data(flat_objective):
    train, val = flat_objective.views["*"]
    assert len(train) + len(val) == 300 and 55 <= len(val) <= 65  # stratified: rounding per class
    digits = TrainingObjective.from_data("digits", architectures=("mlp", "cnn"))
    full_train = len(load_dataset("digits", split="train"))
    for arch, view in (("mlp", (64,)), ("cnn", (8, 8, 1))):
        t, v = digits.views[arch]
        assert len(t) + len(v) == full_train and t.example_shape == view  # never the test split
    np.testing.assert_array_equal(
        digits.views["mlp"][1].y, digits.views["cnn"][1].y
    )  # same examples


@pytest.mark.parametrize("method, trials", [("bayesian", 2), ("genetic", 2), ("random", 1)])
def test_end_to_end_study_on_digits(flat_objective, method, trials):
    # Compilation dominates a 1-epoch trial, so budgets stay tiny; the methods' search logic
    # is tested on cheap functions in test_hpo_methods.py and test_hpo_study.py.
    result = Study(flat_objective, SPACE, method=method, max_trials=trials, progress=False).run()
    assert [t["status"] for t in result.trials] == ["ok"] * trials
    for t in result.trials:
        assert 0.0 <= t["score"] <= 1.0 and t["score"] == t["metrics"]["val_accuracy"]
        assert t["metrics"]["epochs_run"] == 1 and np.isfinite(t["metrics"]["train_loss"])
        assert SPACE.canonical(t["config"]) == t["config"]
    assert result.best_score == max(t["score"] for t in result.trials)
    assert result.history[-1] == result.best_score


@pytest.mark.slow
def test_grid_search_selects_among_architectures(tmp_path):
    # flat_objective's split: the MLP reuses the program its studies compiled; only the CNN
    # compiles here
    views = {
        arch: load_dataset(name, split="train").subset(np.arange(300)).split((0.8, 0.2), seed=0)
        for arch, name in (("mlp", "digits_flat"), ("cnn", "digits"))
    }
    objective = TrainingObjective(
        views=views, base_config=TrainConfig(epochs=3, batch_size=32), size="tiny"
    )
    space = SearchSpace(
        [Categorical("architecture", ["mlp", "cnn"]), Categorical("learning_rate", [1e-2])]
    )
    result = Study(
        objective, space, method="grid_search", max_trials=10, run_dir=tmp_path, progress=False
    ).run()
    assert [t["config"]["architecture"] for t in result.trials] == ["mlp", "cnn"]
    assert all(t["status"] == "ok" and t["score"] > 0.2 for t in result.trials)
    assert result.best_config["architecture"] in ("mlp", "cnn")
    assert (tmp_path / "trials.jsonl").exists() and (tmp_path / "report.json").exists()


def test_median_pruning_stops_a_bad_trial_inside_fit(flat_objective):
    objective = TrainingObjective(
        views=flat_objective.views,
        architecture="mlp",
        size="tiny",
        base_config=TrainConfig(epochs=3, batch_size=32),
    )
    space = SearchSpace(
        [Categorical("learning_rate", [3e-2, 1e-5])]
    )  # a good trial, then a hopeless one
    result = Study(
        objective,
        space,
        method="grid_search",
        max_trials=2,
        progress=False,
        pruner=MedianPruner(n_startup_trials=1, n_warmup_epochs=1),
    ).run()
    good, bad = result.trials
    assert good["status"] == "ok" and len(good["intermediate"]) == 3
    assert bad["status"] == "pruned" and len(bad["intermediate"]) == 2  # stopped after epoch 2 of 3
    assert bad["loss"] == -bad["intermediate"][-1] and result.best_trial == 0


@pytest.mark.parametrize(
    "space, match",
    [
        (SearchSpace([Float("learnign_rate", 1e-4, 1e-2)]), "learnign_rate"),
        (SearchSpace([Categorical("architecture", ["mlp", "lstm"])]), "lstm"),
        (SearchSpace([Categorical("size", ["tiny", "huge"])]), "huge"),
        (SearchSpace([Int("batch_size", 16, 4096)]), "batch_size"),
        (SearchSpace([Float("architecture", 0, 1)]), "Categorical"),
    ],
)
def test_spaces_the_objective_cannot_train_are_rejected_before_training(
    flat_objective, space, match
):
    with pytest.raises(ConfigError, match=match):
        Study(flat_objective, space, method="random", max_trials=2)


def test_optimizer_facade_validates_up_front_and_keeps_the_result():
    with pytest.raises(ConfigError, match="optimization_method"):
        AdvancedHyperparameterOptimizer(optimization_method="annealing")
    with pytest.raises(ConfigError, match="max_trials"):
        AdvancedHyperparameterOptimizer(optimization_method="bayesian", max_trials=0)
    optimizer = AdvancedHyperparameterOptimizer(
        optimization_method="genetic",
        max_trials=12,
        search_space={"x": ["float", -2, 2], "k": ["a", "b"]},
    )
    with pytest.raises(NotFittedError):
        optimizer.get_best_config()
    result = optimizer.optimize(
        lambda c: -abs(c["x"] - 0.5) + (c["k"] == "b"), search_space=optimizer.search_space
    )
    assert (
        optimizer.get_best_config() == result.best_config
        and optimizer.get_best_score() == result.best_score
    )
    assert len(optimizer.get_optimization_history()) == 12
    assert optimizer.generate_optimization_report()["trials"] == 12
