"""The host loop of a PBT study (``ml_adv.hpo.pbt``): short named steps.

``PBTRun.run``: open the journal, replay the journaled intervals, restore the state of the
last one, then for each remaining interval train ``ready`` epochs of the one compiled
stacked program, evaluate, decide (exploit/explore), checkpoint and journal; finally
journal one trial per member and write the study outputs.

Fresh and resumed runs go through the same bookkeeping (``Lineage.apply(record)``), so
what a resumed study reports is computed from exactly the records an uninterrupted one
wrote.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from ml_adv.hpo.pbt import (
    RECORD,
    PBTOptions,
    check_study,
    exploit,
    interval_bounds,
    next_generation,
    rank,
    set_member_values,
)


class Lineage:
    """Per-member host bookkeeping, rebuilt from interval records.

    ``schedule[i]``: the segments ``{"epochs": [start, end], "config", "trained_by"}`` that
    trained the weights member i holds (inherited on a copy); ``copies[i]``: the copies it
    received; ``curves[i]``: its score after each interval.
    """

    def __init__(self, members: int):
        self.schedule: list[list[dict[str, Any]]] = [[] for _ in range(members)]
        self.copies: list[list[dict[str, Any]]] = [[] for _ in range(members)]
        self.curves: list[list[float | None]] = [[] for _ in range(members)]

    def apply(self, record: dict[str, Any]) -> None:
        start, end = record["epochs"]
        for i, config in enumerate(record["configs"]):
            self.schedule[i].append({"epochs": [start, end], "config": config, "trained_by": i})
            self.curves[i].append(record["scores"][i])
        if record.get("sources") is None:
            return
        inherited = [copy.deepcopy(self.schedule[j]) for j in record["sources"]]
        for i, j in enumerate(record["sources"]):
            if j != i:
                self.schedule[i] = inherited[i]
                self.copies[i].append({"epoch": end, "copied_from": j, "source_score": record["scores"][j],
                                       "own_score": record["scores"][i], "config": record["next_configs"][i]})


class PBTRun:
    """One PBT study: the stacked state, its journal and checkpoints."""

    def __init__(self, study, options: PBTOptions):
        self.study, self.options = study, options
        self.members = study.max_trials
        self.epochs = int(study.objective.base_config.epochs)
        self.bounds = interval_bounds(self.epochs, options.ready)
        self.journal = self.checkpointer = None
        self.state = self.model = None

    # -------------------------------------------------------------- set-up
    def initial_configs(self) -> list[dict[str, Any]]:
        from ml_adv.hpo.methods import make_searcher

        searcher = make_searcher("random", self.study.space, self.members, seed=self.study.seed)
        return [searcher.ask().config for _ in range(self.members)]

    def open_journal(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """``(interval records, finished trials)`` already journaled (empty for a fresh study)."""
        from ml_adv.hpo.journal import TrialJournal

        if self.study.run_dir is None:
            return [], []
        self.journal = TrialJournal(self.study.run_dir.path_for("trials.jsonl"))
        trials = self.journal.start(self.study.header())
        return self.journal.read_records(RECORD), trials

    def build(self, configs: list[dict[str, Any]]):
        """The stacked state, epoch runner, plan and data (compiles nothing yet)."""
        from ml_adv.training import parallel
        from ml_adv.training.host import EpochRunner
        from ml_adv.training.loop import device_data
        from ml_adv.training.sampling import StackedPlan
        from ml_adv.training.setup import init_run
        from ml_adv.training.stacked import check_stacked_inputs

        spec, config, train, val = self.study.objective.build(configs[0])
        check_stacked_inputs(self.members, train, config, None, False)
        hparams = {n: [float(c[n]) for c in configs] for n in configs[0]}
        setup = init_run(spec, config, example_x=train.x[:1], steps_per_epoch=len(train) // config.batch_size,
                         members=self.members, member_hparams=hparams, freeze_on_nonfinite=True)
        shared_key = jax.random.split(setup.shuffle_key[0], 2)[1]
        self.plan = StackedPlan(len(train), config.batch_size, setup.shuffle_key, shared_key)
        # As in fit_stacked: with several devices, splitting the members is a measured layout;
        # the runner places the state each epoch, so exploit's gather never forces a recompile.
        self.runner = EpochRunner(setup.train_step, stacked=True, guard_steps=setup.guard_steps, member_mesh=(
            parallel.member_mesh(self.members) if config.spread_members else None))
        self.data, self.val, self.config, self.spec = device_data(train), val, config, spec
        self.state = setup.state

    def open_checkpoints(self, records: list[dict[str, Any]]) -> None:
        from ml_adv.checkpointing import RunCheckpointer

        if self.study.run_dir is None:
            return
        self.checkpointer = RunCheckpointer(self.study.run_dir.checkpoint_dir, asynchronous=False)
        if records:
            items, _ = self.checkpointer.restore(self.state.checkpoint_items(), step=records[-1]["epochs"][1])
            self.state = self.state.with_checkpoint_items(items)

    # -------------------------------------------------------------- one interval
    def train(self, start: int, end: int, bar) -> np.ndarray:
        """Run epochs ``[start, end)``; returns the last epoch's ``[P]`` train loss."""
        from ml_adv.training.host import summarize

        loss = np.full(self.members, np.nan)
        for epoch in range(start, end):
            order, active = self.plan.draw(epoch)
            self.state, metrics = self.runner(self.state, self.data, order, active)
            loss = summarize(metrics, axis=0)["train_loss"]
            if bar is not None:
                bar.update(1)
        return loss

    def evaluate(self) -> dict[str, np.ndarray]:
        from ml_adv.training.stacked import member_metrics, stacked_logits

        logits = stacked_logits(self.state.apply_fn, {"params": self.state.params, **self.state.model_state},
                                self.val.x, chunk=self.config.eval_batch_size,
                                mixed_precision=self.config.mixed_precision)
        return member_metrics(logits, self.val.y)

    def interval(self, k: int, configs: list[dict[str, Any]], bar) -> dict[str, Any]:
        """Train, score, exploit/explore (all but the last interval), checkpoint, journal."""
        started = time.perf_counter()
        start, end = self.bounds[k]
        train_loss = self.train(start, end, bar)
        failed = np.asarray(jax.device_get(self.state.frozen), bool)
        metrics = self.evaluate()
        scores = np.where(failed, np.nan, metrics["accuracy"])
        val_loss = np.where(failed, np.nan, metrics["loss"])
        last = k == len(self.bounds) - 1
        sources, next_configs = (None, None) if last else next_generation(
            scores, val_loss, configs, self.study.space, self.options, self.study.seed, k)
        record = {"interval": k, "epochs": [start, end], "configs": configs, "scores": _floats(scores),
                  "val_loss": _floats(val_loss), "train_loss": _floats(np.where(failed, np.nan, train_loss)),
                  "failed": failed.tolist(), "sources": None if sources is None else sources.tolist(),
                  "next_configs": next_configs, "stopped": not last and sources is None,
                  "seconds": round(time.perf_counter() - started, 4)}
        if last:  # the best member's weights, saved before the record that says the study is done
            self.keep_best_model(scores, val_loss)
        if sources is not None:
            self.state = set_member_values(exploit(self.state, sources), next_configs)
            # The state the next interval starts from, saved before its record. A checkpoint already
            # there was written by a run killed before its record: the same state (same seed), kept.
            if self.checkpointer is not None and not Path(self.checkpointer.path("latest", end)).exists():
                self.checkpointer.save(end, self.state.checkpoint_items(), {"interval": k, "members": self.members})
                self.checkpointer.wait()
        if self.journal is not None:
            self.journal.append_record(RECORD, record)
        return record

    def keep_best_model(self, scores, val_loss) -> None:
        from ml_adv.training.stacked import unstack_tree
        from ml_adv.training.trained_model import TrainedModel

        best = int(rank(scores, val_loss)[0])
        if not np.isfinite(scores[best]):
            return
        variables = {"params": self.state.params, **self.state.model_state}
        self.model = TrainedModel(self.spec, unstack_tree(variables, best), mixed_precision=self.config.mixed_precision)
        self.model.metrics = {"val_accuracy": float(scores[best]), "val_loss": float(val_loss[best]), "member": best}
        if self.study.run_dir is not None:
            self.model.save(self.study.run_dir.model_dir, overwrite=True)

    # -------------------------------------------------------------- the study
    def run(self, on_interval=None):
        started = time.perf_counter()
        records, finished = self.open_journal()
        lineage = Lineage(self.members)
        for record in records:
            lineage.apply(record)
        done = len(records) == len(self.bounds) or (records and records[-1]["stopped"])
        try:
            if not done:
                configs = records[-1]["next_configs"] if records else self.initial_configs()
                self.build(configs)
                self.open_checkpoints(records)
                bar = _progress(self.study.progress, self.epochs, self.bounds[len(records)][0])
                try:
                    for k in range(len(records), len(self.bounds)):
                        record = self.interval(k, configs, bar)
                        records.append(record)
                        lineage.apply(record)
                        if on_interval is not None:
                            on_interval(record)
                        if record["sources"] is None:
                            break
                        configs = record["next_configs"]
                finally:
                    if bar is not None:
                        bar.close()
        finally:
            if self.checkpointer is not None:
                self.checkpointer.close()
        return self.finish(records, lineage, finished, time.perf_counter() - started)

    def finish(self, records, lineage: Lineage, finished, wall: float):
        """Journal one trial per member (those not journaled yet) and build the ``StudyResult``."""
        from ml_adv.hpo.report import write_study_outputs
        from ml_adv.hpo.result import StudyResult

        resumed = {t["trial"] for t in finished}
        trials = [self.member_trial(i, records, lineage) for i in range(self.members)]
        for trial in trials:
            if self.journal is not None and trial["trial"] not in resumed:
                self.journal.append(trial)
        last = records[-1]
        first = int(rank([np.nan if v is None else v for v in last["scores"]],
                         [np.nan if v is None else v for v in last["val_loss"]])[0])
        best = trials[first] if trials[first]["status"] == "ok" else None
        if best is not None and self.model is None and self.study.run_dir is not None \
                and self.study.run_dir.model_dir.exists():  # a finished study started again
            from ml_adv.training.trained_model import TrainedModel

            self.model = TrainedModel.load(self.study.run_dir.model_dir)
        details = {"pbt": {"options": _options(self.options), "epochs": self.epochs,
                           "intervals": [{k: r[k] for k in ("interval", "epochs", "scores", "sources")}
                                         for r in records],
                           "best_schedule": best["schedule"] if best else None}}
        result = StudyResult(self.study.method, dict(best["config"]) if best else None,
                             best["score"] if best else None, best["trial"] if best else None, trials,
                             len(resumed), 0, wall,
                             str(self.study.run_dir.path) if self.study.run_dir is not None else None,
                             details=details, model=self.model)
        self.study.trials = trials
        if self.study.run_dir is not None:
            write_study_outputs(self.study.run_dir, result, self.study.header())
        return result

    def member_trial(self, i: int, records, lineage: Lineage) -> dict[str, Any]:
        last = records[-1]
        score, failed = last["scores"][i], last["failed"][i] or last["scores"][i] is None
        metrics = {"val_accuracy": score, "val_loss": last["val_loss"][i], "train_loss": last["train_loss"][i],
                   "epochs_run": last["epochs"][1]}
        return {"trial": i, "batch": 0, "batch_asked": self.members, "config": dict(last["configs"][i]),
                "status": "failed" if failed else "ok", "score": None if failed else score,
                "metrics": metrics, "intermediate": [c for c in lineage.curves[i] if c is not None],
                "error": "non-finite loss in the last interval: the member was frozen" if failed else None,
                "seconds": round(sum(r["seconds"] for r in records) / self.members, 4),
                "loss": None if failed else -float(score), "schedule": lineage.schedule[i],
                "lineage": lineage.copies[i], "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S")}


def _floats(values) -> list[float | None]:
    return [float(v) if math.isfinite(float(v)) else None for v in np.asarray(values, float)]


def _options(options: PBTOptions) -> dict[str, Any]:
    return {"ready": options.ready, "fraction": options.fraction,
            "resample_probability": options.resample_probability, "perturb_factors": list(options.perturb_factors)}


def _progress(enabled: bool | None, total: int, initial: int):
    if enabled is False:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="pbt epochs", unit="epoch",
                disable=None if enabled is None else not enabled)


def run_pbt_study(study, *, on_interval=None):
    """Run (or resume) PBT for ``study`` (method ``pbt``); ``on_interval(record)`` is called after
    each interval is journaled (progress hooks, tests)."""
    return PBTRun(study, check_study(study)).run(on_interval)
