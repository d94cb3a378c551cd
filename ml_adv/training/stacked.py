"""``fit_stacked``: K models of one spec trained as one compiled program.

Ensemble members, hyper-parameter populations and cross-validation folds are the same
thing to the core: a ``TrainState`` with a leading member axis, initialised with
``jax.vmap`` from split keys, and an epoch whose step is ``jax.vmap``-ed over it inside
the one ``lax.scan`` (``steps.make_epoch_fn(stacked=True)``). Per-member differences
are data, never program structure:

* hyper-parameters (learning rate, weight decay, betas, momentum, label smoothing) are
  arrays in the optimizer state / ``TrainState.hparams`` (``member_hparams``);
* data: a shared order, an own order, a bootstrap sample or an example mask per member
  (``sampling.StackedPlan``); padded steps are inactive and change nothing;
* a member whose loss turns non-finite is frozen and reported as failed; one whose
  validation metric stops improving is frozen by early stopping; the others go on.

Member i equals ``fit(..., key=setup.member_keys(key, K)[i])`` on its own data (tested),
up to float32 rounding of the batched matmuls.

Why members share batches by default: the first layer then runs as one matmul against
the members' concatenated weights (JAX's batching rule folds the member axis into the
output features), which is most of the speed-up for small models.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ml_adv.data.dataset import ArrayDataset
from ml_adv.errors import ConfigError, DataError, describe
from ml_adv.rundir import Run
from ml_adv.training import parallel
from ml_adv.training.config import TrainConfig
from ml_adv.training.inputs import as_model_inputs, check_model, validate_fit_inputs
from ml_adv.training.loop import Hook, TrainingLoop, device_data, owned
from ml_adv.training.runner import EpochRunner
from ml_adv.training.sampling import StackedPlan
from ml_adv.training.setup import init_run, state_hyperparams
from ml_adv.training.state import TrainState
from ml_adv.training.steps import (
    pad_rows,
    padded_rows,
    predict_logits,
    softmax_probabilities,
)
from ml_adv.training.tracking import monitor_for


def stack_trees(trees: list[Any]) -> Any:
    """Stack K pytrees of equal structure along a new leading axis."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def unstack_tree(tree: Any, i: int) -> Any:
    return jax.tree.map(lambda a: a[i], tree)


def stacked_logits(
    apply_fn, variables, x, *, chunk: int = 256, mixed_precision: bool = False, method=None
) -> jax.Array:
    """``[K, N, C]`` outputs of K stacked members on shared inputs: one vmapped program."""
    out, n = _padded_stacked_logits(apply_fn, variables, x, chunk, mixed_precision, method)
    return out if out.shape[1] == n else out[:, :n]


def _padded_stacked_logits(apply_fn, variables, x, chunk, mixed_precision, method=None):
    """``(stacked outputs of x padded as predict_logits pads it, len(x))``."""
    n = int(x.shape[0])
    x = owned(pad_rows(x, padded_rows(n, chunk)[1]))
    out = jax.vmap(
        lambda v: predict_logits(
            apply_fn, v, x, chunk=chunk, mixed_precision=mixed_precision, method=method
        )
    )(variables)
    return out, n


@dataclasses.dataclass
class StackedModel:
    """K trained members of one spec; predictions are one vmapped forward pass."""

    spec: Any
    variables: dict[str, Any]
    mixed_precision: bool = False

    @property
    def members(self) -> int:
        return int(jax.tree.leaves(self.variables)[0].shape[0])

    def logits(self, x, *, batch_size: int = 256) -> np.ndarray:
        """``[K, N, num_classes]`` float32 logits."""
        from ml_adv.data.dataset import validate_features

        arr = validate_features("x", x.x if isinstance(x, ArrayDataset) else x)
        self.spec.validate_inputs(arr)
        out, n = _padded_stacked_logits(
            self.spec.build().apply, self.variables, arr, batch_size, self.mixed_precision
        )
        return np.asarray(out)[:, :n]  # the padding cut off on the host: no slice to compile

    def predict_proba(self, x, *, batch_size: int = 256) -> np.ndarray:
        """``[K, N, num_classes]`` per-member class probabilities."""
        return softmax_probabilities(self.logits(x, batch_size=batch_size))

    def member(self, i: int):
        """Member ``i`` as an ordinary ``TrainedModel``."""
        from ml_adv.training.trained_model import TrainedModel

        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < self.members:
            raise ConfigError(
                f"i: expected a member index in [0, {self.members}), got {describe(i)}"
            )
        return TrainedModel(
            self.spec, unstack_tree(self.variables, int(i)), mixed_precision=self.mixed_precision
        )


@dataclasses.dataclass
class StackedFitResult:
    """What ``fit_stacked`` returns.

    Attributes:
        state: the final stacked ``TrainState`` (best-epoch params per member when
            early stopping restored them).
        histories: K lists of per-epoch metric dicts.
        best_epochs, best_values: ``[K]`` best epoch (1-based) and its monitored value.
        failed: ``[K]`` members frozen because their loss turned non-finite.
        stopped_early: ``[K]`` members stopped by early stopping.
        hyperparams: the members' traced hyper-parameters (``{name: [K]}``).
    """

    state: TrainState
    histories: list[list[dict[str, Any]]]
    best_epochs: np.ndarray
    best_values: np.ndarray
    failed: np.ndarray
    stopped_early: np.ndarray
    hyperparams: dict[str, np.ndarray]
    compile_seconds: float
    steps_per_second: float
    resumed_from: int | None
    model: StackedModel | None = None
    run_dir: str | None = None

    def member(self, i: int):
        """Member ``i`` as an ordinary ``TrainedModel`` (needs a ``ModelSpec``)."""
        if self.model is None:
            raise ConfigError("member: needs a run trained from a ModelSpec, got a custom module")
        trained = self.model.member(i)
        trained.metrics = dict(self.histories[i][-1]) if self.histories[i] else {}
        return trained


def check_stacked_inputs(
    members, train: ArrayDataset, config: TrainConfig, example_masks, bootstrap: bool
) -> np.ndarray | None:
    """Members, masks and folds are checked before anything compiles."""
    if isinstance(members, bool) or not isinstance(members, (int, np.integer)) or members < 1:
        raise ConfigError(f"members: expected a positive integer, got {describe(members)}")
    if isinstance(train, dict):
        raise DataError(
            "train: stacked runs take one ArrayDataset (multi-stream objectives use fit), "
            "got a dict"
        )
    if not config.scan_epochs:
        raise ConfigError(
            "scan_epochs: stacked runs vmap members inside the scanned epoch, "
            "so expected True, got False"
        )
    if not isinstance(bootstrap, bool):
        raise ConfigError(f"bootstrap: expected True or False, got {describe(bootstrap)}")
    if example_masks is None:
        return None
    masks = np.asarray(example_masks)
    if masks.dtype != bool or masks.shape != (members, len(train)):
        raise DataError(
            f"example_masks: expected a bool array of shape ({members}, {len(train)}) "
            "(members x examples), "
            f"got {describe(masks)}"
        )
    if bootstrap:
        raise ConfigError(
            "bootstrap: cannot be combined with example_masks (pick bagging or folds)"
        )
    smallest = int(masks.sum(axis=1).min())
    if smallest < config.batch_size:
        raise DataError(
            f"example_masks: every member needs at least batch_size={config.batch_size} examples, "
            f"the smallest has {smallest}"
        )
    return masks


def fold_masks(labels, folds: int, *, seed: int = 0) -> np.ndarray:
    """``[folds, N]`` training masks for stratified k-fold CV: member i leaves out fold i."""
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(labels)
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 2:
        raise ConfigError(f"folds: expected an integer >= 2, got {describe(folds)}")
    smallest = int(np.bincount(labels).min(initial=0)) if labels.size else 0
    present = np.bincount(labels)
    smallest = int(present[present > 0].min()) if present.any() else 0
    if folds > smallest:
        raise ConfigError(
            f"folds: expected at most {smallest} (examples in the smallest class), got {folds}"
        )
    masks = np.ones((folds, len(labels)), bool)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for i, (_, held_out) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
        masks[i, held_out] = False
    return masks


def member_metrics(
    logits: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """``[K]`` accuracy and mean NLL of ``[K, N, C]`` logits (rows weighted by ``[K, N]``)."""
    return jax.tree.map(np.asarray, _member_metrics(logits, labels, weights))


@jax.jit  # one program per shape; run eagerly, each operation compiled one of its own
def _member_metrics(logits, labels, weights) -> dict[str, jax.Array]:
    log_p = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(log_p, labels[None, :, None], axis=-1)[..., 0]
    correct = (jnp.argmax(logits, -1) == labels[None]).astype(jnp.float32)
    w = jnp.ones(nll.shape, jnp.float32) if weights is None else weights.astype(jnp.float32)
    total = jnp.maximum(w.sum(axis=1), 1.0)
    return {"loss": (nll * w).sum(axis=1) / total, "accuracy": (correct * w).sum(axis=1) / total}


def fit_stacked(
    model,
    train: ArrayDataset,
    config: TrainConfig | None = None,
    *,
    members: int,
    key: jax.Array | None = None,
    val: ArrayDataset | None = None,
    member_hparams: dict[str, Any] | None = None,
    member_orders: bool = False,
    bootstrap: bool = False,
    example_masks: np.ndarray | None = None,
    init_params: Any | None = None,
    run: Run | Any = None,
    hooks: Sequence[Hook] = (),
) -> StackedFitResult:
    """Train ``members`` models of one spec as one compiled program.

    Args:
        model: a ``ModelSpec`` or a Linen module.
        train: the shared training pool.
        config: the shared ``TrainConfig``; ``nan_policy="raise"`` freezes a diverged member
            (reported in ``failed``) instead of stopping the others.
        members: K.
        key: root key; member i uses ``setup.member_keys(key, K)[i]`` (init, dropout, order).
        val: validation data (per-member metrics, early stopping, best epoch). Without it,
            members with ``example_masks`` are validated on their held-out rows (CV).
        member_hparams: ``{name: [K] values}``, e.g. ``{"learning_rate": [...]}``.
        member_orders: each member draws its own data order (else one shared order).
        bootstrap: bagging: each member trains on its own bootstrap sample.
        example_masks: ``[K, N]`` bool: member i trains on its True rows only (``fold_masks``).
        init_params: start every member from these params.
        run: the run folder and how to use it (as ``fit``'s): checkpoints every epoch and
            resumes from the latest.
        hooks: ``loop.Hook`` objects called around every epoch (PBT is one).

    Example:
        >>> from ml_adv.data import load_dataset
        >>> from ml_adv.models import make_spec
        >>> train, test = (load_dataset("digits_flat", split=s).subset(range(128))
        ...                for s in ("train", "test"))
        >>> spec = make_spec("mlp", input_shape=(64,), input_kind="features", num_classes=10,
        ...                  size="tiny")
        >>> result = fit_stacked(spec, train, TrainConfig(epochs=2), members=4, val=test,
        ...                      run=Run(progress=False))
        >>> result.model.predict_proba(test.x).mean(0).shape   # the deep-ensemble average
        (128, 10)
    """
    config = TrainConfig() if config is None else config
    spec = check_model(model)
    train, val = as_model_inputs(spec, train), as_model_inputs(spec, val)
    masks = check_stacked_inputs(members, train, config, example_masks, bootstrap)
    validate_fit_inputs(spec, train, val, config)
    run = Run.of(run)
    cv_validation = val is None and masks is not None
    monitor, mode = monitor_for(config, val is not None or cv_validation)
    mesh = (
        parallel.stacked_mesh(members) if config.data_parallel is True else None
    )  # "auto": spread members
    setup = _stacked_setup(
        model, config, train, masks, members, key, member_hparams, init_params, mesh
    )
    shared_key = jax.random.split(setup.shuffle_key[0], 2)[1]
    plan = StackedPlan(
        len(train),
        config.batch_size,
        setup.shuffle_key,
        shared_key,
        member_orders=member_orders,
        bootstrap=bootstrap,
        masks=masks,
    )
    runner = stacked_runner(setup, config, plan, mesh)
    loop = TrainingLoop(
        setup,
        config,
        plan,
        runner,
        members=members,
        monitor=monitor,
        mode=mode,
        evaluate=_evaluator(setup, config, val, train, masks if cv_validation else None),
        hooks=hooks,
        run=run,
    )
    return _result(loop, _run_stacked(loop, train, mesh), spec)


def _stacked_setup(model, config, train, masks, members, key, member_hparams, init_params, mesh):
    """``init_run`` for K members (epoch length: the largest masked set, or the whole data)."""
    steps_guess = (
        int(masks.sum(1).max()) if masks is not None else len(train)
    ) // config.batch_size
    return init_run(
        model,
        config,
        example_x=train.x[:1],
        steps_per_epoch=steps_guess,
        key=key,
        members=members,
        member_hparams=member_hparams,
        init_params=init_params,
        mesh=mesh,
        freeze_on_nonfinite=config.nan_policy == "raise",
    )


def _run_stacked(loop: TrainingLoop, train, mesh) -> TrainState:
    """Open the run, place the data and the members (sharded on a mesh), train, close the run."""
    try:
        loop.open()
        data = device_data(train)
        if mesh is not None:
            data = jax.device_put(data, parallel.replicated(mesh))
            loop.state = jax.device_put(loop.state, parallel.member_sharded(mesh))
        loop.run(data)
        return loop.finish()
    finally:
        loop.close()


def _result(loop: TrainingLoop, state: TrainState, spec) -> StackedFitResult:
    variables = {"params": state.params, **state.model_state}
    folder = loop.run_options.directory
    return StackedFitResult(
        state=state,
        histories=loop.histories,
        best_epochs=loop.tracker.best_epoch.copy(),
        best_values=loop.tracker.best_value.copy(),
        failed=loop.failed.copy(),
        stopped_early=loop.stopped.copy(),
        hyperparams=state_hyperparams(state),
        compile_seconds=loop.runner.compile_seconds,
        steps_per_second=loop.steps_per_second,
        resumed_from=loop.resumed_from,
        model=StackedModel(spec, variables, loop.config.mixed_precision)
        if spec is not None
        else None,
        run_dir=str(folder.path) if folder is not None else None,
    )


def stacked_runner(setup, config: TrainConfig, plan: StackedPlan, mesh=None) -> EpochRunner:
    """The runner of a K-member epoch. Without data parallelism, splitting the members over
    several devices is one of the layouts it measures (``"spread"``, ``"spread_scan"``)."""
    members = setup.members
    spread = parallel.member_mesh(members) if config.spread_members and mesh is None else None
    return EpochRunner(
        setup.train_step,
        stacked=True,
        member_batches=plan.member_batches,
        spmd_axis_name=parallel.MEMBER_AXIS if mesh is not None else None,
        member_mesh=spread,
        guard_steps=setup.guard_steps,
        unroll=config.scan_unroll,
    )


def _evaluator(setup, config: TrainConfig, val, train, cv_masks):
    """``state -> {"val_loss": [K], "val_accuracy": [K]}`` (or None without validation data)."""
    if val is None and cv_masks is None:
        return None
    data = val if val is not None else train
    weights = None if cv_masks is None else ~cv_masks

    def evaluate(state: TrainState) -> dict[str, np.ndarray]:
        logits = stacked_logits(
            state.apply_fn,
            {"params": state.params, **state.model_state},
            data.x,
            chunk=config.eval_batch_size,
            mixed_precision=config.mixed_precision,
        )
        return {f"val_{k}": v for k, v in member_metrics(logits, data.y, weights).items()}

    return evaluate
