"""The seven seed classes share one estimator contract (``ml_adv.estimator.Estimator``).

For each: bad input fails in the constructor before anything compiles, with an
``ml_adv.errors`` exception naming the argument; ``repr`` shows the non-default settings and
evaluates back to an equal object; ``save``/``load`` round-trips the settings and what the
object learned.
"""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from compile_counter import CompileCounter

import ml_adv
from ml_adv import (
    AdvancedActiveLearning,
    AdvancedCustomModelTrainer,
    AdvancedDomainAdaptation,
    AdvancedHyperparameterOptimizer,
    AdvancedModelArchitecture,
    AdvancedModelEnsemble,
    AdvancedTrainingStrategy,
    TrainConfig,
    TrainedModel,
    make_spec,
)
from ml_adv.errors import CheckpointError, ConfigError, MlAdvError
from ml_adv.estimator import MANIFEST, Estimator

# (class, settings that differ from the defaults, a bad setting and the argument it names)
CASES = {
    "architecture": (
        AdvancedModelArchitecture,
        {"architecture_type": "mlp", "size": "tiny", "dropout": 0.25},
        {"architecture_type": "mlp", "size": "giant"},
        "size",
    ),
    "strategy": (
        AdvancedTrainingStrategy,
        {"learning_rate": 0.01, "epochs": 3, "weight_decay": 1e-4},
        {"learning_rate": -1.0},
        "learning_rate",
    ),
    "trainer": (
        AdvancedCustomModelTrainer,
        {"architecture_type": "mlp", "size": "tiny"},
        {"architecture_type": "mlp", "size": "huge"},
        "size",
    ),
    "ensemble": (
        AdvancedModelEnsemble,
        {"combination_method": "averaging", "seed": 3},
        {"combination_method": "no_such_rule"},
        "combination_method",
    ),
    "hpo": (
        AdvancedHyperparameterOptimizer,
        {"optimization_method": "random", "max_trials": 3, "seed": 1},
        {"optimization_method": "random", "max_trials": 0},
        "max_trials",
    ),
    "active_learning": (
        AdvancedActiveLearning,
        {"sampling_strategy": "entropy", "size": "tiny", "seed": 2},
        {"sampling_strategy": "entropy", "seed": -1},
        "seed",
    ),
    "domain_adaptation": (
        AdvancedDomainAdaptation,
        {
            "adaptation_method": "fine_tuning",
            "steps": 20,
            "config": TrainConfig(learning_rate=0.01),
        },
        {"adaptation_method": "fine_tuning", "steps": 0},
        "steps",
    ),
}
NAMESPACE = {**{name: getattr(ml_adv, name) for name in ml_adv.__all__}, "array": np.array}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_settings_fail_in_the_constructor_before_any_compile(case):
    cls, _, bad, argument = CASES[case]
    assert issubclass(cls, Estimator)
    with CompileCounter() as compiles, pytest.raises(MlAdvError, match=argument):
        cls(**bad)
    assert compiles.count == 0


@pytest.mark.parametrize("case", sorted(CASES))
def test_get_params_and_repr_round_trip(case):
    cls, settings, _, _ = CASES[case]
    obj = cls(**settings)
    params = obj.get_params()
    for name, value in settings.items():
        assert params[name] == value
    text = repr(obj)
    assert text.startswith(f"{cls.__name__}(") and all(f"{k}=" in text for k in settings)
    assert eval(text, NAMESPACE).get_params() == params  # noqa: S307 - our own repr


def _tiny_model(seed: int = 0) -> TrainedModel:
    spec = make_spec("mlp", input_shape=(4,), input_kind="features", num_classes=3, size="tiny")
    variables = spec.build().init(
        jax.random.PRNGKey(seed), np.zeros((1, 4), np.float32), train=False
    )
    return TrainedModel(spec, variables)


def _learn(case: str, obj):
    """Give the object something learned (cheap: no training) and a probe of it."""
    x = np.random.default_rng(0).normal(size=(12, 4)).astype(np.float32)
    if case == "architecture":
        obj.design_architecture(4, 3, input_shape=(4,))
        return lambda o: o.spec.to_dict()
    if case == "ensemble":
        for seed in range(2):
            obj.add_model(_tiny_model(seed))
        return lambda o: np.round(o.predict_proba(x), 6).tolist()
    if case == "hpo":
        obj.optimize(
            lambda config: -abs(np.log10(config["learning_rate"]) + 2.5),
            search_space={"learning_rate": ("log", 1e-4, 1e-1)},
        )
        return lambda o: (o.get_best_config(), o.get_optimization_history())
    if case == "active_learning":
        obj.add_labeled_data(x[:4], np.array([0, 1, 2, 0]))
        obj.add_unlabeled_data(x[4:])
        obj.set_budget_management(True, budget=5)
        return lambda o: (o.store.labelled()[1].tolist(), o.store.pool_size, o.budget.total)
    if case == "domain_adaptation":
        obj.source_model = _tiny_model(0)
        return lambda o: o.source_model.spec.to_dict()
    return lambda o: None


@pytest.mark.parametrize("case", sorted(CASES))
def test_save_and_load_round_trip_settings_and_what_was_learned(case, tmp_path):
    cls, settings, _, _ = CASES[case]
    obj = cls(**settings)
    probe = _learn(case, obj)
    path = obj.save(tmp_path / case)
    loaded = cls.load(path)
    assert type(loaded) is cls and repr(loaded) == repr(obj)
    assert probe(loaded) == probe(obj)
    with pytest.raises(CheckpointError, match="new or empty directory"):
        obj.save(path)


def test_load_refuses_another_class_and_foreign_class_paths(tmp_path):
    path = AdvancedTrainingStrategy(epochs=2).save(tmp_path / "strategy")
    with pytest.raises(CheckpointError, match="AdvancedTrainingStrategy"):
        AdvancedModelArchitecture.load(path)
    manifest = json.loads((tmp_path / "strategy" / MANIFEST).read_text())
    manifest["class"] = "os:system"
    (tmp_path / "strategy" / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError):
        AdvancedTrainingStrategy.load(path)


def test_a_setting_that_cannot_be_written_is_named_and_nothing_is_left(tmp_path):
    hpo = AdvancedHyperparameterOptimizer(
        "random", 2, pruner=type("P", (), {"should_prune": lambda *a: False})()
    )
    with pytest.raises(ConfigError, match="pruner"):
        hpo.save(tmp_path / "hpo")
    assert not list(tmp_path.iterdir())
