"""Matplotlib figures written into ``runs/<name>/plots/``.

matplotlib is imported lazily and with the non-interactive Agg backend, so
``import ml_adv`` stays fast and plotting works on machines without a display.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, *, title: str = "") -> str:
    """Title (optional), tight layout, write a 100-dpi PNG, close: the end of every plot here."""
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)
    return str(path)


def plot_learning_curves(
    history: Sequence[dict[str, Any]], path: str | Path, *, title: str = ""
) -> str:
    """Loss and accuracy per epoch (train and validation) side by side; returns the PNG path."""
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    epochs = [r["epoch"] for r in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
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
