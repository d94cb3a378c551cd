"""Checks of everything a user passes to ``fit`` / ``fit_stacked``, run before anything compiles.

Each names the argument, what was expected and what was given (``ml_adv.errors``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ml_adv.data.dataset import ArrayDataset
from ml_adv.errors import ConfigError, DataError, describe
from ml_adv.training.config import TrainConfig
from ml_adv.training.state import TrainState


def as_model_inputs(model_spec, data):
    """``data`` (a dataset, a dict of streams or None) read as the input kind ``model_spec`` takes.

    Only the ambiguous case changes: integer features that ``ArrayDataset`` took for token
    ids become numbers for a model that takes no tokens (an MLP on integer tabular data).
    """
    if model_spec is None or data is None:
        return data
    if isinstance(data, dict):
        return {name: as_model_inputs(model_spec, d) for name, d in data.items()}
    if (
        isinstance(data, ArrayDataset)
        and data.input_kind == "tokens"
        and model_spec.input_kind != "tokens"
    ):
        return data.with_input_kind(model_spec.input_kind)
    return data


def validate_fit_inputs(model_spec, train, val: ArrayDataset | None, config: TrainConfig) -> None:
    """Every check that can fail on user input, run before anything is compiled.

    ``train`` is an ``ArrayDataset`` or a dict of named streams ``{name: ArrayDataset}``.
    """
    if not isinstance(config, TrainConfig):
        raise ConfigError(f"config: expected a TrainConfig, got {describe(config)}")
    streams = train if isinstance(train, dict) else {"train": train}
    if not streams:
        raise DataError("train: expected an ArrayDataset or a non-empty dict of them, got {}")
    first = None
    for name, data in streams.items():
        argument = "train" if not isinstance(train, dict) else f"train[{name!r}]"
        if not isinstance(data, ArrayDataset):
            raise DataError(f"{argument}: expected an ArrayDataset, got {describe(data)}")
        data.check_batch_size(config.batch_size)
        if first is not None and data.example_shape != first.example_shape:
            raise DataError(
                f"{argument}: every stream feeds one model, "
                f"so expected example shape {first.example_shape} "
                f"like the first stream, got {data.example_shape}"
            )
        first = first or data
        if model_spec is not None:
            model_spec.validate_inputs(
                data.x, argument=f"{argument}.x"
            )  # every row: token ids are range-checked
            if data.num_classes > model_spec.num_classes:
                raise DataError(
                    f"{argument}.y: the model has {model_spec.num_classes} outputs, "
                    f"got labels needing {data.num_classes}"
                )
    if val is not None:
        if not isinstance(val, ArrayDataset):
            raise DataError(f"val: expected an ArrayDataset or None, got {describe(val)}")
        if model_spec is not None:
            model_spec.validate_inputs(val.x, argument="val.x")
            if val.num_classes > model_spec.num_classes:
                raise DataError(
                    f"val.y: expected labels in [0, {model_spec.num_classes}), "
                    f"got labels needing {val.num_classes} classes"
                )
        if val.example_shape != first.example_shape:
            raise DataError(
                f"val.x: expected example shape {first.example_shape} like train, "
                f"got {val.example_shape}"
            )


def check_model(model):
    """The ``ModelSpec`` of ``model`` (None for a custom Linen module); anything else is a
    ConfigError."""
    import flax.linen as nn

    from ml_adv.models.registry import ModelSpec

    if isinstance(model, ModelSpec):
        return model
    if isinstance(model, nn.Module):
        return None
    hint = (
        " (build one with make_spec or AdvancedModelArchitecture(...).design_architecture)"
        if isinstance(model, str)
        else ""
    )
    raise ConfigError(
        f"model: expected a ModelSpec or a flax.linen Module{hint}, got {describe(model)}"
    )


def check_init_params(init_params, state_params) -> None:
    """``init_params`` must have the model's parameter structure, shapes and dtypes kinds."""
    if init_params is None:
        return
    want = jax.tree.structure(state_params)
    got = jax.tree.structure(init_params)
    if want != got:
        raise ConfigError(f"init_params: expected the model's parameter tree {want}, got {got}")
    for path, (a, b) in zip(
        jax.tree_util.tree_flatten_with_path(state_params)[0],
        zip(jax.tree.leaves(state_params), jax.tree.leaves(init_params)),
    ):
        if np.shape(a) != np.shape(b):
            raise ConfigError(
                f"init_params: expected shape {np.shape(a)} at {jax.tree_util.keystr(path[0])}, "
                f"got {np.shape(b)}"
            )


def check_example_mask(example_mask, train, config: TrainConfig) -> np.ndarray | None:
    if example_mask is None:
        return None
    if isinstance(train, dict):
        raise DataError("example_mask: applies to one training stream, got a dict of streams")
    mask = np.asarray(example_mask)
    if mask.dtype != bool or mask.shape != (len(train),):
        raise DataError(
            f"example_mask: expected a bool array of shape ({len(train)},), got {describe(mask)}"
        )
    if mask.sum() < config.batch_size:
        raise DataError(
            f"example_mask: expected at least batch_size={config.batch_size} selected rows, "
            f"got {int(mask.sum())}"
        )
    return mask


def continue_from(state: TrainState, init_state: TrainState | None) -> TrainState:
    """``state`` with the arrays of ``init_state`` (same structure), for incremental training."""
    if init_state is None:
        return state
    if not isinstance(init_state, TrainState):
        raise ConfigError(
            f"init_state: expected a TrainState (FitResult.state), got {describe(init_state)}"
        )
    items = init_state.checkpoint_items()
    if jax.tree.structure(items) != jax.tree.structure(state.checkpoint_items()):
        raise ConfigError(
            "init_state: expected a state of this model and optimizer, got one of another structure"
        )
    return state.with_checkpoint_items(jax.tree.map(lambda a: jnp.array(a, copy=True), items))


def check_hparam_schedule(
    schedule, known, epochs: int
) -> list[tuple[int, dict[str, float]]] | None:
    """``[(first_epoch, {name: value}), ...]`` for ``fit(hparam_schedule=...)``, validated.

    ``known``: the run's traced hyper-parameter names. First epochs are integers in
    ``[0, epochs)``, strictly increasing; values are finite numbers.
    """
    if schedule is None:
        return None
    argument = "hparam_schedule"
    try:
        segments = [(first, values) for first, values in schedule]
    except (TypeError, ValueError):
        raise ConfigError(
            f"{argument}: expected a list of (first_epoch, {{name: value}}) pairs, "
            f"got {describe(schedule)}"
        ) from None
    if not segments:
        raise ConfigError(
            f"{argument}: expected at least one (first_epoch, values) pair, got an empty list"
        )
    out, previous = [], -1
    for first, values in segments:
        if (
            isinstance(first, bool)
            or not isinstance(first, (int, np.integer))
            or not previous < first < epochs
        ):
            raise ConfigError(
                f"{argument}: expected strictly increasing first epochs in [0, {epochs}), "
                f"got {first!r} after {previous}"
            )
        if not isinstance(values, dict) or not values:
            raise ConfigError(
                f"{argument}: expected a non-empty {{name: value}} dict at epoch {first}, "
                f"got {describe(values)}"
            )
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(
                f"{argument}: this run's traced hyper-parameters are {sorted(known)}, "
                f"got {unknown} at epoch {first}"
            )
        for name, value in values.items():
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float, np.number))
                or not np.isfinite(value)
            ):
                raise ConfigError(
                    f"{argument}: expected a finite number for {name!r} at epoch {first}, "
                    f"got {value!r}"
                )
        out.append((int(first), {k: float(v) for k, v in values.items()}))
        previous = int(first)
    return out


def scheduled_values(schedule, epoch: int) -> dict[str, float]:
    """The values in force at ``epoch``: every segment's values up to it, later ones winning."""
    values: dict[str, float] = {}
    for first, segment in schedule or ():
        if first <= epoch:
            values.update(segment)
    return values
