"""Optimizers and learning-rate schedules, built in one place as ``optax.chain`` compositions.

``build_optimizer(config, total_steps)`` returns the full gradient
transformation used by the train step: optional global-norm clipping, the
optimizer driven by the schedule, and ``optax.MultiSteps`` for gradient
accumulation. Schedules are functions of the optimizer update count, so they
keep working unchanged with accumulation.
"""

from __future__ import annotations

from collections.abc import Callable

import optax

from ml_adv.registry import Registry

# name -> (learning_rate_or_schedule, weight_decay) -> GradientTransformation
OPTIMIZERS: Registry[Callable[..., optax.GradientTransformation]] = Registry("optimizer")
OPTIMIZERS.register("adam", lambda lr, wd: optax.adam(lr) if wd == 0 else optax.adamw(lr, weight_decay=wd))
OPTIMIZERS.register("adamw", lambda lr, wd: optax.adamw(lr, weight_decay=wd))
OPTIMIZERS.register("sgd", lambda lr, wd: optax.chain(optax.add_decayed_weights(wd), optax.sgd(lr)))
OPTIMIZERS.register(
    "momentum", lambda lr, wd: optax.chain(optax.add_decayed_weights(wd), optax.sgd(lr, momentum=0.9, nesterov=True))
)
OPTIMIZERS.register("rmsprop", lambda lr, wd: optax.chain(optax.add_decayed_weights(wd), optax.rmsprop(lr)))
OPTIMIZERS.register("lamb", lambda lr, wd: optax.lamb(lr, weight_decay=wd))
OPTIMIZERS.register("lion", lambda lr, wd: optax.lion(lr, weight_decay=wd))
OPTIMIZERS.register("adafactor", lambda lr, wd: optax.adafactor(lr, weight_decay_rate=wd or None))

# name -> (peak_lr, total_steps, warmup_steps) -> schedule
SCHEDULES: Registry[Callable[[float, int, int], optax.Schedule]] = Registry("schedule")
SCHEDULES.register("constant", lambda lr, total, warm: optax.constant_schedule(lr))
SCHEDULES.register(
    "warmup_constant", lambda lr, total, warm: optax.warmup_constant_schedule(0.0, lr, max(warm, 1))
)
SCHEDULES.register(
    "warmup_cosine",
    lambda lr, total, warm: optax.warmup_cosine_decay_schedule(0.0, lr, max(warm, 1), max(total, warm + 1), end_value=lr * 1e-2),
)
SCHEDULES.register("cosine", lambda lr, total, warm: optax.cosine_decay_schedule(lr, max(total, 1), alpha=1e-2))
SCHEDULES.register(
    "exponential",
    # Decays by 100x over the run; a fixed per-step rate would depend on the run length.
    lambda lr, total, warm: optax.exponential_decay(lr, transition_steps=max(total, 1), decay_rate=0.01),
)
SCHEDULES.register("linear", lambda lr, total, warm: optax.linear_schedule(lr, 0.0, max(total, 1)))
SCHEDULES.register("one_cycle", lambda lr, total, warm: optax.cosine_onecycle_schedule(max(total, 2), lr))


def build_schedule(config, total_updates: int) -> optax.Schedule:
    """The learning-rate schedule for ``total_updates`` optimizer updates."""
    if callable(config.schedule) and not isinstance(config.schedule, str):
        return config.schedule
    warmup = int(round(config.warmup_fraction * total_updates))
    return SCHEDULES.get(config.schedule, argument="schedule")(config.learning_rate, total_updates, warmup)


def build_optimizer(config, total_updates: int) -> optax.GradientTransformation:
    """Clip -> optimizer(schedule) -> MultiSteps, as configured."""
    if isinstance(config.optimizer, optax.GradientTransformation):
        tx = config.optimizer
    else:
        make = OPTIMIZERS.get(config.optimizer, argument="optimizer")
        tx = make(build_schedule(config, total_updates), config.weight_decay)
    if config.grad_clip_norm is not None:
        tx = optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), tx)
    if config.grad_accum_steps > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=config.grad_accum_steps)
    return tx
