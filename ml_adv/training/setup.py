"""``init_run``: the one place that builds optimizer, keys, state and step for any run.

``fit``, ``fit_stacked``, masked-token pretraining, the benchmark contenders and the
facade's last-good-model recovery all call it, so a run's keys and programs are derived
the same way everywhere.

Keys: ``key`` (default ``PRNGKey(config.seed)``) splits into ``(init, dropout, shuffle)``.
With ``members=K`` it first splits into K member keys and each member splits its own
the same way, so member i of a stacked run is exactly the single run with
``key=member_keys(key, K)[i]``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ml_adv.errors import ConfigError, describe
from ml_adv.training.config import TrainConfig
from ml_adv.training.losses import resolve_traced_loss
from ml_adv.training.objectives import DEFAULT_HPARAMS, Objective, supervised_objective
from ml_adv.training.optim import (
    build_optimizer,
    hyperparams,
    optimizer_hyperparams,
    set_hyperparams,
)
from ml_adv.training.runner import PROGRAMS
from ml_adv.training.state import TrainState, create_train_state
from ml_adv.training.steps import GUARDS, guard_for_architecture, make_train_step


@dataclasses.dataclass
class RunSetup:
    """Everything a training loop needs, built once.

    Attributes:
        module, spec: the Linen module and its ``ModelSpec`` (None for a custom module).
        tx: the optax transformation (hyper-parameters in its state).
        state: the initial ``TrainState`` (leading member axis when ``members``).
        train_step: the pure step ``(state, batch, key, active=None) -> (state, metrics)``.
        shuffle_key: the run's shuffling key (``[K, 2]`` member keys when stacked).
        members: K for a stacked run, else None.
        guard_steps: ``{guard: step}``, the step built with each non-finite guard form
            (``train_step`` is one of them); the epoch runner may measure them.
    """

    module: Any
    spec: Any
    config: TrainConfig
    tx: Any
    state: TrainState
    train_step: Any
    shuffle_key: jax.Array
    members: int | None = None
    guard_steps: Any = None


def run_key(config: TrainConfig, key: jax.Array | None) -> jax.Array:
    """The run's root key: ``key`` if given, else ``PRNGKey(config.seed)``."""
    if key is None:
        return jax.random.PRNGKey(config.seed)
    key = jnp.asarray(key)
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    if key.shape != (2,) or key.dtype != jnp.uint32:
        raise ConfigError(f"key: expected a PRNG key (jax.random.PRNGKey(n)), got {describe(key)}")
    return key


def member_keys(key: jax.Array, members: int) -> jax.Array:
    """The K member keys of a stacked run with root ``key``."""
    return jax.random.split(key, members)


def total_updates(config: TrainConfig, steps_per_epoch: int) -> int:
    return max(1, config.epochs * steps_per_epoch // config.grad_accum_steps)


def traceable_hparam_names(config: TrainConfig) -> tuple[str, ...]:
    """Hyper-parameters a population may set per member for this config."""
    if not isinstance(config.optimizer, str):
        return tuple(DEFAULT_HPARAMS)
    from ml_adv.training.optim import optimizer_hyperparams

    return tuple(sorted(set(optimizer_hyperparams(config)) | set(DEFAULT_HPARAMS)))


def check_member_hparams(
    member_hparams: Mapping[str, Any] | None, members: int, config: TrainConfig
) -> dict[str, np.ndarray]:
    """Validate per-member hyper-parameters: known names, length K, finite numbers."""
    if member_hparams is None:
        return {}
    if not isinstance(member_hparams, Mapping):
        raise ConfigError(
            f"member_hparams: expected a dict name -> [K] values, got {describe(member_hparams)}"
        )
    valid = traceable_hparam_names(config)
    out = {}
    for name, values in member_hparams.items():
        if name not in valid:
            raise ConfigError(
                f"member_hparams: {name!r} cannot be a traced per-member value for optimizer "
                f"{config.to_dict()['optimizer']!r}; expected some of {list(valid)} "
                "(structural choices such as the optimizer name need separate runs)"
            )
        try:
            arr = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            raise ConfigError(
                f"member_hparams[{name!r}]: expected {members} numbers (a traced value), "
                f"got {describe(values)}"
            ) from None
        if arr.shape != (members,):
            raise ConfigError(
                f"member_hparams[{name!r}]: expected {members} values (one per member), "
                f"got shape {arr.shape}"
            )
        if not np.all(np.isfinite(arr)) or np.any(arr < 0):
            raise ConfigError(
                f"member_hparams[{name!r}]: expected finite non-negative values, got {arr.tolist()}"
            )
        if name == "learning_rate" and np.any(arr <= 0):
            raise ConfigError(
                f"member_hparams['learning_rate']: expected positive values, got {arr.tolist()}"
            )
        if name == "label_smoothing" and np.any(arr >= 1):
            raise ConfigError(
                f"member_hparams['label_smoothing']: expected values in [0, 1), got {arr.tolist()}"
            )
        out[name] = arr.astype(np.float32)
    return out


def default_objective(module, config: TrainConfig) -> Objective:
    compute_dtype = jnp.bfloat16 if config.mixed_precision else None
    return supervised_objective(
        module.apply, resolve_traced_loss(config), compute_dtype=compute_dtype
    )


def init_run(
    model,
    config: TrainConfig,
    *,
    example_x,
    steps_per_epoch: int,
    key: jax.Array | None = None,
    members: int | None = None,
    member_hparams: Mapping[str, Any] | None = None,
    objective: Objective | None = None,
    init_params: Any | None = None,
    mesh=None,
    freeze_on_nonfinite: bool = False,
) -> RunSetup:
    """Build the module, optimizer, initial state and train step of a run.

    Args:
        model: a ``ModelSpec`` or a Linen module.
        example_x: one input batch (shape and dtype only).
        steps_per_epoch: micro-steps per epoch (sizes the schedule).
        key: the root key (default ``PRNGKey(config.seed)``).
        members: K stacked members (vmapped init from split keys), or None for one run.
        member_hparams: ``{name: [K] values}`` per-member hyper-parameters (checked first).
        objective: the training objective (default: supervised classification).
        init_params: start from these params (broadcast to every member when stacked).
        mesh: shard batches over its ``data`` axis.
        freeze_on_nonfinite: freeze a member at its first non-finite step.
    """
    from ml_adv.models.registry import ModelSpec

    spec = model if isinstance(model, ModelSpec) else None
    hp = check_member_hparams(member_hparams, members, config) if members is not None else {}
    module, tx, train_step, guard_steps = _program_parts(
        spec,
        model,
        config,
        total_updates(config, steps_per_epoch),
        objective,
        mesh,
        freeze_on_nonfinite,
    )
    root = run_key(config, key)
    obj_hparams = {"label_smoothing": config.label_smoothing}
    example_x = jnp.asarray(example_x)

    if init_params is not None:
        init_params = _checked_copy(init_params, module, example_x)

    def create(k, x, hparams, params):
        init_key, dropout_key, _ = jax.random.split(k, 3)
        state = create_train_state(
            module, x, tx, init_key=init_key, rng=dropout_key, hparams=hparams
        )
        if params is not None:
            state = state.replace(params=params, opt_state=tx.init(params))
        return state

    if members is None:
        state = _single_init(module, tx, create)(root, example_x, obj_hparams, init_params)
        shuffle_key = jax.random.split(root, 3)[2]
    else:
        keys = member_keys(root, members)
        state = _stacked_init(module, tx, create)(keys, example_x, obj_hparams, init_params)
        shuffle_key = jax.vmap(lambda k: jax.random.split(k, 3)[2])(keys)
    if isinstance(config.optimizer, str):
        # The optimizer may come from the cache, built with another run's values: set this run's.
        state = state.replace(
            opt_state=set_hyperparams(state.opt_state, **optimizer_hyperparams(config))
        )
    if hp:
        state = apply_member_hparams(state, hp)
    return RunSetup(module, spec, config, tx, state, train_step, shuffle_key, members, guard_steps)


def _checked_copy(init_params, module, example_x):
    """``init_params`` checked against the module's parameter tree, as a copy.

    A copy: the state is donated to the compiled epoch, which must not delete the caller's
    arrays.
    """
    from ml_adv.training.inputs import check_init_params

    abstract = jax.eval_shape(
        lambda: module.init(
            {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(0)},
            jnp.asarray(example_x),
            train=False,
        )
    )
    check_init_params(init_params, abstract["params"])
    return jax.tree.map(lambda a: jnp.array(a, copy=True), init_params)


# Programs of recent runs, by structure (``runner.PROGRAMS``, map "parts"): a run that differs
# only in traced values (learning rate, weight decay, betas, label smoothing, seed, data of the
# same shapes) reuses the optimizer and train step objects, and so hits the compiled-epoch
# cache of ``runner.EpochRunner``: trials run one after another compile once.


def _structure_key(config: TrainConfig, total: int) -> tuple:
    """The config fields that shape the compiled program (traced values left out)."""
    custom_schedule = callable(config.schedule) and not isinstance(config.schedule, str)
    return (
        config.optimizer,
        tuple(sorted(config.optimizer_options)),
        config.schedule,
        None if config.schedule == "constant" else (round(config.warmup_fraction * total), total),
        custom_schedule,
        config.grad_clip_norm,
        config.grad_accum_steps,
        config.mixed_precision,
        config.loss,
        config.augment,
        config.param_groups,
    )


def _program_parts(
    spec, model, config: TrainConfig, total: int, objective, mesh, freeze_on_nonfinite: bool
):
    """``(module, tx, train_step)`` for this program structure, from the cache when possible."""
    try:
        key = (
            spec if spec is not None else model,
            _structure_key(config, total),
            objective,
            mesh,
            freeze_on_nonfinite,
        )
        hash(key)
    except TypeError:  # an unhashable custom module or callable: build afresh
        key = None
    cached = PROGRAMS.get("parts", key) if key is not None else None
    if cached is not None:
        return cached
    module = spec.build() if spec is not None else model
    tx = build_optimizer(config, total)
    objective = objective if objective is not None else default_objective(module, config)
    # One step per guard form (same result, machine-dependent speed): the static choice runs
    # unless the epoch runner measures another faster (``runner.EpochRunner``, autotuning on).
    guard_steps = {
        guard: make_train_step(
            objective,
            augment=config.augment,
            mesh=mesh,
            guard=guard,
            freeze_on_nonfinite=freeze_on_nonfinite,
        )
        for guard in GUARDS
    }
    train_step = guard_steps[
        guard_for_architecture(spec.architecture if spec is not None else None)
    ]
    if key is not None:
        PROGRAMS.put("parts", key, (module, tx, train_step, guard_steps))
    return module, tx, train_step, guard_steps


def _single_init(module, tx, create):
    """One jitted initialiser per (module, optimizer). Run eagerly, Flax's ``init`` compiles
    each of its operations as a program of its own (~50 for a small CNN, ~5 s of a 2-core
    machine's quickstart); jitted it is one program, reused by later runs of the same structure."""
    key = (id(module), id(tx))
    entry = PROGRAMS.get("single_inits", key)
    if entry is None:
        # The module and tx are kept in the value so their ids stay theirs while cached.
        entry = PROGRAMS.put("single_inits", key, (module, tx, jax.jit(create)))
    return entry[2]


def _stacked_init(module, tx, create):
    """One jitted, vmapped initialiser per (module, optimizer): a population's next batch
    of members (same structure, new keys and values) initialises without recompiling."""
    key = (id(module), id(tx))
    entry = PROGRAMS.get("stacked_inits", key)
    if entry is None:
        # The module and tx are kept in the value so their ids stay theirs while cached.
        entry = PROGRAMS.put(
            "stacked_inits",
            key,
            (module, tx, jax.jit(jax.vmap(create, in_axes=(0, None, None, None)))),
        )
    return entry[2]


def apply_member_hparams(state: TrainState, values: Mapping[str, np.ndarray]) -> TrainState:
    """Write per-member hyper-parameters into a stacked state (optimizer state or objective
    hparams)."""
    opt_values = {k: v for k, v in values.items() if k not in DEFAULT_HPARAMS}
    obj_values = {k: jnp.asarray(v, jnp.float32) for k, v in values.items() if k in DEFAULT_HPARAMS}
    opt_state = set_hyperparams(state.opt_state, **opt_values) if opt_values else state.opt_state
    return state.replace(opt_state=opt_state, hparams={**state.hparams, **obj_values})


def state_hyperparams(state: TrainState) -> dict[str, np.ndarray]:
    """The traced hyper-parameters of a (possibly stacked) state, as host arrays."""
    out = {k: np.asarray(v) for k, v in hyperparams(state.opt_state).items()}
    out.update({k: np.asarray(v) for k, v in state.hparams.items()})
    return out
