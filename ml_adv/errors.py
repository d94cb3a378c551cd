"""Exceptions raised by ml_adv.

Every error a user can cause derives from ``MlAdvError`` and also from the
builtin class a caller would naturally catch (``ValueError`` for bad input,
``RuntimeError`` for failures during a run), so ``except ValueError`` keeps
working in code that does not know about ml_adv.

Messages follow one rule: name the argument, say what was expected, say what
was given. ``describe`` helps build such messages consistently.
"""

from __future__ import annotations

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

    def __init__(self, message: str, *, step: int | None = None, last_good_checkpoint: str | None = None):
        super().__init__(message)
        self.step = step
        self.last_good_checkpoint = last_good_checkpoint


class BudgetError(MlAdvError, ValueError):
    """A labelling or compute budget would be exceeded."""


class NotFittedError(MlAdvError, RuntimeError):
    """A method needs a trained model or data that has not been provided yet."""


def describe(value: Any) -> str:
    """Short, readable description of a given value for error messages."""
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    if shape is not None and dtype is not None:
        return f"array of shape {tuple(shape)} and dtype {dtype}"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_positive(name: str, value: Any, *, kind: type = int) -> None:
    """Raise ConfigError unless ``value`` is a positive number of the given kind."""
    ok_type = isinstance(value, (int,)) if kind is int else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or not value > 0:
        expected = "a positive integer" if kind is int else "a positive number"
        raise ConfigError(f"{name}: expected {expected}, got {describe(value)}")


def unknown_name(argument: str, given: Any, valid: list[str] | tuple[str, ...]) -> ConfigError:
    """ConfigError for a name not found in a registry, listing the valid names."""
    return ConfigError(
        f"{argument}: unknown name {given!r}; expected one of {sorted(valid)}"
    )
