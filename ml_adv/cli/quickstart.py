"""Train a small CNN on scikit-learn's real handwritten digits (the README's first command).

The same options as `ml-adv train`, with the quickstart's defaults: a small CNN,
40 epochs, batch 32, learning rate 2e-3 with a warmup-cosine schedule, written to
runs/quickstart/. It shows a progress bar on a terminal, prints a results table
and resumes from the last checkpoint when run again; --fresh starts over.
"""

from __future__ import annotations

import argparse

from ml_adv.cli import train

# A fixed, short budget: compile with the fast CPU settings (cli/main.py).
SHORT_RUN = True

QUICKSTART_DEFAULTS = {
    "arch": "cnn",
    "data": "digits",
    "epochs": 40,
    "batch_size": 32,
    "lr": 2e-3,
    "schedule": "warmup_cosine",
    "run_dir": "runs/quickstart",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The train options with the quickstart's defaults."""
    train.add_arguments(parser, defaults=QUICKSTART_DEFAULTS)


def run(args: argparse.Namespace) -> int:
    """Exactly ``ml-adv train`` with the parsed quickstart options."""
    return train.run(args)
