"""PBT as a hook of the one training loop (``ml_adv.training.loop``): ``PBTHook``.

At the end of every interval of ``ready`` epochs the hook scores the members on the validation
split, decides who copies whom and the new values (``pbt.next_generation``), applies them
between two calls of the same compiled epoch (``pbt.exploit``, ``pbt.set_member_values``),
and journals the interval. The loop checkpoints every epoch; the journal record of an
interval is written before the checkpoint of the state it leads to, so a resumed study never
has a state without its record: a journaled interval that is trained again (killed between
the two) reapplies its recorded decision, and a checkpoint past the last journaled interval
is not used (the loop goes back to that interval's end). Fresh and resumed runs go through
the same bookkeeping (``Lineage.apply(record)``). ``ml_adv.hpo.pbt_study`` runs a study with
it.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any

import jax
import numpy as np

from ml_adv.hpo.pbt import (
    RECORD,
    PBTOptions,
    exploit,
    interval_bounds,
    next_generation,
    rank,
    set_member_values,
)
from ml_adv.training.loop import STOP, Hook


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
                self.copies[i].append(
                    {
                        "epoch": end,
                        "copied_from": j,
                        "source_score": record["scores"][j],
                        "own_score": record["scores"][i],
                        "config": record["next_configs"][i],
                    }
                )


class PBTHook(Hook):
    """Exploit/explore at every interval end, journaled; the loop does the rest."""

    def __init__(
        self, study, options: PBTOptions, records: list[dict[str, Any]], journal, on_interval=None
    ):
        self.study, self.options, self.journal, self.on_interval = (
            study,
            options,
            journal,
            on_interval,
        )
        self.epochs = int(study.objective.base_config.epochs)
        self.bounds = interval_bounds(self.epochs, options.ready)
        self.ends = {end: k for k, (_, end) in enumerate(self.bounds)}
        self.records = records
        self.lineage = Lineage(study.max_trials)
        for record in records:
            self.lineage.apply(record)
        self.configs = records[-1]["next_configs"] if records else None
        self.model, self.val, self.fresh = None, None, None

    def on_open(self, loop) -> None:
        """A checkpoint past the last journaled interval end is not used: go back to that end."""
        journaled = self.records[-1]["epochs"][1] if self.records else 0
        if any(journaled < end <= loop.start_epoch for end in self.ends):
            loop.restore(journaled)

    def on_epoch_end(self, loop, epoch: int, records):
        k = self.ends.get(epoch + 1)
        if k is None:
            return None
        started = time.perf_counter()
        if k < len(self.records):  # trained again after a kill: its decision is journaled already
            record = self.records[k]
        else:
            record = self._decide(loop, k, started)
        self.fresh = record if k == len(self.records) else None
        if self.fresh is not None:
            if self.journal is not None:
                self.journal.append_record(RECORD, record)
            self.records.append(record)
            self.lineage.apply(record)
        if record["sources"] is None:
            return STOP
        self.configs = record["next_configs"]
        return set_member_values(
            exploit(loop.state, np.asarray(record["sources"])), record["next_configs"]
        )

    def after_save(self, loop, epoch: int) -> None:
        if self.fresh is not None and self.on_interval is not None:
            record, self.fresh = self.fresh, None
            self.on_interval(record)

    def _decide(self, loop, k: int, started: float) -> dict[str, Any]:
        """Score the members, choose the next generation, keep the best model at the end."""
        start, end = self.bounds[k]
        failed = np.asarray(jax.device_get(loop.state.frozen), bool)
        metrics = self._evaluate(loop)
        scores = np.where(failed, np.nan, metrics["accuracy"])
        val_loss = np.where(failed, np.nan, metrics["loss"])
        train_loss = np.array([h[-1]["train_loss"] if h else np.nan for h in loop.histories])
        last = k == len(self.bounds) - 1
        configs = self.configs
        sources, next_configs = (
            (None, None)
            if last
            else next_generation(
                scores, val_loss, configs, self.study.space, self.options, self.study.seed, k
            )
        )
        if last:  # the best member's weights, saved before the record that says the study is done
            self._keep_best_model(loop, scores, val_loss)
        return {
            "interval": k,
            "epochs": [start, end],
            "configs": configs,
            "scores": _floats(scores),
            "val_loss": _floats(val_loss),
            "train_loss": _floats(np.where(failed, np.nan, train_loss)),
            "failed": failed.tolist(),
            "sources": None if sources is None else sources.tolist(),
            "next_configs": next_configs,
            "stopped": not last and sources is None,
            "seconds": round(time.perf_counter() - started, 4),
        }

    def _evaluate(self, loop) -> dict[str, np.ndarray]:
        from ml_adv.training.stacked import member_metrics, stacked_logits

        state, config = loop.state, loop.config
        logits = stacked_logits(
            state.apply_fn,
            {"params": state.params, **state.model_state},
            self.val.x,
            chunk=config.eval_batch_size,
            mixed_precision=config.mixed_precision,
        )
        return member_metrics(logits, self.val.y)

    def _keep_best_model(self, loop, scores, val_loss) -> None:
        from ml_adv.training.stacked import unstack_tree
        from ml_adv.training.trained_model import TrainedModel

        best = int(rank(scores, val_loss)[0])
        if not np.isfinite(scores[best]):
            return
        variables = {"params": loop.state.params, **loop.state.model_state}
        self.model = TrainedModel(
            loop.setup.spec,
            unstack_tree(variables, best),
            mixed_precision=loop.config.mixed_precision,
        )
        self.model.metrics = {
            "val_accuracy": float(scores[best]),
            "val_loss": float(val_loss[best]),
            "member": best,
        }
        if self.study.run_dir is not None:
            self.model.save(self.study.run_dir.model_dir, overwrite=True)


def _floats(values) -> list[float | None]:
    return [float(v) if math.isfinite(float(v)) else None for v in np.asarray(values, float)]
