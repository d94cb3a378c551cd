"""The library's figures: written as PNGs without touching pyplot's global state."""

from __future__ import annotations

import matplotlib

from ml_adv.plots import plot_learning_curves


def test_a_plot_leaves_the_users_backend_alone(tmp_path):
    """A notebook's inline backend must survive the library's plots (it once forced Agg)."""
    history = [
        {"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.2 / e, "train_accuracy": 0.5 + e / 10}
        for e in (1, 2, 3)
    ]
    before = dict.__getitem__(matplotlib.rcParams, "backend")
    path = plot_learning_curves(history, tmp_path / "curves.png", title="t")
    assert dict.__getitem__(matplotlib.rcParams, "backend") == before
    with open(path, "rb") as png:
        assert png.read(8) == b"\x89PNG\r\n\x1a\n"
