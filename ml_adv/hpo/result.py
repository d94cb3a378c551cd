"""``StudyResult``: what a study returns (its own module so the sequential and population
loops both build it without importing each other)."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass
class StudyResult:
    """Outcome of a study: the best configuration, its validation score, every trial."""

    method: str
    best_config: dict[str, Any] | None
    best_score: float | None
    best_trial: int | None
    trials: list[dict[str, Any]]
    resumed_trials: int
    replay_mismatches: int
    wall_seconds: float
    run_dir: str | None = None
    details: dict[str, Any] = dataclasses.field(
        default_factory=dict
    )  # method-specific, e.g. PBT's lineage
    model: Any = (
        None  # the best trained model, for methods that keep one (pbt: its best member's weights)
    )

    @property
    def history(self) -> list[float | None]:
        """Best-so-far score after each trial (None until a trial succeeds)."""
        out, best = [], None
        for t in self.trials:
            if t["status"] == "ok" and (best is None or t["score"] > best):
                best = t["score"]
            out.append(best)
        return out

    def summary(self) -> dict[str, Any]:
        statuses = [t["status"] for t in self.trials]
        return {
            "method": self.method,
            "best_config": self.best_config,
            "best_score": self.best_score,
            "best_trial": self.best_trial,
            "trials": len(self.trials),
            "ok": statuses.count("ok"),
            "failed": statuses.count("failed"),
            "pruned": statuses.count("pruned"),
            "resumed_trials": self.resumed_trials,
            "replay_mismatches": self.replay_mismatches,
            "wall_seconds": round(self.wall_seconds, 3),
            "best_so_far": self.history,
            "run_dir": self.run_dir,
            **self.details,
        }
