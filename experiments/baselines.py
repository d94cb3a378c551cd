"""Experiment: four architectures on MNIST and Fashion-MNIST, three seeds each.

Issue 25, Part 2, item 1.

For each (dataset, architecture) the seeds train as ONE stacked program
(``ml_adv.training.stacked.fit_stacked``): seed s is a member with its own initialisation,
dropout and data order (``member_orders=True``); the program's root key is
``PRNGKey(first seed)`` and member i is the i-th requested seed. Each reads the view its
architecture takes (``view_for``): 28x28x1 images (CNN), 784 pixels (MLP), 28 rows of 28
pixels as steps (LSTM), 49 patches of 4x4 pixels with a learned [CLS] vector (Transformer).
Training uses the whole 60,000-image training split for a fixed number of epochs (no early
stopping, no model selection), and the 10,000-image test split is scored once, at the end.

    python -m experiments.baselines [--seeds 0 1 2] [--only mnist_cnn ...] [--full] [--quick]

``--full`` trains for the longer reference epoch counts (``Recipe.full_epochs``), for a
machine with a GPU; the default epochs fit the 2-core CPU budget. Checkpoints go to
``runs/experiments/baselines/`` (every epoch), so a killed run resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

from experiments import common

EXPERIMENT = "baselines"
SUMMARY_KEY = "training"
TITLE = "Baselines: CNN, MLP, LSTM and Transformer on MNIST and Fashion-MNIST"
COMMAND = "python -m experiments.baselines --seeds 0 1 2"
DATASETS = ("mnist", "fashion_mnist")
ARCHS = ("cnn", "mlp", "lstm", "transformer")
GOALS = {("mnist", "cnn"): 0.992, ("fashion_mnist", "cnn"): 0.915}
ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS = ROOT / "runs" / "experiments"
# Quick mode: a tiny slice of each split, one epoch, batches of 32 (the test suite's smoke run).
QUICK_TRAIN, QUICK_TEST, QUICK_EPOCHS, QUICK_BATCH = 256, 128, 1, 32
# Quick mode trains two pairs that cover both code paths (plain, and augmented images): the
# stacked program, scoring and records are the same for every pair, and each extra pair costs
# mostly compilation (15-40 CPU seconds).
QUICK_SETTINGS = ("mnist_mlp", "fashion_mnist_cnn")
# Quick mode's models: each architecture's layout at a fraction of its width (the same layers,
# so the same code paths; a tiny run measures nothing, and narrow layers train in a blink).
QUICK_MODELS: dict[str, dict[str, Any]] = {
    "cnn": {"conv_features": (4, 8), "dense_features": (16,)},
    "mlp": {"hidden_sizes": (32, 32)},
}
FIGURES_LINK = (
    "experiments/results/figures"  # where report.py's figures live, relative to the repository
)

# Published figures beside which each row stands (what a reader would compare with).
REFERENCES = {
    ("mnist", "cnn"): (
        "99.25% (Keras examples/mnist_cnn.py: conv32-conv64-pool-dense128, "
        '"99.25% test accuracy after 12 epochs")'
    ),
    ("fashion_mnist", "cnn"): (
        "91.6% (2 conv + max-pool, TensorFlow tutorial, >300 epochs) to 92.5% "
        "(2 conv, <100K parameters), benchmark table of the Fashion-MNIST README"
    ),
    ("mnist", "mlp"): "98.40% (Keras examples/mnist_mlp.py: 512-512, dropout 0.2, 20 epochs)",
    ("fashion_mnist", "mlp"): "90.0% (MLP 256-128-64, Fashion-MNIST README benchmark table)",
    ("mnist", "lstm"): "98.8% (GRU+SVM with dropout on rows, Fashion-MNIST README benchmark table)",
    (
        "fashion_mnist",
        "lstm",
    ): "89.7% (GRU+SVM with dropout on rows, Fashion-MNIST README benchmark table)",
    ("mnist", "transformer"): "- (no standard small-ViT reference on 28x28 inputs)",
    ("fashion_mnist", "transformer"): "- (no standard small-ViT reference on 28x28 inputs)",
}


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One (dataset, architecture) recipe: model size and overrides, and the TrainConfig fields."""

    size: str
    epochs: int
    full_epochs: int
    learning_rate: float
    batch_size: int = 128
    schedule: str = "warmup_cosine"
    warmup_fraction: float = 0.05
    weight_decay: float = 0.0
    optimizer: str = "adam"
    augment: str | None = None  # "shift1": random translation by up to 1 pixel (images only)
    overrides: tuple[tuple[str, Any], ...] = ()

    def describe(self, epochs: int) -> str:
        extra = ", ".join(f"{k}={v}" for k, v in self.overrides)
        aug = f", augment {self.augment}" if self.augment else ""
        wd = f", weight decay {self.weight_decay:g}" if self.weight_decay else ""
        return (
            f"{self.size}{' (' + extra + ')' if extra else ''}; "
            f"{self.optimizer} lr {self.learning_rate:g}, "
            f"{self.schedule} ({self.warmup_fraction:.0%} warm-up){wd}, batch {self.batch_size}, "
            f"{epochs} epochs{aug}"
        )


def _recipes() -> dict[tuple[str, str], Recipe]:
    """Epochs sized to the 2-core CPU budget (2.5 h for all pairs); ``full_epochs`` for a GPU."""
    cnn = Recipe("small", epochs=6, full_epochs=15, learning_rate=2e-3)
    fashion_cnn = dataclasses.replace(cnn, epochs=9, full_epochs=30, augment="shift1")
    mlp = Recipe("base", epochs=10, full_epochs=30, learning_rate=1e-3)
    lstm = Recipe(
        "small", epochs=4, full_epochs=20, learning_rate=2e-3, overrides=(("hidden_size", 128),)
    )
    transformer = Recipe(
        "small",
        epochs=3,
        full_epochs=30,
        learning_rate=1e-3,
        weight_decay=0.05,
        optimizer="adamw",
        overrides=(("pooling", "cls"),),
    )
    table = {}
    for dataset in DATASETS:
        table[(dataset, "cnn")] = fashion_cnn if dataset == "fashion_mnist" else cnn
        table[(dataset, "mlp")], table[(dataset, "lstm")] = mlp, lstm
        table[(dataset, "transformer")] = transformer
    return table


RECIPES = _recipes()


def setting_name(dataset: str, arch: str) -> str:
    return f"{dataset}_{arch}"


def parse_setting(name: str) -> tuple[str, str]:
    """``"fashion_mnist_cnn"`` -> ``("fashion_mnist", "cnn")`` (ConfigError for an unknown name)."""
    from ml_adv.errors import ConfigError

    for dataset, arch in RECIPES:
        if setting_name(dataset, arch) == name:
            return dataset, arch
    valid = [setting_name(d, a) for d, a in RECIPES]
    raise ConfigError(f"--only: expected some of {valid}, got {name!r}")


# ----------------------------------------------------------------------------- running


def load_split(dataset: str, arch: str, split: str, quick: bool):
    """The view of ``dataset`` that ``arch`` reads (a tiny slice in quick mode)."""
    from ml_adv import load_dataset
    from ml_adv.data.catalog import view_for

    limit = (QUICK_TRAIN if split == "train" else QUICK_TEST) if quick else None
    return load_dataset(view_for(dataset, arch), split=split, max_examples=limit)


def train_config(recipe: Recipe, epochs: int, quick: bool = False):
    """The ``TrainConfig`` of a recipe (augmentation: a product function, run in the step)."""
    from ml_adv import TrainConfig
    from ml_adv.training.augment import random_shift

    augment = random_shift(1) if recipe.augment == "shift1" else None
    batch = QUICK_BATCH if quick else recipe.batch_size
    return TrainConfig(
        epochs=epochs,
        batch_size=batch,
        learning_rate=recipe.learning_rate,
        optimizer=recipe.optimizer,
        schedule=recipe.schedule,
        warmup_fraction=recipe.warmup_fraction,
        weight_decay=recipe.weight_decay,
        augment=augment,
    )


def model_overrides(overrides: dict[str, Any], arch: str, quick: bool) -> dict[str, Any]:
    """A recipe's model overrides, narrowed by ``QUICK_MODELS`` in quick mode."""
    return {**overrides, **QUICK_MODELS.get(arch, {})} if quick else overrides


def train_seeds(spec, train, config, seeds: list[int], run_dir: Path):
    """Train one member per seed as one stacked program (own init, dropout and order each)."""
    import jax

    from ml_adv.rundir import Run
    from ml_adv.training.stacked import fit_stacked

    return fit_stacked(
        spec,
        train,
        config,
        members=len(seeds),
        key=jax.random.PRNGKey(seeds[0]),
        member_orders=True,
        run=Run.at(run_dir, progress=False),
    )


def as_ensemble(result):
    """The trained members as an averaging ``AdvancedModelEnsemble``, as a user combines them."""
    from ml_adv import AdvancedModelEnsemble

    ensemble = AdvancedModelEnsemble("averaging")
    for i in range(len(result.histories)):
        ensemble.add_model(result.member(i))
    return ensemble


def score_members(ensemble, test) -> dict[str, list[float]]:
    """Per-member test accuracy, NLL, Brier and ECE (``ml_adv.ensembles.metrics``)."""
    import jax.numpy as jnp

    from ml_adv.ensembles.metrics import member_metrics, to_host

    probs = ensemble.member_probabilities(test)  # [K, N, C]: one stacked forward program
    return to_host(member_metrics(jnp.asarray(probs), jnp.asarray(test.y)))


def history_of(result, i: int) -> list[dict[str, float]]:
    keep = ("epoch", "train_loss", "train_accuracy", "epoch_seconds")
    return [{k: h[k] for k in keep if k in h} for h in result.histories[i]]


def run_setting(
    dataset: str, arch: str, seeds: list[int], args, root: Path, checkpoints: Path
) -> None:
    """Train the seeds of one (dataset, architecture) together and write one record per seed."""
    from ml_adv import make_spec

    recipe = RECIPES[(dataset, arch)]
    epochs = QUICK_EPOCHS if args.quick else recipe.full_epochs if args.full else recipe.epochs
    train, test = (
        load_split(dataset, arch, "train", args.quick),
        load_split(dataset, arch, "test", args.quick),
    )
    spec = make_spec(
        arch,
        input_shape=train.example_shape,
        input_kind=train.input_kind,
        num_classes=train.num_classes,
        size=recipe.size,
        **model_overrides(dict(recipe.overrides), arch, args.quick),
    )
    name = setting_name(dataset, arch)
    run_dir = checkpoints / EXPERIMENT / f"{name}-seeds-{'-'.join(map(str, seeds))}-e{epochs}"
    started = time.perf_counter()
    config = train_config(recipe, epochs, args.quick)
    result = train_seeds(spec, train, config, seeds, run_dir)
    seconds = time.perf_counter() - started
    scores = score_members(as_ensemble(result), test)
    protocol = {
        "dataset": dataset,
        "view": train.name,
        "arch": arch,
        "recipe": dataclasses.asdict(recipe),
        "batch_size": config.batch_size,
        "recipe_text": recipe.describe(epochs),
        "epochs": epochs,
        "full": bool(args.full),
        "members": len(seeds),
        "root_key": seeds[0],
        "train_examples": len(train),
        "test_examples": len(test),
        "model": spec.to_dict(),
    }
    for i, seed in enumerate(seeds):
        results = {
            "test_accuracy": scores["accuracy"][i],
            "test_nll": scores["nll"][i],
            "test_brier": scores["brier"][i],
            "test_ece": scores["ece"][i],
            "member": i,
            "failed": bool(result.failed[i]),  # diverged and frozen (nan_policy="raise")
            "history": history_of(result, i),
            "compile_seconds": round(result.compile_seconds, 1),
            "steps_per_second": result.steps_per_second,
            "resumed_from": result.resumed_from,
        }
        common.write_result(
            root,
            EXPERIMENT,
            name,
            seed,
            protocol=protocol,
            results=results,
            seconds=seconds,
            quick=args.quick,
        )
    accs = " ".join(f"{a:.4f}" for a in scores["accuracy"])
    print(
        f"{name}: test accuracy {accs} ({seconds:.0f} s for {len(seeds)} seeds, {epochs} epochs)",
        flush=True,
    )


def checkpoint_root(args, root: Path) -> Path:
    """Checkpoints stay out of the results: ``runs/experiments`` (else under ``--out``)."""
    return root / "_checkpoints" if (args.out is not None or args.quick) else CHECKPOINTS


def prepare_devices(quick: bool = False) -> None:
    """One JAX device per core, as the command line does (stacked members then run concurrently).

    A quick run measures nothing (``ML_ADV_AUTOTUNE=0`` unless set): its tiny programs would
    spend longer choosing layouts than training.
    """
    import os

    from ml_adv.devices import CPU_DEVICES_ENV, use_cpu_cores

    if quick:
        os.environ.setdefault("ML_ADV_AUTOTUNE", "0")

    use_cpu_cores(os.environ.get(CPU_DEVICES_ENV) or "auto", strict=False)


def main(argv: list[str] | None = None) -> int:
    p = common.parser(__doc__)
    p.add_argument(
        "--only",
        nargs="+",
        default=None,
        metavar="SETTING",
        help="run only these settings, e.g. mnist_cnn fashion_mnist_lstm",
    )
    p.add_argument(
        "--full", action="store_true", help="the longer reference epoch counts (a GPU machine)"
    )
    args = p.parse_args(argv)
    prepare_devices(args.quick)
    common.use_shared_data()
    names = args.only or (QUICK_SETTINGS if args.quick else None)
    pairs = [parse_setting(n) for n in names] if names else list(RECIPES)
    root = common.results_root(args)
    checkpoints = checkpoint_root(args, root)
    seeds = sorted(set(args.seeds))
    for dataset, arch in pairs:
        if all(common.done(root, EXPERIMENT, setting_name(dataset, arch), s, args) for s in seeds):
            print(f"{setting_name(dataset, arch)}: done (--force to rerun)")
            continue
        run_setting(dataset, arch, seeds, args, root, checkpoints)
    print(f"results in {root / EXPERIMENT}")
    return 0


# ----------------------------------------------------------------------------- summary


def by_setting(records: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in records:
        out.setdefault(r["setting"], []).append(r)
    return {k: sorted(v, key=lambda r: r["seed"]) for k, v in out.items()}


def summary_part(groups: dict[str, list[dict]]) -> dict[str, list[float]]:
    """``{"<dataset>_<arch>_test_accuracy": [per seed]}`` for every pair (empty when not run)."""
    return {
        f"{setting_name(d, a)}_test_accuracy": [
            r["results"]["test_accuracy"] for r in groups.get(setting_name(d, a), [])
        ]
        for d, a in RECIPES
    }


def _pct(values) -> str:
    return common.fmt_mean_std([100 * v for v in values], "{:.2f}")


def accuracy_table(groups: dict[str, list[dict]]) -> str:
    rows = []
    for dataset, arch in RECIPES:
        recs = groups.get(setting_name(dataset, arch), [])
        accs = [r["results"]["test_accuracy"] for r in recs]
        goal = GOALS.get((dataset, arch))
        verdict = (
            "-"
            if goal is None
            else (
                "not run"
                if not accs
                else "met"
                if common.mean_std(accs)[0] >= goal
                else "**missed**"
            )
        )
        recipe = (
            recs[0]["protocol"]["recipe_text"]
            if recs
            else RECIPES[(dataset, arch)].describe(RECIPES[(dataset, arch)].epochs)
        )
        per_seed = " / ".join(f"{100 * a:.2f}" for a in accs) or "-"
        minutes = f"{recs[0]['seconds'] / 60:.0f}" if recs else "-"
        rows.append(
            [
                dataset,
                arch,
                _pct(accs),
                per_seed,
                f">= {100 * goal:.1f}" if goal else "-",
                verdict,
                REFERENCES[(dataset, arch)],
                recipe,
                minutes,
            ]
        )
    header = [
        "dataset",
        "model",
        "test accuracy % (mean ± std)",
        "per seed",
        "goal",
        "goal met",
        "published figure",
        "our recipe",
        "minutes (all seeds)",
    ]
    return common.markdown_table(header, rows)


def plot_accuracy(groups: dict[str, list[dict]], path: Path) -> str:
    """Per-seed test accuracy (dots) and the mean (bar) of every pair, with the CNN goals."""
    import numpy as np

    from ml_adv.plots import save_figure, subplots

    fig, axes = subplots(1, len(DATASETS), figsize=(5 * len(DATASETS), 3.8), squeeze=False)
    for ax, dataset in zip(axes[0], DATASETS):
        for j, arch in enumerate(ARCHS):
            accs = [
                100 * r["results"]["test_accuracy"]
                for r in groups.get(setting_name(dataset, arch), [])
            ]
            if accs:
                ax.bar(j, float(np.mean(accs)), color="tab:blue", alpha=0.5)
                ax.plot([j] * len(accs), accs, "o", color="black", ms=3)
        goal = GOALS.get((dataset, "cnn"))
        ax.axhline(100 * goal, color="tab:red", ls="--", lw=1, label=f"CNN goal {100 * goal:.1f}%")
        ax.set(
            xticks=range(len(ARCHS)),
            xticklabels=ARCHS,
            ylabel="test accuracy (%)",
            title=dataset,
            ylim=(85, 100),
        )
        ax.grid(alpha=0.3, axis="y")
        ax.legend(loc="lower right")
    return save_figure(fig, path, title="Test accuracy per seed (dots) and mean (bars)")


def seed_claim(groups: dict[str, list[dict]]) -> str:
    """SEED.md's one training figure, ">= 90% accuracy on validation sets", pair by pair."""
    means = {
        name: common.mean_std([r["results"]["test_accuracy"] for r in recs])[0]
        for name, recs in groups.items()
    }
    if not means:
        return 'SEED.md claims "Model Training: >= 90% accuracy on validation sets" (not run yet).'
    below = sorted(name for name, m in means.items() if m < 0.90)
    return (
        'SEED.md claims "Model Training: >= 90% accuracy on validation sets". '
        "Measured on the test sets: "
        f"{len(means) - len(below)} of {len(means)} (dataset, model) pairs reach 90% on average"
        + (f"; below: {', '.join(below)}." if below else ".")
    )


DIFFERENCES = [
    "Epochs are cut to fit a 2-core CPU (see each row's recipe); the reference scripts train "
    "longer (Keras CNN 12 epochs, MLP 20). `--full` runs longer schedules on a faster machine.",
    "Our CNN is the product's `small` CNN (conv32-pool-conv64-pool-dense128, 3x3 SAME convs, "
    "dropout 0.1), not the Keras example's conv32-conv64-pool with dropout 0.25/0.5; trained with "
    "Adam and a warm-up cosine schedule rather than Adadelta at a constant rate.",
    "Fashion-MNIST CNN: random translation by up to 1 pixel (`random_shift(1)`), nothing else. "
    "The MNIST CNN and the other architectures train without augmentation.",
    "The MLP is the product's `base` size (512-256, dropout 0.1), not Keras' 512-512 with "
    "dropout 0.2 (RMSprop).",
    "The recurrent reference is a GRU+SVM from the Fashion-MNIST README; ours is one LSTM layer "
    "of 128 units reading the 28 rows, with a softmax head.",
    "No validation split and no early stopping: every model trains for its fixed epochs on all "
    "60,000 training images and is scored once on the 10,000 test images.",
    "The 3 seeds of each pair train as one stacked program; each seed is a member with its own "
    "initialisation, dropout and data order, so the seeds are independent runs.",
]


def summarize(records: list[dict], figures: Path) -> tuple[str, dict]:
    """The EXPERIMENTS.md section and the ``training`` part of summary.json."""
    groups = by_setting(records)
    part = summary_part(groups)
    lines = [
        "Test accuracy of each architecture on the standard 10,000 test images, mean ± sample "
        "std over seeds (each seed a member of one stacked program per pair, with its own "
        "initialisation and data order). Goals (issue 25): CNN >= 99.2% on MNIST and >= 91.5% "
        "on Fashion-MNIST.",
        "",
        accuracy_table(groups),
        "",
    ]
    if records:
        figures.mkdir(parents=True, exist_ok=True)
        plot_accuracy(groups, figures / "baselines_accuracy.png")
        lines += [f"![test accuracy per seed]({FIGURES_LINK}/baselines_accuracy.png)", ""]
    lines += [seed_claim(groups), "", "Differences from the reference protocols:", ""]
    lines += [f"- {d}" for d in DIFFERENCES]
    return "\n".join(lines), part


if __name__ == "__main__":
    sys.exit(main())
