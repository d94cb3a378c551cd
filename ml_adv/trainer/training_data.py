"""Parsing and validation of the trainer's ``training_data`` dict.

``training_data`` holds real data plus the hyper-parameters of SEED's example::

    {
        "data": "digits" | ArrayDataset | (x, y),   # or "x": ..., "y": ...
        "validation_data": ArrayDataset | (x, y),    # optional; else split off the training data
        "validation_split": 0.15,                    # used when validation_data is absent
        "test_data": ArrayDataset | (x, y),          # optional; a named dataset brings its
                                                     # test split
        "input_dim": 8, "output_dim": 10,            # optional; inferred from the data and checked
        "input_kind": "features",                    # optional; else the architecture's kind
        "download": True,                            # fetch a missing named dataset (MNIST, TFDS)
        "learning_rate": 1e-3, "batch_size": 32, "epochs": 50,
        ...any other TrainConfig field, "size", "model_overrides", "run_name"
    }

A dataset name is loaded with ``load_dataset``; for the built-in ``digits`` the
view that suits the architecture is chosen (images for CNN, rows for LSTM,
pixel tokens for Transformer/BERT, flat pixels for MLP). Arrays are read as the
input kind the architecture takes (integer tabular data is features for an MLP,
not token ids), unless ``input_kind`` says otherwise.

Everything here runs on the host before any compilation, so bad input fails fast,
naming the key of ``training_data`` at fault: hyper-parameters (NumPy/JAX scalars
accepted, booleans strict), the data, ``validation_data`` and ``test_data`` (features,
labels, shapes against the training data), ``input_dim``/``output_dim`` and ``run_name``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ml_adv.data.dataset import ArrayDataset
from ml_adv.errors import (
    ConfigError,
    DataError,
    MlAdvError,
    ShapeError,
    as_python_number,
    check_bool,
    check_choice,
    check_fraction,
    check_positive,
    check_seed,
    describe,
)
from ml_adv.training.augment import default_augmentation
from ml_adv.training.config import MONITORS, TrainConfig

DATA_KEYS = (
    "data",
    "x",
    "y",
    "validation_data",
    "test_data",
    "validation_split",
    "input_dim",
    "output_dim",
    "input_kind",
    "size",
    "model_overrides",
    "run_name",
    "download",
)
TRAIN_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig))
DEFAULT_VALIDATION_SPLIT = 0.15
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
# Fields whose value is a plain number or flag (the others take names or callables too).
_BOOL_FIELDS = tuple(k for k, v in _DEFAULTS.items() if isinstance(v, bool))
_INT_FIELDS = tuple(
    k for k, v in _DEFAULTS.items() if isinstance(v, int) and not isinstance(v, bool)
)
_FLOAT_FIELDS = tuple(k for k, v in _DEFAULTS.items() if isinstance(v, float)) + ("grad_clip_norm",)


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


def normalize_train_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """TrainConfig fields with NumPy/JAX scalars as Python numbers and strict booleans.

    Hyper-parameter searches hand out ``np.int64`` epochs and ``np.float32`` rates; a
    string such as ``"false"`` for a flag is rejected rather than read as truthy.
    """
    out = dict(fields)
    for name, value in fields.items():
        if name in _BOOL_FIELDS:
            out[name] = check_bool(name, value)
        elif name == "seed":
            out[name] = check_seed(name, value)
        elif name in _INT_FIELDS and not isinstance(value, int):
            out[name] = _number(name, value, int)
        elif name in _FLOAT_FIELDS and value is not None and not isinstance(value, float):
            out[name] = _number(name, value, float)
    if "monitor" in out:
        check_choice("monitor", out["monitor"], MONITORS)
        # A loss is minimised and an accuracy maximised unless monitor_mode says otherwise.
        out.setdefault("monitor_mode", "min" if out["monitor"].endswith("loss") else "max")
    return out


def _number(name: str, value: Any, kind: type) -> Any:
    try:
        return as_python_number(name, value, kind=kind)
    except ConfigError:
        return value  # TrainConfig rejects it with its own, specific message


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
        architecture: the trainer's architecture family (chooses the digits view and the
            input kind, infers input_dim).
        base_config: the trainer strategy's config; keys of ``training_data`` override it.
        settings: config fields set through the trainer's ``set_*`` methods (also overridden
            by explicit keys of ``training_data``).
        augment: ``None``, ``"default"`` (the default for the input kind) or a callable.
        default_size: model size variant when ``training_data`` has no ``size``.
    """
    if not isinstance(training_data, dict):
        raise ConfigError(
            "training_data: expected a dict with 'data' and hyper-parameters, got "
            f"{describe(training_data)}"
        )
    unknown = set(training_data) - set(DATA_KEYS) - set(TRAIN_FIELDS)
    if unknown:
        raise ConfigError(
            f"training_data: unknown key(s) {sorted(unknown)}; expected some of "
            f"{sorted(DATA_KEYS + TRAIN_FIELDS)}"
        )
    td = training_data
    # Hyper-parameters first: they are cheap to check and a typo should not wait for data loading.
    config_fields = normalize_train_fields(
        {**settings, **{k: td[k] for k in TRAIN_FIELDS if k in td}}
    )
    config = base_config.replace(**{k: v for k, v in config_fields.items() if k != "augment"})
    run_name = _check_run_name(td.get("run_name"))
    kind = _input_kind(td.get("input_kind"), architecture)

    train, test = _load_data(td, architecture, kind)
    if td.get("validation_data") is not None:
        val = _conform(
            "validation_data",
            to_dataset("validation_data", td["validation_data"], train.input_kind),
            train,
            kind,
        )
    else:
        train, val = _hold_out(train, td.get("validation_split", DEFAULT_VALIDATION_SPLIT))

    if augment is not None and "augment" not in config_fields:
        config_fields["augment"] = (
            default_augmentation(train.input_kind) if augment == "default" else augment
        )
    if "augment" in config_fields:
        config = config.replace(augment=config_fields["augment"])

    output_dim = _output_dim(td, train, val, test)
    input_dim = _input_dim(td, architecture, train, val, test)
    overrides = td.get("model_overrides") or {}
    if not isinstance(overrides, dict):
        raise ConfigError(f"model_overrides: expected a dict, got {describe(overrides)}")
    size = td.get("size", default_size)
    if not isinstance(size, str):
        raise ConfigError(f"size: expected a size name such as 'small', got {describe(size)}")
    return TrainingPlan(
        train, val, test, config, input_dim, output_dim, size, dict(overrides), run_name
    )


def _check_run_name(name: Any) -> str | None:
    # The run name becomes one folder under run_root: no separators, no '..'.
    if name is None:
        return None
    if (
        not isinstance(name, str)
        or not name.strip()
        or name in (".", "..")
        or any(c in name for c in "/\\\0")
    ):
        raise ConfigError(
            f"run_name: expected a folder name without path separators, got {describe(name)}"
        )
    return name


def _input_kind(given: Any, architecture: str) -> str | None:
    from ml_adv.data.dataset import INPUT_KINDS
    from ml_adv.models import ARCHITECTURES

    accepted = ARCHITECTURES.get(architecture).input_kinds
    if given is None:
        return None
    if given not in INPUT_KINDS:
        raise ConfigError(f"input_kind: expected one of {list(INPUT_KINDS)}, got {describe(given)}")
    if given not in accepted:
        raise ConfigError(
            f"input_kind: architecture {architecture!r} takes {list(accepted)} inputs, got "
            f"{given!r}"
        )
    return given


def _kind_for(ds: ArrayDataset, architecture: str, explicit: str | None) -> str:
    """The input kind ``ds`` is read as: the explicit one, else the architecture's.

    Integer 2-D arrays default to token ids when nothing says otherwise (``ArrayDataset``);
    an architecture that takes no tokens (MLP, CNN, LSTM) reads them as numbers instead.
    """
    from ml_adv.models import ARCHITECTURES

    if explicit is not None:
        return explicit
    accepted = ARCHITECTURES.get(architecture).input_kinds
    if ds.input_kind in accepted:
        return ds.input_kind
    by_rank = {1: "features", 2: "sequence"}.get(len(ds.example_shape), "image")
    return by_rank if by_rank in accepted else accepted[0]


def array_kind(value: Any, architecture: str, explicit: str | None) -> str | None:
    """The input kind user arrays are read as: ``explicit``, else what ``architecture`` takes
    at their rank (an MLP reads 2-D integers as features, a Transformer as token ids).

    None (let ``ArrayDataset`` infer) for anything that is not an ``(x, y)`` pair or mapping.
    """
    from ml_adv.models import ARCHITECTURES

    if explicit is not None:
        return explicit
    if isinstance(value, dict) and "x" in value:
        x = value["x"]
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        x = value[0]
    else:
        return None
    try:
        arr = np.asarray(x)
    except Exception:  # ragged input: ArrayDataset names the problem
        return None
    accepted = ARCHITECTURES.get(architecture).input_kinds
    if "tokens" in accepted and arr.ndim == 2 and arr.dtype.kind in "iu" and arr.dtype != np.uint8:
        return "tokens"
    by_rank = {2: "features", 3: "sequence"}.get(arr.ndim, "image")
    return by_rank if by_rank in accepted else None


# Example rank and description per input kind (what the model families take).
_RANKS = {
    "features": (1, "feature vectors"),
    "image": (3, "(H, W, C) images"),
    "sequence": (2, "(length, features) sequences"),
    "tokens": (1, "token-id sequences"),
}


def _conform(
    argument: str,
    ds: ArrayDataset,
    train: ArrayDataset | None,
    kind: str | None,
    architecture: str | None = None,
) -> ArrayDataset:
    """``ds`` read as ``train``'s input kind, with the same example shape (else DataError
    naming ``argument``).
    """
    target = train.input_kind if train is not None else _kind_for(ds, architecture, kind)
    features = "x" if argument == "x/y" else f"{argument}.x"  # the 'x' key names itself
    rank, what = _RANKS[target]
    if len(ds.example_shape) != rank:
        hint = (
            "; add a trailing axis (x[..., None]) if that is what they are"
            if len(ds.example_shape) == rank - 1
            else ""
        )
        raise ShapeError(
            f"{features}: {architecture or 'the model'} takes {what}, got examples of shape "
            f"{ds.example_shape}{hint}"
        )
    ds = _renamed(argument, lambda: ds.with_input_kind(target, argument=features))
    if train is not None and ds.example_shape != train.example_shape:
        raise DataError(
            f"{features}: expected examples of shape {train.example_shape} like the training data, "
            f"got {ds.example_shape}"
        )
    return ds


def _hold_out(train: ArrayDataset, fraction: Any) -> tuple[ArrayDataset, ArrayDataset]:
    fraction = check_fraction("validation_split", fraction, low_open=True)
    try:
        return train.split((1 - fraction, fraction), seed=0)
    except DataError as exc:
        raise DataError(
            f"validation_split: holding out {fraction} of {len(train)} training examples leaves an "
            f"empty part ({exc}); pass more data, a larger validation_split, or validation_data"
        ) from None


def _output_dim(td, train, val, test) -> int:
    num_classes = max(train.num_classes, val.num_classes, test.num_classes if test else 0)
    output_dim = check_positive("output_dim", td.get("output_dim", num_classes))
    if output_dim < num_classes:
        raise DataError(
            f"output_dim: the data has {num_classes} classes, got output_dim={output_dim}"
        )
    if output_dim < 2:
        raise DataError(
            f"data: expected labels of at least 2 classes, got only class {int(train.y.max())}"
        )
    return int(output_dim)


def _input_dim(td, architecture, train, val, test) -> int:
    inferred = infer_input_dim(architecture, *(d for d in (train, val, test) if d is not None))
    if "input_dim" not in td:
        return inferred
    given = check_positive("input_dim", td["input_dim"])
    if train.input_kind == "tokens":
        if given < inferred:
            raise DataError(
                "input_dim: the vocabulary size must exceed every token id (largest "
                f"{inferred - 1}), got input_dim={given}"
            )
    elif given != inferred:
        raise ShapeError(
            f"input_dim: the data has examples of shape {train.example_shape}, which for "
            f"{architecture!r} means input_dim={inferred}, got input_dim={given}"
        )
    return int(given)


def _load_data(
    td: dict[str, Any], architecture: str, kind: str | None
) -> tuple[ArrayDataset, ArrayDataset | None]:
    from ml_adv.data.catalog import load_dataset, view_for

    if "data" in td and ("x" in td or "y" in td):
        raise ConfigError("training_data: give either 'data' or 'x'/'y', got both")
    if "x" in td or "y" in td:
        data, argument = (td.get("x"), td.get("y")), "x/y"
    elif "data" in td:
        data, argument = td["data"], "data"
    else:
        raise ConfigError(
            "training_data: expected real data under 'data' (a dataset name such as 'digits', an "
            "ArrayDataset or an (x, y) pair) or under 'x' and 'y'; got only " + repr(sorted(td))
        )
    if isinstance(data, str):
        name = view_for(data, architecture)
        download = check_bool("download", td.get("download", True))
        train = _conform(
            "data", load_dataset(name, split="train", download=download), None, kind, architecture
        )
        test = (
            load_dataset(name, split="test", download=download)
            if td.get("test_data") is None
            else None
        )
    else:
        raw = to_dataset(argument, data, array_kind(data, architecture, kind))
        train, test = _conform(argument, raw, None, kind, architecture), None
    if td.get("test_data") is not None:
        test = to_dataset("test_data", td["test_data"], train.input_kind)
    if test is not None:
        test = _conform("test_data", test, train, kind)
    return train, test


def _renamed(argument: str, build):
    """Run ``build``; a DataError about ``x``/``y`` is re-raised naming
    ``argument.x``/``argument.y``.
    """
    try:
        return build()
    except MlAdvError as exc:
        text = str(exc)
        if text.startswith(argument) or argument == "x/y":  # x/y keys: "x: ..." already names them
            raise
        raise type(exc)(
            f"{argument}.{text}"
            if text[:2] in ("x:", "y:") or text.startswith("domain:")
            else f"{argument}: {text}"
        ) from None


def to_dataset(argument: str, value: Any, input_kind: str | None = None) -> ArrayDataset:
    """An ``ArrayDataset`` from an ArrayDataset, an ``(x, y)`` pair or a ``{'x', 'y'}``
    mapping (validated).

    ``input_kind``: how arrays are read (the trainer passes its architecture's choice, so
    integer tabular features are numbers for an MLP, never token ids); None lets
    ``ArrayDataset`` infer it.
    """
    if isinstance(value, ArrayDataset):
        return value
    if isinstance(value, dict) and {"x", "y"} <= set(value):
        value = (value["x"], value["y"])
    if isinstance(value, (tuple, list)) and len(value) == 2:
        x, y = value
        if x is None or y is None:
            raise DataError(
                f"{argument}: expected both features and labels, got "
                f"{'x' if x is None else 'y'}=None"
            )
        name = "data" if argument == "x/y" else argument
        return _renamed(argument, lambda: ArrayDataset(x, y, input_kind=input_kind, name=name))
    raise DataError(
        f"{argument}: expected an ArrayDataset, a dataset name or an (x, y) pair, got "
        f"{describe(value)}"
    )


def infer_input_dim(architecture: str, ds: ArrayDataset, *others: ArrayDataset) -> int:
    """The ``input_dim`` that ``design_architecture`` expects for this data (see its docstring).

    For token data, the vocabulary: ``info['vocab_size']`` or one more than the largest id in
    any of the datasets (validation and test ids must be embeddable too).
    """
    if ds.input_kind == "tokens":
        vocab = ds.info.get("vocab_size")
        largest = max(int(d.x.max()) for d in (ds, *others))
        return max(int(vocab), largest + 1) if vocab else largest + 1
    if architecture == "cnn":
        return int(ds.example_shape[0])
    if architecture == "mlp":
        return int(np.prod(ds.example_shape))
    return int(ds.example_shape[-1])
