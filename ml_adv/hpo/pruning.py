"""Pruning: stop unpromising trials early on their intermediate validation scores.

A pruner is a frozen dataclass with a pure decision
``should_prune(epoch, value, reference) -> bool``, where ``value`` is the trial's score
after ``epoch`` (1-based, higher is better) and ``reference`` holds the per-epoch
scores of the study's earlier trials (from the trial journal). Being pure and
picklable, the decision runs inside the trial (in a worker process when trials run on
an executor), through ``fit``'s ``epoch_callback``, and replays identically on resume.

* ``MedianPruner`` (Optuna's default): prune when the score is below the median of
  earlier trials' scores at the same epoch.
* ``SuccessiveHalvingPruner`` (asynchronous successive halving, as in ASHA / Ray Tune):
  at rung epochs ``min_epochs * reduction_factor**k`` keep a trial only if it is in the
  top ``1 / reduction_factor`` of the scores recorded at that rung.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from ml_adv.errors import ConfigError, check_positive, describe
from ml_adv.registry import Registry

Reference = Sequence[Sequence[float]]


def _at_epoch(reference: Reference, epoch: int) -> list[float]:
    return [
        float(h[epoch - 1])
        for h in reference
        if len(h) >= epoch and h[epoch - 1] is not None and math.isfinite(h[epoch - 1])
    ]


@dataclasses.dataclass(frozen=True)
class MedianPruner:
    """Prune below the median of earlier trials at the same epoch.

    Args:
        n_startup_trials: never prune until this many earlier trials reached the epoch.
        n_warmup_epochs: never prune at or before this epoch.
    """

    n_startup_trials: int = 3
    n_warmup_epochs: int = 1

    def __post_init__(self):
        check_positive("n_startup_trials", self.n_startup_trials)
        if (
            isinstance(self.n_warmup_epochs, bool)
            or not isinstance(self.n_warmup_epochs, int)
            or self.n_warmup_epochs < 0
        ):
            raise ConfigError(
                "n_warmup_epochs: expected a non-negative integer, got "
                f"{describe(self.n_warmup_epochs)}"
            )

    def should_prune(self, epoch: int, value: float, reference: Reference) -> bool:
        if not math.isfinite(value):
            return True
        if epoch <= self.n_warmup_epochs:
            return False
        peers = _at_epoch(reference, epoch)
        return len(peers) >= self.n_startup_trials and value < float(np.median(peers))


@dataclasses.dataclass(frozen=True)
class SuccessiveHalvingPruner:
    """Asynchronous successive halving over rungs ``min_epochs * reduction_factor**k``.

    At a rung, the trial competes with every earlier trial that reached it; it continues
    only if its score is among the best ``max(1, n // reduction_factor)`` of the ``n``
    competitors (itself included), the promotion rule of Optuna's pruner.
    """

    min_epochs: int = 1
    reduction_factor: int = 3

    def __post_init__(self):
        check_positive("min_epochs", self.min_epochs)
        if (
            isinstance(self.reduction_factor, bool)
            or not isinstance(self.reduction_factor, int)
            or self.reduction_factor < 2
        ):
            raise ConfigError(
                f"reduction_factor: expected an integer >= 2, got {describe(self.reduction_factor)}"
            )

    def is_rung(self, epoch: int) -> bool:
        rung = self.min_epochs
        while rung < epoch:
            rung *= self.reduction_factor
        return rung == epoch

    def should_prune(self, epoch: int, value: float, reference: Reference) -> bool:
        if not math.isfinite(value):
            return True
        if not self.is_rung(epoch):
            return False
        competitors = sorted(_at_epoch(reference, epoch) + [value], reverse=True)
        keep = max(1, len(competitors) // self.reduction_factor)
        return value < competitors[keep - 1]


PRUNERS: Registry[type] = Registry("pruner")
PRUNERS.register("median", MedianPruner)
PRUNERS.register("successive_halving", SuccessiveHalvingPruner)


def resolve_pruner(pruner):
    """None, a registered name ("median", "successive_halving") or a pruner object."""
    if pruner is None or hasattr(pruner, "should_prune"):
        return pruner
    if isinstance(pruner, str):
        return PRUNERS.get(pruner, argument="pruner")()
    raise ConfigError(
        f"pruner: expected None, one of {PRUNERS.names()} or an object with should_prune, got "
        f"{describe(pruner)}"
    )
