"""Experiment: a K-member deep ensemble against a single model on digits, before and after \
temperature scaling.

For each seed, K members of one architecture train as one program
(``AdvancedModelEnsemble.train``: ``fit_stacked``, each member its own initialisation and
data order) on 85% of the digits training split; the other 15% is the validation split
for temperature scaling; the built-in test split is evaluated once. The single-model
baseline is each member on its own (the stacked core trains member i exactly as ``fit``
would with member i's key, up to float32 rounding: tested in the core), so every seed gives
K single-model measurements at no extra cost; their per-seed mean is the seed's
single-model score. Temperature scaling is fitted on the validation split (never on test),
separately for each single model and once for the ensemble, on its averaged probabilities
(``softmax(log p_mean / T)``: pool, then calibrate). ECE: 15 equal-width bins over the
top-class probability (Guo et al., 2017), ``ml_adv.ensembles.calibration``.

    python experiments/ensembles.py [--arch cnn] [--size small] [--members 5]
        [--seeds 0 1 2 3 4] [--epochs 15]

Reports accuracy, NLL, Brier and ECE (mean +- std over seeds) and the ensemble's relative
change in NLL and ECE against the single model, next to the published anchor
(uncertainty-baselines, CIFAR-10 WRN-28-10, 4 members: NLL -28%, ECE -57%), the issue's
goal (NLL -25%, ECE -40%) and SEED.md's "95% improvement" claim (which names no metric, so
it cannot be measured as written). Writes ``runs/ensembles/report.json``.
"""

from __future__ import annotations

import argparse
import statistics
import time

METRICS = ("accuracy", "nll", "brier", "ece", "confidence")
ANCHOR = {"nll": -0.28, "ece": -0.57}
GOAL = {"nll": -0.25, "ece": -0.40}


def run_seed(args, seed: int) -> dict:
    """Test metrics of the single models (each member) and of the ensemble, before and after
    temperature."""
    from ml_adv import AdvancedModelEnsemble, TrainConfig, load_dataset, make_spec
    from ml_adv.data.catalog import view_for

    name = view_for("digits", args.arch)
    full, test = load_dataset(name, split="train"), load_dataset(name, split="test")
    train, val = full.split((0.85, 0.15), seed=seed)
    spec = make_spec(
        args.arch,
        input_shape=train.example_shape,
        input_kind=train.input_kind,
        num_classes=train.num_classes,
        size=args.size,
    )
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        schedule="warmup_cosine",
        warmup_fraction=0.05,
        seed=seed,
    )
    t0 = time.perf_counter()
    ensemble = AdvancedModelEnsemble.train(spec, train, config, members=args.members, seed=seed)
    train_seconds = time.perf_counter() - t0
    # "confidence": the mean top-class probability on test; below the accuracy means underconfident.
    before = ensemble.get_ensemble_performance(test)
    before["ensemble"]["confidence"] = _confidence(ensemble.predict_proba(test))
    member_confidence = _confidence(ensemble.member_probabilities(test))
    calibration = ensemble.calibrate(val)
    after = ensemble.get_ensemble_performance(test)
    after["ensemble"]["confidence"] = _confidence(ensemble.predict_proba(test))
    singles_before = [
        {**m, "confidence": c} for m, c in zip(before["members"].values(), member_confidence)
    ]
    singles_after, temperatures = [], []
    for (
        model
    ) in ensemble.models:  # temperature scaling of each single model on the same validation split
        single = AdvancedModelEnsemble("averaging")
        single.add_model(model)
        temperatures.append(single.calibrate(val)["temperature"])
        singles_after.append(
            {
                **single.get_ensemble_performance(test)["ensemble"],
                "confidence": _confidence(single.predict_proba(test)),
            }
        )
    mean = lambda rows: {m: statistics.fmean(r[m] for r in rows) for m in METRICS}  # noqa: E731
    return {
        "seed": seed,
        "single": mean(singles_before),
        "single_calibrated": mean(singles_after),
        "ensemble": before["ensemble"],
        "ensemble_calibrated": after["ensemble"],
        "members": singles_before,
        "member_temperatures": temperatures,
        "ensemble_temperature": calibration["temperature"],
        "diversity": {
            k: before["diversity"][k]
            for k in (
                "mean_disagreement",
                "mean_kl_to_ensemble",
                "mean_js_to_ensemble",
                "ambiguity",
            )
        },
        "train_seconds": round(train_seconds, 1),
    }


def _confidence(probs):
    """Mean top-class probability over the last-but-one axis (per member for ``[K, N, C]``)."""
    import numpy as np

    mean = np.asarray(probs).max(-1).mean(-1)
    return mean.tolist() if mean.ndim else float(mean)


def summarise(per_seed: list[dict]) -> dict:
    rows = {}
    for key in ("single", "single_calibrated", "ensemble", "ensemble_calibrated"):
        values = {m: [s[key][m] for s in per_seed] for m in METRICS}
        rows[key] = {
            m: {"mean": statistics.fmean(v), "std": statistics.pstdev(v)} for m, v in values.items()
        }
    change, paired = {}, {}
    for ens, single in (("ensemble", "single"), ("ensemble_calibrated", "single_calibrated")):
        change[ens] = {
            m: rows[ens][m]["mean"] / rows[single][m]["mean"] - 1 for m in ("nll", "brier", "ece")
        }
        # The same change seed by seed (ensemble vs that seed's single models): its spread
        # says how much of the mean change is noise of a 359-example test split.
        ratios = {
            m: [s[ens][m] / s[single][m] - 1 for s in per_seed] for m in ("nll", "brier", "ece")
        }
        paired[ens] = {
            m: {"mean": statistics.fmean(v), "std": statistics.pstdev(v)} for m, v in ratios.items()
        }
    temperatures = {
        "ensemble": [s["ensemble_temperature"] for s in per_seed],
        "single": [t for s in per_seed for t in s["member_temperatures"]],
    }
    return {
        "rows": rows,
        "relative_change_vs_single": change,
        "per_seed_relative_change": paired,
        "temperatures": {
            k: {"mean": statistics.fmean(v), "min": min(v), "max": max(v)}
            for k, v in temperatures.items()
        },
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="cnn")
    parser.add_argument("--size", default="small")
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--run-dir", default="runs/ensembles")
    args = parser.parse_args(argv)

    from ml_adv.rundir import RunDirectory

    started = time.perf_counter()
    rd = RunDirectory(args.run_dir)
    per_seed = []
    for seed in args.seeds:
        result = run_seed(args, seed)
        per_seed.append(result)
        rd.append_jsonl("seeds.jsonl", result)  # kept if a later seed fails
        print(
            f"seed {seed}: single NLL {result['single']['nll']:.4f} "
            f"ECE {result['single']['ece']:.4f} | "
            f"ensemble NLL {result['ensemble']['nll']:.4f} ECE {result['ensemble']['ece']:.4f} "
            f"({result['train_seconds']} s)",
            flush=True,
        )
    summary = summarise(per_seed)
    rd.write_report(
        {
            "experiment": "ensembles",
            "settings": vars(args),
            "summary": summary,
            "per_seed": per_seed,
            "anchor": ANCHOR,
            "goal": GOAL,
            "wall_seconds": round(time.perf_counter() - started, 1),
        }
    )
    _print(summary, args)
    return 0


def _print(summary: dict, args) -> None:
    print(
        f"\n{args.members}-member {args.arch} ({args.size}) deep ensemble vs single model, "
        "digits test split, "
        f"{len(args.seeds)} seeds (mean +- std)\n"
    )
    print("| model | " + " | ".join(METRICS) + " |")
    print("|---|" + "---|" * len(METRICS))
    labels = {
        "single": "single model",
        "single_calibrated": "single model + temperature",
        "ensemble": "deep ensemble",
        "ensemble_calibrated": "deep ensemble + temperature",
    }
    for key, label in labels.items():
        row = summary["rows"][key]
        print(
            f"| {label} | "
            + " | ".join(f"{row[m]['mean']:.4f} +- {row[m]['std']:.4f}" for m in METRICS)
            + " |"
        )
    print("\n| relative change vs single model | NLL | Brier | ECE |\n|---|---|---|---|")
    for key, label in (
        ("ensemble", "ensemble (both uncalibrated)"),
        ("ensemble_calibrated", "ensemble + T vs single + T"),
    ):
        c = summary["relative_change_vs_single"][key]
        print(f"| {label} | {c['nll']:+.1%} | {c['brier']:+.1%} | {c['ece']:+.1%} |")
    print(
        f"| published anchor (CIFAR-10 WRN-28-10, 4 members) | {ANCHOR['nll']:+.0%} | - "
        f"| {ANCHOR['ece']:+.0%} |"
    )
    print(f"| goal | {GOAL['nll']:+.0%} | - | {GOAL['ece']:+.0%} |")
    print(
        "\n| per-seed relative change (mean +- std over seeds) | NLL | Brier | ECE |"
        "\n|---|---|---|---|"
    )
    for key, label in (
        ("ensemble", "ensemble (both uncalibrated)"),
        ("ensemble_calibrated", "ensemble + T vs single + T"),
    ):
        c = summary["per_seed_relative_change"][key]
        print(
            f"| {label} | "
            + " | ".join(
                f"{c[m]['mean']:+.1%} +- {c[m]['std']:.1%}" for m in ("nll", "brier", "ece")
            )
            + " |"
        )
    t = summary["temperatures"]
    print(
        f"\nfitted temperatures (validation split): ensemble {t['ensemble']['mean']:.3f} "
        f"[{t['ensemble']['min']:.3f}, {t['ensemble']['max']:.3f}], "
        f"single models {t['single']['mean']:.3f} "
        f"[{t['single']['min']:.3f}, {t['single']['max']:.3f}] (T < 1 sharpens, T > 1 softens)"
    )
    print()


if __name__ == "__main__":
    raise SystemExit(main())
