"""Experiment: every architecture on the real digits data, several seeds.

Trains each family with the trainer facade on its digits view (images for CNN,
flat pixels for MLP, rows for LSTM, pixel tokens for Transformer/BERT) and
prints the test accuracy per seed. The settings are the ones
``tests/test_e2e_digits.py`` uses, whose thresholds come from this table.

    python experiments/digits_architectures.py [--seeds 0 1 2] [--arch cnn lstm]

Writes ``runs/digits_architectures/report.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

SETTINGS = {  # arch -> (epochs, learning rate); batch 32, warmup-cosine, 5% warmup
    "cnn": (15, 2e-3),
    "mlp": (20, 2e-3),
    "lstm": (20, 3e-3),
    "transformer": (15, 1e-3),
    "bert": (25, 1e-3),
}


def main() -> None:
    from ml_adv import AdvancedCustomModelTrainer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arch", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--out", default="runs/digits_architectures")
    args = parser.parse_args()
    out = Path(args.out)
    rows = []
    for arch in args.arch:
        epochs, lr = SETTINGS[arch]
        accuracies, seconds = [], []
        for seed in args.seeds:
            trainer = AdvancedCustomModelTrainer(arch, run_root=out / "runs")
            started = time.perf_counter()
            result = trainer.train(
                {
                    "data": "digits",
                    "epochs": epochs,
                    "learning_rate": lr,
                    "batch_size": 32,
                    "schedule": "warmup_cosine",
                    "warmup_fraction": 0.05,
                    "seed": seed,
                    "run_name": f"{arch}-s{seed}",
                }
            )
            seconds.append(time.perf_counter() - started)
            accuracies.append(result.metrics["test_accuracy"])
            print(
                f"{arch} seed {seed}: test accuracy {accuracies[-1]:.4f} ({seconds[-1]:.1f} s)",
                flush=True,
            )
        rows.append(
            {
                "arch": arch,
                "epochs": epochs,
                "learning_rate": lr,
                "seeds": args.seeds,
                "test_accuracy": accuracies,
                "mean": statistics.mean(accuracies),
                "seconds": seconds,
            }
        )
    print("\n| architecture | epochs | test accuracy per seed | mean |\n|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['arch']} | {r['epochs']} | "
            f"{' / '.join(f'{a:.3f}' for a in r['test_accuracy'])} | {r['mean']:.3f} |"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
