"""Pure, compiled training and evaluation steps.

* ``make_train_step`` builds ``train_step(state, batch, key) -> (state, metrics)``.
* ``make_epoch_fn`` compiles a whole epoch as one ``lax.scan`` over batches
  gathered on device from a host-drawn permutation (``epoch_order``), with the state
  donated: one dispatch per epoch instead of one per step, which is what makes small
  models fast on CPU.
* ``make_step_fn`` is the per-step alternative (one jitted call per batch, the
  metrics written into an on-device history); both produce bitwise-identical states
  and metrics.
* ``predict_logits`` evaluates a whole array in fixed-size chunks under ``lax.map``
  (no ragged last batch; inputs padded to a few sizes, so few compilations).

Non-finite losses never corrupt the state: the update is dropped inside the step and
``metrics['nonfinite']`` records it; the host loop then raises or carries on according to
``TrainConfig.nan_policy``. The guard has two equivalent forms (``guard=``), because XLA:CPU
runs them at different speeds:
  * ``"cond"``: a ``lax.cond`` runs the optimizer update only when loss and gradient norm
    are finite, saving a pass over the state and the cross-core hand-offs of many tiny ops.
  * ``"select"``: the update always runs and ``jnp.where`` keeps the old state; XLA overlaps
    more of an LSTM's step on the cores this way, so ``guard_for_architecture`` picks it there.
Both give bitwise-identical states (tested). Those are the static choices; with autotuning on
the epoch runner times both guards on a new program's first epochs and caches the faster
(``runner.EpochRunner``). Measurements: benchmarks/README.md, 'Kernel and step measurements'.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from ml_adv.errors import ConfigError, describe
from ml_adv.kernels import autotune
from ml_adv.training.objectives import Objective, cast_floats
from ml_adv.training.parallel import constrain_batch, data_devices
from ml_adv.training.state import TrainState

Batch = dict[str, jax.Array]
GUARDS = ("cond", "select")
# Architectures that train faster with the "select" guard (module docstring).
_SELECT_GUARD_ARCHITECTURES = frozenset({"lstm"})


def guard_for_architecture(architecture: str | None) -> str:
    """The faster non-finite guard for a built-in architecture (``"cond"`` for custom modules)."""
    return "select" if architecture in _SELECT_GUARD_ARCHITECTURES else "cond"


def guarded_update(
    state: TrainState,
    grads: Any,
    loss: jax.Array,
    new_model_state: Any,
    *,
    guard: str,
    active: jax.Array | None = None,
    freeze_on_nonfinite: bool = False,
) -> tuple[TrainState, jax.Array, jax.Array]:
    """Apply ``grads`` unless ``loss`` or the gradient norm is non-finite, or the step is inactive.

    A step is *live* unless the state is ``frozen`` or ``active`` is False (a padded step of a
    member with fewer batches this epoch). A live step advances the step counter even when
    its update is dropped; a step that is not live changes nothing at all. With
    ``freeze_on_nonfinite`` a live non-finite step freezes the state for good (a diverged
    member of a population; the others go on). Returns ``(new_state, finite, grad_norm)``.
    """
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    live = ~state.frozen if active is None else (~state.frozen & active)
    apply = finite & live

    def updated(_):
        updates, new_opt_state = state.tx.update(grads, state.opt_state, state.params)
        return optax.apply_updates(state.params, updates), new_opt_state, new_model_state

    def unchanged(_):
        return state.params, state.opt_state, state.model_state

    if guard == "cond":
        params, opt_state, model_state = jax.lax.cond(apply, updated, unchanged, None)
    else:
        params, opt_state, model_state = jax.tree.map(
            lambda new, old: jnp.where(apply, new, old), updated(None), unchanged(None)
        )
    frozen = state.frozen | (live & ~finite) if freeze_on_nonfinite else state.frozen
    new_state = state.replace(
        step=state.step + live.astype(state.step.dtype),
        params=params,
        opt_state=opt_state,
        model_state=model_state,
        frozen=frozen,
    )
    return new_state, finite, grad_norm


def make_train_step(
    objective: Objective,
    *,
    augment: Callable[[Batch, jax.Array], Batch] | None = None,
    mesh=None,
    guard: str = "cond",
    freeze_on_nonfinite: bool = False,
) -> Callable[..., tuple[TrainState, dict[str, jax.Array]]]:
    """Build the pure ``train_step(state, batch, key, active=None) -> (state, metrics)``.

    Args:
        objective: ``(params, model_state, batch, key, hparams) -> (loss, aux)``
            (``ml_adv.training.objectives``), e.g. ``supervised_objective``.
        augment: optional ``(batch, key) -> batch``, run inside the step.
        mesh: a mesh with a ``data`` axis to shard the batch over (``None``: no constraint).
        guard: how a non-finite update is dropped, ``"cond"`` or ``"select"`` (same result,
            different speed: module docstring, ``guard_for_architecture``).
        freeze_on_nonfinite: freeze the state at its first non-finite step (populations).

    Metrics: ``loss``, the objective's own (e.g. ``accuracy``), ``grad_norm``, ``nonfinite``
    and ``live`` (1 when the step ran).
    """
    if guard not in GUARDS:
        raise ConfigError(f"guard: expected one of {GUARDS}, got {describe(guard)}")
    if not callable(objective):
        raise ConfigError(
            "objective: expected a callable (params, model_state, batch, key, hparams), "
            f"got {describe(objective)}"
        )

    def train_step(
        state: TrainState, batch: Batch, key: jax.Array, active: jax.Array | None = None
    ):
        batch = constrain_batch(batch, mesh)
        if augment is not None:
            batch = augment(batch, jax.random.split(key)[0])

        def loss_of(params):
            return objective(params, state.model_state, batch, key, state.hparams)

        # Layers that measure their lowering time it on each core's share of the batch.
        with autotune.batch_split(data_devices(mesh)):
            (loss, aux), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params)
        new_state, finite, grad_norm = guarded_update(
            state,
            grads,
            loss,
            aux["model_state"],
            guard=guard,
            active=active,
            freeze_on_nonfinite=freeze_on_nonfinite,
        )
        live = ~state.frozen if active is None else (~state.frozen & active)
        metrics = {
            "loss": loss,
            **aux["metrics"],
            "grad_norm": grad_norm,
            "nonfinite": (live & ~finite).astype(jnp.float32),
            "live": live.astype(jnp.float32),
        }
        return new_state, metrics

    return train_step


def epoch_order(epoch_key: jax.Array, num_examples: int, batch_size: int) -> np.ndarray:
    """``[steps, batch_size]`` int32 example indices for one epoch, drawn on the host.

    A uniform random permutation (NumPy's ``Generator``, seeded with the bits of
    ``epoch_key``) with the remainder dropped; a fresh permutation each epoch means every
    example is still seen. Drawn on the host because ``jax.random.permutation`` is a sort,
    and XLA:CPU's sort took 22 ms per 64,000 examples: a fifth of a scanned digits-MLP
    epoch (51 -> 40 us per step without it). NumPy does it in well under a millisecond.
    """
    if jnp.issubdtype(epoch_key.dtype, jax.dtypes.prng_key):
        epoch_key = jax.random.key_data(epoch_key)
    seed = np.asarray(epoch_key, dtype=np.uint32).ravel().tolist()
    steps = num_examples // batch_size
    order = np.random.default_rng(seed).permutation(num_examples)[: steps * batch_size]
    return order.reshape(steps, batch_size).astype(np.int32)


def gather_batch(data: Batch, idx) -> Batch:
    """Rows ``idx`` of every array in ``data``; with several streams, ``idx`` is a dict per
    stream."""
    if isinstance(idx, dict):
        return {name: gather_batch(data[name], i) for name, i in idx.items()}
    return {k: jnp.take(v, idx, axis=0) for k, v in data.items()}


def make_epoch_fn(
    train_step,
    *,
    stacked: bool = False,
    member_batches: bool = False,
    unroll: int = 1,
    spmd_axis_name: str | None = None,
    members_as: str = "vmap",
) -> Callable:
    """Compile ``run_epoch(state, data, order, active=None) -> (state, stacked_metrics)`` as one
    scan.

    ``order`` is the epoch's ``[steps, batch_size]`` example indices (``epoch_order``), or a
    dict of them per stream; step ``i`` trains on ``data`` rows ``order[i]``, gathered on
    device. ``active`` (``[steps]`` bool, optional) marks padded steps that must change nothing.

    With ``stacked=True`` the state has a leading member axis and each step is ``jax.vmap``-ed
    over it: K members train in one program. Members share each batch unless
    ``member_batches`` (then ``order`` is ``[steps, K, batch_size]``: own order, bootstrap
    draw or fold per member); ``active`` is then ``[steps, K]``. ``spmd_axis_name`` names the
    mesh axis the member axis is sharded over. ``unroll`` steps go in each loop iteration.
    ``members_as="map"`` runs the members one after another inside the step (``lax.map``)
    instead of ``vmap``: the same results with unbatched matmuls. On XLA:CPU it measured
    slower (K=8 MLPs 64-W-W-10, 100 steps: W=32 64 vs 32 ms, W=128 248 vs 156 ms), so
    ``vmap`` is the default; it is kept for accelerators and machines where it wins.
    ``members_as="scan"`` runs each member's whole epoch as its own scan, one member after
    another in the same program: each member runs exactly the single-run program (no batched
    matmuls), with one dispatch for all. ``EpochRunner`` picks between it and ``vmap`` by
    measurement (``ml_adv.kernels.autotune``): vmapped small matmuls win for narrow models, and can
    lose to unbatched ones for wider ones (W=128 above).
    """
    if stacked and members_as == "scan":
        return jax.jit(_member_scans(train_step, member_batches, unroll), donate_argnums=0)

    def run_epoch(state: TrainState, data: Batch, order, active=None):
        def one_step(state, idx, act):
            return train_step(state, gather_batch(data, idx), state.step_key(), act)

        if stacked and members_as == "map":
            single_step = one_step

            def one_step(state, idx, act):  # members one after another, inside the same program
                if member_batches:
                    return jax.lax.map(lambda a: single_step(*a), (state, idx, act))
                return jax.lax.map(lambda a: single_step(a[0], idx, a[1]), (state, act))
        elif stacked:
            one_step = jax.vmap(
                one_step,
                in_axes=(0, 0 if member_batches else None, 0),
                spmd_axis_name=spmd_axis_name,
            )

        def body(state, xs):
            idx, act = xs
            if stacked and act is None:
                act = jnp.ones(state.step.shape, bool)
            if stacked or act is None:
                return one_step(state, idx, act)
            # One run over a padded pool: an inactive step skips the whole forward/backward.
            metric_shapes = jax.eval_shape(one_step, state, idx, act)[1]

            def skip(state):
                return state, jax.tree.map(lambda m: jnp.zeros(m.shape, m.dtype), metric_shapes)

            return jax.lax.cond(act, lambda s: one_step(s, idx, act), skip, state)

        return jax.lax.scan(body, state, (order, active), unroll=unroll)

    return jax.jit(run_epoch, donate_argnums=0)


def _member_scans(train_step, member_batches: bool, unroll: int) -> Callable:
    """``run_epoch`` for ``members_as="scan"``: a ``lax.map`` over members of per-member scans.

    Takes and returns the vmap layout (state ``[K, ...]``, ``order``/``active`` ``[steps, K, ...]``,
    metrics ``[steps, K]``), so the two layouts are interchangeable.
    """

    def run_epoch(state: TrainState, data: Batch, order, active=None):
        members = state.step.shape[0]
        steps = jax.tree.leaves(order)[0].shape[0]
        active = jnp.ones((steps, members), bool) if active is None else active

        def one_member(member_state, member_order, member_active):
            def body(s, xs):
                idx, act = xs
                return train_step(s, gather_batch(data, idx), s.step_key(), act)

            return jax.lax.scan(body, member_state, (member_order, member_active), unroll=unroll)

        by_member = jnp.swapaxes(active, 0, 1)
        if member_batches:
            orders = jax.tree.map(lambda o: jnp.swapaxes(o, 0, 1), order)
            state, metrics = jax.lax.map(lambda a: one_member(*a), (state, orders, by_member))
        else:
            state, metrics = jax.lax.map(
                lambda a: one_member(a[0], order, a[1]), (state, by_member)
            )
        return state, jax.tree.map(lambda m: jnp.swapaxes(m, 0, 1), metrics)

    return run_epoch


@dataclasses.dataclass
class StepFn:
    """``make_step_fn``'s result: the jitted per-step program and the metric layout it fills.

    ``program(state, data, order, row, history) -> (state, history)`` trains on batch
    ``order[row]`` and writes that step's metrics, flattened, into row ``row`` of the
    ``[steps, width]`` ``history``. State and history are donated, so both are updated in place.
    """

    train_step: Callable
    program: Callable
    _layout: tuple | None = None  # (width, dtype, unravel) of the flattened metrics

    def metric_layout(self, state: TrainState, data: Batch, order: jax.Array) -> tuple:
        """``(width, dtype, unravel)`` of ``train_step``'s flattened metrics (one trace, no
        compile)."""
        if self._layout is None:
            shapes = jax.eval_shape(
                lambda s, d, o: self.train_step(s, gather_batch(d, o[0]), s.step_key())[1],
                state,
                data,
                order,
            )
            flat, unravel = ravel_pytree(jax.tree.map(lambda m: np.zeros(m.shape, m.dtype), shapes))
            self._layout = (flat.shape[0], flat.dtype, unravel)
        return self._layout


def make_step_fn(train_step) -> StepFn:
    """Per-step alternative to ``make_epoch_fn``: one jitted, donated call per batch (``StepFn``).

    The metrics stay on device in one preallocated ``[steps, width]`` array per epoch.
    Returning them per step and stacking them at the end of the epoch cost the digits MLP
    (~65 us steps) 18 us a step, plus a 1 s compilation of the 2,000-way stack; one packed
    buffer rather than one per metric saves a further ~6% (``benchmarks/README.md``).
    """

    def program(
        state: TrainState, data: Batch, order: jax.Array, row: jax.Array, history: jax.Array
    ):
        state, metrics = train_step(state, gather_batch(data, order[row]), state.step_key())
        return state, history.at[row].set(ravel_pytree(metrics)[0])

    return StepFn(train_step, jax.jit(program, donate_argnums=(0, 4)))


def run_epoch_stepwise(step_fn: StepFn, state: TrainState, data: Batch, order):
    """Run one epoch over ``order`` (``epoch_order``) with one dispatch per step; given the
    same order, the same keys and results as the scanned epoch."""
    order = jnp.asarray(order)  # placed once: each step indexes it on device
    width, dtype, unravel = step_fn.metric_layout(state, data, order)
    history = jnp.zeros((order.shape[0], width), dtype)
    for row in range(order.shape[0]):
        state, history = step_fn.program(state, data, order, row, history)
    return state, jax.vmap(unravel)(history)


@partial(jax.jit, static_argnames=("apply_fn", "chunk", "mixed_precision", "method"))
def _predict_chunks(
    apply_fn, variables, x, dropout_key, *, chunk: int, mixed_precision: bool, method=None
):
    n = x.shape[0]
    pad = (-n) % chunk
    x = jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)]) if pad else x
    if mixed_precision:
        variables, x = cast_floats(variables, jnp.bfloat16), cast_floats(x, jnp.bfloat16)
    kwargs = {} if method is None else {"method": method}
    chunks = x.reshape(-1, chunk, *x.shape[1:])

    def one(args):
        i, xc = args
        if dropout_key is None:
            return apply_fn(variables, xc, train=False, **kwargs).astype(jnp.float32)
        # MC-dropout: training-mode forward pass, one fresh dropout key per chunk.
        rngs = {"dropout": jax.random.fold_in(dropout_key, i)}
        return apply_fn(variables, xc, train=True, rngs=rngs, **kwargs).astype(jnp.float32)

    out = jax.lax.map(one, (jnp.arange(chunks.shape[0]), chunks))
    return out.reshape(-1, *out.shape[2:])[:n]


def predict_logits(
    apply_fn,
    variables,
    x,
    *,
    chunk: int = 256,
    mixed_precision: bool = False,
    method=None,
    dropout_key: jax.Array | None = None,
) -> jax.Array:
    """Float32 outputs for all of ``x``, computed in fixed-size chunks.

    Evaluation mode by default. With ``dropout_key`` the forward pass runs in training
    mode (dropout active), which is one MC-dropout sample; ``jax.vmap`` over keys gives
    many. ``method`` selects another module method, e.g. ``"features"`` for the
    penultimate representation every built-in architecture exposes.

    ``x`` is padded to one of a few sizes (``padded_rows``), so a model compiles one
    program for many input sizes: the validation and test splits, or a user's batches of
    varying length, mostly reuse it.
    """
    out, n = padded_predict(apply_fn, variables, x, chunk, mixed_precision, method, dropout_key)
    return out if out.shape[0] == n else out[:n]


def predict_logits_host(apply_fn, variables, x, *, chunk: int = 256, mixed_precision=False):
    """``predict_logits`` as a host array: the padding is cut off on the host, where slicing
    compiles nothing (a device slice compiles a small program for each new size)."""
    out, n = padded_predict(apply_fn, variables, x, chunk, mixed_precision)
    return np.asarray(out)[:n]


def padded_predict(
    apply_fn, variables, x, chunk: int, mixed_precision: bool, method=None, dropout_key=None
) -> tuple[jax.Array, int]:
    """``(outputs of x padded to padded_rows, len(x))``: the padded rows come last."""
    n = int(x.shape[0])
    chunk, rows = padded_rows(n, chunk)
    out = _predict_chunks(
        apply_fn,
        variables,
        pad_rows(x, rows),
        dropout_key,
        chunk=chunk,
        mixed_precision=mixed_precision,
        method=method,
    )
    return out, n


def padded_rows(n: int, chunk: int) -> tuple[int, int]:
    """``(chunk, rows)`` that ``predict_logits`` compiles for ``n`` rows: up to one chunk, the
    next power of two; above it, a whole number of chunks rounded up to 8-15 times a power of
    two (at most 12.5% padding, ~8 programs per doubling of the size instead of one per size).
    """
    if n <= chunk:
        rows = min(chunk, 1 << max(0, n - 1).bit_length())
        return rows, rows
    chunks = -(-n // chunk)
    shift = max(0, chunks.bit_length() - 4)
    return chunk, (-(-chunks >> shift) << shift) * chunk


def pad_rows(x, rows: int):
    """``x`` with zero rows appended up to ``rows``: on the host for a host array (no
    compilation), with ``jnp`` for a device array or a tracer."""
    pad = rows - x.shape[0]
    if pad == 0:
        return x  # a host array goes in as it is: jnp.asarray would compile a copy per shape
    xp = np if isinstance(x, np.ndarray) else jnp
    return xp.concatenate([x, xp.zeros((pad, *x.shape[1:]), x.dtype)])


# Metrics and probabilities of host logits are computed with numpy: on the device every new
# split size compiled a program (or, run eagerly, one per operation), which made the first
# evaluation of a new split cost more than the evaluation itself.
def classification_metrics(logits, labels) -> dict[str, float]:
    """Accuracy and mean negative log-likelihood (host floats)."""
    logits = np.asarray(logits, np.float32)
    labels = np.asarray(labels).astype(np.int64)
    nll = -np.take_along_axis(_log_softmax(logits), labels[:, None], axis=-1)[:, 0]
    accuracy = (np.argmax(logits, -1) == labels).astype(np.float32)
    return {"loss": float(np.mean(nll)), "accuracy": float(np.mean(accuracy))}


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


@jax.jit
def probabilities(logits) -> jax.Array:
    """Class probabilities: the softmax over the last axis, as one compiled program."""
    return jax.nn.softmax(logits, axis=-1)


def softmax_probabilities(logits) -> np.ndarray:
    """Class probabilities of host or device logits, on the host (numpy)."""
    return np.exp(_log_softmax(np.asarray(logits, np.float32)))
