"""Experiment: labels needed to reach 90% and 95% test accuracy on digits, per strategy.

Simulates the active-learning loop with an oracle (the held-back true labels) for random,
entropy, margin, least-confidence, BALD (MC dropout), core-set and hybrid sampling over 5
seeds: a small MLP, 20 random initial labels, 10 rounds of 20. It is the ``ml-adv
active-learn`` command with the issue's settings; it writes ``runs/active_learning/``
(report.json with labels-to-target per strategy, plots/learning_curve.png with mean +- std
bands) and prints the table.

    python experiments/active_learning.py [--seeds 5] [--rounds 10]
"""

from __future__ import annotations

import argparse
import sys

STRATEGIES = "random,entropy,margin,least_confidence,bald,coreset,hybrid"


def main() -> int:
    from ml_adv.cli import main as cli

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="5")
    parser.add_argument("--rounds", default="10")
    parser.add_argument("--run-dir", default="runs/active_learning")
    args = parser.parse_args()
    return cli(
        [
            "active-learn",
            "--data",
            "digits",
            "--strategies",
            STRATEGIES,
            "--seeds",
            args.seeds,
            "--rounds",
            args.rounds,
            "--query-size",
            "20",
            "--initial",
            "20",
            "--run-dir",
            args.run_dir,
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
