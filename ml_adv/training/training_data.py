"""Parsing and validation of the trainer's ``training_data`` dict.

``training_data`` holds real data plus the hyper-parameters of SEED's example::

    {
        "data": "digits" | ArrayDataset | (x, y),   # or "x": ..., "y": ...
        "validation_data": ArrayDataset | (x, y),    # optional; else split off the training data
        "validation_split": 0.15,                    # used when validation_data is absent
        "test_data": ArrayDataset | (x, y),          # optional; a named dataset brings its test split
        "input_dim": 8, "output_dim": 10,            # optional; inferred from the data and checked
        "learning_rate": 1e-3, "batch_size": 32, "epochs": 50,
        ...any other TrainConfig field, "size", "model_overrides", "run_name"
    }

A dataset name is loaded with ``load_dataset``; for the built-in ``digits`` the
view that suits the architecture is chosen (images for CNN, rows for LSTM,
pixel tokens for Transformer/BERT, flat pixels for MLP). Everything here runs
on the host before any compilation, so bad input fails fast.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ml_adv.data.dataset import ArrayDataset
from ml_adv.errors import ConfigError, DataError, check_positive, describe
from ml_adv.training.augment import default_augmentation
from ml_adv.training.config import TrainConfig

DIGITS_VIEW_FOR = {"cnn": "digits", "mlp": "digits_flat", "lstm": "digits_sequence",
                   "transformer": "digits_tokens", "bert": "digits_tokens"}
DATA_KEYS = ("data", "x", "y", "validation_data", "test_data", "validation_split", "input_dim",
             "output_dim", "size", "model_overrides", "run_name")
TRAIN_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig))
DEFAULT_VALIDATION_SPLIT = 0.15


@dataclasses.dataclass(frozen=True)
class TrainingPlan:
    """Validated data splits, config and model dimensions for one training run."""

    train: ArrayDataset
    val: ArrayDataset
    test: ArrayDataset | None
    config: TrainConfig
    input_dim: int
    output_dim: int
    size: str
    model_overrides: dict[str, Any]
    run_name: str | None


def resolve_training_data(
    training_data: dict[str, Any],
    *,
    architecture: str,
    base_config: TrainConfig,
    settings: dict[str, Any],
    augment: Any,
    default_size: str,
) -> TrainingPlan:
    """Turn ``training_data`` into a ``TrainingPlan``.

    Args:
        training_data: the user's dict (see the module docstring).
        architecture: the trainer's architecture family (chooses the digits view, infers input_dim).
        base_config: the trainer strategy's config; keys of ``training_data`` override it.
        settings: config fields set through the trainer's ``set_*`` methods (also overridden
            by explicit keys of ``training_data``).
        augment: ``None``, ``"default"`` (the default for the input kind) or a callable.
        default_size: model size variant when ``training_data`` has no ``size``.
    """
    if not isinstance(training_data, dict):
        raise ConfigError(f"training_data: expected a dict with 'data' and hyper-parameters, got {describe(training_data)}")
    unknown = set(training_data) - set(DATA_KEYS) - set(TRAIN_FIELDS)
    if unknown:
        raise ConfigError(f"training_data: unknown key(s) {sorted(unknown)}; expected some of {sorted(DATA_KEYS + TRAIN_FIELDS)}")
    td = training_data
    train, test = _load_data(td, architecture)
    if td.get("validation_data") is not None:
        val = to_dataset("validation_data", td["validation_data"])
    else:
        fraction = td.get("validation_split", DEFAULT_VALIDATION_SPLIT)
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
            raise ConfigError(f"validation_split: expected a number in (0, 1), got {describe(fraction)}")
        train, val = train.split((1 - fraction, fraction), seed=0)

    config_fields = {**settings, **{k: td[k] for k in TRAIN_FIELDS if k in td}}
    if augment is not None and "augment" not in config_fields:
        config_fields["augment"] = default_augmentation(train.input_kind) if augment == "default" else augment
    config = base_config.replace(**config_fields)

    num_classes = max(train.num_classes, val.num_classes, test.num_classes if test else 0)
    output_dim = td.get("output_dim", num_classes)
    check_positive("output_dim", output_dim)
    if output_dim < num_classes:
        raise DataError(f"output_dim: the data has {num_classes} classes, got output_dim={output_dim}")
    input_dim = td.get("input_dim", infer_input_dim(architecture, train))
    check_positive("input_dim", input_dim)
    overrides = td.get("model_overrides") or {}
    if not isinstance(overrides, dict):
        raise ConfigError(f"model_overrides: expected a dict, got {describe(overrides)}")
    return TrainingPlan(train, val, test, config, int(input_dim), int(output_dim), td.get("size", default_size),
                        dict(overrides), td.get("run_name"))


def _load_data(td: dict[str, Any], architecture: str) -> tuple[ArrayDataset, ArrayDataset | None]:
    from ml_adv.data.catalog import load_dataset

    if "data" in td and ("x" in td or "y" in td):
        raise ConfigError("training_data: give either 'data' or 'x'/'y', got both")
    if "x" in td or "y" in td:
        data = (td.get("x"), td.get("y"))
    elif "data" in td:
        data = td["data"]
    else:
        raise ConfigError(
            "training_data: expected real data under 'data' (a dataset name such as 'digits', an ArrayDataset "
            "or an (x, y) pair) or under 'x' and 'y'; got only " + repr(sorted(td))
        )
    test = to_dataset("test_data", td["test_data"]) if td.get("test_data") is not None else None
    if isinstance(data, str):
        name = DIGITS_VIEW_FOR.get(architecture, "digits") if data == "digits" else data
        train = load_dataset(name, split="train")
        return train, test if test is not None else load_dataset(name, split="test")
    return to_dataset("data", data), test


def to_dataset(argument: str, value: Any) -> ArrayDataset:
    """An ``ArrayDataset`` from an ArrayDataset or an ``(x, y)`` pair (validated)."""
    if isinstance(value, ArrayDataset):
        return value
    if isinstance(value, (tuple, list)) and len(value) == 2:
        x, y = value
        if x is None or y is None:
            raise DataError(f"{argument}: expected both features and labels, got {'x' if x is None else 'y'}=None")
        return ArrayDataset(np.asarray(x), np.asarray(y), name=argument)
    raise DataError(f"{argument}: expected an ArrayDataset, a dataset name or an (x, y) pair, got {describe(value)}")


def infer_input_dim(architecture: str, ds: ArrayDataset) -> int:
    """The ``input_dim`` that ``design_architecture`` expects for this data (see its docstring)."""
    if ds.input_kind == "tokens":
        vocab = ds.info.get("vocab_size")
        return int(vocab) if vocab else int(ds.x.max()) + 1
    if architecture == "cnn":
        return int(ds.example_shape[0])
    if architecture == "mlp":
        return int(np.prod(ds.example_shape))
    return int(ds.example_shape[-1])
