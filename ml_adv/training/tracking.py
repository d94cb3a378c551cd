"""Host-side bookkeeping of a training loop: epoch summaries, early stopping, progress.

``summarize`` turns an epoch's per-step metrics into per-epoch means (per member when
stacked), ``EarlyStopping`` tracks the best value, best epoch and patience of K members,
``monitor_for`` picks the metric they follow, ``progress_bar`` is the epochs' tqdm bar.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ml_adv.errors import ConfigError


def summarize(metrics: dict[str, np.ndarray], axis: int = 0) -> dict[str, np.ndarray]:
    """Per-epoch means over the steps that ran and were finite (``[K]`` arrays when stacked).

    ``train_<name>`` for each objective metric, plus ``grad_norm``, ``nonfinite_steps``
    and ``steps`` (live steps).
    """
    live = metrics["live"] > 0
    good = live & (metrics["nonfinite"] == 0)
    count = good.sum(axis=axis)
    out = {}
    for name, values in metrics.items():
        if name in ("nonfinite", "live"):
            continue
        total = np.where(good, values, 0.0).sum(axis=axis)
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        out[name if name == "grad_norm" else f"train_{name}"] = mean
    out["nonfinite_steps"] = (live & (metrics["nonfinite"] > 0)).sum(axis=axis)
    out["steps"] = live.sum(axis=axis)
    return out


def first_nonfinite_step(metrics: dict[str, np.ndarray]) -> int | None:
    bad = np.asarray(metrics["nonfinite"]) > 0
    return int(np.argmax(bad)) if bad.any() else None


@dataclasses.dataclass
class EarlyStopping:
    """Best value, best epoch and patience counter for K members (K=1 for one run).

    ``update(values, epoch)`` returns the members whose value improved; ``stopped`` is
    True for members out of patience (only when early stopping is enabled).

    Ties: an epoch that equals the best monitored value exactly (common for accuracy on a
    small validation split) counts as better when its ``tiebreak`` value (validation loss,
    lower is better) is lower, so the best epoch is not simply the first of the tied ones.
    """

    members: int
    mode: str
    min_delta: float
    patience: int
    enabled: bool
    best_value: np.ndarray = None
    best_epoch: np.ndarray = None
    bad_epochs: np.ndarray = None
    best_tiebreak: np.ndarray = None

    def __post_init__(self):
        if self.best_value is None:
            self.best_value = np.full(self.members, np.nan)
            self.best_epoch = np.zeros(self.members, int)
            self.bad_epochs = np.zeros(self.members, int)
        if self.best_tiebreak is None:
            self.best_tiebreak = np.full(self.members, np.inf)

    def update(self, values, epoch: int, running=None, tiebreak=None) -> np.ndarray:
        values = np.broadcast_to(np.asarray(values, float), (self.members,))
        running = np.ones(self.members, bool) if running is None else np.asarray(running, bool)
        tiebreak = (
            np.full(self.members, np.inf)
            if tiebreak is None
            else np.broadcast_to(np.asarray(tiebreak, float), (self.members,))
        )
        first = np.isnan(self.best_value)
        if self.mode == "max":
            better = values > self.best_value + self.min_delta
        else:
            better = values < self.best_value - self.min_delta
        tied_but_lower_loss = (values == self.best_value) & (tiebreak < self.best_tiebreak)
        improved = running & np.isfinite(values) & (first | better | tied_but_lower_loss)
        self.best_value = np.where(improved, values, self.best_value)
        self.best_tiebreak = np.where(improved, tiebreak, self.best_tiebreak)
        self.best_epoch = np.where(improved, epoch, self.best_epoch)
        self.bad_epochs = np.where(improved, 0, self.bad_epochs + running.astype(int))
        return improved

    @property
    def stopped(self) -> np.ndarray:
        return (self.bad_epochs >= self.patience) if self.enabled else np.zeros(self.members, bool)

    def to_meta(self) -> dict[str, Any]:
        return {
            "best_value": [None if np.isnan(v) else float(v) for v in self.best_value],
            "best_epoch": self.best_epoch.tolist(),
            "bad_epochs": self.bad_epochs.tolist(),
            "best_tiebreak": [None if not np.isfinite(v) else float(v) for v in self.best_tiebreak],
        }

    def load_meta(self, meta: dict[str, Any]) -> None:
        as_list = lambda v: v if isinstance(v, list) else [v]  # noqa: E731  (single runs store scalars)
        self.best_value = np.array(
            [np.nan if v is None else v for v in as_list(meta["best_value"])], float
        )
        self.best_epoch = np.array(as_list(meta["best_epoch"]), int)
        self.bad_epochs = np.array(as_list(meta["bad_epochs"]), int)
        ties = meta.get("best_tiebreak", [None] * self.members)
        self.best_tiebreak = np.array([np.inf if v is None else v for v in as_list(ties)], float)


def tiebreak_for(monitor: str) -> str | None:
    """The metric that breaks exact ties of ``monitor`` (validation loss for validation
    accuracy)."""
    return "val_loss" if monitor == "val_accuracy" else None


def monitor_for(config, has_val: bool) -> tuple[str, str]:
    """The metric early stopping and best-epoch tracking follow (``train_loss`` without val
    data)."""
    if config.monitor.startswith("val_") and not has_val:
        if config.early_stopping:
            raise ConfigError(
                f"early_stopping: monitoring {config.monitor!r} needs validation data, got val=None"
            )
        return "train_loss", "min"
    return config.monitor, config.monitor_mode


def progress_bar(iterable, enabled: bool | None, *, total: int, initial: int, desc: str = "epochs"):
    """A tqdm bar (default: only on a terminal), or the iterable itself."""
    if enabled is False:
        return iterable
    from ml_adv.rundir import tqdm_class

    tqdm = tqdm_class()

    # disable=None: tqdm turns itself off when stderr is not a terminal (CI, logs).
    return tqdm(
        iterable,
        total=total,
        initial=initial,
        desc=desc,
        unit="epoch",
        disable=None if enabled is None else not enabled,
        leave=False,
    )
