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
from ml_adv.errors import CheckpointError, TrainingDivergedError
from ml_adv.training import core_split, parallel
from ml_adv.training.config import DATA_PARALLEL_AUTO, TrainConfig
from ml_adv.training.host import (
    EarlyStopping,
    EpochRunner,
    first_nonfinite_step,
    monitor_for,
    progress_bar,
    summarize,
    tiebreak_for,
)
from ml_adv.training.inputs import (  # noqa: F401  (re-exported: loop was their home)
    as_model_inputs,
    check_example_mask,
    check_hparam_schedule,
    check_init_params,
    check_model,
    continue_from,
    scheduled_values,
    validate_fit_inputs,
)
from ml_adv.training.objectives import Objective
from ml_adv.training.sampling import EpochPlan
from ml_adv.training.setup import apply_member_hparams, init_run, state_hyperparams
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
    hparam_schedule: Any | None = None,
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
        hparam_schedule: ``[(first_epoch, {name: value}), ...]``: from each first epoch on,
            these traced hyper-parameters (learning rate, weight decay, label smoothing ...)
            take these values; nothing recompiles, and a resumed run sets them as the
            uninterrupted one did (the trainer replays a PBT schedule with it).

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
    train, val = as_model_inputs(spec, train), as_model_inputs(spec, val)
    validate_fit_inputs(spec, train, val, config)
    monitor, mode = monitor_for(config, val is not None)
    mesh = None
    if config.data_parallel is True:
        mesh = parallel.data_mesh()
        parallel.check_divisible(config.batch_size, mesh)
    streams = train if isinstance(train, dict) else None
    sizes = tuple(len(d) for d in streams.values()) if streams else (len(train),)
    example = next(iter(streams.values())).x[:1] if streams else train.x[:1]

    def make_setup(mesh):
        return init_run(model, config, example_x=example, steps_per_epoch=sizes[0] // config.batch_size, key=key,
                        objective=objective, init_params=init_params, mesh=mesh)

    setup = make_setup(mesh)
    mask = check_example_mask(example_mask, train, config)
    plan = EpochPlan(sizes, config.batch_size, setup.shuffle_key, tuple(streams) if streams else None, mask)
    if config.data_parallel == DATA_PARALLEL_AUTO:  # one device or the batch over the cores, as measured
        recorded = core_split.recorded_layout(run_dir, resume=resume, overwrite=overwrite)
        mesh, setup = core_split.resolve(config, setup, make_setup, lambda m: device_data(train, m), plan,
                                         plan.streams, example, recorded)
        config = config.replace(data_parallel=mesh is not None)  # what the run directory records
    schedule = check_hparam_schedule(hparam_schedule, state_hyperparams(setup.state), config.epochs)
    run = _SingleRun(setup, config, plan,
                     EarlyStopping(1, mode, config.min_delta, config.patience, config.early_stopping), monitor,
                     schedule)
    run.state = continue_from(setup.state, init_state)
    if run_dir is not None:
        run.open(Path(run_dir), resume=resume, overwrite=overwrite, extra_meta=extra_meta)
    data = device_data(train, mesh)
    if mesh is not None:
        run.placement = parallel.replicated(mesh)
        run.state = jax.device_put(run.state, run.placement)
    try:
        run.train(data, val, progress, epoch_callback)
    finally:
        run.close()
    return run.result()


class _SingleRun:
    """The host loop of one run, as short named steps: open, train (epoch after epoch), close, result."""

    def __init__(self, setup, config: TrainConfig, plan: EpochPlan, tracker: EarlyStopping, monitor: str,
                 schedule: list | None = None):
        self.setup, self.config, self.plan, self.tracker, self.monitor = setup, config, plan, tracker, monitor
        self.schedule, self.placement = schedule, None
        self.state, self.history, self.start_epoch, self.resumed_from = setup.state, [], 0, None
        self.run_path = self.run_directory = self.checkpointer = self.best_in_memory = None
        self.runner = EpochRunner(setup.train_step, scan=config.scan_epochs, guard_steps=setup.guard_steps,
                                  unroll=config.scan_unroll)
        self.stopped_early, self.nonfinite_total, self.steps_run = False, 0, 0

    def open(self, run_path: Path, *, resume: bool, overwrite: bool, extra_meta: dict | None) -> None:
        """Open the run directory and continue from its latest checkpoint, if any."""
        self.run_path = run_path
        self.run_directory, self.checkpointer, restored = open_checkpoints(
            run_path, self.state, self.setup.spec, self.config, self.tracker, resume=resume, overwrite=overwrite,
            extra_meta=extra_meta, model_repr=repr(self.setup.module))
        self.state, self.history = restored.state, restored.history
        self.start_epoch, self.resumed_from = restored.start_epoch, restored.resumed_from

    def train(self, data, val, progress, epoch_callback) -> None:
        """Epochs until the last one, early stopping, or the callback asks to stop; best epoch restored."""
        self.stopped_early = bool(self.tracker.stopped[0])
        epochs = range(self.start_epoch, self.config.epochs) if not self.stopped_early else range(0)
        bar = progress_bar(epochs, progress, total=self.config.epochs, initial=self.start_epoch)
        try:
            for epoch in bar:
                record = self.epoch(data, val, epoch)
                if hasattr(bar, "set_postfix"):
                    bar.set_postfix({k: f"{record[k]:.4f}" for k in ("train_loss", "val_accuracy") if k in record})
                if self.tracker.stopped[0] or (epoch_callback is not None and epoch_callback(dict(record))):
                    self.stopped_early = True
                    break
        finally:
            if hasattr(bar, "close"):
                bar.close()
        best_epoch = int(self.tracker.best_epoch[0])
        config = self.config
        if config.early_stopping and config.restore_best and best_epoch and self.history and best_epoch != len(self.history):
            self.state = _restore_best(self.state, self.checkpointer, best_epoch, self.best_in_memory)

    def epoch(self, data, val, epoch: int) -> dict[str, Any]:
        """Run, check, evaluate, track and checkpoint one epoch; returns its record."""
        t0 = time.perf_counter()
        order, active = self.plan.draw(epoch)
        scheduled = scheduled_values(self.schedule, epoch)
        if scheduled:  # set every epoch, so a resumed run matches an uninterrupted one
            self.state = apply_member_hparams(self.state, scheduled)
            if self.placement is not None:  # the new values where the compiled epoch expects them
                self.state = jax.device_put(self.state, self.placement)
        self.state, metrics = self.runner(self.state, data, order, active)
        bad_step = first_nonfinite_step(metrics)
        if bad_step is not None and self.config.nan_policy == "raise":
            raise diverged_error(bad_step, epoch, self.plan.steps, self.checkpointer)
        record = _epoch_record(epoch, self.state, metrics, time.perf_counter() - t0)
        record.update({f"hparam_{name}": value for name, value in scheduled.items()})
        self.nonfinite_total += record["nonfinite_steps"]
        self.steps_run += self.plan.live_steps
        if val is not None:
            record.update(evaluate(self.state, val, self.config))
        self.history.append(record)
        tie = tiebreak_for(self.monitor)
        is_best = bool(self.tracker.update(record[self.monitor], epoch + 1, tiebreak=record.get(tie) if tie else None)[0])
        config = self.config
        if is_best and self.checkpointer is None and config.early_stopping and config.restore_best:
            self.best_in_memory = jax.tree.map(np.array, (self.state.params, self.state.model_state))
        if self.checkpointer is not None:
            _save_epoch(self.checkpointer, self.run_directory, epoch, self.state, self.history, self.tracker,
                        self.setup.spec, config, is_best)
        return record

    def close(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.close()

    def result(self) -> FitResult:
        runner = self.runner
        return FitResult(
            state=self.state,
            history=self.history,
            best_epoch=int(self.tracker.best_epoch[0]),
            best_value=float(self.tracker.best_value[0]),
            stopped_early=self.stopped_early,
            resumed_from=self.resumed_from,
            compile_seconds=runner.compile_seconds,
            steps_per_second=self.steps_run / runner.train_seconds if runner.train_seconds > 0 else float("nan"),
            nonfinite_steps=self.nonfinite_total,
            run_dir=str(self.run_path) if self.run_path else None,
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


