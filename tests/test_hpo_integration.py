"""The trainer's optimization_method: search on the validation split, then train the best."""

import asyncio
import json

import numpy as np
import pytest
from compile_counter import CompileCounter

from ml_adv.data import load_dataset
from ml_adv.errors import ConfigError
from ml_adv.rundir import Run
from ml_adv.trainer.facade import AdvancedCustomModelTrainer
from ml_adv.training.loop import EpochCallback


@pytest.fixture(scope="module")
def digits_subset():
    train = load_dataset("digits_flat", split="train").subset(np.arange(300))
    test = load_dataset("digits_flat", split="test").subset(np.arange(100))
    return train, test


def test_trainer_searches_then_trains_the_best_configuration(tmp_path, digits_subset):
    train, test = digits_subset
    trainer = AdvancedCustomModelTrainer(
        "mlp", optimization_method="random", size="tiny", run_root=tmp_path
    )
    result = asyncio.run(
        trainer.train_custom_model(
            {
                "data": train,
                "test_data": test,
                "epochs": 1,
                "batch_size": 32,
                "run_name": "searched",
                "max_trials": 2,
                "search_space": {"learning_rate": ["log", 1e-3, 3e-2], "dropout": [0.2]},
            }
        )
    )
    assert result.success
    hpo = result.metrics["hpo"]
    assert hpo["method"] == "random" and hpo["trials"] == 2 and hpo["ok"] == 2
    assert hpo["split"]["train"] + hpo["split"]["validation"] == len(
        train
    )  # the test split is never searched on
    best = hpo["best_config"]
    record = trainer.get_model_registry()[result.model_id]
    assert record["train_config"]["learning_rate"] == best["learning_rate"]
    assert (
        record["spec"]["config"]["dropout"] == best["dropout"] == 0.2
    )  # a model field reaches the spec
    # the final model is the best trial retrained on the same split with the same seed
    # (CPU: bitwise)
    assert result.metrics["val_accuracy"] == pytest.approx(hpo["best_score"], abs=1e-6)
    assert "test_accuracy" in result.metrics
    journal = tmp_path / "searched" / "hpo" / "trials.jsonl"
    assert len(journal.read_text().splitlines()) == 3  # header + 2 trials
    report = trainer.generate_training_report()
    assert report["hpo_studies"][0]["best_config"] == best
    assert (
        json.loads((tmp_path / "training_report.json").read_text())["hpo_studies"][0]["trials"] == 2
    )


def test_trainer_search_options_are_validated_before_training(tmp_path, digits_subset):
    train, _ = digits_subset
    trainer = AdvancedCustomModelTrainer(
        "mlp", optimization_method="bayesian", size="tiny", run_root=tmp_path
    )
    for extra, match in (
        ({"max_trials": 0}, "max_trials"),
        ({"search_space": {"architecture": ["mlp", "cnn"]}}, "architecture"),
        ({"search_space": {"learning_rate": ["log", 0, 1]}}, "low > 0"),
        ({"search_epochs": -1}, "search_epochs"),
        ({"search_space": {"not_a_field": [1, 2]}}, "not_a_field"),
    ):
        with pytest.raises(ConfigError, match=match):
            trainer.train({"data": train, "epochs": 1, **extra})
    assert not (tmp_path / "training_report.json").exists() and trainer.get_training_history() == []


def test_trainer_pbt_replays_the_best_members_schedule(tmp_path, digits_subset):
    train, _ = digits_subset
    trainer = AdvancedCustomModelTrainer(
        "mlp", optimization_method="pbt", size="tiny", run_root=tmp_path
    )
    result = trainer.train(
        {
            "data": train,
            "epochs": 8,
            "batch_size": 32,
            "run_name": "pbt",
            "max_trials": 4,
            "search_epochs": 4,
            "search_space": {"learning_rate": ["log", 1e-3, 3e-2]},
        }
    )
    assert result.success
    hpo = result.metrics["hpo"]
    best = hpo["pbt"]["best_schedule"]
    assert [s["epochs"] for s in best] == [
        [0, 2],
        [2, 4],
    ]  # PBT's default: exploit/explore every 2 epochs
    # The schedule, stretched from 4 trial epochs to the trainer's 8, is what the final run
    # followed.
    replayed = hpo["replayed_schedule"]
    assert [s["first_epoch"] for s in replayed] == [0, 4]
    assert [s["values"]["learning_rate"] for s in replayed] == pytest.approx(
        [s["config"]["learning_rate"] for s in best]
    )
    rates = [record["hparam_learning_rate"] for record in result.history]
    assert rates == pytest.approx(
        [best[0]["config"]["learning_rate"]] * 4 + [best[1]["config"]["learning_rate"]] * 4
    )


def test_fit_hparam_schedule_changes_values_between_epochs_without_recompiling(digits_subset):
    from ml_adv import make_spec
    from ml_adv.training import TrainConfig, fit
    from ml_adv.training.setup import state_hyperparams

    train, _ = digits_subset
    spec = make_spec(
        "mlp",
        input_shape=(64,),
        input_kind="features",
        num_classes=10,
        hidden_sizes=(16,),
        dropout=0.0,
    )
    config = TrainConfig(epochs=4, batch_size=32, learning_rate=1e-2)
    constant = fit(spec, train, config, run=Run(progress=False))
    compiles_after_epoch = []
    with CompileCounter() as compiles:
        scheduled = fit(
            spec,
            train,
            config,
            run=Run(progress=False),
            hooks=[EpochCallback(lambda r: compiles_after_epoch.append(compiles.count))],
            hparam_schedule=[
                (0, {"learning_rate": 1e-2, "label_smoothing": 0.0}),
                (2, {"learning_rate": 1e-3, "label_smoothing": 0.1}),
            ],
        )
    assert (
        compiles_after_epoch[1:] == [compiles_after_epoch[0]] * 3
    )  # new values at epoch 2 compile nothing
    losses = [[r["train_loss"] for r in run.history] for run in (constant, scheduled)]
    assert (
        losses[0][:2] == losses[1][:2] and losses[0][2] != losses[1][2]
    )  # same until epoch 2, then not
    values = state_hyperparams(scheduled.state)
    assert values["learning_rate"] == pytest.approx(1e-3) and values[
        "label_smoothing"
    ] == pytest.approx(0.1)
    for bad, match in (
        ([(0, {"momentum": 0.9})], "traced hyper-parameters are"),
        ([(2, {"learning_rate": 1e-3}), (1, {"learning_rate": 1e-2})], "strictly increasing"),
        ([(4, {"learning_rate": 1e-3})], r"in \[0, 4\)"),
        ([(0, {"learning_rate": float("nan")})], "finite number"),
        ("lr", "pairs"),
    ):
        with pytest.raises(ConfigError, match=match):
            fit(spec, train, config, run=Run(progress=False), hparam_schedule=bad)
