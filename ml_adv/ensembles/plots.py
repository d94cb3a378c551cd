"""Reliability diagrams for ensembles (matplotlib, imported lazily, outside pyplot)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def plot_reliability(
    curves: dict[str, dict[str, Any]], path: str | Path, *, title: str = ""
) -> str:
    """One panel per entry of ``curves``
    (``{label: reliability_bins(...) as host arrays, plus 'ece'}``).

    Bars show accuracy per confidence bin, the dashed diagonal is perfect calibration and
    the gap between bar top and diagonal is what ECE averages. Returns the PNG path.
    """
    from ml_adv.plots import save_figure, subplots

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = subplots(1, len(curves), figsize=(4 * len(curves), 4), squeeze=False)
    for ax, (label, rb) in zip(axes[0], curves.items()):
        count = np.asarray(rb["count"])
        bins = len(count)
        centers = (np.arange(bins) + 0.5) / bins
        filled = count > 0
        ax.bar(
            centers[filled],
            np.asarray(rb["accuracy"])[filled],
            width=1 / bins,
            edgecolor="black",
            alpha=0.7,
            label="accuracy",
        )
        ax.plot(
            centers[filled],
            np.asarray(rb["confidence"])[filled],
            "o",
            color="tab:red",
            ms=3,
            label="confidence",
        )
        ax.plot([0, 1], [0, 1], "--", color="gray")
        ax.set(
            xlim=(0, 1),
            ylim=(0, 1),
            xlabel="confidence",
            ylabel="accuracy",
            title=f"{label}\nECE {float(rb['ece']):.4f}",
        )
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    return save_figure(fig, path, title=title)
