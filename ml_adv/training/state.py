"""``TrainState``: the single pytree a training run carries.

Leaves: ``step``, ``params`` (float32 master weights), ``opt_state``,
``model_state`` (non-parameter collections such as ``batch_stats``; empty for
most models), ``rng`` (the run's dropout/augmentation key, a raw uint32 key
so it checkpoints as a plain array), ``hparams`` (the objective's traced
hyper-parameters, e.g. ``label_smoothing``; the optimizer's live in ``opt_state``)
and ``frozen`` (a member that diverged or stopped early: its steps are skipped).
With a leading member axis on every leaf, one ``TrainState`` is K stacked runs.
``apply_fn`` and ``tx`` are static fields: they are part of the compiled program,
never of the checkpoint.

Per-step randomness is ``fold_in(rng, step)``: no key is ever consumed twice,
and a run restored at step ``s`` draws exactly the keys the uninterrupted run
would have drawn.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct


class TrainState(struct.PyTreeNode):
    step: jax.Array
    params: Any
    opt_state: Any
    model_state: Any
    rng: jax.Array
    hparams: Any
    frozen: jax.Array
    apply_fn: Callable = struct.field(pytree_node=False)
    tx: optax.GradientTransformation = struct.field(pytree_node=False)

    def variables(self, params: Any | None = None) -> dict[str, Any]:
        """The ``variables`` dict for ``module.apply`` (optionally with other params)."""
        return {"params": self.params if params is None else params, **self.model_state}

    def step_key(self) -> jax.Array:
        """This step's key: ``fold_in(rng, step)``."""
        return jax.random.fold_in(self.rng, self.step)

    def checkpoint_items(self) -> dict[str, Any]:
        """The arrays that are saved in a checkpoint (no static fields)."""
        return {
            "step": self.step,
            "params": self.params,
            "opt_state": self.opt_state,
            "model_state": self.model_state,
            "rng": self.rng,
            "hparams": self.hparams,
            "frozen": self.frozen,
        }

    def with_checkpoint_items(self, items: dict[str, Any]) -> TrainState:
        return self.replace(**items)


def create_train_state(
    module,
    example_x,
    tx: optax.GradientTransformation,
    *,
    init_key: jax.Array,
    rng: jax.Array,
    hparams: dict[str, Any] | None = None,
) -> TrainState:
    """Initialise a module and its optimizer into a ``TrainState``.

    Args:
        module: a Flax Linen module called as ``module.apply(vars, x, train=...)``.
        example_x: one batch (only its shape and dtype matter).
        tx: the optax transformation.
        init_key: key for parameter initialisation.
        rng: base key for per-step randomness (dropout, augmentation).
        hparams: the objective's hyper-parameters (default ``label_smoothing=0``).
    """
    from ml_adv.training.objectives import DEFAULT_HPARAMS

    hparams = {**DEFAULT_HPARAMS, **(hparams or {})}
    variables = module.init({"params": init_key, "dropout": init_key}, example_x, train=False)
    variables = dict(variables)
    params = variables.pop("params")
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        model_state=variables,
        # A copy: the state is donated to compiled steps, which must not delete the caller's key.
        rng=jnp.array(rng, copy=True),
        hparams={k: jnp.asarray(v, jnp.float32) for k, v in hparams.items()},
        frozen=jnp.zeros((), bool),
        apply_fn=module.apply,
        tx=tx,
    )
