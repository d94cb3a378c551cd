"""Exceptions raised by ml_adv.

Every error a user can cause derives from ``MlAdvError`` and also from the
builtin class a caller would naturally catch (``ValueError`` for bad input,
``RuntimeError`` for failures during a run), so ``except ValueError`` keeps
working in code that does not know about ml_adv.

Messages follow one rule: name the argument, say what was expected, say what
was given. ``describe`` helps build such messages consistently.
"""

from __future__ import annotations

import math
from typing import Any


class MlAdvError(Exception):
    """Base class of every ml_adv exception."""


class DataError(MlAdvError, ValueError):
    """Input data is malformed: NaN/inf, bad labels, mismatched lengths, wrong shapes."""


class ConfigError(MlAdvError, ValueError):
    """A configuration value is invalid: unknown name, non-positive size, bad combination."""


class ShapeError(DataError):
    """Inputs do not have the shape the architecture expects."""


class CheckpointError(MlAdvError, RuntimeError):
    """A checkpoint cannot be written, found or restored."""


class TrainingDivergedError(MlAdvError, RuntimeError):
    """The loss became NaN/inf during training.

    Attributes:
        step: the optimizer step at which the non-finite loss was seen.
        last_good_checkpoint: path of the last checkpoint written before it, or None.
    """

    def __init__(
        self, message: str, *, step: int | None = None, last_good_checkpoint: str | None = None
    ):
        super().__init__(message)
        self.step = step
        self.last_good_checkpoint = last_good_checkpoint


class BudgetError(MlAdvError, ValueError):
    """A labelling or compute budget would be exceeded."""


class NotFittedError(MlAdvError, RuntimeError):
    """A method needs a trained model or data that has not been provided yet."""


class AdaptationWarning(UserWarning):
    """An adapted model scores below the model it was adapted from on the labelled target data."""


def describe(value: Any) -> str:
    """Short, readable description of a given value for error messages."""
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    if shape is not None and dtype is not None:
        if tuple(shape) == () and hasattr(value, "item"):
            return f"{value.item()!r} ({dtype} scalar)"
        return f"array of shape {tuple(shape)} and dtype {dtype}"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _is_bool(value: Any) -> bool:
    dtype = getattr(value, "dtype", None)
    return isinstance(value, bool) or (dtype is not None and getattr(dtype, "kind", "") == "b")


def as_python_number(name: str, value: Any, *, kind: type = float) -> int | float:
    """``value`` as a Python ``int`` (``kind=int``) or ``float``, or ConfigError.

    Accepts Python numbers and NumPy/JAX scalars (including 0-d arrays), which
    hyper-parameter searches and user loops produce; rejects booleans (``True`` is
    not a batch size), strings and arrays with more than one element. ``kind=int``
    accepts integer dtypes only.
    """
    expected = "an integer" if kind is int else "a number"
    if _is_bool(value) or isinstance(value, (str, bytes)):
        raise ConfigError(f"{name}: expected {expected}, got {describe(value)}")
    if isinstance(value, int):
        return int(value) if kind is int else float(value)
    if isinstance(value, float):
        if kind is int:
            raise ConfigError(f"{name}: expected {expected}, got {describe(value)}")
        return value
    dtype = getattr(value, "dtype", None)
    if (
        dtype is None
        or getattr(value, "shape", None) != ()
        or getattr(dtype, "kind", "") not in "iuf"
    ):
        raise ConfigError(f"{name}: expected {expected}, got {describe(value)}")
    if kind is int and dtype.kind == "f":
        raise ConfigError(f"{name}: expected {expected}, got {describe(value)}")
    item = value.item() if hasattr(value, "item") else value
    return int(item) if kind is int else float(item)


def check_positive(name: str, value: Any, *, kind: type = int) -> int | float:
    """Return ``value`` as a Python number if it is a finite positive number of ``kind``,
    else ConfigError.

    NumPy and JAX scalars are accepted; booleans, NaN and infinity are not.
    """
    expected = "a positive integer" if kind is int else "a positive finite number"
    try:
        number = as_python_number(name, value, kind=kind)
    except ConfigError:
        raise ConfigError(f"{name}: expected {expected}, got {describe(value)}") from None
    if not (number > 0 and math.isfinite(number)):
        raise ConfigError(f"{name}: expected {expected}, got {describe(value)}")
    return number


def check_non_negative(name: str, value: Any, *, kind: type = float) -> int | float:
    """Like ``check_positive`` but accepts 0."""
    expected = "a non-negative integer" if kind is int else "a non-negative finite number"
    try:
        number = as_python_number(name, value, kind=kind)
    except ConfigError:
        raise ConfigError(f"{name}: expected {expected}, got {describe(value)}") from None
    if not (number >= 0 and math.isfinite(number)):
        raise ConfigError(f"{name}: expected {expected}, got {describe(value)}")
    return number


def check_fraction(
    name: str, value: Any, *, low_open: bool = False, high_open: bool = True
) -> float:
    """``value`` as a float in ``[0, 1)`` (the default; bounds open/closed as asked), else
    ConfigError."""
    low, high = ("(" if low_open else "["), (")" if high_open else "]")
    try:
        number = as_python_number(name, value, kind=float)
    except ConfigError:
        number = math.nan
    ok = (number > 0 if low_open else number >= 0) and (number < 1 if high_open else number <= 1)
    if not ok:
        raise ConfigError(f"{name}: expected a number in {low}0, 1{high}, got {describe(value)}")
    return number


def check_bool(name: str, value: Any) -> bool:
    """``value`` as a Python bool if it is ``True``/``False`` or a NumPy/JAX boolean scalar,
    else ConfigError.

    Truthy stand-ins ("false", "no", 1) are rejected: ``"false"`` is truthy.
    """
    if isinstance(value, bool):
        return value
    dtype = getattr(value, "dtype", None)
    if (
        dtype is not None
        and getattr(dtype, "kind", "") == "b"
        and getattr(value, "shape", None) == ()
    ):
        return bool(value)
    raise ConfigError(f"{name}: expected True or False, got {describe(value)}")


# Largest seed jax.random.PRNGKey takes (a signed 64-bit integer).
MAX_SEED = 2**63 - 1


def check_seed(name: str, value: Any) -> int:
    """``value`` as a Python int in ``[0, 2**63)``, else ConfigError (NumPy/JAX integers
    accepted)."""
    try:
        number = as_python_number(name, value, kind=int)
    except ConfigError:
        number = -1
    if not 0 <= number <= MAX_SEED:
        raise ConfigError(f"{name}: expected an integer in [0, 2**63), got {describe(value)}")
    return number


def check_choice(name: str, value: Any, choices: Any) -> str:
    """``value`` if it is one of ``choices`` (strings), else ConfigError listing them."""
    valid = list(choices)
    if not isinstance(value, str) or value not in valid:
        raise ConfigError(f"{name}: expected one of {valid}, got {describe(value)}")
    return value


def unknown_name(argument: str, given: Any, valid: list[str] | tuple[str, ...]) -> ConfigError:
    """ConfigError for a name not found in a registry, listing the valid names."""
    return ConfigError(f"{argument}: unknown name {given!r}; expected one of {sorted(valid)}")
