"""Adversarial battery (issue 14): bad input fails fast with an ml_adv error naming the argument.

Most cases fail before anything compiles, so they are cheap; the few that train use
tiny models for one or two epochs and share one trained run directory. Tests marked
``xfail(strict=True)`` cover behaviour that lives in the training core (``loop.py``,
``checkpointing.py``) and start passing once it is wired there.
"""

from __future__ import annotations

import json
import shutil
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ml_adv.data.dataset import ArrayDataset
from ml_adv.errors import (
    ConfigError,
    DataError,
    MlAdvError,
    ShapeError,
    as_python_number,
    check_bool,
    check_fraction,
    check_positive,
    check_seed,
)
from ml_adv.rundir import Run
from ml_adv.trainer.facade import AdvancedCustomModelTrainer, AdvancedTrainingStrategy

CORE = "wired by the lead in loop/config"
RNG = np.random.default_rng(0)
X_INT = RNG.integers(0, 10, size=(96, 5))  # integer-valued tabular features (counts, categories)
Y_INT = (X_INT[:, 0] + X_INT[:, 1] > 9).astype(np.int64)


@pytest.fixture
def trainer(tmp_path):
    return AdvancedCustomModelTrainer("mlp", size="tiny", run_root=tmp_path / "runs")


def _fails_before_training(trainer, training_data, error, pattern):
    with pytest.raises(error, match=pattern):
        trainer.train(training_data)
    assert not trainer.run_root.exists() or not any(trainer.run_root.iterdir()), "a run started"


# ----------------------------------------------------------- validators
def test_numbers_accept_numpy_and_jax_scalars_and_reject_bools():
    assert (
        check_positive("batch_size", np.int64(32)) == 32
        and type(check_positive("b", np.int32(3))) is int
    )
    assert check_positive("lr", np.float32(0.5), kind=float) == 0.5
    assert check_positive("lr", jnp.float32(0.25), kind=float) == 0.25
    assert check_positive("epochs", jnp.int32(4)) == 4
    assert as_python_number("x", np.array(3.5)) == 3.5
    for bad in (
        True,
        np.bool_(True),
        0,
        -2,
        2.5,
        np.float64(2.0),
        "8",
        None,
        np.arange(2),
        float("nan"),
        float("inf"),
    ):
        with pytest.raises(ConfigError, match="^batch_size: expected a positive integer"):
            check_positive("batch_size", bad)
    with pytest.raises(ConfigError, match="^lr:"):
        check_positive("lr", float("inf"), kind=float)
    assert check_fraction("f", np.float32(0.25)) == 0.25
    with pytest.raises(ConfigError, match=r"^f: expected a number in \(0, 1\)"):
        check_fraction("f", 0, low_open=True)


def test_booleans_are_strict():
    assert check_bool("x", np.bool_(True)) is True and check_bool("x", False) is False
    for bad in ("false", "no", 1, 0, None, np.array([True])):
        with pytest.raises(ConfigError, match="^x: expected True or False"):
            check_bool("x", bad)


def test_seed_range():
    assert check_seed("seed", np.uint64(7)) == 7 and check_seed("seed", 2**63 - 1) == 2**63 - 1
    for bad in (-1, 2**63, 1.0, True, "0"):
        with pytest.raises(ConfigError, match=r"^seed: expected an integer in \[0, 2\*\*63\)"):
            check_seed("seed", bad)


# ----------------------------------------------------------- trainer settings
def test_trainer_settings_take_real_booleans_only(trainer):
    with pytest.raises(ConfigError, match="^enabled: expected True or False, got 'no'"):
        trainer.set_mixed_precision("no")
    for setter in (
        trainer.set_distributed_training,
        trainer.set_resource_monitoring,
        trainer.set_data_augmentation,
    ):
        with pytest.raises(ConfigError, match="^enabled:"):
            setter(1)
    trainer.set_mixed_precision(np.bool_(False))
    trainer.set_gradient_accumulation(np.int64(2))
    with pytest.raises(ConfigError, match="^steps:"):
        trainer.set_gradient_accumulation(True)


def test_strategy_takes_numpy_scalars_as_python_numbers():
    strategy = AdvancedTrainingStrategy(
        learning_rate=np.float32(1e-3),
        batch_size=np.int64(16),
        epochs=np.int64(3),
        early_stopping=np.bool_(True),
    )
    assert type(strategy.config.batch_size) is int and type(strategy.config.epochs) is int
    assert type(strategy.config.learning_rate) is float and strategy.config.early_stopping is True
    json.dumps(strategy.to_dict(), allow_nan=False)
    with pytest.raises(ConfigError, match="^early_stopping: expected True or False, got 'false'"):
        AdvancedTrainingStrategy(early_stopping="false")
    with pytest.raises(ConfigError, match="^epochs:"):
        AdvancedTrainingStrategy(epochs=True)


@pytest.mark.parametrize(
    "arguments, pattern",
    [
        (dict(architecture_type=["mlp"]), "^architecture_type: unknown name"),
        (dict(architecture_type="mlp", size="huge"), "^size: unknown name 'huge'"),
        (
            dict(architecture_type="mlp", optimization_method=3),
            "^optimization_method: unknown name",
        ),
        (dict(architecture_type="mlp", run_root=None), "^run_root:"),
    ],
)
def test_trainer_construction(arguments, pattern):
    with pytest.raises(ConfigError, match=pattern):
        AdvancedCustomModelTrainer(**arguments)


# ----------------------------------------------------------- training_data, before anything trains
BAD_TRAINING_DATA = {
    "monitor typo": (
        {"monitor": "val_acc"},
        ConfigError,
        r"^monitor: expected one of \['val_accuracy'",
    ),
    "truthy string flag": (
        {"early_stopping": "false"},
        ConfigError,
        "^early_stopping: expected True or False",
    ),
    "seed too large": ({"seed": 2**63}, ConfigError, "^seed:"),
    "negative seed": ({"seed": np.int64(-1)}, ConfigError, "^seed:"),
    "bool batch size": ({"batch_size": True}, ConfigError, "^batch_size:"),
    "path in run_name": ({"run_name": "../elsewhere"}, ConfigError, "^run_name:"),
    "validation_split 1": ({"validation_split": 1.0}, ConfigError, "^validation_split:"),
    "NaN in test_data": (
        {"test_data": (np.full((4, 5), np.nan), [0, 1, 0, 1])},
        DataError,
        "^test_data.x: expected finite values",
    ),
    "test_data shape": (
        {"test_data": (X_INT[:, :4], Y_INT)},
        DataError,
        r"^test_data.x: expected examples of shape \(5,\) like the training data, got \(4,\)",
    ),
    "NaN in validation_data": (
        {"validation_data": (np.where(X_INT == 3, np.nan, X_INT), Y_INT)},
        DataError,
        "^validation_data.x: expected finite values",
    ),
    "text labels in test_data": (
        {"test_data": (X_INT, np.array(["a", "b"] * 48))},
        DataError,
        "^test_data.y: expected integer class ids, got dtype <U1 \\(text labels",
    ),
    "negative validation labels": (
        {"validation_data": (X_INT, Y_INT - 1)},
        DataError,
        "^validation_data.y:",
    ),
    "test label beyond output_dim": (
        {"output_dim": 2, "test_data": (X_INT, Y_INT + 1)},
        DataError,
        "^output_dim:",
    ),
    "input_dim disagrees": (
        {"input_dim": 8},
        DataError,
        "^input_dim: the data has examples of shape \\(5,\\)",
    ),
    "bool output_dim": ({"output_dim": True}, ConfigError, "^output_dim:"),
    "unknown key": ({"learning_rte": 1e-3}, ConfigError, "^training_data: unknown key"),
    "bad input_kind": (
        {"input_kind": "tokens"},
        ConfigError,
        "^input_kind: architecture 'mlp' takes",
    ),
    "wrong size type": ({"size": 3}, ConfigError, "^size:"),
}


@pytest.mark.parametrize("case", list(BAD_TRAINING_DATA))
def test_bad_training_data_fails_before_training(case, trainer):
    extra, error, pattern = BAD_TRAINING_DATA[case]
    _fails_before_training(
        trainer, {"x": X_INT, "y": Y_INT, "epochs": 1, "batch_size": 16, **extra}, error, pattern
    )


BAD_ARRAYS = {
    "empty": ((np.zeros((0, 3)), np.zeros(0)), DataError, "^x: expected a non-empty array"),
    "one example": ((np.ones((1, 3)), [0]), DataError, "^validation_split: holding out"),
    "one class": (
        (np.ones((40, 3)), np.zeros(40)),
        DataError,
        "^data: expected labels of at least 2 classes",
    ),
    "1-D features": ((np.arange(40.0), np.arange(40) % 2), DataError, r"reshape\(-1, 1\)"),
    "one-hot labels": (
        (np.ones((40, 3)), np.eye(2)[np.arange(40) % 2]),
        DataError,
        r"^y: .*y.argmax\(-1\)",
    ),
    "column labels": (
        (np.ones((40, 3)), (np.arange(40) % 2)[:, None]),
        DataError,
        r"^y: .*y.ravel\(\)",
    ),
    "complex features": (
        (np.ones((40, 3), np.complex64), np.arange(40) % 2),
        DataError,
        "^x: expected a numeric array",
    ),
    "string features": (
        (np.array([["a", "b"]] * 40), np.arange(40) % 2),
        DataError,
        "^x: expected a numeric array",
    ),
    "ragged features": (([[1.0, 2.0], [3.0]] * 20, np.arange(40) % 2), DataError, "^x: expected"),
    "float32 overflow": (
        (np.full((40, 3), 1e300), np.arange(40) % 2),
        DataError,
        "float32-overflowing",
    ),
    "length mismatch": ((np.ones((40, 3)), np.arange(39) % 2), DataError, "^y: expected 40 labels"),
    "labels beyond int32": (
        (np.ones((40, 3)), np.arange(40) * 2**40),
        DataError,
        "^y: expected class ids below 2\\*\\*31",
    ),
    "missing labels": (
        (np.ones((40, 3)), None),
        DataError,
        "^x/y: expected both features and labels",
    ),
}


@pytest.mark.parametrize("case", list(BAD_ARRAYS))
def test_bad_arrays_fail_before_training(case, trainer):
    (x, y), error, pattern = BAD_ARRAYS[case]
    _fails_before_training(trainer, {"x": x, "y": y, "epochs": 1, "batch_size": 1}, error, pattern)


def test_a_batch_larger_than_the_data_names_batch_size(trainer):
    _fails_before_training(
        trainer, {"x": X_INT[:20], "y": Y_INT[:20], "batch_size": 64}, ConfigError, "^batch_size:"
    )


def test_data_given_in_other_shapes_is_validated_the_same_way(trainer):
    from ml_adv.trainer.training_data import to_dataset

    ds = to_dataset("data", {"x": X_INT, "y": Y_INT})
    assert ds.x.dtype == np.int32 and len(ds) == 96  # kind decided later, by the architecture
    for bad in ("not a pair", (X_INT,), (X_INT, Y_INT, Y_INT), 3):
        with pytest.raises(DataError, match="^data:"):
            to_dataset("data", bad)
    _fails_before_training(trainer, {"data": 7}, DataError, "^data:")
    _fails_before_training(trainer, [X_INT, Y_INT], ConfigError, "^training_data: expected a dict")


def test_load_dataset_names(trainer):
    from ml_adv.data import load_dataset

    for bad in (123, ["digits"], ""):
        with pytest.raises(ConfigError, match="^name:"):
            load_dataset(bad)
    with pytest.raises(ConfigError, match="^split:"):
        load_dataset("digits", split="validation")


# ----------------------------------------------------------- input kinds
def test_input_kind_follows_the_architecture_not_the_dtype():
    from ml_adv.trainer.training_data import resolve_training_data
    from ml_adv.training.config import TrainConfig

    def plan(arch, **td):
        return resolve_training_data(
            td,
            architecture=arch,
            base_config=TrainConfig(),
            settings={},
            augment=None,
            default_size="tiny",
        )

    tabular = plan("mlp", x=X_INT, y=Y_INT)
    assert (
        tabular.train.input_kind == "features"
        and tabular.train.x.dtype == np.float32
        and tabular.input_dim == 5
    )
    assert tabular.test is None and tabular.val.input_kind == "features"
    tokens = plan("transformer", x=X_INT, y=Y_INT)
    assert tokens.train.input_kind == "tokens" and tokens.input_dim == 10
    images = RNG.integers(0, 256, size=(40, 8, 8, 1), dtype=np.uint8)
    cnn = plan("cnn", x=images, y=np.arange(40) % 2)
    # uint8 pixels stay uint8 on the host (a quarter of float32's memory); models read x / 255.
    assert cnn.train.input_kind == "image" and cnn.train.x.dtype == np.uint8
    assert plan("mlp", x=X_INT, y=Y_INT, validation_split=np.float32(0.25)).val.x.shape[0] == 24
    as_bool = plan("mlp", x=X_INT > 4, y=Y_INT > 0)
    assert as_bool.train.x.dtype == np.float32 and as_bool.output_dim == 2
    with pytest.raises(ShapeError, match=r"^x: cnn takes \(H, W, C\) images, .*x\[\.\.\., None\]"):
        plan("cnn", x=np.ones((40, 8, 8), np.float32), y=np.arange(40) % 2)
    with pytest.raises(ShapeError, match=r"^x: lstm takes \(length, features\) sequences"):
        plan("lstm", x=np.ones((40, 8), np.float32), y=np.arange(40) % 2)
    with pytest.raises(
        ShapeError,
        match=r"^data.x: transformer takes \(length, features\) sequences, got .*\(8, 8, 1\)$",
    ):
        plan("transformer", data=(np.ones((40, 8, 8, 1), np.float32), np.arange(40) % 2))
    with pytest.raises(DataError, match="^x: 'tokens' inputs are integer token ids"):
        plan("bert", x=np.ones((40, 6), np.float32), y=np.arange(40) % 2)
    with pytest.raises(DataError, match="^data.x: 'tokens' inputs are integer token ids"):
        plan("bert", data=(np.ones((40, 6), np.float32), np.arange(40) % 2))
    with pytest.raises(DataError, match=r"^x: expected integers that fit in int32"):
        ArrayDataset(np.full((4, 2), 2**40), [0, 1, 0, 1])
    with pytest.raises(DataError, match="^input_kind:"):
        ArrayDataset(np.ones((4, 2)), [0, 1, 0, 1], input_kind="table")


def test_integer_tabular_features_train_an_mlp(trainer):
    result = trainer.train(
        {
            "x": X_INT,
            "y": Y_INT,
            "test_data": (X_INT[:32], Y_INT[:32]),
            "epochs": 2,
            "batch_size": np.int64(16),
            "learning_rate": np.float32(1e-2),
            "seed": np.int64(0),
        }
    )
    assert result.success and 0 <= result.metrics["test_accuracy"] <= 1
    assert result.model.spec.input_kind == "features"
    assert result.model.predict(X_INT[:3]).shape == (3,)  # integer inputs at prediction time too
    name = result.run_dir.rsplit("/", 1)[-1]
    assert name.startswith("mlp-data-") and len(name.split("-")) == 5  # arch-data-date-time-suffix
    report = json.loads(
        (trainer.run_root / name / "report.json").read_text(), parse_constant=pytest.fail
    )
    assert report["train_config"]["batch_size"] == 16


def test_uint8_images_reach_the_model_scaled_to_unit_range():
    """A uint8 image is read as ``x / 255`` (tf.image.convert_image_dtype's convention), in
    training (the plan above keeps uint8) and in prediction alike.

    An MLP on images stands in for the CNN: the conversion is the model-independent part, and
    the tiny CNN's first compile costs seconds.
    """
    from ml_adv.models.registry import make_spec
    from ml_adv.training.trained_model import TrainedModel

    spec = make_spec("mlp", input_shape=(8, 8, 1), input_kind="image", num_classes=2, size="tiny")
    variables = spec.build().init(jax.random.PRNGKey(0), spec.example_input(), train=False)
    model = TrainedModel(spec, dict(variables))
    images = RNG.integers(0, 256, size=(3, 8, 8, 1), dtype=np.uint8)
    np.testing.assert_allclose(
        model.logits(images), model.logits(images.astype(np.float32) / 255), rtol=1e-5
    )
    # ... in mixed precision too, where the scaling happens in bfloat16 before the model
    mixed = TrainedModel(spec, dict(variables), mixed_precision=True)
    np.testing.assert_allclose(mixed.logits(images), model.logits(images), rtol=0.05, atol=0.05)
    with pytest.raises(DataError, match=r"^dataset.y: expected class ids in \[0, 2\)"):
        model.evaluate(ArrayDataset(images, np.array([0, 1, 2])))  # evaluation labels checked too


# ----------------------------------------------------------- saved models
def _tiny_model():
    from ml_adv.models.registry import make_spec
    from ml_adv.training.trained_model import TrainedModel

    spec = make_spec("mlp", input_shape=(4,), input_kind="features", num_classes=2, size="tiny")
    variables = spec.build().init(jax.random.PRNGKey(0), spec.example_input(), train=False)
    return TrainedModel(spec, dict(variables), metrics={"steps_per_second": float("nan")})


def test_save_overwrite_replaces_only_a_saved_model(tmp_path):
    from ml_adv.errors import CheckpointError
    from ml_adv.training.trained_model import TrainedModel

    model = _tiny_model()
    model.save(tmp_path / "m")
    with pytest.raises(CheckpointError, match="^path:"):
        model.save(tmp_path / "m")
    model.save(tmp_path / "m", overwrite=True)  # a rerun script
    assert TrainedModel.load(tmp_path / "m").metrics["steps_per_second"] is None  # strict JSON
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="holds something else"):
        model.save(tmp_path / "notes", overwrite=True)
    assert (tmp_path / "notes" / "a.txt").exists()
    with pytest.raises(ConfigError, match="^overwrite:"):
        model.save(tmp_path / "m", overwrite="yes")


# ----------------------------------------------------------- checks that live in the training core
def _small():
    return ArrayDataset(RNG.normal(size=(64, 4)).astype(np.float32), np.arange(64) % 2)


def test_config_stores_python_numbers():
    from ml_adv.training.config import TrainConfig

    config = TrainConfig(
        batch_size=np.int64(16),
        epochs=jnp.int32(2),
        learning_rate=np.float32(0.5),
        seed=np.int64(3),
    )
    assert (
        type(config.batch_size),
        type(config.epochs),
        type(config.learning_rate),
        type(config.seed),
    ) == (int, int, float, int)


def test_config_booleans_are_strict():
    from ml_adv.training.config import TrainConfig

    with pytest.raises(ConfigError, match="^early_stopping:"):
        TrainConfig(early_stopping="false")
    with pytest.raises(ConfigError, match="^mixed_precision:"):
        TrainConfig(mixed_precision="no")


def test_config_seed_below_2_63():
    from ml_adv.training.config import TrainConfig

    with pytest.raises(ConfigError, match="^seed:"):
        TrainConfig(seed=2**63)


def test_fit_rejects_a_name_instead_of_a_spec():
    from ml_adv.training.loop import fit

    with pytest.raises(MlAdvError, match="^model:"):
        fit("mlp", _small(), run=Run(progress=False))


def test_fit_rejects_init_params_of_another_structure():
    from ml_adv.models.registry import make_spec
    from ml_adv.training.config import TrainConfig
    from ml_adv.training.loop import fit

    spec = make_spec("mlp", input_shape=(4,), input_kind="features", num_classes=2, size="tiny")
    with pytest.raises(MlAdvError, match="^init_params:"):
        fit(
            spec,
            _small(),
            TrainConfig(epochs=1),
            init_params={"dense": jnp.zeros(3)},
            run=Run(progress=False),
        )


def test_fit_checks_validation_labels_against_the_model():
    from ml_adv.models.registry import make_spec
    from ml_adv.training.config import TrainConfig
    from ml_adv.training.loop import fit

    spec = make_spec("mlp", input_shape=(4,), input_kind="features", num_classes=2, size="tiny")
    val = ArrayDataset(np.zeros((8, 4), np.float32), np.arange(8) % 3)
    with pytest.raises(DataError, match="^val.y"):
        fit(spec, _small(), TrainConfig(epochs=1), val=val, run=Run(progress=False))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A 2-epoch tiny-MLP run directory written by ``fit`` (copy it before damaging it)."""
    from ml_adv.models.registry import make_spec
    from ml_adv.training.config import TrainConfig
    from ml_adv.training.loop import fit

    spec = make_spec("mlp", input_shape=(4,), input_kind="features", num_classes=2, size="tiny")
    config = TrainConfig(epochs=2, batch_size=16, early_stopping=True, patience=5)
    data = _small()
    run = tmp_path_factory.mktemp("finished") / "run"
    fit(spec, data, config, val=data, run=Run.at(run, progress=False))
    return spec, config, data, run


def _damaged_copy(run, tmp_path, how: str):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    latest = sorted((copy / "checkpoints" / "latest").iterdir(), key=lambda p: p.name)[-1]
    for path in latest.rglob("*"):
        inside = str(path.relative_to(latest))
        if how == "arrays" and path.is_file() and "meta" not in inside:
            path.unlink()  # the arrays of the latest checkpoint are gone
        elif (
            how == "manifest"
            and path.is_file()
            and ("manifest" in path.name or path.name.endswith("metadata"))
        ):
            path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 3)])  # truncated
    return copy, latest.name


@pytest.mark.parametrize("how", ["arrays", "manifest"])
def test_last_good_model_falls_back_past_a_damaged_checkpoint(how, finished_run, tmp_path):
    """The trainer's diverged-run recovery skips a damaged latest checkpoint (facade part of item
    9)."""
    spec, config, _, run = finished_run
    copy, _ = _damaged_copy(run, tmp_path, how)
    trainer = AdvancedCustomModelTrainer("mlp", size="tiny", run_root=tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = trainer._last_good_model(spec, config, copy, "recovered")
    assert model is not None and model.predict(np.zeros((2, 4), np.float32)).shape == (2,)
    assert any("damaged" in str(w.message) for w in caught)


def test_fit_resumes_from_the_newest_intact_checkpoint(finished_run, tmp_path):
    from ml_adv.training.loop import fit

    spec, config, data, run = finished_run
    copy, bad_step = _damaged_copy(run, tmp_path, "arrays")
    with pytest.warns(Warning, match=bad_step):
        result = fit(
            spec, data, config.replace(epochs=3), val=data, run=Run.at(copy, progress=False)
        )
    assert result.resumed_from is not None and len(result.history) == 3


def test_fit_records_its_files_for_fresh(finished_run):
    from ml_adv.rundir import RunDirectory

    run = finished_run[3]
    recorded = RunDirectory(run).recorded()
    assert {"config.json", "metrics.jsonl"} <= set(recorded["files"])
    assert {"checkpoints/latest", "checkpoints/best"} <= set(recorded["trees"])


def test_fit_checks_every_token_id_before_compiling(monkeypatch):
    from ml_adv.models.registry import make_spec
    from ml_adv.training.config import TrainConfig
    from ml_adv.training.loop import fit

    spec = make_spec(
        "transformer",
        input_shape=(None,),
        input_kind="tokens",
        num_classes=2,
        size="tiny",
        vocab_size=10,
    )
    tokens = np.ones((16, 6), np.int32)
    tokens[5, 2] = 15  # beyond the vocabulary, in a row other than the first
    train = ArrayDataset(tokens, np.arange(16) % 2, input_kind="tokens")

    def no_compile(*args, **kwargs):
        raise AssertionError("compiled despite bad input")

    monkeypatch.setattr(jax, "jit", no_compile)
    with pytest.raises(DataError, match=r"^train.x: expected token ids in \[0, 10\)"):
        fit(spec, train, TrainConfig(epochs=1, batch_size=8), run=Run(progress=False))
