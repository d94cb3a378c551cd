"""Study figures: best score so far against trials, and parallel coordinates of the trials.

matplotlib figures made outside pyplot (``ml_adv.plots.subplots``, imported lazily).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ml_adv.plots import save_figure, subplots


def plot_best_so_far(trials: Sequence[dict[str, Any]], path: str | Path, *, title: str = "") -> str:
    """Each trial's score (dots; failed trials as crosses at the bottom) and the best so far
    (line).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = subplots(figsize=(7, 4))
    xs = [t["trial"] + 1 for t in trials]
    scores = [t["score"] if t["status"] == "ok" else None for t in trials]
    ok = [(x, s) for x, s in zip(xs, scores) if s is not None]
    pruned = [
        (t["trial"] + 1, t["score"])
        for t in trials
        if t["status"] == "pruned" and t["score"] is not None
    ]
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


def plot_parallel_coordinates(
    trials: Sequence[dict[str, Any]], space, path: str | Path, *, title: str = ""
) -> str:
    """One line per finished trial across the parameters (log axes in log units), coloured
    by score.
    """
    from ml_adv.hpo.space import Categorical

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    done = [t for t in trials if t["status"] in ("ok", "pruned") and t["score"] is not None]
    names = space.names
    fig, ax = subplots(figsize=(max(6, 1.6 * (len(names) + 1)), 4.5))
    if done:
        columns = [_normalise(space[n], [t["config"][n] for t in done]) for n in names]
        scores = np.array([t["score"] for t in done], dtype=float)
        columns.append((scores - scores.min()) / (np.ptp(scores) or 1.0))
        from matplotlib import colormaps

        cmap = colormaps["viridis"]
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
        pos = np.array(
            [index[repr(tuple(v) if isinstance(v, list) else v)] for v in values], dtype=float
        )
        return pos / max(1, len(param.choices) - 1)
    v = np.asarray(values, dtype=float)
    lo, hi = float(param.low), float(param.high)
    if param.log:
        v, lo, hi = np.log(v), math.log(lo), math.log(hi)
    return (v - lo) / (hi - lo)


def plot_pbt_lineage(
    intervals: Sequence[dict[str, Any]],
    schedule: Sequence[dict[str, Any]] | None,
    space,
    path: str | Path,
    *,
    title: str = "",
) -> str:
    """PBT: each member's validation score after every interval, a dashed line for each copy
    (source's score -> the recipient's next score); and the best member's schedule per parameter."""
    from ml_adv.hpo.space import Categorical

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    numeric = [p for p in space.params if not isinstance(p, Categorical)]
    fig, axes = subplots(1, 1 + len(numeric), figsize=(6 + 3.5 * len(numeric), 4))
    ax = axes[0]
    ends = [r["epochs"][1] for r in intervals]
    members = len(intervals[0]["scores"]) if intervals else 0
    for i in range(members):
        ys = [np.nan if r["scores"][i] is None else r["scores"][i] for r in intervals]
        ax.plot(
            ends,
            ys,
            marker="o",
            markersize=3,
            alpha=0.8,
            label=f"member {i}" if members <= 8 else None,
        )
    for k, r in enumerate(intervals[:-1]):
        for i, j in enumerate(r["sources"] or []):
            nxt = intervals[k + 1]["scores"][i]
            if i != j and r["scores"][j] is not None and nxt is not None:
                ax.plot(
                    [ends[k], ends[k + 1]], [r["scores"][j], nxt], "k--", linewidth=0.8, alpha=0.5
                )
    ax.set(xlabel="epoch", ylabel="validation accuracy", title="members (dashed: copies)")
    ax.grid(alpha=0.3)
    if 1 < members <= 8:
        ax.legend(fontsize=7, loc="lower right")
    for ax, p in zip(axes[1:], numeric):
        if schedule:
            xs = [s["epochs"][0] for s in schedule] + [schedule[-1]["epochs"][1]]
            ys = [s["config"][p.name] for s in schedule]
            ax.step(xs, ys + ys[-1:], where="post")
        ax.set(xlabel="epoch", ylabel=p.name, title=f"best member's {p.name}", ylim=(p.low, p.high))
        if p.log:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    return save_figure(fig, path, title=title)
