"""``fit``: the training loop around the compiled epoch.

The host loop is deliberately thin: it places data once, calls one compiled
program per epoch, evaluates, tracks early stopping, writes ``metrics.jsonl``
and checkpoints, and resumes from the last checkpoint of ``run_dir``. All
numerics are in ``steps.py``.

Determinism: initialisation, dropout and shuffling keys are all derived from
``TrainConfig.seed`` (shuffling by a NumPy permutation seeded with
``fold_in(shuffle_key, epoch)``, per-step randomness by ``fold_in(state.rng, step)``),
so a run resumed from epoch k's checkpoint replays exactly the computation of the
uninterrupted run and ends with bitwise-identical parameters on the same backend.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ml_adv.checkpointing import RunCheckpointer
from ml_adv.data.dataset import ArrayDataset
from ml_adv.errors import CheckpointError, ConfigError, DataError, TrainingDivergedError, describe
from ml_adv.training import parallel
from ml_adv.training.config import TrainConfig
from ml_adv.training.host import (
    EarlyStopping,
    EpochRunner,
    first_nonfinite_step,
    monitor_for,
    progress_bar,
    summarize,
)
from ml_adv.training.objectives import Objective
from ml_adv.training.sampling import EpochPlan
from ml_adv.training.setup import init_run
from ml_adv.training.state import TrainState
from ml_adv.training.steps import classification_metrics, predict_logits


@dataclasses.dataclass
class FitResult:
    """What ``fit`` returns.

    Attributes:
        state: the final ``TrainState`` (best-epoch params when early stopping restored them).
        history: one dict of metrics per epoch.
        best_epoch, best_value: the best epoch (1-based) by ``config.monitor`` and its value.
        stopped_early: whether early stopping ended the run.
        resumed_from: the epoch a resumed run continued from (``None`` for a fresh run).
        compile_seconds: time to compile the epoch program (first call).
        steps_per_second: optimizer micro-steps per second, compilation excluded.
        nonfinite_steps: steps whose update was skipped (``nan_policy='skip'``).
    """

    state: TrainState
    history: list[dict[str, Any]]
    best_epoch: int
    best_value: float
    stopped_early: bool
    resumed_from: int | None
    compile_seconds: float
    steps_per_second: float
    nonfinite_steps: int
    run_dir: str | None = None


def validate_fit_inputs(model_spec, train, val: ArrayDataset | None, config: TrainConfig) -> None:
    """Every check that can fail on user input, run before anything is compiled.

    ``train`` is an ``ArrayDataset`` or a dict of named streams ``{name: ArrayDataset}``.
    """
    if not isinstance(config, TrainConfig):
        raise ConfigError(f"config: expected a TrainConfig, got {describe(config)}")
    streams = train if isinstance(train, dict) else {"train": train}
    if not streams:
        raise DataError("train: expected an ArrayDataset or a non-empty dict of them, got {}")
    first = None
    for name, data in streams.items():
        argument = "train" if not isinstance(train, dict) else f"train[{name!r}]"
        if not isinstance(data, ArrayDataset):
            raise DataError(f"{argument}: expected an ArrayDataset, got {describe(data)}")
        data.check_batch_size(config.batch_size)
        if first is not None and data.example_shape != first.example_shape:
            raise DataError(
                f"{argument}: every stream feeds one model, so expected example shape {first.example_shape} "
                f"like the first stream, got {data.example_shape}"
            )
        first = first or data
        if model_spec is not None:
            model_spec.validate_inputs(data.x, argument=f"{argument}.x")  # every row: token ids are range-checked
            if data.num_classes > model_spec.num_classes:
                raise DataError(
                    f"{argument}.y: the model has {model_spec.num_classes} outputs, got labels needing {data.num_classes}"
                )
    if val is not None:
        if not isinstance(val, ArrayDataset):
            raise DataError(f"val: expected an ArrayDataset or None, got {describe(val)}")
        if model_spec is not None:
            model_spec.validate_inputs(val.x, argument="val.x")
            if val.num_classes > model_spec.num_classes:
                raise DataError(
                    f"val.y: expected labels in [0, {model_spec.num_classes}), got labels needing {val.num_classes} classes"
                )
        if val.example_shape != first.example_shape:
            raise DataError(f"val.x: expected example shape {first.example_shape} like train, got {val.example_shape}")


def check_model(model):
    """The ``ModelSpec`` of ``model`` (None for a custom Linen module); anything else is a ConfigError."""
    import flax.linen as nn

    from ml_adv.models.registry import ModelSpec

    if isinstance(model, ModelSpec):
        return model
    if isinstance(model, nn.Module):
        return None
    hint = " (build one with make_spec or AdvancedModelArchitecture(...).design_architecture)" if isinstance(model, str) else ""
    raise ConfigError(f"model: expected a ModelSpec or a flax.linen Module{hint}, got {describe(model)}")


def check_init_params(init_params, state_params) -> None:
    """``init_params`` must have the model's parameter structure, shapes and dtypes kinds."""
    if init_params is None:
        return
    want = jax.tree.structure(state_params)
    got = jax.tree.structure(init_params)
    if want != got:
        raise ConfigError(f"init_params: expected the model's parameter tree {want}, got {got}")
    for path, (a, b) in zip(jax.tree_util.tree_flatten_with_path(state_params)[0],
                            zip(jax.tree.leaves(state_params), jax.tree.leaves(init_params))):
        if np.shape(a) != np.shape(b):
            raise ConfigError(f"init_params: expected shape {np.shape(a)} at {jax.tree_util.keystr(path[0])}, got {np.shape(b)}")


def check_example_mask(example_mask, train, config: TrainConfig) -> np.ndarray | None:
    if example_mask is None:
        return None
    if isinstance(train, dict):
        raise DataError("example_mask: applies to one training stream, got a dict of streams")
    mask = np.asarray(example_mask)
    if mask.dtype != bool or mask.shape != (len(train),):
        raise DataError(f"example_mask: expected a bool array of shape ({len(train)},), got {describe(mask)}")
    if mask.sum() < config.batch_size:
        raise DataError(f"example_mask: expected at least batch_size={config.batch_size} selected rows, got {int(mask.sum())}")
    return mask


def continue_from(state: TrainState, init_state: TrainState | None) -> TrainState:
    """``state`` with the arrays of ``init_state`` (same structure), for incremental training."""
    if init_state is None:
        return state
    if not isinstance(init_state, TrainState):
        raise ConfigError(f"init_state: expected a TrainState (FitResult.state), got {describe(init_state)}")
    items = init_state.checkpoint_items()
    if jax.tree.structure(items) != jax.tree.structure(state.checkpoint_items()):
        raise ConfigError("init_state: expected a state of this model and optimizer, got one of another structure")
    return state.with_checkpoint_items(jax.tree.map(lambda a: jnp.array(a, copy=True), items))


def device_data(train, mesh=None) -> dict[str, Any]:
    """Training arrays placed once on device: ``{"x", "y"}`` or ``{stream: {"x", "y"}}``."""
    if isinstance(train, dict):
        data = {name: {"x": jnp.asarray(d.x), "y": jnp.asarray(d.y)} for name, d in train.items()}
    else:
        data = {"x": jnp.asarray(train.x), "y": jnp.asarray(train.y)}
    if mesh is not None:
        data = jax.device_put(data, parallel.replicated(mesh))
    return data


def evaluate(state: TrainState, val: ArrayDataset, config: TrainConfig) -> dict[str, float]:
    """``val_loss`` and ``val_accuracy`` of the current parameters."""
    logits = predict_logits(state.apply_fn, state.variables(), val.x, chunk=config.eval_batch_size,
                            mixed_precision=config.mixed_precision)
    return {f"val_{k}": v for k, v in classification_metrics(logits, val.y).items()}


def diverged_error(epoch_step: int, epoch: int, steps_per_epoch: int, checkpointer) -> TrainingDivergedError:
    step = epoch * steps_per_epoch + epoch_step
    if checkpointer is not None:
        checkpointer.wait()
    where = checkpointer.path() if checkpointer is not None else None
    return TrainingDivergedError(
        f"loss: expected finite values, got NaN/inf at step {step} (epoch {epoch + 1}); "
        "training stopped, the last good checkpoint is kept"
        + (f" at {where}" if where else "")
        + ". Lower the learning rate, enable grad_clip_norm, or set nan_policy='skip'.",
        step=step,
        last_good_checkpoint=where,
    )


@dataclasses.dataclass
class _Resume:
    state: TrainState
    history: list
    start_epoch: int
    resumed_from: int | None


def open_checkpoints(run_path: Path, state: TrainState, spec, config: TrainConfig, tracker: EarlyStopping, *,
                     resume: bool, overwrite: bool, extra_meta: dict | None, model_repr: str):
    """Open the run directory's checkpoints, restore the latest if any, write config.json.

    Returns ``(run_directory, checkpointer, restored)``. Every file goes through
    ``RunDirectory``, which records it so ``--fresh`` removes exactly what the run wrote.
    """
    from ml_adv.rundir import RunDirectory

    rd = RunDirectory(run_path)
    ckpt_dir = rd.checkpoint_dir
    if overwrite:
        for tree in ("checkpoints/latest", "checkpoints/best"):
            rd.remove(tree)
    checkpointer = RunCheckpointer(ckpt_dir)
    restored = _Resume(state, [], 0, None)
    if checkpointer.latest_step() is not None:
        if not resume:
            checkpointer.close()
            raise CheckpointError(
                f"run_dir: {run_path} already has checkpoints; pass resume=True to continue or overwrite=True to restart"
            )
        items, meta = checkpointer.restore_newest_intact(state.checkpoint_items())
        _check_same_run(meta, spec, config)
        tracker.load_meta(meta)
        restored = _Resume(state.with_checkpoint_items(items), list(meta["history"]), int(meta["epoch"]), int(meta["epoch"]))
    record = {"train_config": config.to_dict(), "model": spec.to_dict() if spec else model_repr}
    record.update(extra_meta or {})
    rd.write_config(record)
    rd.rewrite_metrics(restored.history)
    return rd, checkpointer, restored


def fit(
    model,
    train,
    config: TrainConfig | None = None,
    *,
    val: ArrayDataset | None = None,
    run_dir: str | Path | None = None,
    resume: bool = True,
    overwrite: bool = False,
    progress: bool | None = None,
    init_params: Any | None = None,
    extra_meta: dict[str, Any] | None = None,
    key: jax.Array | None = None,
    objective: Objective | None = None,
    epoch_callback: Any | None = None,
    example_mask: np.ndarray | None = None,
    init_state: TrainState | None = None,
) -> FitResult:
    """Train ``model`` on ``train``; evaluate on ``val`` each epoch; checkpoint into ``run_dir``.

    Args:
        model: a ``ModelSpec`` (validated against the data) or any Linen module
            called as ``module.apply(vars, x, train=...)``.
        train: an ``ArrayDataset``, or a dict of named streams ``{name: ArrayDataset}``
            (e.g. ``{"source": s, "target": t}``) for an objective that reads several: the
            first sets the epoch length and the others cycle with their own permutations.
        val: an ``ArrayDataset`` evaluated after each epoch.
        config: the ``TrainConfig`` (default: ``TrainConfig()``).
        run_dir: when given, writes ``config.json``, ``metrics.jsonl`` and
            ``checkpoints/`` there, and resumes from its latest checkpoint.
        resume: continue from ``run_dir``'s latest checkpoint if there is one.
        overwrite: delete existing checkpoints in ``run_dir`` and start afresh.
        progress: show a tqdm bar (default: only on a terminal).
        init_params: start from these parameters (fine-tuning / transfer) instead of a fresh init.
        key: the run's root key (default ``PRNGKey(config.seed)``); member i of
            ``fit_stacked(..., key=k)`` equals ``fit(..., key=setup.member_keys(k, K)[i])``.
        objective: ``(params, model_state, batch, key, hparams) -> (loss, aux)``
            (``ml_adv.training.objectives``; default: supervised classification).
        example_mask: ``[N]`` bool: train only on these rows of ``train``, a fixed-capacity
            pool. Epochs keep ``N // batch_size`` steps (the padded ones are skipped), so a
            growing labelled set (active learning) never recompiles.
        init_state: continue from this ``TrainState`` (parameters, optimizer state, step,
            keys): an incremental update that carries the optimizer state over.
        epoch_callback: called with each epoch's metrics record; returning True stops the run
            (hyper-parameter search prunes unpromising trials with it).

    Returns:
        A ``FitResult``.

    Example:
        >>> from ml_adv.data.builtin import load_digits
        >>> from ml_adv.models import AdvancedModelArchitecture
        >>> train, test = load_digits().split((0.8, 0.2))
        >>> spec = AdvancedModelArchitecture("cnn").design_architecture(8, 10, input_shape=train.example_shape)
        >>> result = fit(spec, train, TrainConfig(epochs=5), val=test)
    """

    config = TrainConfig() if config is None else config
    spec = check_model(model)
    validate_fit_inputs(spec, train, val, config)
    monitor, mode = monitor_for(config, val is not None)
    mesh = None
    if config.data_parallel:
        mesh = parallel.data_mesh()
        parallel.check_divisible(config.batch_size, mesh)
    streams = train if isinstance(train, dict) else None
    sizes = tuple(len(d) for d in streams.values()) if streams else (len(train),)
    example = next(iter(streams.values())).x[:1] if streams else train.x[:1]
    setup = init_run(model, config, example_x=example, steps_per_epoch=sizes[0] // config.batch_size, key=key,
                     objective=objective, init_params=init_params, mesh=mesh)
    mask = check_example_mask(example_mask, train, config)
    plan = EpochPlan(sizes, config.batch_size, setup.shuffle_key, tuple(streams) if streams else None, mask)
    tracker = EarlyStopping(1, mode, config.min_delta, config.patience, config.early_stopping)
    state, history, start_epoch, resumed_from = continue_from(setup.state, init_state), [], 0, None
    checkpointer, run_path = None, Path(run_dir) if run_dir is not None else None
    if run_path is not None:
        run_directory, checkpointer, restored = open_checkpoints(run_path, state, spec, config, tracker, resume=resume,
                                                  overwrite=overwrite, extra_meta=extra_meta, model_repr=repr(setup.module))
        state, history, start_epoch, resumed_from = (restored.state, restored.history, restored.start_epoch,
                                                     restored.resumed_from)
    data = device_data(train, mesh)
    if mesh is not None:
        state = jax.device_put(state, parallel.replicated(mesh))
    runner = EpochRunner(setup.train_step, scan=config.scan_epochs)
    stopped_early = bool(tracker.stopped[0])
    nonfinite_total, steps_run, best_in_memory = 0, 0, None
    bar = progress_bar(range(start_epoch, config.epochs) if not stopped_early else range(0), progress,
                       total=config.epochs, initial=start_epoch)
    try:
        for epoch in bar:
            t0 = time.perf_counter()
            order, active = plan.draw(epoch)
            state, metrics = runner(state, data, order, active)
            bad_step = first_nonfinite_step(metrics)
            if bad_step is not None and config.nan_policy == "raise":
                raise diverged_error(bad_step, epoch, plan.steps, checkpointer)
            record = _epoch_record(epoch, state, metrics, time.perf_counter() - t0)
            nonfinite_total += record["nonfinite_steps"]
            steps_run += plan.live_steps
            if val is not None:
                record.update(evaluate(state, val, config))
            history.append(record)
            is_best = bool(tracker.update(record[monitor], epoch + 1)[0])
            if is_best and checkpointer is None and config.early_stopping and config.restore_best:
                best_in_memory = jax.tree.map(np.array, (state.params, state.model_state))
            if checkpointer is not None:
                _save_epoch(checkpointer, run_directory, epoch, state, history, tracker, spec, config, is_best)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix({k: f"{record[k]:.4f}" for k in ("train_loss", "val_accuracy") if k in record})
            if tracker.stopped[0]:
                stopped_early = True
                break
            if epoch_callback is not None and epoch_callback(dict(record)):
                stopped_early = True
                break
        best_epoch = int(tracker.best_epoch[0])
        if config.early_stopping and config.restore_best and best_epoch and history and best_epoch != len(history):
            state = _restore_best(state, checkpointer, best_epoch, best_in_memory)
    finally:
        if checkpointer is not None:
            checkpointer.close()
        if hasattr(bar, "close"):
            bar.close()

    return FitResult(
        state=state,
        history=history,
        best_epoch=int(tracker.best_epoch[0]),
        best_value=float(tracker.best_value[0]),
        stopped_early=stopped_early,
        resumed_from=resumed_from,
        compile_seconds=runner.compile_seconds,
        steps_per_second=steps_run / runner.train_seconds if runner.train_seconds > 0 else float("nan"),
        nonfinite_steps=nonfinite_total,
        run_dir=str(run_path) if run_path else None,
    )


def _epoch_record(epoch: int, state: TrainState, metrics, seconds: float) -> dict[str, Any]:
    summary = summarize(metrics)
    record = {"epoch": epoch + 1, "step": int(state.step)}
    for name, value in summary.items():
        if name != "steps":
            record[name] = int(value) if name == "nonfinite_steps" else float(value)
    record["epoch_seconds"] = round(seconds, 4)
    return record


def _save_epoch(checkpointer, run_directory, epoch, state, history, tracker, spec, config, is_best) -> None:
    meta = {"epoch": epoch + 1, "history": history, **{k: v[0] for k, v in tracker.to_meta().items()},
            "model": spec.to_dict() if spec else None, "train_config": config.to_dict()}
    checkpointer.save(epoch + 1, state.checkpoint_items(), meta, is_best=is_best)
    run_directory.append_metrics(history[-1])


def _restore_best(state: TrainState, checkpointer: RunCheckpointer | None, best_epoch: int, in_memory) -> TrainState:
    if checkpointer is None:
        if in_memory is None:
            return state
        params, model_state = jax.tree.map(jnp.asarray, in_memory)
        return state.replace(params=params, model_state=model_state)
    checkpointer.wait()
    items, _ = checkpointer.restore(state.checkpoint_items(), which="best")
    return state.replace(params=items["params"], model_state=items["model_state"])


def _check_same_run(meta: dict[str, Any], spec, config: TrainConfig) -> None:
    if spec is not None and meta.get("model") not in (None, json.loads(json.dumps(spec.to_dict()))):
        raise CheckpointError(
            "run_dir: the checkpoint was written by a different model "
            f"({meta['model'].get('architecture')}); use another run_dir or overwrite=True"
        )
    saved = meta.get("train_config", {})
    for key in ("seed", "batch_size", "learning_rate", "optimizer", "schedule", "grad_accum_steps"):
        if key in saved and saved[key] != config.to_dict()[key]:
            raise CheckpointError(
                f"run_dir: cannot resume: {key} was {saved[key]!r} in the checkpoint, got {config.to_dict()[key]!r}; "
                "use another run_dir or overwrite=True"
            )


