"""Declared search spaces: log/linear floats, integers and categorical choices.

A ``SearchSpace`` is a tuple of named parameters, validated when it is built (so an
invalid space fails before anything trains) and convertible to:

* a nevergrad parametrization (``to_nevergrad``), for every ask/tell method;
* a grid (``grid``), for grid search.

Parameter names are the names the objective understands: ``TrainConfig`` fields
(``learning_rate``, ``batch_size`` ...), model-config fields (``dropout``,
``hidden_sizes`` ...), and ``architecture`` / ``size`` for automated model
selection. Choices must be JSON scalars or tuples of them, so a trial's config is
written to the trial journal exactly as it was trained.

Categorical choices are ``ng.p.Choice(deterministic=True)``: the optimizer's point maps
to the arg-max option, so the same point always means the same configuration (no
sampling noise between what the optimizer proposed and what was trained).

Example:
    >>> space = SearchSpace([Float("learning_rate", 1e-4, 1e-2, log=True),
    ...                      Categorical("architecture", ["mlp", "cnn"])])
    >>> len(space.grid(points=3))
    6
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ml_adv.errors import ConfigError, describe

_SCALAR = (str, int, float, bool, type(None))


def _number(owner: str, name: str, value: Any, *, integer: bool) -> None:
    ok = (
        isinstance(value, (int, np.integer))
        if integer
        else isinstance(value, (int, float, np.integer, np.floating))
    )
    if isinstance(value, bool) or not ok or not math.isfinite(float(value)):
        kind = "an integer" if integer else "a finite number"
        raise ConfigError(f"{owner}.{name}: expected {kind}, got {describe(value)}")


def _check_bounds(owner: str, low: Any, high: Any, log: bool, integer: bool) -> None:
    _number(owner, "low", low, integer=integer)
    _number(owner, "high", high, integer=integer)
    if not low < high:
        raise ConfigError(f"{owner}: expected low < high, got low={low!r}, high={high!r}")
    if log and not low > 0:
        raise ConfigError(f"{owner}: a log-scale range needs low > 0, got low={low!r}")


def _check_name(name: Any) -> None:
    if not isinstance(name, str) or not name:
        raise ConfigError(f"parameter name: expected a non-empty string, got {describe(name)}")


@dataclasses.dataclass(frozen=True)
class Float:
    """A float in ``[low, high]``, uniform on a log scale when ``log``."""

    name: str
    low: float
    high: float
    log: bool = False

    def __post_init__(self):
        _check_name(self.name)
        _check_bounds(f"Float({self.name!r})", self.low, self.high, self.log, integer=False)

    def to_nevergrad(self, ordinal: bool = False):
        import nevergrad as ng

        if self.log:
            return ng.p.Log(lower=float(self.low), upper=float(self.high))
        return ng.p.Scalar(lower=float(self.low), upper=float(self.high))

    def grid(self, points: int) -> list[float]:
        values = (
            np.geomspace(self.low, self.high, points)
            if self.log
            else np.linspace(self.low, self.high, points)
        )
        return [float(v) for v in values]

    def cast(self, value: Any) -> float:
        return float(np.clip(float(value), self.low, self.high))


@dataclasses.dataclass(frozen=True)
class Int:
    """An integer in ``[low, high]`` (both included), log-spaced when ``log``."""

    name: str
    low: int
    high: int
    log: bool = False

    def __post_init__(self):
        _check_name(self.name)
        _check_bounds(f"Int({self.name!r})", self.low, self.high, self.log, integer=True)

    def to_nevergrad(self, ordinal: bool = False):
        import nevergrad as ng

        # Widen by half a step so the end points are as likely as the inner integers after rounding.
        low, high = self.low - 0.4999, self.high + 0.4999
        if self.log:
            low = max(low, self.low * 0.5 + 1e-9)
            param = ng.p.Log(lower=float(low), upper=float(high))
        else:
            param = ng.p.Scalar(lower=float(low), upper=float(high))
        return param.set_integer_casting()

    def grid(self, points: int) -> list[int]:
        count = self.high - self.low + 1
        if count <= points:
            return list(range(self.low, self.high + 1))
        values = (
            np.geomspace(self.low, self.high, points)
            if self.log
            else np.linspace(self.low, self.high, points)
        )
        return sorted({int(round(v)) for v in values})

    def cast(self, value: Any) -> int:
        return int(np.clip(int(round(float(value))), self.low, self.high))


@dataclasses.dataclass(frozen=True)
class Categorical:
    """One of ``choices`` (JSON scalars, or tuples of them such as ``hidden_sizes``)."""

    name: str
    choices: tuple

    def __post_init__(self):
        _check_name(self.name)
        owner = f"Categorical({self.name!r})"
        if isinstance(self.choices, (str, bytes)) or not isinstance(self.choices, Iterable):
            raise ConfigError(
                f"{owner}.choices: expected a list of options, got {describe(self.choices)}"
            )
        choices = tuple(tuple(c) if isinstance(c, list) else c for c in self.choices)
        if not choices:
            raise ConfigError(f"{owner}.choices: expected at least one option, got an empty choice")
        for c in choices:
            items = c if isinstance(c, tuple) else (c,)
            if not all(isinstance(i, _SCALAR) for i in items):
                raise ConfigError(
                    f"{owner}.choices: expected JSON scalars or tuples of them, got {describe(c)}"
                )
        if len(set(map(repr, choices))) != len(choices):
            raise ConfigError(f"{owner}.choices: expected distinct options, got {list(choices)}")
        object.__setattr__(self, "choices", choices)

    @property
    def ordered(self) -> tuple | None:
        """The choices in their natural order when they have one, else None: numbers (sorted),
        or equal-length tuples of numbers that grow elementwise as declared (layer widths)."""

        def numeric(v):
            return isinstance(v, (int, float)) and not isinstance(v, bool)

        if all(numeric(c) for c in self.choices):
            return tuple(sorted(self.choices))
        if (
            all(isinstance(c, tuple) and c and all(map(numeric, c)) for c in self.choices)
            and len({len(c) for c in self.choices}) == 1
            and all(
                all(a <= b for a, b in zip(x, y)) and x != y
                for x, y in zip(self.choices, self.choices[1:])
            )
        ):
            return self.choices
        return None

    def to_nevergrad(self, ordinal: bool = False):
        """``ng.p.Choice`` (one weight per option); with ``ordinal`` and ordered choices
        (``ordered``), ``ng.p.TransitionChoice``: one coordinate along the order."""
        import nevergrad as ng

        if ordinal and self.ordered is not None and len(self.choices) > 1:
            return ng.p.TransitionChoice(list(self.ordered))
        return ng.p.Choice(list(self.choices), deterministic=True)

    def grid(self, points: int) -> list:
        return list(self.choices)

    def cast(self, value: Any):
        value = tuple(value) if isinstance(value, list) else value
        for c in self.choices:
            if c == value:
                return c
        raise ConfigError(f"{self.name}: expected one of {list(self.choices)}, got {value!r}")


Param = Float | Int | Categorical


class SearchSpace:
    """An ordered set of named parameters.

    Args:
        params: ``Float`` / ``Int`` / ``Categorical`` parameters (names must be distinct).
    """

    def __init__(self, params: Sequence[Param]):
        params = tuple(params)
        if not params:
            raise ConfigError("space: expected at least one parameter, got an empty search space")
        for p in params:
            if not isinstance(p, (Float, Int, Categorical)):
                raise ConfigError(
                    f"space: expected Float, Int or Categorical parameters, got {describe(p)}"
                )
        names = [p.name for p in params]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(
                f"space: expected distinct parameter names, got duplicates {duplicates}"
            )
        self.params = params

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def __getitem__(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def __len__(self) -> int:
        return len(self.params)

    def __repr__(self) -> str:
        return f"SearchSpace({list(self.params)})"

    # ------------------------------------------------------------ conversions
    def to_nevergrad(self, seed: int, ordinal: bool = False):
        """An ``ng.p.Dict`` over the parameters whose random state is seeded with ``seed``;
        ``ordinal``: ordered choices as one coordinate each (``Categorical.to_nevergrad``)."""
        import nevergrad as ng

        param = ng.p.Dict(**{p.name: p.to_nevergrad(ordinal) for p in self.params})
        param.random_state = np.random.RandomState(seed)
        return param

    def grid(self, points: int = 3) -> list[dict[str, Any]]:
        """Every grid point, in lexicographic order of the declared parameters (the last
        varies fastest).

        Floats get ``points`` values (geometric when ``log``); integers all their values or
        ``points`` of them; categorical parameters all their choices.
        """
        return [
            dict(zip(self.names, combo)) for combo in itertools.product(*self.grid_axes(points))
        ]

    def grid_axes(self, points: int = 3) -> list[list[Any]]:
        """Each parameter's grid values, in declaration order (the grid is their product)."""
        if isinstance(points, bool) or not isinstance(points, (int, np.integer)) or points < 2:
            raise ConfigError(f"grid_points: expected an integer >= 2, got {describe(points)}")
        return [p.grid(int(points)) for p in self.params]

    def grid_size(self, points: int = 3) -> int:
        return math.prod(len(axis) for axis in self.grid_axes(points))

    def canonical(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """``config`` with plain Python values of the declared types (for JSON and comparisons)."""
        missing = [n for n in self.names if n not in config]
        if missing:
            raise ConfigError(f"config: expected values for {missing}, got keys {sorted(config)}")
        return {p.name: p.cast(config[p.name]) for p in self.params}

    def to_dict(self) -> list[dict[str, Any]]:
        """JSON description (written to the trial journal's header and report.json)."""
        out = []
        for p in self.params:
            record = {"type": type(p).__name__.lower(), **dataclasses.asdict(p)}
            if isinstance(p, Categorical):
                record["choices"] = [list(c) if isinstance(c, tuple) else c for c in p.choices]
            out.append(record)
        return out

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> SearchSpace:
        """Build a space from JSON-friendly declarations.

        Either ``to_dict()``'s list, or a mapping ``name -> declaration`` where a declaration is
        ``["log", low, high]``, ``["float", low, high]``, ``["int", low, high]``,
        ``["logint", low, high]``, or a list of choices (``{"choices": [...]}`` also works).

        Example:
            >>> SearchSpace.from_dict(
            ...     {"learning_rate": ["log", 1e-4, 1e-2], "batch_size": [16, 32, 64]}
            ... ).names
            ['learning_rate', 'batch_size']
        """
        if isinstance(spec, Mapping):
            return cls([_param_from_short(name, decl) for name, decl in spec.items()])
        if isinstance(spec, (list, tuple)):
            params = []
            for rec in spec:
                if not isinstance(rec, Mapping) or "type" not in rec or "name" not in rec:
                    raise ConfigError(
                        f"space: expected records with 'type' and 'name', got {describe(rec)}"
                    )
                kind = {"float": Float, "int": Int, "categorical": Categorical}.get(rec["type"])
                if kind is None:
                    raise ConfigError(
                        f"space: unknown parameter type {rec['type']!r}; expected float, int or "
                        "categorical"
                    )
                params.append(kind(**{k: v for k, v in rec.items() if k != "type"}))
            return cls(params)
        raise ConfigError(
            f"space: expected a mapping or a list of parameter records, got {describe(spec)}"
        )


def _param_from_short(name: str, decl: Any) -> Param:
    if isinstance(decl, (Float, Int, Categorical)):
        return decl
    if isinstance(decl, Mapping):
        if set(decl) != {"choices"}:
            raise ConfigError(
                f"space[{name!r}]: expected {{'choices': [...]}}, got {describe(decl)}"
            )
        return Categorical(name, decl["choices"])
    if (
        isinstance(decl, (list, tuple))
        and len(decl) == 3
        and decl[0] in ("log", "float", "int", "logint")
    ):
        kind, low, high = decl
        if kind in ("int", "logint"):
            return Int(name, low, high, log=kind == "logint")
        return Float(name, low, high, log=kind == "log")
    if isinstance(decl, (list, tuple)):
        return Categorical(name, decl)
    raise ConfigError(
        f"space[{name!r}]: expected ['log'|'float'|'int'|'logint', low, high] or a list of "
        f"choices, got {describe(decl)}"
    )
