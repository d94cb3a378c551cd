"""2-D embeddings of source and target features, before and after adaptation (no pyplot)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def pca_2d(
    panels: dict[str, tuple[np.ndarray, np.ndarray]],
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each panel's ``(source, target)`` features projected on their own pooled top-2 PCA axes."""
    from sklearn.decomposition import PCA

    out = {}
    for label, (fs, ft) in panels.items():
        pooled = np.concatenate([fs, ft])
        z = PCA(n_components=2, random_state=0).fit_transform(pooled)
        out[label] = (z[: len(fs)], z[len(fs) :])
    return out


def plot_domain_embeddings(
    panels: dict[str, tuple[np.ndarray, np.ndarray]],
    path: str | Path,
    *,
    title: str = "",
    subtitles: dict[str, str] | None = None,
) -> str:
    """One scatter per panel (``{label: (source_features, target_features)}``), PCA to 2-D."""
    from ml_adv.plots import save_figure, subplots

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    projected = pca_2d(panels)
    fig, axes = subplots(1, len(projected), figsize=(5 * len(projected), 4.5), squeeze=False)
    for ax, (label, (zs, zt)) in zip(axes[0], projected.items()):
        ax.scatter(zs[:, 0], zs[:, 1], s=6, alpha=0.5, label="source", color="tab:blue")
        ax.scatter(zt[:, 0], zt[:, 1], s=6, alpha=0.5, label="target", color="tab:orange")
        ax.set(
            title=label + (f"\n{subtitles[label]}" if subtitles and label in subtitles else ""),
            xlabel="PC 1",
            ylabel="PC 2",
        )
        ax.legend(loc="best", markerscale=3)
        ax.grid(alpha=0.3)
    return save_figure(fig, path, title=title)
