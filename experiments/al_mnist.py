"""Experiment: active learning on MNIST, Gal, Islam and Ghahramani (2017), Table 1.

Labels needed to reach 10% and 5% test error for random, max entropy, least confidence
(variation ratios), margin, BALD, core-set and hybrid acquisition, with the paper's CNN
(``cnn``/``"gal"``), 20 class-balanced initial labels, 10 acquired per round, up to 1,000,
and a 100-image validation set. Every (strategy, seed) loop runs in lockstep
through ``ml_adv.active_learning.stacked_simulation.simulate_stacked``: each round trains all
live loops' models as one stacked program, then each loop scores a random 2,000-image
subset of its pool (MC dropout, T = 20, for BALD, max entropy and variation ratios).

    python -m experiments.al_mnist [--seeds 0 1 2] [--quick] [--paper]

Each loop writes ``experiments/results/active_learning/<strategy>-seed<k>.json`` as soon as
it ends. The run checkpoints after every round into ``runs/al_mnist/`` (``--run-dir``), so a
killed run resumes where it stopped. ``--paper`` runs the paper's training protocol
(from scratch every round for 50 epochs of batch 128, the whole test set, every loop to
1,000 labels): too slow for a 2-core CPU, meant for a GPU.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from experiments.common import (
    done,
    fmt_mean_std,
    markdown_table,
    mean_std,
    parser,
    results_root,
    use_shared_data,
    write_result,
)

EXPERIMENT = "active_learning"
SUMMARY_KEY = "active_learning"
TITLE = "Active learning on MNIST (Gal, Islam and Ghahramani 2017, Table 1)"
COMMAND = "python -m experiments.al_mnist --seeds 0 1 2"
ROOT = Path(__file__).resolve().parents[1]

STRATEGIES = ("random", "entropy", "least_confidence", "margin", "bald", "coreset", "hybrid")
LABELS = {
    "random": "random",
    "entropy": "max entropy",
    "least_confidence": "least confidence (variation ratios)",
    "margin": "margin",
    "bald": "BALD",
    "coreset": "core-set",
    "hybrid": "hybrid (entropy-weighted core-set)",
}
# Gal et al. (2017), Table 1: labels to reach 10% / 5% test error (MNIST).
PAPER = {
    "bald": (145, 335),
    "least_confidence": (120, 295),
    "entropy": (165, 355),
    "random": (255, 835),
}
LEVELS = (("10pct", 0.10), ("5pct", 0.05))
BALD_GOAL = 420  # within 1.25x of the paper's 335
SAVING_GOAL = 0.50  # SEED.md: "50%+ reduction in labeling requirements"
FIGURE = "al_mnist_learning_curves.png"
# --quick: the paper's CNN layout (conv-conv 4x4 VALID, pool, dropouts, dense) at a fraction of
# its width: the seven stacked loops' rounds then run in seconds, not tens of seconds.
QUICK_CNN = {"conv_features": (4, 4), "dense_features": (16,)}


def protocol(args) -> Any:
    """The ``StackedSimulationConfig`` of this run (quick, CPU-scaled default, or the paper's)."""
    from ml_adv import TrainConfig
    from ml_adv.active_learning.stacked_simulation import StackedSimulationConfig

    # One scan per member on a CPU: the vmapped (grouped) 4x4 convs of this CNN ran 1.6-2.5x
    # slower there (measured on a 2-core EPYC); batched members on an accelerator.
    layout = "scan" if _on_cpu() else "vmap"
    if args.quick:
        return StackedSimulationConfig(
            train=TrainConfig(batch_size=16),
            initial=20,
            query_size=10,
            max_labels=40,
            validation=20,
            pool_subset=100,
            mc_samples=3,
            steps_per_round=4,
            stop_error=0.05,
            test_subset=None,
            members_as=layout,
            checkpoint_every=1,
        )
    if args.paper:
        return StackedSimulationConfig(
            train=TrainConfig(batch_size=128, learning_rate=1e-3),
            steps_per_round=None,
            epochs_per_round=50,
            warm_start=False,
            stop_error=None,
            test_subset=None,
            members_as=layout,
        )
    return StackedSimulationConfig(
        train=TrainConfig(batch_size=32, learning_rate=1e-3),
        steps_per_round=args.steps,
        warm_start=True,
        stop_error=0.05,
        test_subset=2000,
        members_as=layout,
    )


def _on_cpu() -> bool:
    import jax

    return jax.default_backend() == "cpu"


def load_data(quick: bool):
    """MNIST train/test (the image view the CNN reads); a small slice in quick mode."""
    from ml_adv import load_dataset
    from ml_adv.data.catalog import view_for

    name = view_for("mnist", "cnn")
    train, test = load_dataset(name, split="train"), load_dataset(name, split="test")
    if quick:
        train = train.subset(np.arange(min(len(train), 400)))
        test = test.subset(np.arange(min(len(test), 200)))
    return train, test


def loop_results(result) -> dict[str, Any]:
    """What one loop's result file holds."""
    out = {f"labels_to_{tag}_error": result.labels_to_error(level) for tag, level in LEVELS}
    out.update(
        curve=result.curve,
        acquired=result.acquired,
        stopped_early=result.stopped_early,
        final_labels=result.curve[-1]["labels"] if result.curve else None,
    )
    return out


def run(args) -> int:
    from ml_adv import AdvancedModelArchitecture
    from ml_adv.active_learning.stacked_simulation import simulate_stacked

    root = results_root(args)
    todo = [
        (s, seed)
        for seed in args.seeds
        for s in args.strategies
        if not done(root, EXPERIMENT, s, seed, args)
    ]
    if not todo:
        print(f"every loop already has a result in {root / EXPERIMENT} (--force reruns)")
        return 0
    train, test = load_data(args.quick)
    overrides = QUICK_CNN if args.quick else {}
    spec = AdvancedModelArchitecture("cnn", size="gal", **overrides).design_architecture(
        28, train.num_classes, input_shape=train.example_shape
    )
    config = protocol(args)
    run_dir = args.run_dir or (
        root / EXPERIMENT / "checkpoint" if args.quick else ROOT / "runs" / "al_mnist"
    )
    facts = {
        "dataset": "mnist",
        "train_images": len(train),
        "test_images": len(test),
        "model": "cnn/gal",
        **({"model_overrides": QUICK_CNN} if args.quick else {}),
        "paper_protocol": bool(args.paper),
        **config.to_dict(),
    }
    start = time.perf_counter()

    def on_finish(result) -> None:
        write_result(
            root,
            EXPERIMENT,
            result.strategy,
            result.seed,
            protocol=facts,
            results=loop_results(result),
            seconds=time.perf_counter() - start,
            quick=args.quick,
        )
        print(
            f"{result.name}: 10% error at {result.labels_to_error(0.10)} labels, "
            f"5% at {result.labels_to_error(0.05)}",
            flush=True,
        )

    def on_round(round_index: int, info: dict[str, Any]) -> None:
        secs = " ".join(f"{k} {v:.0f}s" for k, v in info["seconds"].items())
        print(
            f"round {round_index}: {info['labels']} labels, {info['live']} loops ({secs}; "
            f"{time.perf_counter() - start:.0f}s so far)",
            flush=True,
        )

    simulate_stacked(
        spec,
        train,
        test,
        loops=todo,
        config=config,
        checkpoint_dir=run_dir,
        on_finish=on_finish,
        on_round=on_round,
        resume=not args.force,
    )
    print(f"results in {root / EXPERIMENT}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    p.add_argument(
        "--strategies",
        nargs="+",
        default=list(STRATEGIES),
        choices=STRATEGIES,
        help="strategies to run (default: all seven)",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=50,
        help="optimizer steps per round (warm start, batch 32) in the CPU protocol",
    )
    p.add_argument(
        "--paper",
        action="store_true",
        help="the paper's training protocol (from scratch, 50 epochs of batch 128, whole test set, "
        "every loop to 1,000 labels): for a GPU",
    )
    p.add_argument(
        "--run-dir", type=Path, default=None, help="checkpoint folder (default runs/al_mnist)"
    )
    args = p.parse_args(argv)
    use_shared_data()
    return run(args)


# --- the EXPERIMENTS.md section -------------------------------------------------------------


def _per_strategy(records: list[dict]) -> dict[str, list[dict]]:
    by: dict[str, list[dict]] = {}
    for r in sorted(records, key=lambda r: r["seed"]):
        by.setdefault(r["setting"], []).append(r)
    return {s: by[s] for s in STRATEGIES if s in by} | {
        s: v for s, v in by.items() if s not in STRATEGIES
    }


def summary_part(records: list[dict]) -> dict[str, dict[str, list[int | None]]]:
    """``{"labels_to_10pct_error": {strategy: [per seed]}, "labels_to_5pct_error": {...}}``."""
    by = _per_strategy(records)
    return {
        f"labels_to_{tag}_error": {
            s: [r["results"][f"labels_to_{tag}_error"] for r in rs] for s, rs in by.items()
        }
        for tag, _ in LEVELS
    }


def _cell(values: list[int | None]) -> str:
    """``"335 ± 15 (320, 350, 335)"``: mean ± std, then per seed (``never``: not reached)."""
    if not values:
        return "-"
    seeds = ", ".join("never" if v is None else str(v) for v in values)
    return f"{fmt_mean_std(values, '{:.0f}')} ({seeds})"


def table(part: dict) -> str:
    ten, five = part["labels_to_10pct_error"], part["labels_to_5pct_error"]
    rows = []
    for s in ten:
        paper = PAPER.get(s, (None, None))
        rows.append(
            [LABELS.get(s, s), _cell(ten[s]), paper[0] or "-", _cell(five[s]), paper[1] or "-"]
        )
    return markdown_table(
        [
            "strategy",
            "labels to 10% error (ours, mean ± std; per seed)",
            "paper",
            "labels to 5% error (ours)",
            "paper",
        ],
        rows,
    )


def goals(part: dict, max_labels: int) -> list[str]:
    """The issue's two goals, checked on the per-seed numbers."""
    five = part["labels_to_5pct_error"]
    lines = []
    bald = five.get("bald", [])
    if bald:
        mean, _, n = mean_std(bald)
        met = n == len(bald) and mean <= BALD_GOAL
        lines.append(
            f"BALD reaches 5% error with ≤ {BALD_GOAL} labels (1.25x the paper's 335): "
            f"mean {'-' if mean is None else f'{mean:.0f}'} over {n}/{len(bald)} seeds: "
            f"**{'met' if met else 'not met'}**."
        )
    random = five.get("random", [])
    others = {
        s: v for s, v in five.items() if s != "random" and v and all(x is not None for x in v)
    }
    if random and others:
        best = min(others, key=lambda s: mean_std(others[s])[0])
        censored = sum(v is None for v in random)
        # A random loop that never reached 5% counts as max_labels: random then looks better
        # than it is, so the ratio below is an upper bound (conservative for the claim).
        random_mean = float(np.mean([max_labels if v is None else v for v in random]))
        ratio = mean_std(others[best])[0] / random_mean
        note = (
            f" ({censored} random seed(s) never reached 5% within {max_labels} labels and count as "
            f"{max_labels}, so the ratio is an upper bound)"
            if censored
            else ""
        )
        lines.append(
            f"At 5% error the best strategy ({LABELS.get(best, best)}, mean "
            f"{mean_std(others[best])[0]:.0f}) needs {ratio:.0%} of random's labels (mean "
            f'{random_mean:.0f}){note}; SEED.md claims ≤ {SAVING_GOAL:.0%} ("50%+ reduction in '
            f'labeling requirements"): **{"met" if ratio <= SAVING_GOAL else "not met"}**.'
        )
    return lines


def curves_figure(records: list[dict], path: Path) -> Path | None:
    """Test accuracy against labels: mean over the seeds with a point there, ± one std band."""
    if not records:
        return None
    from ml_adv.plots import subplots

    fig, ax = subplots(figsize=(7.5, 4.8))
    for s, rs in _per_strategy(records).items():
        points: dict[int, list[float]] = {}
        for r in rs:
            for p in r["results"]["curve"]:
                points.setdefault(int(p["labels"]), []).append(100.0 * (1.0 - p["test_error"]))
        labels = np.array(sorted(points))
        mean = np.array([np.mean(points[n]) for n in labels])
        std = np.array([np.std(points[n], ddof=1) if len(points[n]) > 1 else 0.0 for n in labels])
        (line,) = ax.plot(labels, mean, label=LABELS.get(s, s), lw=1.4)
        ax.fill_between(labels, mean - std, mean + std, color=line.get_color(), alpha=0.18, lw=0)
    for level in (90, 95):
        ax.axhline(level, color="0.5", ls="--", lw=0.8)
    ax.set_xlabel("labelled images")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(max(0.0, ax.get_ylim()[0]), 100)
    ax.set_title("MNIST active learning: mean ± std over seeds")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def _training_difference(facts: dict) -> str:
    train = facts["train"]
    if facts.get("paper_protocol"):
        return (
            f"each round retrains from scratch for {facts['epochs_per_round']} epochs of batch "
            f"{train['batch_size']} (Adam, learning rate {train['learning_rate']:g}); the paper "
            "retrains from scratch but states no epoch count (the authors' public Keras script "
            "trains 5 epochs per round). Weight decay is fixed at "
            f"{train['weight_decay']:g} instead of being optimised on the validation set"
        )
    return (
        "each round starts from the loop's previous weights (a warm start with a fresh Adam "
        f"state, learning rate {train['learning_rate']:g}) and trains {facts['steps_per_round']} "
        f"steps of batch {train['batch_size']} on its labelled set (reshuffled passes; the first "
        "20 labels are tiled to fill a batch), where the paper retrains from scratch after every "
        "acquisition: retraining from scratch to convergence 98 times per loop does not fit a "
        "2-core CPU (`--paper` runs it on an accelerator). The random row shows how this "
        "training compares with the paper's. Weight decay is fixed at "
        f"{train['weight_decay']:g} instead of being optimised on the validation set each round "
        "(the authors' public script uses L2 3.5/N on the dense layer)"
    )


def differences(facts: dict) -> list[str]:
    """Every way the protocol of the records (``facts``) differs from the paper's."""
    test = (
        "the whole 10,000-image test set"
        if facts.get("test_subset") is None
        else f"a fixed random subset of {facts['test_subset']:,} test images per seed (standard "
        "error ~0.5 points at 5% error), not all 10,000, to bound the evaluation cost"
    )
    pool = (
        f"each round scores a random subset of {facts['pool_subset']:,} unlabelled images per "
        "loop (as the authors' public script does), not the whole pool"
        if facts.get("pool_subset")
        else "each round scores the whole pool"
    )
    items = [
        _training_difference(facts),
        f"test error is measured on {test}, by the deterministic network (dropout off); the "
        "paper, as we read it, evaluates with MC dropout at test time",
        pool,
        f"MC dropout uses T = {facts['mc_samples']} passes for BALD, max entropy and variation "
        "ratios (scored on the mean of the passes' probabilities); margin and the hybrid's "
        "entropy weights, which are not in the paper, use one deterministic pass",
        f"the validation set ({facts['validation']} images per seed, never in the pool) is "
        "recorded each round, not used to tune anything",
        "margin, core-set and the hybrid are not in the paper's Table 1 (no published figure)",
    ]
    if facts.get("stop_error") is not None:
        items.append(
            f"a loop stops acquiring once its test error is ≤ {facts['stop_error']:.0%} (after "
            "that no number in the table can change), so its curve ends there; the paper's curves "
            f"run to {facts['max_labels']:,} labels. A loop that never gets there runs to "
            f"{facts['max_labels']:,} labels and counts as never (null)"
        )
    items.append(
        "loops with the same seed share the initial labels, the validation and test subsets and "
        "each round's random keys (paired comparisons); each seed has its own"
    )
    return items


def _cost(records: list[dict]) -> str:
    """How long each seed's run took and where (the last loop to finish ends a seed's run)."""
    machine = records[0].get("machine", {})
    seeds = sorted({r["seed"] for r in records})
    hours = [max(r.get("seconds", 0.0) for r in records if r["seed"] == s) / 3600 for s in seeds]
    per_seed = ", ".join(f"{h:.1f} h (seed {s})" for s, h in zip(seeds, hours))
    return (
        f"Each seed's loops ran in lockstep in one process: {per_seed} on "
        f"{machine.get('cpu', '?')} ({machine.get('cores', '?')} cores, "
        f"{machine.get('backend', '?')}), from the run's start (or its last resume) to its last "
        "loop's end."
    )


def summarize(records: list[dict], figures: Path) -> tuple[str, dict]:
    """The EXPERIMENTS.md section and the summary.json part, both computed from ``records``."""
    part = summary_part(records)
    if not records:
        return "No results yet: run the command above.", part
    facts = records[0]["protocol"]
    seeds = sorted({r["seed"] for r in records})
    figure = curves_figure(records, Path(figures) / FIGURE)
    lines = [
        f"Seeds {', '.join(map(str, seeds))}; MNIST, the {facts['model']} CNN; "
        f"{facts['initial']} class-balanced initial labels, {facts['query_size']} per round, up to "
        f'{facts["max_labels"]:,}. Labels needed to reach 10% and 5% test error ("never": not '
        f"within {facts['max_labels']:,} labels); the paper's Table 1 beside ours:",
        "",
        table(part),
        "",
    ]
    lines += [f"- {g}" for g in goals(part, int(facts["max_labels"]))]
    if figure is not None:
        lines += [
            "",
            f"![learning curves](experiments/results/figures/{FIGURE})",
            "",
            "Test accuracy against labels, mean ± one std over the seeds that have a point at "
            "that label count (a loop's curve ends when it reaches 5% error, so the tail of a mean "
            "is over the slower seeds only).",
        ]
    lines += ["", _cost(records), "", "Differences from the paper's protocol:", ""]
    lines += [f"- {d}" for d in differences(facts)]
    return "\n".join(lines), part


if __name__ == "__main__":
    sys.exit(main())
