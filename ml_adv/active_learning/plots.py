"""Active-learning figures: accuracy against labels used, one mean +- std band per strategy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def plot_strategy_curves(
    summary: dict[str, dict[str, Any]],
    path: str | Path,
    *,
    title: str = "",
    targets: tuple[float, ...] = (),
) -> str:
    """Learning curves of several strategies with seed bands; returns the PNG path.

    Args:
        summary: ``{strategy: {"labels": [L], "mean": [L], "std": [L], "seeds": int}}``
            (``simulate.summarise_curves``).
        targets: accuracies drawn as dotted horizontal lines (e.g. 0.9, 0.95).
    """
    from ml_adv.plots import save_figure, subplots

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = subplots(figsize=(7, 4.5))
    for name, curve in summary.items():
        labels, mean, std = (np.asarray(curve[k], float) for k in ("labels", "mean", "std"))
        (line,) = ax.plot(
            labels, mean, marker="o", markersize=3, label=f"{name} ({curve['seeds']} seeds)"
        )
        ax.fill_between(
            labels, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0
        )
    for target in targets:
        ax.axhline(target, color="grey", linestyle=":", linewidth=1)
    ax.set(
        xlabel="labels used",
        ylabel="test accuracy",
        title=title or "active learning: accuracy vs labels",
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return save_figure(fig, path)
