"""Experiment: hyper-parameter search methods at equal budget, on digits (CNN) and a tabular task.

Every method searches the same space (learning rate, log scale; label smoothing) with the
same number of configurations, on a validation split carved from the training data.
The best configuration is then retrained on the same training part and evaluated once
on the held-out test split. Methods: bayesian, genetic, random, grid_search (3 x 3 grid
in its stated order), population (successive halving over stacked programs: the same
number of configurations, most trained for fewer epochs), and Optuna's default TPE
sampler as the peer (``pip install -e ".[bench]"``; skipped if Optuna is missing).

    python experiments/hpo_methods.py [--tasks digits_cnn breast_cancer] [--seeds 0 1 2]
        [--trials 9]
    python experiments/hpo_methods.py --pbt [--pbt-arch mlp] [--population 8] [--epochs 12]
        [--ready 2]

``--pbt`` compares, at an equal budget of member-epochs (P x epochs), population based
training (``method="pbt"``, P members, exploit/explore every ``--ready`` epochs), successive
halving (``population``, as many configurations as fit in the budget) and random search
(P configurations, each trained ``--epochs``: P sequential ``fit`` calls; with the same seed
they are exactly PBT's initial members), on digits; it reports the best validation
accuracy, the test accuracy (PBT: its best member's weights; the others: the best
configuration retrained) and wall times, PBT's (one stacked program) against random
search's (P sequential fits of the same epochs). Writes ``runs/hpo_pbt/report.json``.

Tasks: ``digits_cnn`` (scikit-learn's 8x8 digits, tiny CNN) and ``breast_cancer``
(scikit-learn's Wisconsin breast-cancer table, 30 standardised features, tiny MLP;
standardised with the training part's statistics). Writes
``runs/hpo_methods/report.json`` and prints mean +- std over seeds of the best
validation accuracy, the test accuracy of the retrained best configuration and the
search's wall time.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

from ml_adv.rundir import Run

METHODS = ("bayesian", "genetic", "random", "grid_search", "population", "optuna_tpe")
TASKS = {"digits_cnn": {"arch": "cnn", "epochs": 6}, "breast_cancer": {"arch": "mlp", "epochs": 20}}


def task_data(task: str):
    """``(train, test)`` ArrayDatasets: the built-in digits split, or a stratified 80/20
    breast-cancer split."""
    import numpy as np
    from sklearn.datasets import load_breast_cancer

    from ml_adv.data import ArrayDataset, load_dataset

    if task == "digits_cnn":
        return load_dataset("digits", split="train"), load_dataset("digits", split="test")
    table = load_breast_cancer()
    full = ArrayDataset(
        table.data.astype(np.float32), table.target.astype(np.int32), name="breast_cancer"
    )
    train, test = full.split((0.8, 0.2), seed=0)
    mean, std = train.x.mean(0), train.x.std(0) + 1e-6  # training statistics only
    scale = lambda d: ArrayDataset(((d.x - mean) / std).astype(np.float32), d.y, name=d.name)  # noqa: E731
    return scale(train), scale(test)


def space():
    from ml_adv.hpo.space import Float, SearchSpace

    return SearchSpace(
        [Float("learning_rate", 1e-4, 3e-2, log=True), Float("label_smoothing", 0.0, 0.2)]
    )


def optuna_search(objective, search_space, trials: int, seed: int) -> dict:
    """Optuna's default TPE sampler on the same objective (run_trial) and budget."""
    import optuna

    from ml_adv.hpo.objective import run_trial
    from ml_adv.hpo.space import Categorical, Float, Int

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def fn(trial):
        config = {}
        for p in search_space.params:
            if isinstance(p, Float):
                config[p.name] = trial.suggest_float(p.name, p.low, p.high, log=p.log)
            elif isinstance(p, Int):
                config[p.name] = trial.suggest_int(p.name, p.low, p.high, log=p.log)
            elif isinstance(p, Categorical):
                config[p.name] = trial.suggest_categorical(p.name, list(p.choices))
        outcome = run_trial(objective, config)
        return outcome["score"] if outcome["status"] == "ok" else 0.0

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(fn, n_trials=trials)
    return {"best_config": dict(study.best_params), "best_score": float(study.best_value)}


def run_one(task: str, method: str, seed: int, trials: int, train, test) -> dict:
    from ml_adv.hpo.objective import TrainingObjective
    from ml_adv.hpo.study import Study
    from ml_adv.training.config import TrainConfig
    from ml_adv.training.loop import fit
    from ml_adv.training.trained_model import TrainedModel

    settings = TASKS[task]
    objective = TrainingObjective.from_data(
        train,
        architectures=(settings["arch"],),
        size="tiny",
        split_seed=seed,
        base_config=TrainConfig(epochs=settings["epochs"], batch_size=32, seed=seed),
    )
    started = time.perf_counter()
    if method == "optuna_tpe":
        found = optuna_search(objective, space(), trials, seed)
    else:
        options = (
            {"grid_points": max(2, int(math.isqrt(trials)))} if method == "grid_search" else {}
        )
        result = Study(
            objective,
            space(),
            method=method,
            max_trials=trials,
            seed=seed,
            progress=False,
            method_options=options,
        ).run()
        found = {"best_config": result.best_config, "best_score": result.best_score}
    wall = time.perf_counter() - started
    spec, config, fit_train, val = objective.build(found["best_config"])
    final = fit(spec, fit_train, config, val=val, run=Run(progress=False))
    test_accuracy = TrainedModel(spec, final.state.variables()).evaluate(test)["accuracy"]
    return {
        "task": task,
        "method": method,
        "seed": seed,
        "trials": trials,
        "wall_seconds": wall,
        "best_val_accuracy": found["best_score"],
        "test_accuracy": float(test_accuracy),
        "best_config": found["best_config"],
    }


def sh_member_epochs(trials: int, epochs: int, eta: int = 3) -> int:
    """Member-epochs successive halving (``population``) spends on ``trials`` configurations."""
    from ml_adv.hpo.population import rung_epochs

    alive, total = trials, 0
    for e in rung_epochs(epochs, trials, eta):
        total += alive * e
        alive = max(1, alive // eta)
    return total


def pbt_compare(args) -> None:
    """PBT vs successive halving vs random search at P x epochs member-epochs, on digits."""
    import ml_adv.hpo.pbt_study  # noqa: F401  imports before the clock starts: walls are compile + train
    import ml_adv.hpo.population  # noqa: F401
    import ml_adv.training.stacked  # noqa: F401
    from ml_adv.data import load_dataset
    from ml_adv.hpo.objective import TrainingObjective
    from ml_adv.hpo.study import Study
    from ml_adv.training.config import TrainConfig
    from ml_adv.training.loop import fit
    from ml_adv.training.trained_model import TrainedModel

    view = "digits" if args.pbt_arch == "cnn" else "digits_flat"
    train, test = load_dataset(view, split="train"), load_dataset(view, split="test")
    budget = args.population * args.epochs
    sh_trials = max(
        n for n in range(1, 40 * args.population) if sh_member_epochs(n, args.epochs) <= budget
    )
    out = Path(
        args.out
        if args.out != "runs/hpo_methods"
        else f"runs/hpo_pbt_{args.pbt_arch}_{'_'.join(args.pbt_methods)}"
    )
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    for seed in args.seeds:
        objective = TrainingObjective.from_data(
            train,
            architectures=(args.pbt_arch,),
            size="tiny",
            split_seed=seed,
            base_config=TrainConfig(epochs=args.epochs, batch_size=32, seed=seed),
        )
        for method, trials, options in (
            ("pbt", args.population, {"ready": args.ready}),
            ("population", sh_trials, {}),
            ("random", args.population, {}),
        ):
            if method not in args.pbt_methods:
                continue
            started = time.perf_counter()
            result = Study(
                objective,
                space(),
                method=method,
                max_trials=trials,
                seed=seed,
                progress=False,
                method_options=options,
            ).run()
            wall = time.perf_counter() - started
            if method == "pbt":
                test_accuracy = result.model.evaluate(test)["accuracy"]
                copies = sum(len(t["lineage"]) for t in result.trials)
            else:
                spec, config, fit_train, val = objective.build(result.best_config)
                final = fit(spec, fit_train, config, val=val, run=Run(progress=False))
                test_accuracy = TrainedModel(spec, final.state.variables()).evaluate(test)[
                    "accuracy"
                ]
                copies = None
            member_epochs = (
                budget if method != "population" else sh_member_epochs(trials, args.epochs)
            )
            row = {
                "method": method,
                "seed": seed,
                "configurations": trials,
                "member_epochs": member_epochs,
                "best_val_accuracy": result.best_score,
                "test_accuracy": float(test_accuracy),
                "wall_seconds": wall,
                "best_config": result.best_config,
                "copies": copies,
            }
            runs.append(row)
            print(
                f"{method} seed {seed}: {trials} configurations, "
                f"{member_epochs} member-epochs, val "
                f"{row['best_val_accuracy']:.4f} test {row['test_accuracy']:.4f} ({wall:.1f} s)",
                flush=True,
            )
            (out / "report.json").write_text(
                json.dumps({"runs": runs, "args": vars(args)}, indent=2)
            )
    print(
        f"\ndigits {args.pbt_arch} (tiny), {args.epochs} epochs, "
        f"budget {budget} member-epochs, seeds {args.seeds}; "
        "mean ± std over seeds\n"
    )
    print(
        "| method | configurations | member-epochs | best val accuracy | test accuracy "
        "| wall, first seed (compiles) (s) | wall, later seeds (s) |"
    )
    print("|---|---|---|---|---|---|---|")
    summary = []
    for method in args.pbt_methods:
        rows = [r for r in runs if r["method"] == method]
        line = {
            "method": method,
            "configurations": rows[0]["configurations"],
            "member_epochs": rows[0]["member_epochs"],
            "val": _stat([r["best_val_accuracy"] for r in rows]),
            "test": _stat([r["test_accuracy"] for r in rows]),
            "wall_first": round(rows[0]["wall_seconds"], 2),
            "wall_warm": _stat([r["wall_seconds"] for r in rows[1:]]),
        }
        summary.append(line)
        print(
            f"| {method} | {line['configurations']} | {line['member_epochs']} "
            f"| {line['val']} | {line['test']} | "
            f"{line['wall_first']} | {line['wall_warm']} |"
        )
    (out / "report.json").write_text(
        json.dumps({"runs": runs, "summary": summary, "args": vars(args)}, indent=2)
    )


def _stat(values) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    return (
        f"{statistics.mean(values):.4f} ± "
        f"{statistics.stdev(values) if len(values) > 1 else 0.0:.4f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=9)
    parser.add_argument("--out", default="runs/hpo_methods")
    parser.add_argument(
        "--pbt", action="store_true", help="compare PBT, successive halving and random search"
    )
    parser.add_argument("--pbt-arch", default="mlp", choices=["mlp", "cnn"])
    parser.add_argument("--population", type=int, default=8, help="PBT members (P)")
    parser.add_argument(
        "--epochs", type=int, default=12, help="epochs per PBT member / random trial"
    )
    parser.add_argument(
        "--ready", type=int, default=2, help="PBT: epochs between exploit/explore steps"
    )
    parser.add_argument(
        "--pbt-methods",
        nargs="+",
        default=["pbt", "population", "random"],
        choices=["pbt", "population", "random"],
        help="with --pbt: which methods (one per process gives each its own cold compile)",
    )
    args = parser.parse_args()
    if args.pbt:
        pbt_compare(args)
        return
    methods = list(args.methods)
    if "optuna_tpe" in methods:
        try:
            import optuna  # noqa: F401
        except ImportError:
            print("optuna is not installed (pip install -e '.[bench]'): skipping the TPE peer")
            methods.remove("optuna_tpe")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    for task in args.tasks:
        train, test = task_data(task)
        for method in methods:
            for seed in args.seeds:
                row = run_one(task, method, seed, args.trials, train, test)
                runs.append(row)
                print(
                    f"{task} {method} seed {seed}: val {row['best_val_accuracy']:.4f} "
                    f"test {row['test_accuracy']:.4f} "
                    f"({row['wall_seconds']:.1f} s)",
                    flush=True,
                )
                (out / "report.json").write_text(
                    json.dumps({"runs": runs, "args": vars(args)}, indent=2)
                )
    print(f"\n{args.trials} configurations per search, seeds {args.seeds}; mean ± std over seeds\n")
    print(
        "| task | method | best val accuracy | test accuracy | search wall time (s) |"
        "\n|---|---|---|---|---|"
    )
    summary = []
    for task in args.tasks:
        for method in methods:
            rows = [r for r in runs if r["task"] == task and r["method"] == method]
            line = {
                "task": task,
                "method": method,
                "val": _stat([r["best_val_accuracy"] for r in rows]),
                "test": _stat([r["test_accuracy"] for r in rows]),
                "wall": _stat([r["wall_seconds"] for r in rows]),
            }
            summary.append(line)
            print(f"| {task} | {method} | {line['val']} | {line['test']} | {line['wall']} |")
    (out / "report.json").write_text(
        json.dumps({"runs": runs, "summary": summary, "args": vars(args)}, indent=2)
    )


if __name__ == "__main__":
    main()
