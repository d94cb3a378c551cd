"""``TrainConfig``: every training hyper-parameter, with its default, in one place.

The config is a frozen dataclass validated when it is built: unknown optimizer,
schedule or loss names raise ``ConfigError`` listing the valid names, and
non-positive sizes or rates are rejected, so nothing fails later inside a
compiled function. Users may pass their own optax ``GradientTransformation``,
schedule callable or loss callable wherever a name is accepted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import optax

from ml_adv.errors import (
    ConfigError,
    check_bool,
    check_non_negative,
    check_positive,
    check_seed,
    describe,
)

NAN_POLICIES = ("raise", "skip")
DATA_PARALLEL_AUTO = "auto"  # training.core_split decides
MONITOR_MODES = ("max", "min")
# Per-epoch metrics a run records; the monitored one must be among them.
MONITORS = ("val_accuracy", "val_loss", "train_loss", "train_accuracy")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run.

    Attributes:
        learning_rate: peak learning rate of the schedule.
        batch_size: examples per optimizer micro-step (per accumulation step).
        epochs: maximum number of passes over the training data.
        optimizer: name in ``OPTIMIZERS`` or an ``optax.GradientTransformation`` (then
            ``learning_rate``/``schedule``/``weight_decay`` are not applied to it).
        optimizer_options: the optimizer's own hyper-parameters, e.g. ``{"b1": 0.95}`` for
            adam or ``{"momentum": 0.8}`` for momentum (traced: a population may vary them).
        param_groups: ``ParamGroup`` s giving parameter subtrees (by path prefix, e.g.
            ``"encoder"``) their own learning-rate multiplier or freezing them.
        weight_decay: decoupled weight decay (AdamW-style) where the optimizer supports it.
        schedule: name in ``SCHEDULES`` or a callable ``step -> learning rate``.
        warmup_fraction: fraction of all optimizer steps spent warming up (warmup schedules).
        grad_clip_norm: clip gradients to this global norm; ``None`` disables clipping.
        grad_accum_steps: accumulate gradients over this many micro-batches per update
            (``optax.MultiSteps``); the effective batch is ``batch_size * grad_accum_steps``.
        mixed_precision: compute forward/backward in bfloat16, keep float32 parameters
            and optimizer state.
        loss: name in ``LOSSES`` or a callable ``(logits [B, C], labels [B]) -> [B]`` losses.
        label_smoothing: used by the ``cross_entropy`` loss.
        early_stopping: stop when ``monitor`` has not improved for ``patience`` epochs.
        patience, monitor, monitor_mode, min_delta: early-stopping / best-checkpoint rule.
        restore_best: at the end of a run with early stopping, return the best epoch's
            parameters rather than the last ones.
        nan_policy: ``"raise"`` stops with ``TrainingDivergedError`` at the first
            non-finite loss (the last good checkpoint is kept); ``"skip"`` drops that
            update and continues.
        augment: optional pure function ``(batch, key) -> batch`` applied to each
            training batch inside the compiled step.
        data_parallel: shard each batch over all devices (``jax.sharding`` mesh). ``"auto"``
            (the default): one device, unless the CPU is split into per-core devices
            (``ml_adv.use_cpu_cores``, on by default in the command line) and sharding
            measured faster for this program on this CPU (``training.core_split``).
            Stacked runs treat ``"auto"`` as False (they spread members instead).
        spread_members: stacked runs place their members on different devices when there
            are several (no communication between them); see ``ml_adv.use_cpu_cores``.
        scan_epochs: compile a whole epoch as one ``lax.scan`` (fast for in-memory data);
            when False, one jitted call per step.
        scan_unroll: train steps per iteration of the epoch's loop (``lax.scan``'s ``unroll``).
            1 on a CPU, where a step is long; on a GPU a small model's step is a few short
            kernel launches, and unrolling puts several steps in one loop body
            (``benchmarks/gpu_check.sh`` measures the quickstart both ways).
        eval_batch_size: batch size used for evaluation and prediction.
        seed: seeds initialisation, dropout, augmentation and shuffling.
    """

    learning_rate: float = 1e-3
    batch_size: int = 32
    epochs: int = 10
    optimizer: Any = "adam"
    weight_decay: float = 0.0
    optimizer_options: Any = dataclasses.field(default_factory=dict)
    param_groups: tuple = ()
    schedule: Any = "constant"
    warmup_fraction: float = 0.0
    grad_clip_norm: float | None = None
    grad_accum_steps: int = 1
    mixed_precision: bool = False
    loss: Any = "cross_entropy"
    label_smoothing: float = 0.0
    early_stopping: bool = False
    patience: int = 5
    monitor: str = "val_accuracy"
    monitor_mode: str = "max"
    min_delta: float = 0.0
    restore_best: bool = True
    nan_policy: str = "raise"
    augment: Callable | None = None
    data_parallel: bool | str = "auto"
    spread_members: bool = True
    scan_epochs: bool = True
    scan_unroll: int = 1
    eval_batch_size: int = 256
    seed: int = 0

    def __post_init__(self):
        self._normalize_values()
        self._check_choices()
        self._check_optimizer_options()
        if self.monitor_mode not in MONITOR_MODES:
            raise ConfigError(
                f"monitor_mode: expected one of {list(MONITOR_MODES)}, got {self.monitor_mode!r}"
            )
        if self.augment is not None and not callable(self.augment):
            raise ConfigError(
                f"augment: expected a callable (batch, key) -> batch, got {describe(self.augment)}"
            )

    def _normalize_values(self) -> None:
        """Check the numbers and switches, and store each as a plain Python value."""
        # NumPy/JAX scalars (what searches and user loops produce) are stored as Python numbers.
        for name, kind in (
            ("learning_rate", float),
            ("batch_size", int),
            ("epochs", int),
            ("grad_accum_steps", int),
            ("patience", int),
            ("eval_batch_size", int),
            ("scan_unroll", int),
        ):
            object.__setattr__(self, name, check_positive(name, getattr(self, name), kind=kind))
        object.__setattr__(self, "seed", check_seed("seed", self.seed))
        for name in ("weight_decay", "label_smoothing", "warmup_fraction", "min_delta"):
            object.__setattr__(
                self, name, check_non_negative(name, getattr(self, name), kind=float)
            )
        for name in (
            "mixed_precision",
            "early_stopping",
            "restore_best",
            "spread_members",
            "scan_epochs",
        ):
            object.__setattr__(self, name, check_bool(name, getattr(self, name)))
        if not (isinstance(self.data_parallel, str) and self.data_parallel == DATA_PARALLEL_AUTO):
            try:
                object.__setattr__(
                    self, "data_parallel", check_bool("data_parallel", self.data_parallel)
                )
            except ConfigError:
                raise ConfigError(
                    f"data_parallel: expected True, False or {DATA_PARALLEL_AUTO!r}, "
                    f"got {describe(self.data_parallel)}"
                ) from None
        if self.grad_clip_norm is not None:
            object.__setattr__(
                self,
                "grad_clip_norm",
                check_positive("grad_clip_norm", self.grad_clip_norm, kind=float),
            )

    def _check_choices(self) -> None:
        """Check the ranges and the registered names (optimizer, schedule, loss, policies)."""
        from ml_adv.training.losses import LOSSES
        from ml_adv.training.optim import OPTIMIZERS, SCHEDULES

        if self.label_smoothing >= 1:
            raise ConfigError(
                f"label_smoothing: expected a value in [0, 1), got {self.label_smoothing}"
            )
        if self.warmup_fraction >= 1:
            raise ConfigError(
                f"warmup_fraction: expected a value in [0, 1), got {self.warmup_fraction}"
            )
        OPTIMIZERS.resolve(self.optimizer, argument="optimizer", accept=_is_gradient_transformation)
        SCHEDULES.resolve(self.schedule, argument="schedule")
        LOSSES.resolve(self.loss, argument="loss")
        if self.nan_policy not in NAN_POLICIES:
            raise ConfigError(
                f"nan_policy: expected one of {list(NAN_POLICIES)}, got {self.nan_policy!r}"
            )
        if self.monitor not in MONITORS:
            raise ConfigError(f"monitor: expected one of {list(MONITORS)}, got {self.monitor!r}")
        if self.label_smoothing > 0 and self.loss != "cross_entropy":
            raise ConfigError(
                "label_smoothing: applies to the 'cross_entropy' loss only, "
                f"got loss={self.to_dict()['loss']!r}"
            )

    def _check_optimizer_options(self) -> None:
        from ml_adv.training.optim import ParamGroup, optimizer_hyperparams

        if not isinstance(self.optimizer_options, dict):
            raise ConfigError(
                f"optimizer_options: expected a dict like {{'b1': 0.9}}, "
                f"got {describe(self.optimizer_options)}"
            )
        for name, value in self.optimizer_options.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ConfigError(
                    f"optimizer_options[{name!r}]: expected a non-negative number, "
                    f"got {describe(value)}"
                )
        if self.optimizer_options:
            if not isinstance(self.optimizer, str):
                raise ConfigError(
                    "optimizer_options: only apply to a named optimizer, "
                    "got a custom GradientTransformation"
                )
            optimizer_hyperparams(self)
        groups = self.param_groups
        if isinstance(groups, ParamGroup):
            object.__setattr__(self, "param_groups", (groups,))
        elif not isinstance(groups, (tuple, list)) or not all(
            isinstance(g, ParamGroup) for g in groups
        ):
            raise ConfigError(
                f"param_groups: expected a tuple of ParamGroup, got {describe(groups)}"
            )
        else:
            object.__setattr__(self, "param_groups", tuple(groups))

    def replace(self, **changes: Any) -> TrainConfig:
        """Copy with ``changes`` applied (validated again)."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ConfigError(
                f"TrainConfig: unknown field(s) {sorted(unknown)}; "
                f"expected some of {[f.name for f in dataclasses.fields(self)]}"
            )
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly view (user callables are recorded by name)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "optimizer_options":
                value = dict(value)
            elif f.name == "param_groups":
                value = [dataclasses.asdict(g) for g in value]
            elif value is not None and not isinstance(value, (str, int, float, bool)):
                value = getattr(value, "__name__", type(value).__name__)
            out[f.name] = value
        return out


def _is_gradient_transformation(obj: object) -> bool:
    return isinstance(obj, optax.GradientTransformation)
