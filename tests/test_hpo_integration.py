"""The trainer's optimization_method: search on the validation split, then train the best."""

import asyncio
import json

import numpy as np
import pytest

from ml_adv.data import load_dataset
from ml_adv.errors import ConfigError
from ml_adv.training.facade import AdvancedCustomModelTrainer


@pytest.fixture(scope="module")
def digits_subset():
    train = load_dataset("digits_flat", split="train").subset(np.arange(300))
    test = load_dataset("digits_flat", split="test").subset(np.arange(100))
    return train, test


def test_trainer_searches_then_trains_the_best_configuration(tmp_path, digits_subset):
    train, test = digits_subset
    trainer = AdvancedCustomModelTrainer("mlp", optimization_method="random", size="tiny", run_root=tmp_path)
    result = asyncio.run(trainer.train_custom_model({
        "data": train, "test_data": test, "epochs": 1, "batch_size": 32, "run_name": "searched",
        "max_trials": 2, "search_space": {"learning_rate": ["log", 1e-3, 3e-2], "dropout": [0.2]},
    }))
    assert result.success
    hpo = result.metrics["hpo"]
    assert hpo["method"] == "random" and hpo["trials"] == 2 and hpo["ok"] == 2
    assert hpo["split"]["train"] + hpo["split"]["validation"] == len(train)  # the test split is never searched on
    best = hpo["best_config"]
    record = trainer.get_model_registry()[result.model_id]
    assert record["train_config"]["learning_rate"] == best["learning_rate"]
    assert record["spec"]["config"]["dropout"] == best["dropout"] == 0.2  # a model field reaches the spec
    # the final model is the best trial retrained on the same split with the same seed (CPU: bitwise)
    assert result.metrics["val_accuracy"] == pytest.approx(hpo["best_score"], abs=1e-6)
    assert "test_accuracy" in result.metrics
    journal = tmp_path / "searched" / "hpo" / "trials.jsonl"
    assert len(journal.read_text().splitlines()) == 3  # header + 2 trials
    report = trainer.generate_training_report()
    assert report["hpo_studies"][0]["best_config"] == best
    assert json.loads((tmp_path / "training_report.json").read_text())["hpo_studies"][0]["trials"] == 2


def test_trainer_search_options_are_validated_before_training(tmp_path, digits_subset):
    train, _ = digits_subset
    trainer = AdvancedCustomModelTrainer("mlp", optimization_method="bayesian", size="tiny", run_root=tmp_path)
    for extra, match in (({"max_trials": 0}, "max_trials"),
                         ({"search_space": {"architecture": ["mlp", "cnn"]}}, "architecture"),
                         ({"search_space": {"learning_rate": ["log", 0, 1]}}, "low > 0"),
                         ({"search_epochs": -1}, "search_epochs"),
                         ({"search_space": {"not_a_field": [1, 2]}}, "not_a_field")):
        with pytest.raises(ConfigError, match=match):
            trainer.train({"data": train, "epochs": 1, **extra})
    assert not (tmp_path / "training_report.json").exists() and trainer.get_training_history() == []
