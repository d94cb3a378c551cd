"""Study figures: best score so far against trials, and parallel coordinates of the trials.

matplotlib through ``ml_adv.plots._pyplot`` (Agg backend, imported lazily).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ml_adv.plots import _pyplot, save_figure


def plot_best_so_far(trials: Sequence[dict[str, Any]], path: str | Path, *, title: str = "") -> str:
    """Each trial's score (dots; failed trials as crosses at the bottom) and the best so far (line)."""
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4))
    xs = [t["trial"] + 1 for t in trials]
    scores = [t["score"] if t["status"] == "ok" else None for t in trials]
    ok = [(x, s) for x, s in zip(xs, scores) if s is not None]
    pruned = [(t["trial"] + 1, t["score"]) for t in trials if t["status"] == "pruned" and t["score"] is not None]
    best, running = [], -math.inf
    for s in scores:
        running = max(running, s) if s is not None else running
        best.append(running if math.isfinite(running) else np.nan)
    if ok:
        ax.scatter(*zip(*ok), s=18, alpha=0.6, label="trial score")
    if pruned:
        ax.scatter(*zip(*pruned), s=18, marker="v", alpha=0.6, label="pruned (last score)")
    failed = [x for x, t in zip(xs, trials) if t["status"] == "failed"]
    if failed:
        low = min((s for _, s in ok), default=0.0)
        ax.scatter(failed, [low] * len(failed), marker="x", color="red", label="failed")
    ax.step(xs, best, where="post", color="black", label="best so far")
    ax.set(xlabel="trial", ylabel="validation score")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


def plot_parallel_coordinates(trials: Sequence[dict[str, Any]], space, path: str | Path, *, title: str = "") -> str:
    """One line per finished trial across the parameters (log axes in log units), coloured by score."""
    plt = _pyplot()
    from ml_adv.hpo.space import Categorical

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    done = [t for t in trials if t["status"] in ("ok", "pruned") and t["score"] is not None]
    names = space.names
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * (len(names) + 1)), 4.5))
    if done:
        columns = [_normalise(space[n], [t["config"][n] for t in done]) for n in names]
        scores = np.array([t["score"] for t in done], dtype=float)
        columns.append((scores - scores.min()) / (np.ptp(scores) or 1.0))
        cmap = plt.get_cmap("viridis")
        colour = (scores - scores.min()) / (np.ptp(scores) or 1.0)
        for row, c in zip(np.stack(columns, axis=1), colour):
            ax.plot(range(len(names) + 1), row, color=cmap(c), alpha=0.7)
    labels = []
    for n in names:
        p = space[n]
        if isinstance(p, Categorical):
            labels.append(f"{n}\n" + " | ".join(str(c) for c in p.choices))
        else:
            labels.append(f"{n}\n[{p.low:g}, {p.high:g}]{' log' if p.log else ''}")
    ax.set_xticks(range(len(names) + 1), labels + ["score"], fontsize=8)
    ax.set_yticks([])
    ax.set_ylim(-0.05, 1.05)
    ax.grid(axis="x", alpha=0.5)
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


def _normalise(param, values: list) -> np.ndarray:
    from ml_adv.hpo.space import Categorical

    if isinstance(param, Categorical):
        index = {repr(c): i for i, c in enumerate(param.choices)}
        pos = np.array([index[repr(tuple(v) if isinstance(v, list) else v)] for v in values], dtype=float)
        return pos / max(1, len(param.choices) - 1)
    v = np.asarray(values, dtype=float)
    lo, hi = float(param.low), float(param.high)
    if param.log:
        v, lo, hi = np.log(v), math.log(lo), math.log(hi)
    return (v - lo) / (hi - lo)
