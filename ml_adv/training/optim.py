"""Optimizers and learning-rate schedules, built in one place as ``optax.chain`` compositions.

``build_optimizer(config, total_updates)`` returns the full gradient transformation:

    clip (optional) -> inject_hyperparams(optimizer)(learning_rate=peak, weight_decay, ...)
                    -> scale_by_schedule(unit shape) -> param-group scales (optional)
    wrapped in optax.MultiSteps for gradient accumulation.

Why this shape: every continuous hyper-parameter (peak learning rate, weight decay, betas,
momentum, decay) lives in the optimizer *state* (``optax.inject_hyperparams``), as an
array. A new value is a new array, never a new compiled program, so trials run one after
another reuse one executable, and a population of K members with K learning rates is one
vmapped program (``hyperparams`` / ``set_hyperparams``). Schedules are unit shapes
(peak 1.0) applied after the optimizer, so they scale by each member's own peak rate.

Parameter groups (``ParamGroup``) give leaves selected by a path prefix their own
learning-rate multiplier, or freeze them (multiplier 0, weight decay included). The
multipliers are arrays in the optimizer state too, so gradual unfreezing changes them
without recompiling (``set_group_scales``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from ml_adv.errors import ConfigError, describe
from ml_adv.registry import Registry


@dataclasses.dataclass(frozen=True)
class OptimizerEntry:
    """An optimizer family: ``make(learning_rate, weight_decay, **hyper)`` and its hyper-parameter
    defaults."""

    make: Callable[..., optax.GradientTransformation]
    defaults: Mapping[str, float]


OPTIMIZERS: Registry[OptimizerEntry] = Registry("optimizer")


def _register(
    name: str, make: Callable[..., optax.GradientTransformation], **defaults: float
) -> None:
    OPTIMIZERS.register(name, OptimizerEntry(make, dict(defaults)))


def _adamw(learning_rate, weight_decay, b1, b2, eps):
    # "adam" is AdamW with a traced decay (0 by default): u + 0 * p == u, so one program
    # serves both, and a weight-decay search never switches optimizers.
    return optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)


def _sgd(learning_rate, weight_decay):
    return optax.chain(optax.add_decayed_weights(weight_decay), optax.sgd(learning_rate))


def _momentum(learning_rate, weight_decay, momentum):
    return optax.chain(
        optax.add_decayed_weights(weight_decay),
        optax.sgd(learning_rate, momentum=momentum, nesterov=True),
    )


def _rmsprop(learning_rate, weight_decay, decay):
    return optax.chain(
        optax.add_decayed_weights(weight_decay), optax.rmsprop(learning_rate, decay=decay)
    )


# Factories take their hyper-parameters by name: inject_hyperparams reads the signature.
_register("adam", _adamw, b1=0.9, b2=0.999, eps=1e-8)
_register("adamw", _adamw, b1=0.9, b2=0.999, eps=1e-8)
_register("sgd", _sgd)
_register("momentum", _momentum, momentum=0.9)
_register("rmsprop", _rmsprop, decay=0.9)
_register(
    "lamb",
    lambda learning_rate, weight_decay, b1, b2: optax.lamb(
        learning_rate, b1=b1, b2=b2, weight_decay=weight_decay
    ),
    b1=0.9,
    b2=0.999,
)
_register(
    "lion",
    lambda learning_rate, weight_decay, b1, b2: optax.lion(
        learning_rate, b1=b1, b2=b2, weight_decay=weight_decay
    ),
    b1=0.9,
    b2=0.99,
)
_register(
    "adafactor",
    lambda learning_rate, weight_decay: optax.adafactor(
        learning_rate, weight_decay_rate=weight_decay
    ),
)

# name -> (total_steps, warmup_steps) -> unit schedule (peak 1.0); scaled by the traced peak rate.
SCHEDULES: Registry[Callable[[int, int], optax.Schedule]] = Registry("schedule")
SCHEDULES.register("constant", lambda total, warm: optax.constant_schedule(1.0))
SCHEDULES.register(
    "warmup_constant", lambda total, warm: optax.warmup_constant_schedule(0.0, 1.0, max(warm, 1))
)
SCHEDULES.register(
    "warmup_cosine",
    lambda total, warm: optax.warmup_cosine_decay_schedule(
        0.0, 1.0, max(warm, 1), max(total, warm + 1), end_value=1e-2
    ),
)
SCHEDULES.register(
    "cosine", lambda total, warm: optax.cosine_decay_schedule(1.0, max(total, 1), alpha=1e-2)
)
SCHEDULES.register(
    "exponential",
    # Decays by 100x over the run; a fixed per-step rate would depend on the run length.
    lambda total, warm: optax.exponential_decay(
        1.0, transition_steps=max(total, 1), decay_rate=0.01
    ),
)
SCHEDULES.register("linear", lambda total, warm: optax.linear_schedule(1.0, 0.0, max(total, 1)))
SCHEDULES.register(
    "one_cycle", lambda total, warm: optax.cosine_onecycle_schedule(max(total, 2), 1.0)
)
# Ganin et al. (2016), DANN: mu_p = mu_0 / (1 + alpha p)^beta, p the share of the run done.
DANN_ALPHA, DANN_BETA = 10.0, 0.75


def dann_annealing(
    total: int, warm: int = 0, *, alpha: float = DANN_ALPHA, beta: float = DANN_BETA
) -> optax.Schedule:
    """``(1 + alpha * step / total) ** -beta``: DANN's learning-rate annealing (unit peak;
    ``warm`` unused).

    Example:
        >>> float(dann_annealing(100)(100))  # 11 ** -0.75
        0.1655...
    """
    del warm
    total = float(max(total, 1))
    return lambda count: (1.0 + alpha * jnp.minimum(count, total) / total) ** -beta


SCHEDULES.register("dann", dann_annealing)

# Hyper-parameters that live in the optimizer state (beside each optimizer's own: b1, b2 ...).
BASE_HYPERPARAMS = ("learning_rate", "weight_decay")


@dataclasses.dataclass(frozen=True)
class ParamGroup:
    """Leaves whose path starts with ``prefix`` (e.g. ``"encoder"``, ``"head"``,
    ``"encoder/dense_0"``).

    Attributes:
        prefix: '/'-joined path prefix inside ``params``.
        lr_scale: multiplier of the learning rate for these leaves (discriminative rates).
        trainable: False freezes them (no update, no weight decay).
    """

    prefix: str
    lr_scale: float = 1.0
    trainable: bool = True

    def __post_init__(self):
        if not isinstance(self.prefix, str) or not self.prefix:
            raise ConfigError(
                "ParamGroup.prefix: expected a non-empty path prefix like 'encoder', "
                f"got {describe(self.prefix)}"
            )
        if (
            isinstance(self.lr_scale, bool)
            or not isinstance(self.lr_scale, (int, float))
            or self.lr_scale < 0
        ):
            raise ConfigError(
                "ParamGroup.lr_scale: expected a non-negative number, "
                f"got {describe(self.lr_scale)}"
            )
        if not isinstance(self.trainable, bool):
            raise ConfigError(
                f"ParamGroup.trainable: expected True or False, got {describe(self.trainable)}"
            )


def unit_schedule(config, total_updates: int) -> optax.Schedule | None:
    """The schedule's shape with peak 1.0 (``None`` for a constant rate).

    A user callable ``step -> rate`` is used as is; the injected peak is then 1.0.
    """
    if callable(config.schedule) and not isinstance(config.schedule, str):
        return config.schedule
    if config.schedule == "constant":
        return None
    warmup = int(round(config.warmup_fraction * total_updates))
    return SCHEDULES.get(config.schedule, argument="schedule")(total_updates, warmup)


def build_schedule(config, total_updates: int) -> optax.Schedule:
    """The absolute learning-rate schedule (peak ``config.learning_rate``), for plots and
    reports."""
    unit = unit_schedule(config, total_updates)
    if unit is None:
        return optax.constant_schedule(config.learning_rate)
    if callable(config.schedule) and not isinstance(config.schedule, str):
        return unit
    return lambda count: config.learning_rate * unit(count)


def optimizer_hyperparams(config) -> dict[str, float]:
    """Initial values of the optimizer's traced hyper-parameters for ``config``."""
    entry = OPTIMIZERS.get(config.optimizer, argument="optimizer")
    custom_schedule = callable(config.schedule) and not isinstance(config.schedule, str)
    values = {
        "learning_rate": 1.0 if custom_schedule else float(config.learning_rate),
        "weight_decay": float(config.weight_decay),
        **entry.defaults,
    }
    options = dict(getattr(config, "optimizer_options", {}) or {})
    unknown = set(options) - set(entry.defaults)
    if unknown:
        raise ConfigError(
            f"optimizer_options: {config.optimizer!r} has hyper-parameters "
            f"{sorted(entry.defaults)}, got {sorted(unknown)}"
        )
    values.update({k: float(v) for k, v in options.items()})
    return values


# inject_hyperparams' state class (optax >= 0.2.3 names it InjectStatefulHyperparamsState).
_INJECTED_STATES = tuple(
    cls
    for cls in (
        getattr(optax, "InjectHyperparamsState", None),
        getattr(optax.schedules, "InjectStatefulHyperparamsState", None),
    )
    if cls is not None
)


class GroupScaleState(NamedTuple):
    """Per-leaf update multipliers (float32 scalars shaped like params' structure)."""

    group_scales: Any


def scale_by_param_groups(groups: tuple[ParamGroup, ...]) -> optax.GradientTransformation:
    """Multiply each leaf's update by its group's ``lr_scale`` (0 when frozen); first match wins."""

    def scale_for(path) -> float:
        name = "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)
        for group in groups:
            if name == group.prefix or name.startswith(group.prefix + "/"):
                return float(group.lr_scale) if group.trainable else 0.0
        return 1.0

    def init(params):
        return GroupScaleState(
            jax.tree_util.tree_map_with_path(
                lambda path, _: jnp.asarray(scale_for(path), jnp.float32), params
            )
        )

    def update(updates, state, params=None):
        del params
        return jax.tree.map(lambda u, s: u * s.astype(u.dtype), updates, state.group_scales), state

    return optax.GradientTransformation(init, update)


def build_optimizer(config, total_updates: int) -> optax.GradientTransformation:
    """Clip -> injected optimizer -> unit schedule -> param groups -> MultiSteps, as configured."""
    if isinstance(config.optimizer, optax.GradientTransformation):
        parts = [config.optimizer]
    else:
        entry = OPTIMIZERS.get(config.optimizer, argument="optimizer")
        parts = [optax.inject_hyperparams(entry.make)(**optimizer_hyperparams(config))]
        unit = unit_schedule(config, total_updates)
        if unit is not None:
            parts.append(optax.scale_by_schedule(unit))
    if config.grad_clip_norm is not None:
        parts.insert(0, optax.clip_by_global_norm(config.grad_clip_norm))
    groups = tuple(getattr(config, "param_groups", ()) or ())
    if groups:
        parts.append(scale_by_param_groups(groups))
    tx = parts[0] if len(parts) == 1 else optax.chain(*parts)
    if config.grad_accum_steps > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=config.grad_accum_steps)
    return tx


def hyperparams(opt_state: Any) -> dict[str, jax.Array]:
    """The traced hyper-parameters held in ``opt_state`` (``learning_rate`` = the peak rate)."""
    found: dict[str, jax.Array] = {}

    def visit(node):
        if isinstance(node, _INJECTED_STATES):
            found.update(node.hyperparams)
        return node

    jax.tree.map(visit, opt_state, is_leaf=lambda n: isinstance(n, _INJECTED_STATES))
    return found


def set_hyperparams(opt_state: Any, **values: Any) -> Any:
    """``opt_state`` with hyper-parameters replaced (same shapes and dtypes; no recompile).

    Raises ConfigError naming a hyper-parameter the optimizer does not have.
    """
    present = hyperparams(opt_state)
    unknown = set(values) - set(present)
    if unknown:
        raise ConfigError(
            f"hyper-parameters: the optimizer has {sorted(present)}, got {sorted(unknown)}"
        )
    # Broadcast: a scalar sets every member of a stacked state alike.
    cast = {
        k: jnp.broadcast_to(jnp.asarray(v, present[k].dtype), jnp.shape(present[k]))
        for k, v in values.items()
    }
    return optax.tree.set(opt_state, **cast)


def group_scales(opt_state: Any) -> Any:
    """The per-leaf parameter-group multipliers in ``opt_state`` (None without groups)."""
    found = []
    jax.tree.map(
        lambda n: found.append(n) if isinstance(n, GroupScaleState) else None,
        opt_state,
        is_leaf=lambda n: isinstance(n, GroupScaleState),
    )
    return found[0].group_scales if found else None


def set_group_scales(opt_state: Any, scales: Any) -> Any:
    """``opt_state`` with new per-leaf multipliers (e.g. unfreeze a layer: 0 -> 1); no recompile."""
    if group_scales(opt_state) is None:
        raise ConfigError("param_groups: the optimizer was built without parameter groups")
    return jax.tree.map(
        lambda n: (
            GroupScaleState(
                jax.tree.map(lambda new, old: jnp.asarray(new, old.dtype), scales, n.group_scales)
            )
            if isinstance(n, GroupScaleState)
            else n
        ),
        opt_state,
        is_leaf=lambda n: isinstance(n, GroupScaleState),
    )
