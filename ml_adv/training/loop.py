"""The one training loop: K members (or one unstacked run) epoch after epoch, with hooks.

``fit`` is the single-run case (``TrainingLoop(members=None)``: a state without a member
axis) and ``fit_stacked`` the K-member case (a leading member axis, the step vmapped inside
the same scanned epoch); PBT is a hook of the K-member loop. The loop is a sequence of short
named steps, the same for all of them:

* ``open``: the run folder's checkpoints: restore the newest intact one (or the epoch a
  hook asks for), write ``config.json``, rewrite ``metrics.jsonl`` up to the restored epoch;
* ``run``: per epoch: hooks' ``on_epoch_start`` -> the compiled epoch (``runner.EpochRunner``)
  -> non-finite check (a single run raises or skips, per ``nan_policy``; a member is frozen)
  -> records (train means, validation metrics) -> early stopping and best epoch -> hooks'
  ``on_epoch_end`` (which may replace the state or stop) -> checkpoint and metrics line
  -> hooks' ``after_save``;
* ``finish``: restore each member's best epoch where early stopping asks, close.

Determinism: initialisation, dropout and shuffling keys all derive from
``TrainConfig.seed`` (orders from ``fold_in(shuffle_key, epoch)``, per-step randomness from
``fold_in(state.rng, step)``), so a run resumed from epoch k's checkpoint replays exactly the
computation of the uninterrupted run and ends with bitwise-identical parameters on the same
backend. All numerics are in ``steps.py``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ml_adv.checkpointing import RunCheckpointer
from ml_adv.data.dataset import ArrayDataset
from ml_adv.errors import CheckpointError, ConfigError, TrainingDivergedError, describe
from ml_adv.rundir import NO_RUN, Run
from ml_adv.training import core_split, parallel
from ml_adv.training.config import DATA_PARALLEL_AUTO, TrainConfig
from ml_adv.training.inputs import (
    as_model_inputs,
    check_example_mask,
    check_hparam_schedule,
    check_model,
    continue_from,
    scheduled_values,
    validate_fit_inputs,
)
from ml_adv.training.objectives import Objective
from ml_adv.training.runner import EpochRunner
from ml_adv.training.sampling import EpochPlan
from ml_adv.training.setup import apply_member_hparams, init_run, state_hyperparams
from ml_adv.training.state import TrainState
from ml_adv.training.steps import classification_metrics, predict_logits_host
from ml_adv.training.tracking import (
    EarlyStopping,
    first_nonfinite_step,
    monitor_for,
    progress_bar,
    summarize,
    tiebreak_for,
)

STOP = "stop"  # what ``on_epoch_end`` returns to end the run after this epoch


class Hook:
    """Something the loop calls around each epoch; override what you need.

    * ``on_open(loop)``: after the run folder is opened (``loop.start_epoch`` is where the run
      goes on); may call ``loop.restore(epoch)`` to go on from an earlier checkpoint.
    * ``on_epoch_start(loop, epoch)``: before the epoch runs; may set ``loop.state``; returns
      fields added to this epoch's records, or None.
    * ``on_epoch_end(loop, epoch, records)``: after the epoch is recorded; returns a new state,
      ``STOP`` to end the run, or None.
    * ``after_save(loop, epoch)``: after the epoch's checkpoint is written (journals, user
      callbacks); returns ``STOP`` to end the run, or None.
    """

    def on_open(self, loop: TrainingLoop) -> None:
        return None

    def on_epoch_start(self, loop: TrainingLoop, epoch: int) -> dict[str, Any] | None:
        return None

    def on_epoch_end(self, loop: TrainingLoop, epoch: int, records: list[dict[str, Any]]):
        return None

    def after_save(self, loop: TrainingLoop, epoch: int):
        return None


class EpochCallback(Hook):
    """``fn(record) -> bool``: called with each epoch's record (member 0's) once the epoch is
    checkpointed; True stops the run (hyper-parameter search prunes trials with it)."""

    def __init__(self, fn: Callable[[dict[str, Any]], Any]):
        if not callable(fn):
            raise ConfigError(
                f"epoch_callback: expected a callable (record) -> bool, got {describe(fn)}"
            )
        self.fn = fn

    def after_save(self, loop, epoch):
        return STOP if self.fn(dict(loop.histories[0][-1])) else None


class HparamSchedule(Hook):
    """``[(first_epoch, {name: value}), ...]``: from each first epoch on, these traced
    hyper-parameters take these values. Set at every epoch, so a resumed run sets what the
    uninterrupted one did; nothing recompiles (the values are arrays in the state)."""

    def __init__(self, segments: list[tuple[int, dict[str, float]]]):
        self.segments = segments

    def on_epoch_start(self, loop, epoch):
        values = scheduled_values(self.segments, epoch)
        if values:
            loop.state = loop.place(apply_member_hparams(loop.state, values))
        return {f"hparam_{name}": value for name, value in values.items()}


# ------------------------------------------------------------------ keeping the best epoch
class BestInCheckpoints:
    """A single run's best epoch: the checkpointer's ``best`` slot (or a host copy without a
    run folder), restored at the end when early stopping asks for it."""

    def __init__(self, loop: TrainingLoop):
        self.loop, self.in_memory = loop, None

    def items(self, state) -> dict[str, Any]:
        return state.checkpoint_items()

    def restore_items(self, items) -> TrainState:
        return self.loop.state.with_checkpoint_items(items)

    def update(self, improved: np.ndarray) -> None:
        loop = self.loop
        if improved[0] and loop.checkpointer is None and loop.keeps_best:
            self.in_memory = jax.tree.map(np.array, (loop.state.params, loop.state.model_state))

    def final(self, state: TrainState) -> TrainState:
        loop = self.loop
        best = int(loop.tracker.best_epoch[0])
        if not (loop.keeps_best and best and loop.histories[0] and best != len(loop.histories[0])):
            return state
        if loop.checkpointer is None:
            if self.in_memory is None:
                return state
            params, model_state = jax.tree.map(jnp.asarray, self.in_memory)
            return state.replace(params=params, model_state=model_state)
        loop.checkpointer.wait()
        items, _ = loop.checkpointer.restore(state.checkpoint_items(), which="best")
        return state.replace(params=items["params"], model_state=items["model_state"])


class BestInState:
    """K members' best epochs: a parameter tree kept beside the state (and in its checkpoint),
    each member's slot replaced when that member improves."""

    def __init__(self, loop: TrainingLoop):
        self.loop = loop
        self.tree = jax.tree.map(
            jnp.copy, {"params": loop.state.params, "model_state": loop.state.model_state}
        )

    def items(self, state) -> dict[str, Any]:
        return {"state": state.checkpoint_items(), "best": self.tree}

    def restore_items(self, items) -> TrainState:
        self.tree = items["best"]
        return self.loop.state.with_checkpoint_items(items["state"])

    def update(self, improved: np.ndarray) -> None:
        state = self.loop.state
        self.tree = _keep_where(
            self.tree,
            {"params": state.params, "model_state": state.model_state},
            jnp.asarray(improved),
        )

    def final(self, state: TrainState) -> TrainState:
        if not self.loop.keeps_best:
            return state
        restore = jnp.asarray(self.loop.tracker.best_epoch > 0)
        kept = _keep_where(
            {"params": state.params, "model_state": state.model_state}, self.tree, restore
        )
        return state.replace(params=kept["params"], model_state=kept["model_state"])


@jax.jit
def _keep_where(kept, current, take):
    """Per member, ``current`` where ``take`` else ``kept`` (leading member axis)."""

    def pick(a, b):
        return jnp.where(take.reshape((-1,) + (1,) * (b.ndim - 1)), b, a)

    return jax.tree.map(pick, kept, current)


# ------------------------------------------------------------------ the loop
class TrainingLoop:
    """The host loop of one run of ``members`` stacked models (None: one unstacked model).

    Args:
        setup: the run's ``setup.RunSetup`` (state, steps, keys).
        config: its ``TrainConfig``.
        plan: an ``EpochPlan`` (single) or ``StackedPlan`` (K members): each epoch's orders.
        runner: the ``EpochRunner`` compiling and running the epoch.
        members: K, or None for a single run.
        monitor, mode: the metric early stopping and the best epoch follow.
        evaluate: ``state -> {"val_loss": ..., "val_accuracy": ...}`` (scalars, or ``[K]``), or
            None.
        hooks: ``Hook`` objects, called in order.
        run: the run folder and how to use it (``rundir.Run``).
    """

    def __init__(
        self,
        setup,
        config: TrainConfig,
        plan,
        runner: EpochRunner,
        *,
        members: int | None,
        monitor: str,
        mode: str,
        evaluate=None,
        hooks: Sequence[Hook] = (),
        run: Run = NO_RUN,
    ):
        self.setup, self.config, self.plan, self.runner = setup, config, plan, runner
        self.stacked, self.k = members is not None, members or 1
        self.monitor, self.evaluate, self.hooks, self.run_options = (
            monitor,
            evaluate,
            list(hooks),
            run,
        )
        self.tracker = EarlyStopping(
            self.k, mode, config.min_delta, config.patience, config.early_stopping
        )
        self.keeps_best = config.early_stopping and config.restore_best
        self.state, self.placement = setup.state, None
        self.histories: list[list[dict[str, Any]]] = [[] for _ in range(self.k)]
        self.failed, self.stopped = np.zeros(self.k, bool), np.zeros(self.k, bool)
        self.start_epoch, self.resumed_from, self.steps_run, self.nonfinite_total = 0, None, 0, 0
        self.stopped_by_hook, self.improved = False, np.zeros(self.k, bool)
        self.checkpointer = None
        self.directory = run.directory
        self.best = BestInState(self) if self.stacked else BestInCheckpoints(self)

    # -------------------------------------------------------------- state placement
    def place(self, state: TrainState) -> TrainState:
        """``state`` where the compiled epoch expects it (a mesh placement), else as it is."""
        return state if self.placement is None else jax.device_put(state, self.placement)

    # -------------------------------------------------------------- the run folder
    def open(self, extra_config: dict[str, Any] | None = None) -> None:
        """Open the run folder's checkpoints, go on from the newest intact one, write
        config.json."""
        run = self.run_options
        if self.directory is not None:
            if run.overwrite:
                for tree in ("checkpoints/latest", "checkpoints/best"):
                    self.directory.remove(tree)
            self.checkpointer = RunCheckpointer(self.directory.checkpoint_dir, max_to_keep=run.keep)
            if self.checkpointer.latest_step() is not None:
                if not run.resume:
                    self.checkpointer.close()
                    raise CheckpointError(
                        f"run_dir: {self.directory.path} already has checkpoints; pass "
                        "resume=True to continue or overwrite=True to restart"
                    )
                items, meta = self.checkpointer.restore_newest_intact(self.best.items(self.state))
                self._resume(items, meta)
        for hook in self.hooks:
            hook.on_open(self)
        if self.directory is not None:
            self.directory.write_config(
                {**self._config_record(), **dict(run.meta), **(extra_config or {})}
            )
            self.directory.rewrite_metrics(
                [self._metrics_line(e) for e in range(self._epochs_recorded())]
            )

    def restore(self, epoch: int) -> None:
        """Go on from the checkpoint of ``epoch`` (a hook's choice: it must still be kept), or from
        the start for ``epoch=0``."""
        if epoch == 0:
            self.state, self.histories = self.setup.state, [[] for _ in range(self.k)]
            self.failed, self.stopped = np.zeros(self.k, bool), np.zeros(self.k, bool)
            self.tracker = EarlyStopping(
                self.k,
                self.tracker.mode,
                self.config.min_delta,
                self.config.patience,
                self.config.early_stopping,
            )
            self.start_epoch, self.resumed_from = 0, None
            self.best = BestInState(self) if self.stacked else BestInCheckpoints(self)
            return
        items, meta = self.checkpointer.restore(self.best.items(self.state), step=epoch)
        self._resume(items, meta)

    def _resume(self, items, meta: dict[str, Any]) -> None:
        _check_same_run(meta, self.setup.spec, self.config)
        if int(meta.get("members") or 1) != self.k or bool(meta.get("members")) != self.stacked:
            raise CheckpointError(
                f"run_dir: the checkpoint has {meta.get('members') or 'no stacked'} members, "
                f"got members={self.k if self.stacked else None}"
            )
        self.state = self.best.restore_items(items)
        self.histories = (
            [list(h) for h in meta["histories"]] if "histories" in meta else [list(meta["history"])]
        )
        self.tracker.load_meta(meta)
        self.failed = np.array(meta.get("failed", [False] * self.k), bool)
        # A single run's checkpoint holds the tracker only: out of patience means it had stopped.
        self.stopped = (
            np.array(meta["stopped"], bool) if "stopped" in meta else self.tracker.stopped.copy()
        )
        self.start_epoch = self.resumed_from = int(meta["epoch"])

    def _config_record(self) -> dict[str, Any]:
        spec = self.setup.spec
        record = {
            "train_config": self.config.to_dict(),
            "model": spec.to_dict() if spec else repr(self.setup.module),
        }
        if self.stacked:
            record["members"] = self.k
        return record

    def _epochs_recorded(self) -> int:
        return max((len(h) for h in self.histories), default=0)

    def _metrics_line(self, e: int) -> dict[str, Any]:
        if not self.stacked:
            return self.histories[0][e]
        return {"epoch": e + 1, "members": [h[e] if e < len(h) else None for h in self.histories]}

    # -------------------------------------------------------------- epochs
    def run(self, data) -> None:
        """Epochs from ``start_epoch`` until the last, every member stopped, or a hook says stop."""
        done = (self.failed | self.stopped).all()
        epochs = range(self.start_epoch, self.config.epochs) if not done else range(0)
        bar = progress_bar(
            epochs,
            self.run_options.progress,
            total=self.config.epochs,
            initial=self.start_epoch,
            desc="stacked epochs" if self.stacked else "epochs",
        )
        try:
            for epoch in bar:
                records, stop = self.epoch(data, epoch)
                if hasattr(bar, "set_postfix") and not self.stacked:
                    bar.set_postfix(
                        {
                            k: f"{records[0][k]:.4f}"
                            for k in ("train_loss", "val_accuracy")
                            if k in records[0]
                        }
                    )
                if stop or (self.failed | self.stopped).all():
                    self.stopped_by_hook = bool(stop)
                    break
        finally:
            if hasattr(bar, "close"):
                bar.close()

    def epoch(self, data, epoch: int) -> tuple[list[dict[str, Any]], bool]:
        """One epoch: hooks, the compiled epoch, checks, records, tracking, hooks, checkpoint."""
        t0 = time.perf_counter()
        extra: dict[str, Any] = {}
        for hook in self.hooks:
            extra.update(hook.on_epoch_start(self, epoch) or {})
        order, active = self.plan.draw(epoch)
        running = ~(self.failed | self.stopped)
        self.state, metrics = self.runner(self.state, data, order, active)
        self._check_finite(metrics, epoch, running)
        records = self._records(epoch, metrics, time.perf_counter() - t0, extra)
        self._track(epoch, records, running)
        stop = False
        for hook in self.hooks:
            outcome = hook.on_epoch_end(self, epoch, records)
            if isinstance(outcome, TrainState):
                self.state = outcome
            stop = stop or outcome == STOP
        if self.checkpointer is not None:
            self.save(epoch)
        for hook in self.hooks:
            stop = hook.after_save(self, epoch) == STOP or stop
        return records, stop

    def _check_finite(self, metrics, epoch: int, running: np.ndarray) -> None:
        """A single run raises at its first non-finite step (``nan_policy="raise"``); a member
        is frozen, and the run raises only when every member has diverged."""
        if not self.stacked:
            bad_step = first_nonfinite_step(metrics)
            if bad_step is not None and self.config.nan_policy == "raise":
                raise self._diverged(bad_step, epoch)
            return
        self.failed = np.asarray(jax.device_get(self.state.frozen)) & running | self.failed
        if self.config.nan_policy == "raise" and self.failed.all():
            raise TrainingDivergedError(
                f"loss: every one of the {self.k} members turned NaN/inf by epoch {epoch + 1}; "
                "lower the learning rates or enable grad_clip_norm"
            )

    def _diverged(self, epoch_step: int, epoch: int) -> TrainingDivergedError:
        step = epoch * self.plan.steps + epoch_step
        where = None
        if self.checkpointer is not None:
            self.checkpointer.wait()
            where = self.checkpointer.path()
        return TrainingDivergedError(
            f"loss: expected finite values, got NaN/inf at step {step} (epoch {epoch + 1}); "
            "training stopped, the last good checkpoint is kept"
            + (f" at {where}" if where else "")
            + ". Lower the learning rate, enable grad_clip_norm, or set nan_policy='skip'.",
            step=step,
            last_good_checkpoint=where,
        )

    def _records(
        self, epoch: int, metrics, seconds: float, extra: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """One record per member: epoch, step, train means, validation metrics, ``extra``."""
        summary = {k: np.atleast_1d(v) for k, v in summarize(metrics, axis=0).items()}
        val = {
            k: np.atleast_1d(v)
            for k, v in (self.evaluate(self.state) if self.evaluate else {}).items()
        }
        steps = np.atleast_1d(np.asarray(jax.device_get(self.state.step)))
        self.steps_run += self.plan.live_steps if not self.stacked else self.plan.steps
        records = []
        for i in range(self.k):
            record = {"epoch": epoch + 1, "step": int(steps[i])}
            for name, value in summary.items():
                if name != "steps" or self.stacked:
                    record[name] = (
                        int(value[i]) if name in ("nonfinite_steps", "steps") else float(value[i])
                    )
            if self.stacked:
                record.update({name: float(value[i]) for name, value in val.items()})
                record["failed"] = bool(self.failed[i])
                record["epoch_seconds"] = round(seconds, 4)
            else:  # a single run's record keeps its long-standing field order
                record["epoch_seconds"] = round(seconds, 4)
                record.update(extra)
                record.update({name: float(value[i]) for name, value in val.items()})
            records.append(record)
        self.nonfinite_total += int(summary["nonfinite_steps"][0]) if not self.stacked else 0
        return records

    def _track(self, epoch: int, records: list[dict[str, Any]], running: np.ndarray) -> None:
        """Early stopping, the best epoch, histories and the members frozen from now on."""
        live = running & ~self.failed
        values = np.array([r.get(self.monitor, np.nan) for r in records])
        tie = tiebreak_for(self.monitor)
        ties = np.array([r.get(tie, np.inf) for r in records]) if tie else None
        self.improved = self.tracker.update(values, epoch + 1, running=live, tiebreak=ties)
        self.best.update(self.improved)
        self.stopped = self.stopped | (self.tracker.stopped & live)
        for i, record in enumerate(records):
            if running[i]:
                self.histories[i].append(record)
        if self.stacked:  # frozen members skip every later step: early-stopped and failed alike
            self.state = self.state.replace(frozen=jnp.asarray(self.failed | self.stopped))

    def save(self, epoch: int) -> None:
        """The epoch's checkpoint (with everything a resumed run needs) and its metrics line."""
        meta = {
            "epoch": epoch + 1,
            **self.tracker.to_meta(),
            "train_config": self.config.to_dict(),
            "model": self.setup.spec.to_dict() if self.setup.spec else None,
        }
        if self.stacked:
            meta.update(
                members=self.k,
                histories=self.histories,
                failed=self.failed.tolist(),
                stopped=self.stopped.tolist(),
            )
            self.checkpointer.save(epoch + 1, self.best.items(self.state), meta)
        else:
            meta["history"] = self.histories[0]
            meta.update({k: v[0] for k, v in self.tracker.to_meta().items()})
            self.checkpointer.save(
                epoch + 1, self.best.items(self.state), meta, is_best=bool(self.improved[0])
            )
        self.directory.append_metrics(self._metrics_line(epoch))

    def finish(self) -> TrainState:
        """The final state: each member's best epoch restored where early stopping asks."""
        self.state = self.best.final(self.state)
        return self.state

    def close(self) -> None:
        """Close the checkpoints (waits for the last asynchronous save)."""
        if self.checkpointer is not None:
            self.checkpointer.close()

    @property
    def steps_per_second(self) -> float:
        seconds = self.runner.train_seconds
        return self.steps_run / seconds if seconds > 0 else float("nan")


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
                f"run_dir: cannot resume: {key} was {saved[key]!r} in the checkpoint, "
                f"got {config.to_dict()[key]!r}; "
                "use another run_dir or overwrite=True"
            )


# ------------------------------------------------------------------ fit: the K = 1 case
@dataclasses.dataclass
class FitResult:
    """What ``fit`` returns.

    Attributes:
        state: the final ``TrainState`` (best-epoch params when early stopping restored them).
        history: one dict of metrics per epoch.
        best_epoch, best_value: the best epoch (1-based) by ``config.monitor`` and its value.
        stopped_early: whether early stopping (or a hook) ended the run.
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
        data = {name: {"x": owned(d.x), "y": owned(d.y)} for name, d in train.items()}
    else:
        data = {"x": owned(train.x), "y": owned(train.y)}
    if mesh is not None:
        data = jax.device_put(data, parallel.replicated(mesh))
    return data


def owned(x) -> jax.Array:
    """``x`` on the device in memory of its own. A host array is copied on the host first:
    ``jax.device_put`` may alias host memory on a CPU, and ``jnp.asarray`` compiles a copy
    program for every new shape."""
    return jax.device_put(np.array(x)) if isinstance(x, np.ndarray) else jnp.asarray(x)


def evaluate(state: TrainState, val: ArrayDataset, config: TrainConfig) -> dict[str, float]:
    """``val_loss`` and ``val_accuracy`` of the current parameters."""
    logits = predict_logits_host(
        state.apply_fn,
        state.variables(),
        val.x,
        chunk=config.eval_batch_size,
        mixed_precision=config.mixed_precision,
    )
    return {f"val_{k}": v for k, v in classification_metrics(logits, val.y).items()}


def fit(
    model,
    train,
    config: TrainConfig | None = None,
    *,
    val: ArrayDataset | None = None,
    run: Run | Any = None,
    init_params: Any | None = None,
    init_state: TrainState | None = None,
    key: jax.Array | None = None,
    objective: Objective | None = None,
    example_mask: np.ndarray | None = None,
    hooks: Sequence[Hook] = (),
    hparam_schedule: Any | None = None,
) -> FitResult:
    """Train ``model`` on ``train``; evaluate on ``val`` each epoch; checkpoint into the run folder.

    Args:
        model: a ``ModelSpec`` (validated against the data) or any Linen module
            called as ``module.apply(vars, x, train=...)``.
        train: an ``ArrayDataset``, or a dict of named streams ``{name: ArrayDataset}``
            (e.g. ``{"source": s, "target": t}``) for an objective that reads several: the
            first sets the epoch length and the others cycle with their own permutations.
        config: the ``TrainConfig`` (default: ``TrainConfig()``).
        val: an ``ArrayDataset`` evaluated after each epoch.
        run: the run folder and how to use it: a ``rundir.Run`` (``Run.at("runs/x",
            resume=True, overwrite=False, meta={...}, progress=None)``), or just the folder
            (a path or ``RunDirectory``). It gets ``config.json``, ``metrics.jsonl`` and
            ``checkpoints/``, and the run goes on from its latest checkpoint. None: nothing
            written; a progress bar on a terminal.
        init_params: start from these parameters (fine-tuning / transfer) instead of a fresh init.
        init_state: continue from this ``TrainState`` (parameters, optimizer state, step,
            keys): an incremental update that carries the optimizer state over.
        key: the run's root key (default ``PRNGKey(config.seed)``); member i of
            ``fit_stacked(..., key=k)`` equals ``fit(..., key=setup.member_keys(k, K)[i])``.
        objective: ``(params, model_state, batch, key, hparams) -> (loss, aux)``
            (``ml_adv.training.objectives``; default: supervised classification).
        example_mask: ``[N]`` bool: train only on these rows of ``train``, a fixed-capacity
            pool. Epochs keep ``N // batch_size`` steps (the padded ones are skipped), so a
            growing labelled set (active learning) never recompiles.
        hooks: ``Hook`` objects called around every epoch (``EpochCallback(fn)`` stops a run
            when ``fn(record)`` says so; PBT is a hook of ``fit_stacked``).
        hparam_schedule: ``[(first_epoch, {name: value}), ...]`` (``HparamSchedule``): from
            each first epoch on, these traced hyper-parameters take these values; nothing
            recompiles (the trainer replays a PBT schedule with it).

    Returns:
        A ``FitResult``.

    Example:
        >>> from ml_adv.data.builtin import load_digits
        >>> from ml_adv.models import make_spec
        >>> train, test = load_digits().split((0.8, 0.2))
        >>> spec = make_spec("mlp", input_shape=train.example_shape, input_kind="image",
        ...                  num_classes=10, size="tiny")
        >>> result = fit(spec, train, TrainConfig(epochs=2), val=test, run=Run(progress=False))
        >>> len(result.history)
        2
    """
    config = TrainConfig() if config is None else config
    spec = check_model(model)
    train, val = as_model_inputs(spec, train), as_model_inputs(spec, val)
    validate_fit_inputs(spec, train, val, config)
    run = Run.of(run)
    monitor, mode = monitor_for(config, val is not None)
    streams = train if isinstance(train, dict) else None
    sizes = tuple(len(d) for d in streams.values()) if streams else (len(train),)
    example = next(iter(streams.values())).x[:1] if streams else train.x[:1]

    def make_setup(mesh):
        return init_run(
            model,
            config,
            example_x=example,
            steps_per_epoch=sizes[0] // config.batch_size,
            key=key,
            objective=objective,
            init_params=init_params,
            mesh=mesh,
        )

    mesh, config, setup, plan = _layout(
        config, make_setup, train, streams, sizes, example, example_mask, run
    )
    schedule = check_hparam_schedule(hparam_schedule, state_hyperparams(setup.state), config.epochs)
    all_hooks = [HparamSchedule(schedule)] if schedule else []
    runner = _single_runner(setup, config)
    loop = TrainingLoop(
        setup,
        config,
        plan,
        runner,
        members=None,
        monitor=monitor,
        mode=mode,
        evaluate=(lambda state: evaluate(state, val, config)) if val is not None else None,
        hooks=[*all_hooks, *hooks],
        run=run,
    )
    loop.state = continue_from(setup.state, init_state)
    state = _run_single(loop, train, mesh)
    return _fit_result(loop, runner, state, run)


def _single_runner(setup, config: TrainConfig) -> EpochRunner:
    """The runner of a one-model epoch (scanned or per step, as configured)."""
    return EpochRunner(
        setup.train_step,
        scan=config.scan_epochs,
        guard_steps=setup.guard_steps,
        unroll=config.scan_unroll,
    )


def _run_single(loop: TrainingLoop, train, mesh) -> TrainState:
    """Open the run, place the data (and the state on a mesh), train, and close the run."""
    try:
        loop.open()
        data = device_data(train, mesh)
        if mesh is not None:
            loop.placement = parallel.replicated(mesh)
            loop.state = loop.place(loop.state)
        loop.run(data)
        return loop.finish()
    finally:
        loop.close()


def _fit_result(loop: TrainingLoop, runner: EpochRunner, state: TrainState, run: Run) -> FitResult:
    return FitResult(
        state=state,
        history=loop.histories[0],
        best_epoch=int(loop.tracker.best_epoch[0]),
        best_value=float(loop.tracker.best_value[0]),
        stopped_early=bool(loop.stopped[0] or loop.stopped_by_hook),
        resumed_from=loop.resumed_from,
        compile_seconds=runner.compile_seconds,
        steps_per_second=loop.steps_per_second,
        nonfinite_steps=loop.nonfinite_total,
        run_dir=str(run.directory.path) if run.directory is not None else None,
    )


def _layout(config, make_setup, train, streams, sizes, example, example_mask, run: Run):
    """``(mesh, config, setup, plan)``: data parallelism as configured (``"auto"``: measured)."""
    mesh = None
    if config.data_parallel is True:
        mesh = parallel.data_mesh()
        parallel.check_divisible(config.batch_size, mesh)
    setup = make_setup(mesh)
    mask = check_example_mask(example_mask, train, config)
    plan = EpochPlan(
        sizes, config.batch_size, setup.shuffle_key, tuple(streams) if streams else None, mask
    )
    if (
        config.data_parallel == DATA_PARALLEL_AUTO
    ):  # one device or the batch over the cores, as measured
        recorded = core_split.recorded_layout(run)
        mesh, setup = core_split.resolve(
            config,
            setup,
            make_setup,
            lambda m: device_data(train, m),
            plan,
            plan.streams,
            example,
            recorded,
        )
        config = config.replace(data_parallel=mesh is not None)  # what the run folder records
    return mesh, config, setup, plan
