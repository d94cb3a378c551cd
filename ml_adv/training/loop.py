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
import shutil
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
from ml_adv.training.losses import resolve_loss
from ml_adv.training.optim import build_optimizer
from ml_adv.training.state import TrainState, create_train_state
from ml_adv.training.steps import (
    classification_metrics,
    epoch_order,
    guard_for_architecture,
    make_epoch_fn,
    make_step_fn,
    make_train_step,
    predict_logits,
    run_epoch_stepwise,
)


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


def _monitor(config: TrainConfig, has_val: bool) -> tuple[str, str]:
    if config.monitor.startswith("val_") and not has_val:
        if config.early_stopping:
            raise ConfigError(
                f"early_stopping: monitoring {config.monitor!r} needs validation data, got val=None"
            )
        return "train_loss", "min"
    return config.monitor, config.monitor_mode


def _improved(value: float, best: float | None, mode: str, min_delta: float) -> bool:
    if best is None:
        return True
    return value > best + min_delta if mode == "max" else value < best - min_delta


def validate_fit_inputs(model_spec, train: ArrayDataset, val: ArrayDataset | None, config: TrainConfig) -> None:
    """Every check that can fail on user input, run before anything is compiled."""
    if not isinstance(train, ArrayDataset):
        raise DataError(f"train: expected an ArrayDataset, got {describe(train)}")
    if val is not None and not isinstance(val, ArrayDataset):
        raise DataError(f"val: expected an ArrayDataset or None, got {describe(val)}")
    if not isinstance(config, TrainConfig):
        raise ConfigError(f"config: expected a TrainConfig, got {describe(config)}")
    train.check_batch_size(config.batch_size)
    if model_spec is not None:
        model_spec.validate_inputs(train.x[:1], argument="train.x")
        if train.num_classes > model_spec.num_classes:
            raise DataError(
                f"train.y: the model has {model_spec.num_classes} outputs, got labels needing {train.num_classes}"
            )
        if val is not None:
            model_spec.validate_inputs(val.x[:1], argument="val.x")
    if val is not None and val.example_shape != train.example_shape:
        raise DataError(f"val.x: expected example shape {train.example_shape} like train, got {val.example_shape}")


def fit(
    model,
    train: ArrayDataset,
    config: TrainConfig | None = None,
    *,
    val: ArrayDataset | None = None,
    run_dir: str | Path | None = None,
    resume: bool = True,
    overwrite: bool = False,
    progress: bool | None = None,
    init_params: Any | None = None,
    extra_meta: dict[str, Any] | None = None,
    epoch_callback: Any | None = None,
) -> FitResult:
    """Train ``model`` on ``train``; evaluate on ``val`` each epoch; checkpoint into ``run_dir``.

    Args:
        model: a ``ModelSpec`` (validated against the data) or any Linen module
            called as ``module.apply(vars, x, train=...)``.
        train, val: ``ArrayDataset`` s held in memory.
        config: the ``TrainConfig`` (default: ``TrainConfig()``).
        run_dir: when given, writes ``config.json``, ``metrics.jsonl`` and
            ``checkpoints/`` there, and resumes from its latest checkpoint.
        resume: continue from ``run_dir``'s latest checkpoint if there is one.
        overwrite: delete existing checkpoints in ``run_dir`` and start afresh.
        progress: show a tqdm bar (default: only on a terminal).
        init_params: start from these parameters (fine-tuning / transfer) instead of a fresh init.
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
    from ml_adv.models.registry import ModelSpec

    config = TrainConfig() if config is None else config
    spec = model if isinstance(model, ModelSpec) else None
    validate_fit_inputs(spec, train, val, config)
    module = spec.build() if spec is not None else model
    monitor, mode = _monitor(config, val is not None)

    mesh = None
    if config.data_parallel:
        mesh = parallel.data_mesh()
        parallel.check_divisible(config.batch_size, mesh)

    steps_per_epoch = len(train) // config.batch_size
    total_updates = max(1, config.epochs * steps_per_epoch // config.grad_accum_steps)
    tx = build_optimizer(config, total_updates)
    root = jax.random.PRNGKey(config.seed)
    init_key, dropout_root, shuffle_root = jax.random.split(root, 3)
    state = create_train_state(module, train.x[:1], tx, init_key=init_key, rng=dropout_root)
    if init_params is not None:
        state = state.replace(params=init_params, opt_state=tx.init(init_params))

    # ---- run directory and resume
    checkpointer = None
    history: list[dict[str, Any]] = []
    start_epoch, best_value, best_epoch, bad_epochs, resumed_from = 0, None, 0, 0, None
    run_path = Path(run_dir) if run_dir is not None else None
    if run_path is not None:
        ckpt_dir = run_path / "checkpoints"
        if ckpt_dir.exists() and overwrite:
            shutil.rmtree(ckpt_dir)
        checkpointer = RunCheckpointer(ckpt_dir)
        if checkpointer.latest_step() is not None:
            if not resume:
                checkpointer.close()
                raise CheckpointError(
                    f"run_dir: {run_path} already has checkpoints; pass resume=True to continue or overwrite=True to restart"
                )
            items, meta = checkpointer.restore(state.checkpoint_items())
            _check_same_run(meta, spec, config)
            state = state.with_checkpoint_items(items)
            history = list(meta["history"])
            start_epoch = resumed_from = int(meta["epoch"])
            best_value, best_epoch, bad_epochs = meta["best_value"], int(meta["best_epoch"]), int(meta["bad_epochs"])
        run_path.mkdir(parents=True, exist_ok=True)
        config_record = {"train_config": config.to_dict(), "model": spec.to_dict() if spec else repr(module)}
        config_record.update(extra_meta or {})
        (run_path / "config.json").write_text(json.dumps(config_record, indent=2, default=str))
        _rewrite_metrics(run_path / "metrics.jsonl", history)

    # ---- place data and state
    data = {"x": jnp.asarray(train.x), "y": jnp.asarray(train.y)}
    if mesh is not None:
        data = jax.device_put(data, parallel.replicated(mesh))
        state = jax.device_put(state, parallel.replicated(mesh))
    train_step = make_train_step(
        resolve_loss(config),
        augment=config.augment,
        mixed_precision=config.mixed_precision,
        mesh=mesh,
        guard=guard_for_architecture(spec.architecture if spec is not None else None),
    )

    stopped_early = config.early_stopping and bad_epochs >= config.patience
    nonfinite_total, compile_seconds, train_seconds, steps_run = 0, 0.0, 0.0, 0
    run_epoch = None
    best_in_memory = None
    epochs = range(start_epoch, config.epochs) if not stopped_early else range(0)
    bar = _progress(epochs, progress, total=config.epochs, initial=start_epoch)
    try:
        for epoch in bar:
            epoch_key = jax.random.fold_in(shuffle_root, epoch)
            t0 = time.perf_counter()
            order = epoch_order(epoch_key, len(train), config.batch_size)
            if config.scan_epochs:
                if run_epoch is None:
                    run_epoch = make_epoch_fn(train_step).lower(state, data, order).compile()
                    compile_seconds = time.perf_counter() - t0
                    t0 = time.perf_counter()
                state, metrics = run_epoch(state, data, order)
            else:
                if run_epoch is None:
                    run_epoch = make_step_fn(train_step)
                state, metrics = run_epoch_stepwise(run_epoch, state, data, order)
            metrics = jax.device_get(metrics)
            train_seconds += time.perf_counter() - t0
            steps_run += steps_per_epoch

            nonfinite = int(np.sum(metrics["nonfinite"]))
            if nonfinite and config.nan_policy == "raise":
                first_bad = int(np.argmax(metrics["nonfinite"] > 0))
                step = epoch * steps_per_epoch + first_bad
                if checkpointer is not None:
                    checkpointer.wait()
                raise TrainingDivergedError(
                    f"loss: expected finite values, got NaN/inf at step {step} (epoch {epoch + 1}); "
                    f"training stopped, the last good checkpoint is kept"
                    + (f" at {checkpointer.path()}" if checkpointer and checkpointer.path() else "")
                    + ". Lower the learning rate, enable grad_clip_norm, or set nan_policy='skip'.",
                    step=step,
                    last_good_checkpoint=checkpointer.path() if checkpointer else None,
                )
            nonfinite_total += nonfinite
            record = _epoch_record(epoch, state, metrics, steps_per_epoch, time.perf_counter() - t0)
            if val is not None:
                val_logits = predict_logits(
                    state.apply_fn, state.variables(), val.x, chunk=config.eval_batch_size,
                    mixed_precision=config.mixed_precision,
                )
                record.update({f"val_{k}": v for k, v in classification_metrics(val_logits, val.y).items()})
            history.append(record)
            value = record[monitor]
            is_best = _improved(value, best_value, mode, config.min_delta)
            if is_best:
                best_value, best_epoch, bad_epochs = value, epoch + 1, 0
                if checkpointer is None and config.early_stopping and config.restore_best:
                    best_in_memory = jax.tree.map(np.array, (state.params, state.model_state))
            else:
                bad_epochs += 1
            if checkpointer is not None:
                meta = {
                    "epoch": epoch + 1, "history": history, "best_value": best_value, "best_epoch": best_epoch,
                    "bad_epochs": bad_epochs, "model": spec.to_dict() if spec else None,
                    "train_config": config.to_dict(),
                }
                checkpointer.save(epoch + 1, state.checkpoint_items(), meta, is_best=is_best)
                with open(run_path / "metrics.jsonl", "a") as fh:
                    fh.write(json.dumps(record) + "\n")
            if hasattr(bar, "set_postfix"):
                bar.set_postfix({k: f"{record[k]:.4f}" for k in ("train_loss", "val_accuracy") if k in record})
            if epoch_callback is not None and epoch_callback(dict(record)):
                stopped_early = True
                break
            if config.early_stopping and bad_epochs >= config.patience:
                stopped_early = True
                break

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
        best_epoch=best_epoch,
        best_value=float(best_value) if best_value is not None else float("nan"),
        stopped_early=stopped_early,
        resumed_from=resumed_from,
        compile_seconds=compile_seconds,
        steps_per_second=steps_run / train_seconds if train_seconds > 0 else float("nan"),
        nonfinite_steps=nonfinite_total,
        run_dir=str(run_path) if run_path else None,
    )


def _epoch_record(epoch, state, metrics, steps_per_epoch, seconds) -> dict[str, Any]:
    good = metrics["nonfinite"] == 0
    mean = lambda k: float(np.mean(metrics[k][good])) if good.any() else float("nan")  # noqa: E731
    return {
        "epoch": epoch + 1,
        "step": int(state.step),
        "train_loss": mean("loss"),
        "train_accuracy": mean("accuracy"),
        "grad_norm": mean("grad_norm"),
        "nonfinite_steps": int(np.sum(~good)),
        "epoch_seconds": round(seconds, 4),
    }


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


def _rewrite_metrics(path: Path, history: list[dict[str, Any]]) -> None:
    with open(path, "w") as fh:
        for record in history:
            fh.write(json.dumps(record) + "\n")


def _progress(iterable, enabled: bool | None, *, total: int, initial: int):
    if enabled is False:
        return iterable
    from tqdm.auto import tqdm

    # disable=None: tqdm turns itself off when stderr is not a terminal (CI, logs).
    return tqdm(iterable, total=total, initial=initial, desc="epochs", unit="epoch",
                disable=None if enabled is None else not enabled, leave=False)
