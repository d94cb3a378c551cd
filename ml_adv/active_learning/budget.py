"""Labelling budget: a total, optional per-sample costs, what is used and what is left.

A selection that would go over the budget raises ``BudgetError`` naming the cost asked
and the budget left, or, when the user asked for trimming, is cut to its longest
prefix that fits. The prefix rule keeps the strategy's ranking: the samples dropped are
always the least informative of the batch, never an arbitrary subset. The budget is
charged when labels are recorded (``charge``), not when samples are selected, so a
selection that is never labelled costs nothing.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ml_adv.errors import BudgetError, ConfigError, DataError, describe


@dataclasses.dataclass
class Budget:
    """A labelling budget over a pool.

    Attributes:
        total: the budget, in cost units (one unit per sample when ``costs`` is None);
            None: no cap, the cost of the labels is only accounted (``used``).
        costs: optional ``[N]`` non-negative cost of labelling each pool sample.
        trim: cut an over-budget selection to the prefix that fits instead of raising.
        used: cost of the labels recorded so far.
    """

    total: float | None
    costs: np.ndarray | None = None
    trim: bool = False
    used: float = 0.0

    def __post_init__(self):
        if self.total is not None and (
            isinstance(self.total, bool)
            or not isinstance(self.total, (int, float, np.number))
            or not self.total > 0
        ):
            raise ConfigError(f"budget: expected a positive number, got {describe(self.total)}")
        if self.costs is not None:
            costs = np.asarray(self.costs, dtype=np.float64)
            if costs.ndim != 1 or not np.all(np.isfinite(costs)) or np.any(costs < 0):
                raise DataError(
                    "costs: expected a 1-D array of finite non-negative costs, got "
                    f"{describe(self.costs)}"
                )
            self.costs = costs
        self.total = None if self.total is None else float(self.total)

    @property
    def left(self) -> float:
        return float("inf") if self.total is None else self.total - self.used

    @property
    def spent(self) -> bool:
        """Whether nothing is left to label with (never, without a cap)."""
        return self.total is not None and self.left <= 1e-9 * self.total

    def check_pool(self, pool_size: int) -> None:
        """DataError unless there is one cost per pool sample."""
        if self.costs is not None and self.costs.shape[0] != pool_size:
            raise DataError(
                f"costs: expected one cost per pool sample ({pool_size}), got {self.costs.shape[0]}"
            )

    def cost_of(self, indices) -> np.ndarray:
        """Per-sample costs of pool ``indices``."""
        idx = np.asarray(indices, dtype=np.int64)
        if self.costs is None:
            return np.ones(idx.shape[0])
        if idx.size and (idx.min() < 0 or idx.max() >= self.costs.shape[0]):
            raise DataError(
                f"indices: expected pool indices in [0, {self.costs.shape[0]}), got {describe(idx)}"
            )
        return self.costs[idx]

    def fit(self, indices) -> np.ndarray:
        """``indices`` if they fit in what is left; else their longest fitting prefix
        (``trim``) or BudgetError.
        """
        idx = np.asarray(indices, dtype=np.int64)
        cumulative = np.cumsum(self.cost_of(idx))
        if self.total is None:
            return idx
        # A tolerance so costs like 0.1 * 10 are not rejected by float round-off.
        fits = cumulative <= self.left + 1e-9 * max(1.0, self.total)
        if fits.all():
            return idx
        if not self.trim:
            raise BudgetError(
                f"n_samples: selecting {idx.size} samples costs {cumulative[-1]:g}, but only "
                f"{self.left:g} of the budget {self.total:g} is left; select fewer, or enable "
                "trimming with set_budget_management(..., trim=True)"
            )
        return idx[: int(np.argmin(fits))]

    def charge(self, indices) -> float:
        """Record the cost of labelling ``indices``; returns that cost."""
        cost = float(np.sum(self.cost_of(indices)))
        self.used += cost
        return cost

    def to_dict(self) -> dict[str, Any]:
        return {
            "enabled": True,
            "total": self.total,
            "used": self.used,
            "left": None if self.total is None else self.left,
            "per_sample_costs": self.costs is not None,
            "trim": self.trim,
        }
