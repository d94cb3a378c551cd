"""The protocol of a stacked active-learning simulation, and what each of its loops yields.

``StackedSimulationConfig`` is the schedule every (strategy, seed) loop follows in
``stacked_simulation.simulate_stacked``; ``LoopResult`` is one loop's learning curve and
acquisitions, with ``labels_to_error`` for the "labels needed to reach X% error" tables.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from ml_adv.errors import ConfigError, check_positive, describe
from ml_adv.training.config import TrainConfig

MEMBER_LAYOUTS = ("auto", "vmap", "scan")


@dataclasses.dataclass(frozen=True)
class StackedSimulationConfig:
    """The protocol every loop of a stacked simulation follows.

    Attributes:
        train: optimizer, learning rate, weight decay and ``batch_size`` of every round.
        initial: labels at round 0; ``balanced_initial`` draws ``initial // C`` per class
            (the remainder from random classes).
        query_size: labels acquired per round.
        max_labels: the last round trains on this many labels.
        validation: held-out labelled images per seed (never in a pool); their accuracy
            is recorded every round.
        pool_subset: score this many random unlabelled images per round (None: the whole
            pool, with an ``available`` mask).
        mc_samples: MC-dropout passes for BALD and for the strategies in ``mc_predictive``.
        mc_predictive: names of the score-based strategies that read the MC-averaged
            predictive distribution instead of one deterministic pass (by default Gal et
            al.'s max entropy and variation ratios; margin and the hybrid stay deterministic).
        steps_per_round: optimizer steps per round for every labelled-set size; or
        epochs_per_round: passes over the labelled set per round (the paper's protocol;
            recompiles once per distinct ``ceil(labels / batch_size)``).
        warm_start: start each round from the loop's previous parameters (fresh optimizer
            state) instead of a fresh initialisation.
        stop_error: a loop stops acquiring once its test error is at most this (its curve
            ends there); None runs every loop to ``max_labels``.
        test_subset: measure test error on this many random test images per seed (None: all).
        members_as: the stacked layout, ``"scan"`` (one scan per member), ``"vmap"``
            (batched members) or ``"auto"`` (``EpochRunner`` measures).
        chunk: pool rows per scoring call (``ActiveLearningConfig.chunk``).
        checkpoint_every: rounds between checkpoints (with ``checkpoint_dir``).
    """

    train: TrainConfig = dataclasses.field(default_factory=lambda: TrainConfig(batch_size=32))
    initial: int = 20
    balanced_initial: bool = True
    query_size: int = 10
    max_labels: int = 1000
    validation: int = 100
    pool_subset: int | None = 2000
    mc_samples: int = 20
    mc_predictive: tuple[str, ...] = ("entropy", "least_confidence")
    steps_per_round: int | None = 100
    epochs_per_round: int | None = None
    warm_start: bool = True
    stop_error: float | None = None
    test_subset: int | None = None
    members_as: str = "auto"
    chunk: int = 4096
    checkpoint_every: int = 1

    def __post_init__(self):
        if not isinstance(self.train, TrainConfig):
            raise ConfigError(f"train: expected a TrainConfig, got {describe(self.train)}")
        for name in (
            "initial",
            "query_size",
            "max_labels",
            "validation",
            "mc_samples",
            "chunk",
            "checkpoint_every",
        ):
            check_positive(name, getattr(self, name))
        for name in ("pool_subset", "test_subset", "steps_per_round", "epochs_per_round"):
            if getattr(self, name) is not None:
                check_positive(name, getattr(self, name))
        if (self.steps_per_round is None) == (self.epochs_per_round is None):
            raise ConfigError(
                "steps_per_round: give exactly one of steps_per_round and epochs_per_round, "
                f"got {self.steps_per_round} and {self.epochs_per_round}"
            )
        if self.max_labels <= self.initial or (self.max_labels - self.initial) % self.query_size:
            raise ConfigError(
                f"max_labels: expected initial + a whole number of query_size rounds, "
                f"got {self.max_labels} (initial {self.initial}, query_size {self.query_size})"
            )
        if self.stop_error is not None and not 0 < self.stop_error < 1:
            raise ConfigError(
                "stop_error: expected an error rate in (0, 1) or None, "
                f"got {describe(self.stop_error)}"
            )
        if self.members_as not in MEMBER_LAYOUTS:
            raise ConfigError(
                f"members_as: expected one of {list(MEMBER_LAYOUTS)}, got {self.members_as!r}"
            )
        names = self.mc_predictive
        if (
            isinstance(names, str)
            or not isinstance(names, (tuple, list))
            or not all(isinstance(n, str) for n in names)
        ):
            raise ConfigError(
                f"mc_predictive: expected a tuple of strategy names, got {describe(names)}"
            )
        object.__setattr__(self, "mc_predictive", tuple(names))
        for name in ("balanced_initial", "warm_start"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(
                    f"{name}: expected True or False, got {describe(getattr(self, name))}"
                )

    @property
    def rounds(self) -> int:
        """Trainings per loop that runs to ``max_labels`` (round 0 included)."""
        return (self.max_labels - self.initial) // self.query_size + 1

    def labels_at(self, round_index: int) -> int:
        return self.initial + round_index * self.query_size

    def steps_at(self, n_labelled: int) -> int:
        """Optimizer steps of the round that trains on ``n_labelled`` labels."""
        if self.steps_per_round is not None:
            return self.steps_per_round
        return self.epochs_per_round * math.ceil(n_labelled / self.train.batch_size)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["train"] = self.train.to_dict()
        return out


@dataclasses.dataclass
class LoopResult:
    """One (strategy, seed) loop: its learning curve and what it acquired.

    ``curve`` has one entry per trained round: ``labels``, ``test_error``, ``val_accuracy``,
    ``train_loss``. ``acquired`` lists the training-set indices labelled, in order (the
    initial ones first). ``stopped_early``: the loop reached ``stop_error`` before ``max_labels``.
    """

    strategy: str
    seed: int
    curve: list[dict[str, Any]]
    acquired: list[int]
    stopped_early: bool

    @property
    def name(self) -> str:
        return loop_name(self.strategy, self.seed)

    def labels_to_error(self, level: float) -> int | None:
        """The fewest labels at which test error was at most ``level`` (None: never)."""
        return labels_to_error(self.curve, level)


def loop_name(strategy: str, seed: int) -> str:
    return f"{strategy}-seed{seed}"


def labels_to_error(curve: Sequence[dict[str, Any]], level: float) -> int | None:
    """The first ``labels`` of ``curve`` whose ``test_error`` is at most ``level`` (None: never)."""
    return next(
        (
            int(p["labels"])
            for p in curve
            if p["test_error"] is not None and p["test_error"] <= level
        ),
        None,
    )
