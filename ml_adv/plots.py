"""Matplotlib figures written into ``runs/<name>/plots/``.

matplotlib is imported lazily, and figures are made outside pyplot (``subplots`` below): no
backend is chosen or switched, so ``import ml_adv`` stays fast, plotting works without a
display, and a notebook's inline figures keep working after the library has plotted.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def subplots(nrows: int = 1, ncols: int = 1, *, figsize=None, **kwargs):
    """``(figure, axes)`` like ``pyplot.subplots``, but the figure belongs to no pyplot state.

    Why not pyplot: choosing the Agg backend there (as this module once did) switched a
    Jupyter kernel's inline backend off, so a user's own ``plt.show()`` drew nothing after
    the first library plot. A bare ``Figure`` renders to PNG with Agg by itself.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def save_figure(fig, path: str | Path, *, title: str = "") -> str:
    """Title (optional), tight layout, write a 100-dpi PNG: the end of every plot here."""
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return str(path)


def plot_learning_curves(
    history: Sequence[dict[str, Any]], path: str | Path, *, title: str = ""
) -> str:
    """Loss and accuracy per epoch (train and validation) side by side; returns the PNG path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    epochs = [r["epoch"] for r in history]
    fig, (ax_loss, ax_acc) = subplots(1, 2, figsize=(10, 4))
    for key, style in (("train_loss", "-"), ("val_loss", "--")):
        if all(key in r for r in history):
            ax_loss.plot(epochs, [r[key] for r in history], style, label=key.replace("_", " "))
    for key, style in (("train_accuracy", "-"), ("val_accuracy", "--")):
        if all(key in r for r in history):
            ax_acc.plot(epochs, [r[key] for r in history], style, label=key.replace("_", " "))
    ax_loss.set(xlabel="epoch", ylabel="loss", yscale="log")
    ax_acc.set(xlabel="epoch", ylabel="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    return save_figure(fig, path, title=title)
