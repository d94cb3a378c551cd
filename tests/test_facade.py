"""The SEED trainer API: AdvancedTrainingStrategy, AdvancedCustomModelTrainer, TrainedModel."""

import asyncio
import json

import numpy as np
import pytest

from ml_adv.data import load_dataset
from ml_adv.data.dataset import ArrayDataset
from ml_adv.errors import ConfigError, DataError, ShapeError


def test_both_import_paths_work():
    import ml_adv
    from ml_adv import AdvancedCustomModelTrainer as A
    from ml_adv.custom_model_trainer import (
        AdvancedCustomModelTrainer,
        AdvancedModelArchitecture,
        AdvancedTrainingStrategy,
    )

    assert A is AdvancedCustomModelTrainer
    assert AdvancedModelArchitecture is ml_adv.AdvancedModelArchitecture
    assert AdvancedTrainingStrategy is ml_adv.AdvancedTrainingStrategy


def test_seed_strategy_example():
    from ml_adv.custom_model_trainer import AdvancedTrainingStrategy

    strategy = AdvancedTrainingStrategy(
        learning_rate=1e-4, batch_size=32, epochs=100, early_stopping=True
    )
    assert strategy.learning_rate == 1e-4 and strategy.config.early_stopping
    with pytest.raises(ConfigError, match="learning_rate"):
        AdvancedTrainingStrategy(learning_rate=-1)
    with pytest.raises(ConfigError, match="unknown training option"):
        AdvancedTrainingStrategy(lr=1e-3)


def test_trainer_end_to_end_through_asyncio(tmp_path, digits_images):
    from ml_adv.custom_model_trainer import AdvancedCustomModelTrainer

    train, test = digits_images
    # optimization_method="none": the search before training is ml_adv.hpo's, tested in
    # tests/test_hpo_*.py
    trainer = AdvancedCustomModelTrainer(
        architecture_type="cnn", optimization_method="none", run_root=tmp_path
    )
    trainer.set_mixed_precision(False)
    trainer.set_resource_monitoring(True)
    trainer.set_data_augmentation(True)
    training_data = {
        "data": train,
        "test_data": test,
        "learning_rate": 2e-3,
        "batch_size": 32,
        "epochs": 6,
        "run_name": "facade",
    }
    result = asyncio.run(trainer.train_custom_model(training_data))
    assert result.success and result.error is None
    assert result.metrics["test_accuracy"] > 0.9
    assert result.metrics["resources"]["peak_host_rss_mb"] > 0

    # the trained model predicts, saves and loads
    model = result.model
    proba = model.predict_proba(test.x[:20])
    assert proba.shape == (20, 10) and np.allclose(proba.sum(-1), 1, atol=1e-5)
    np.testing.assert_array_equal(model.predict(test.x[:20]), proba.argmax(-1))
    model.save(tmp_path / "saved")
    from ml_adv.training.trained_model import TrainedModel

    loaded = TrainedModel.load(tmp_path / "saved")
    np.testing.assert_array_equal(loaded.predict(test.x), model.predict(test.x))
    assert (loaded.model_id, loaded.lineage) == (model.model_id, trainer.lineage)
    with pytest.raises(ShapeError):
        model.predict(np.zeros((2, 9, 9, 1), np.float32))

    # run directory layout
    run = tmp_path / "facade"
    for name in ("config.json", "metrics.jsonl", "report.json", "plots/learning_curve.png"):
        assert (run / name).exists(), name
    assert (run / "checkpoints" / "latest").is_dir() and (run / "checkpoints" / "best").is_dir()
    assert (
        json.loads((run / "report.json").read_text())["metrics"]["test_accuracy"]
        == result.metrics["test_accuracy"]
    )

    # registry and reports
    assert result.model_id in trainer.get_model_registry()
    assert (
        trainer.get_model_performance(result.model_id)["test_accuracy"]
        == result.metrics["test_accuracy"]
    )
    assert trainer.get_model_performance("nope") is None
    assert len(trainer.get_training_history()) == 1
    assert trainer.get_training_metrics()["runs"] == 1
    assert trainer.validate_system_integrity()
    report = trainer.generate_training_report()
    assert (
        report["best_model_id"] == result.model_id and (tmp_path / "training_report.json").exists()
    )


def test_trainer_infers_and_checks_dims(tmp_path, small_digits, monkeypatch):
    from ml_adv import AdvancedCustomModelTrainer

    trainer = AdvancedCustomModelTrainer("cnn", run_root=tmp_path)
    base = {"data": (small_digits.x, small_digits.y), "epochs": 1, "batch_size": 32}
    with pytest.raises(ShapeError, match="input"):
        trainer.train({**base, "input_dim": 28})
    with pytest.raises(DataError, match="output_dim"):
        trainer.train({**base, "output_dim": 5})

    class Designed(Exception):
        pass

    def stop_at_fit(spec, *args, **kwargs):  # the design is what is under test, not training
        raise Designed(spec)

    import ml_adv.trainer.facade as facade

    monkeypatch.setattr(facade, "fit", stop_at_fit)
    with pytest.raises(Designed) as designed:
        trainer.train({**base, "input_dim": 8, "output_dim": 12, "size": "tiny"})
    spec = designed.value.args[0]
    assert spec.num_classes == 12 and spec.input_shape == (8, 8, 1) and spec.architecture == "cnn"


@pytest.mark.parametrize(
    "training_data, error, fragment",
    [
        ({"input_dim": 768, "output_dim": 10, "epochs": 1}, ConfigError, "real data"),
        ({"data": "digits", "epochz": 3}, ConfigError, "epochz"),
        ({"data": "digits", "batch_size": 0}, ConfigError, "batch_size"),
        ({"data": "digits", "batch_size": 100_000}, ConfigError, "batch_size"),
        ({"data": "digits", "learning_rate": -0.1}, ConfigError, "learning_rate"),
        ({"data": "digits", "epochs": 0}, ConfigError, "epochs"),
        ({"data": "digits", "loss": "l2"}, ConfigError, "loss"),
        ({"data": "digits", "schedule": "cosin"}, ConfigError, "schedule"),
        ({"data": (np.full((40, 8, 8, 1), np.nan), np.zeros(40, int))}, DataError, "finite"),
        ({"data": (np.zeros((40, 8, 8, 1)), np.arange(40) % 10 - 1)}, DataError, ">= 0"),
        ({"data": (np.zeros((40, 8, 8, 1)), np.full(40, 0.5))}, DataError, "integer"),
        ({"data": (np.zeros((40, 8, 8, 1)), np.zeros(39, int))}, DataError, "labels"),
        ({"data": (np.zeros((0, 8, 8, 1)), np.zeros(0, int))}, DataError, "non-empty"),
        ({"data": (np.zeros((40, 8, 8)), np.arange(40) % 10)}, ShapeError, "image"),
        ({"data": 42}, DataError, "data"),
    ],
)
def test_bad_input_fails_before_compiling(tmp_path, training_data, error, fragment, monkeypatch):
    import jax

    from ml_adv import AdvancedCustomModelTrainer

    def no_compile(*a, **k):
        raise AssertionError("compiled despite bad input")

    monkeypatch.setattr(jax, "jit", no_compile)
    trainer = AdvancedCustomModelTrainer("cnn", run_root=tmp_path)
    with pytest.raises(error, match=fragment):
        trainer.train(training_data)


def test_unknown_names_in_constructors():
    from ml_adv import AdvancedCustomModelTrainer

    with pytest.raises(ConfigError, match="architecture_type"):
        AdvancedCustomModelTrainer(architecture_type="resnet")
    with pytest.raises(ConfigError, match="optimization_method"):
        AdvancedCustomModelTrainer(architecture_type="cnn", optimization_method="annealing")


def test_divergence_returns_unsuccessful_result_with_last_good_model(tmp_path, small_digits):
    import jax.numpy as jnp

    from ml_adv import AdvancedCustomModelTrainer

    trainer = AdvancedCustomModelTrainer("mlp", run_root=tmp_path)
    result = trainer.train(
        {
            "data": small_digits,
            "epochs": 6,
            "batch_size": 32,
            "optimizer": "sgd",
            "schedule": lambda s: jnp.where(s < 10, 0.05, 1e30),
            "size": "tiny",
        }
    )
    assert not result.success and "NaN" in result.error
    assert (
        result.model is not None
        and np.isfinite(result.model.predict_proba(small_digits.x[:4])).all()
    )
    assert not trainer.get_training_history()[0]["success"]


def test_import_is_light():
    import subprocess
    import sys

    code = (
        "import sys, ml_adv; from ml_adv import AdvancedCustomModelTrainer;"
        "print(sorted(m for m in ('tensorflow_datasets', 'nevergrad', 'matplotlib', 'tensorflow')"
        " if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_trained_model_rejects_bad_inputs(small_digits):
    import jax

    from ml_adv.models import AdvancedModelArchitecture
    from ml_adv.training.trained_model import TrainedModel

    spec = AdvancedModelArchitecture("mlp", size="tiny").design_architecture(
        64, 10, input_shape=(8, 8, 1)
    )
    variables = spec.build().init(jax.random.PRNGKey(0), spec.example_input(), train=False)
    model = TrainedModel(spec, dict(variables))
    with pytest.raises(DataError, match="finite"):
        model.predict(np.full((2, 8, 8, 1), np.inf, np.float32))
    with pytest.raises(DataError):
        model.evaluate((small_digits.x, small_digits.y))
    assert isinstance(small_digits, ArrayDataset)


def test_trainer_reads_a_tfds_dataset_by_name(tmp_path):
    """The TFDS path end to end (mock data: this machine has no internet)."""
    import tensorflow_datasets as tfds

    from ml_adv import AdvancedCustomModelTrainer

    # An MLP on the images: the TFDS path is under test, and it compiles faster than a CNN.
    trainer = AdvancedCustomModelTrainer("mlp", size="tiny", run_root=tmp_path)
    with tfds.testing.mock_data(num_examples=96):
        result = trainer.train(
            {"data": "kmnist", "epochs": 1, "batch_size": 16, "run_name": "kmnist"}
        )
        test = load_dataset("kmnist", split="test")
    assert result.success
    assert result.model.spec.input_shape == (28, 28, 1) and result.model.num_classes == 10
    # The reported figure is the trained model's accuracy on the dataset's own test split.
    assert result.metrics["test_accuracy"] == pytest.approx(result.model.evaluate(test)["accuracy"])


def test_training_runs_off_the_event_loop(tmp_path, small_digits):
    """While a model trains, other coroutines keep running (the work is in a worker thread)."""
    from ml_adv import AdvancedCustomModelTrainer

    trainer = AdvancedCustomModelTrainer("mlp", size="tiny", run_root=tmp_path)

    async def main():
        ticks = 0
        task = asyncio.create_task(
            trainer.train_custom_model({"data": small_digits, "epochs": 3, "batch_size": 32})
        )
        while not task.done():
            ticks += 1
            await asyncio.sleep(0.01)
        return await task, ticks

    result, ticks = asyncio.run(main())
    assert result.success and ticks > 10
