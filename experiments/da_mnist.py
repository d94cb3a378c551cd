"""Domain adaptation on MNIST (Ganin et al. 2016, "Domain-Adversarial Training of Neural Networks").

    python -m experiments.da_mnist --seeds 0 1 2            # the CPU protocol (results committed)
    python -m experiments.da_mnist --seeds 0 1 2 --full     # the paper's step budget (a GPU)
    python -m experiments.da_mnist --quick                  # the test suite's tiny version

Three settings, each one result file per seed:

* ``two_moons``: the paper's toy (section 5.1), where the answer is known: inter-twinning
  moons, the target rotated by 35 degrees, a shallow network (one hidden layer of 15).
  Source-only, DANN, and DANN with domain weight 0 (the same code path without the
  adversarial term). A correct DANN classifies the rotated target moons far better.
* ``mnist_to_mnistm``: ``load_dataset("mnist_m_source")`` -> ``load_dataset("mnist_m")``
  (Ganin's construction, ``ml_adv/data/mnist_m.py``), the paper's MNIST network (CNN size
  ``"dann"``), SGD with momentum 0.9, the learning rate ``0.01 / (1 + 10 p)^0.75``
  (schedule ``"dann"``) and lambda ``2 / (1 + exp(-10 p)) - 1``, batches of 64 source +
  64 target images. Source-only, DANN (from scratch, as in the paper) and train-on-target.
* ``mnist_to_digits``: MNIST -> scikit-learn's UCI digits (8x8 counts of 4x4 blocks),
  resized into MNIST's frame (``digits_as_mnist``). Source-only, DANN, fine-tuning and
  transfer with 10 labels per class (``AdvancedDomainAdaptation``), train-on-target.

Every run checkpoints (``runs/da_mnist/<setting>-seed<k>/<method>/``), so a killed seed
resumes from its last finished epoch, and a finished seed is skipped (``--force`` reruns).
No target test label is used for any choice; target labels train only the fine-tuning,
transfer and train-on-target rows.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from experiments import da_tf_dann
from experiments.common import (
    RESULTS,
    done,
    fmt_mean_std,
    markdown_table,
    mean_std,
    parser,
    result_path,
    results_root,
    use_shared_data,
    write_result,
)
from experiments.da_parts import (
    CNN_OVERRIDES,
    KERNEL_QUICK,
    MOONS_ANGLE,
    MOONS_GRID,
    MOONS_NOISE,
    PAPER,
    PHOTO_VARIANTS,
    PROTOCOLS,
    Protocol,
    centered,
    cnn,
    dann_record,
    digits_domains,
    gap_closed,
    head,
    mnist_dann,
    mnistm_domains,
    mnistm_source,
    mnistm_with_photos,
    moons,
    photo_set,
    scorer,
    sgd_config,
    timed,
    train_dann,
    train_plain,
)

EXPERIMENT = "domain_adaptation"
SUMMARY_KEY = "domain_adaptation"
TITLE = "Domain adaptation (Ganin et al. 2016): MNIST -> MNIST-M and MNIST -> digits"
COMMAND = "python -m experiments.da_mnist --seeds 0 1 2"
ROOT = Path(__file__).resolve().parents[1]
MAIN_SETTINGS = ("two_moons", "mnist_to_mnistm", "mnist_to_digits")
# Not run by default: DANN on MNIST -> MNIST-M with one change each from the main protocol, to
# find out why it closes less of the gap than the paper (``--settings mnistm_dann_diagnosis``),
# and with fewer or more varied photo backgrounds (``--settings mnistm_photo_diversity``).
SETTINGS = (
    *MAIN_SETTINGS,
    "mnistm_dann_diagnosis",
    "mnistm_photo_diversity",
    "mnistm_tf_dann",  # tf-dann's recipe whole, data included (experiments/da_tf_dann.py)
)
DANN_VARIANTS = {
    "domain_weight_2": "the paper's objective: the source and the target domain means summed, "
    "i.e. twice our mean over the step's images",
    "batch_32": "32 + 32 images per step, as pumpikano/tf-dann: the same images, twice the steps",
    "centered_inputs": "inputs minus the per-pixel mean of both training sets (close to "
    "pumpikano/tf-dann's preprocessing, which subtracts the per-channel mean: the tf-dann "
    "section below)",
    "epochs_10": "10 passes instead of 3 (the --full protocol's length), the schedules "
    "stretched over the longer run",
    # One change at a time can miss an interaction: this row takes tf-dann's recipe whole.
    "tf_dann_recipe": "batch_32, centered_inputs and 5 passes together (9,375 steps of 32 + 32; "
    "pumpikano/tf-dann trains 8,600; its data and network in full: the tf-dann section below)",
}
DIAGNOSIS_LONG_EPOCHS = 10
RECIPE_EPOCHS = 5  # tf_dann_recipe: 5 passes of 1,875 steps of 32 + 32
METHODS = {
    "two_moons": ("source_only", "dann", "dann_weight_0"),
    "mnist_to_mnistm": ("source_only", "dann", "target_only"),
    "mnist_to_digits": (
        "source_only",
        "dann",
        "fine_tuning",
        "transfer",
        "transfer_probe_then_finetune",
        "target_only",
    ),
    "mnistm_dann_diagnosis": tuple(DANN_VARIANTS),
    "mnistm_photo_diversity": tuple(PHOTO_VARIANTS),
    "mnistm_tf_dann": ("source_only", "dann", "target_only"),
}
SUMMARY_METHODS = {
    "mnist_to_mnistm": METHODS["mnist_to_mnistm"],
    "mnist_to_digits": ("source_only", "dann", "fine_tuning", "transfer", "target_only"),
}
SEED_CLAIM = 0.80  # SEED.md: "Domain Adaptation: >= 80% performance transfer between domains"


# ------------------------------------------------------------------ data


# ------------------------------------------------------------------ training


def run_moons(seed: int, p: Protocol, runs: Path) -> dict[str, Any]:
    """Section 5.1: one hidden layer of 15 (tanh), a logistic domain regressor on it."""
    from ml_adv import make_spec
    from ml_adv.training.config import TrainConfig

    runs = runs / "two_moons"
    source, target = moons(300, 3 * seed, 0.0), moons(300, 3 * seed + 1, MOONS_ANGLE)
    test = moons(1000, 3 * seed + 2, MOONS_ANGLE)
    spec = make_spec(
        "mlp",
        input_shape=(2,),
        input_kind="features",
        num_classes=2,
        size="tiny",
        hidden_sizes=(15,),
        dropout=0.0,
        activation="tanh",
    )
    config = TrainConfig(
        batch_size=30, epochs=p.moons_epochs, optimizer="momentum", learning_rate=0.05, seed=seed
    )
    grid = (
        np.stack(np.meshgrid(*[np.linspace(-2.0, 3.0, MOONS_GRID)] * 2), -1)
        .reshape(-1, 2)
        .astype(np.float32)
    )
    out: dict[str, Any] = {
        "grid": {"low": -2.0, "high": 3.0, "size": MOONS_GRID},
        "grid_predictions": {},
    }
    runs_ = {
        "source_only": lambda: train_plain(spec, source, config, runs / "source_only"),
        "dann": lambda: train_dann(
            spec, source, target, config, runs / "dann", discriminator_hidden=()
        ),
        "dann_weight_0": lambda: train_dann(
            spec,
            source,
            target,
            config,
            runs / "dann_weight_0",
            discriminator_hidden=(),
            domain_weight=0.0,
        ),
    }
    for name, run in runs_.items():
        model, last = timed(out, name, run, lambda m: m.evaluate(test)["accuracy"])
        out["grid_predictions"][name] = "".join(map(str, np.asarray(model.predict(grid)).tolist()))
        if name == "dann":
            out["dann_last_epoch"] = dann_record(last)
    return out


def source_model(seed: int, p: Protocol, runs: Path):
    """The source-only model on MNIST as RGB: one per seed, shared by both MNIST settings (its
    checkpoint in ``runs/mnist_source_only`` is restored, not retrained, by the second)."""
    source = head(mnistm_source("train"), p.train_examples)
    return train_plain(
        cnn(source.example_shape, p),
        source,
        sgd_config(p, p.mnistm_epochs, seed),
        runs / "mnist_source_only",
    )


def run_mnistm(seed: int, p: Protocol, runs: Path) -> dict[str, Any]:
    """Source-only, DANN and train-on-target, each ``p.mnistm_epochs`` passes, the paper's
    optimiser."""
    source, source_test, target, target_test = mnistm_domains(p)
    spec, config, runs_ = (
        cnn(source.example_shape, p),
        sgd_config(p, p.mnistm_epochs, seed),
        runs / "mnist_to_mnistm",
    )
    out: dict[str, Any] = {"steps": p.mnistm_epochs * (len(source) // p.batch_size)}
    evaluate = scorer(out, source_test, target_test)
    timed(out, "source_only", lambda: source_model(seed, p, runs), evaluate("source_only"))
    _, last = timed(
        out,
        "dann",
        lambda: mnist_dann(spec, source, target, config, runs_ / "dann"),
        evaluate("dann"),
    )
    out["dann_last_epoch"] = dann_record(last)
    timed(
        out,
        "target_only",
        lambda: train_plain(spec, target, config, runs_ / "target_only"),
        evaluate("target_only"),
    )
    return out


def adapt(method: str, p: Protocol, seed: int, model, domains, labeled, head_fraction: float = 0.5):
    """``AdvancedDomainAdaptation(method)`` on the labelled target sample, as a user would call
    it."""
    from ml_adv import AdvancedDomainAdaptation
    from ml_adv.training.config import TrainConfig

    source, source_test, target, target_test = domains
    da = AdvancedDomainAdaptation(
        method,
        TrainConfig(batch_size=p.adapt_batch_size, learning_rate=1e-3, seed=seed),
        steps=p.adapt_steps,
        head_fraction=head_fraction,
    )
    da.set_source_domain(source, test=source_test)
    da.set_target_domain(target, labeled=labeled, test=target_test)
    return da.adapt_model(model), {}


def run_digits(seed: int, p: Protocol, runs: Path) -> dict[str, Any]:
    """MNIST -> digits: source-only, DANN, fine-tuning, transfer (two forms), train-on-target."""
    from ml_adv.domain_adaptation.workflow import labelled_sample

    domains = source, source_test, target, target_test = digits_domains(p)
    spec, runs_ = cnn(source.example_shape, p), runs / "mnist_to_digits"
    labeled = labelled_sample(target, p.labels_per_class, seed)
    out: dict[str, Any] = {"labelled_target_examples": len(labeled)}
    evaluate = scorer(out, source_test, target_test)
    model, _ = timed(
        out, "source_only", lambda: source_model(seed, p, runs), evaluate("source_only")
    )
    _, last = timed(
        out,
        "dann",
        lambda: mnist_dann(
            spec, source, target, sgd_config(p, p.digits_dann_epochs, seed), runs_ / "dann"
        ),
        evaluate("dann"),
    )
    out["dann_last_epoch"] = dann_record(last)
    for name, method, fraction in (
        ("fine_tuning", "fine_tuning", 0.5),
        ("transfer", "transfer_learning", 1.0),
        ("transfer_probe_then_finetune", "transfer_learning", 0.5),
    ):
        timed(
            out,
            name,
            lambda m=method, f=fraction: adapt(m, p, seed, model, domains, labeled, f),
            evaluate(name),
        )
    timed(
        out,
        "target_only",
        lambda: train_plain(
            spec, target, sgd_config(p, p.digits_target_epochs, seed), runs_ / "target_only"
        ),
        evaluate("target_only"),
    )
    return out


def run_mnistm_diagnosis(
    seed: int, p: Protocol, runs: Path, finished: dict[str, Any] | None = None
) -> dict[str, Any]:
    """DANN on MNIST -> MNIST-M once per ``DANN_VARIANTS`` entry: one change each from
    ``run_mnistm``'s DANN, the same seed and number of passes (``tf_dann_recipe``: several).
    ``finished``: this seed's earlier results; only the variants missing from it run."""
    domains = mnistm_domains(p)
    spec = cnn(domains[0].example_shape, p)
    out: dict[str, Any] = {"steps": {}, "domain_accuracy_last_epoch": {}, **(finished or {})}
    for variant in [v for v in DANN_VARIANTS if v not in out]:
        source, source_test, target, target_test = domains
        epochs = {"epochs_10": DIAGNOSIS_LONG_EPOCHS, "tf_dann_recipe": RECIPE_EPOCHS}.get(
            variant, p.mnistm_epochs
        )
        config, options = sgd_config(p, epochs, seed), {}
        if variant == "domain_weight_2":
            options["domain_weight"] = 2.0
        if variant in ("batch_32", "tf_dann_recipe"):
            config = sgd_config(p, epochs, seed, batch_size=max(1, p.batch_size // 2))
        if variant in ("centered_inputs", "tf_dann_recipe"):
            source, source_test, target, target_test = centered(domains, (source, target))
        out["steps"][variant] = epochs * (len(source) // config.batch_size)
        _, last = timed(
            out,
            variant,
            functools.partial(
                mnist_dann,
                spec,
                source,
                target,
                config,
                runs / "mnistm_dann_diagnosis" / variant,
                **options,
            ),
            scorer(out, source_test, target_test)(variant),
        )
        out["domain_accuracy_last_epoch"][variant] = dann_record(last).get("train_domain_accuracy")
    return out


def run_mnistm_photos(seed: int, p: Protocol, runs: Path) -> dict[str, Any]:
    """MNIST -> MNIST-M with the backgrounds of each ``PHOTO_VARIANTS`` entry: source-only (the
    shared source model), DANN and train-on-target on that target, ``run_mnistm``'s protocol."""
    source, source_test = (
        head(mnistm_source("train"), p.train_examples),
        head(mnistm_source("test"), p.test_examples),
    )
    spec, config = cnn(source.example_shape, p), sgd_config(p, p.mnistm_epochs, seed)
    model, _ = source_model(seed, p, runs)
    out: dict[str, Any] = {"backgrounds": {}, "dann_last_epoch": {}}
    for variant in PHOTO_VARIANTS:
        photos = photo_set(variant)
        out["backgrounds"][variant] = len(photos)
        target, target_test = mnistm_with_photos(p, photos, seed)
        scores: dict[str, Any] = {}
        evaluate = scorer(scores, source_test, target_test)
        scores["source_only"] = evaluate("source_only")(model)
        folder = runs / "mnistm_photo_diversity" / variant
        _, last = timed(
            scores,
            "dann",
            functools.partial(mnist_dann, spec, source, target, config, folder / "dann"),
            evaluate("dann"),
        )
        timed(
            scores,
            "target_only",
            functools.partial(train_plain, spec, target, config, folder / "target_only"),
            evaluate("target_only"),
        )
        out[variant] = scores
        out["dann_last_epoch"][variant] = dann_record(last)
    return out


RUNNERS = {
    "two_moons": run_moons,
    "mnist_to_mnistm": run_mnistm,
    "mnist_to_digits": run_digits,
    "mnistm_dann_diagnosis": run_mnistm_diagnosis,
    "mnistm_photo_diversity": run_mnistm_photos,
    "mnistm_tf_dann": da_tf_dann.run,
}


def protocol_record(p: Protocol, setting: str) -> dict[str, Any]:
    base = {
        "protocol": p.name,
        **dataclasses.asdict(p),
        "optimizer": "SGD momentum 0.9",
        "learning_rate": "0.01 / (1 + 10 p)^0.75 (schedule 'dann')",
        "grl_lambda": "2 / (1 + exp(-10 p)) - 1",
        "network": (
            "CNN size 'dann': conv32 5x5, pool, conv48 5x5, pool | 100-100-10 | domain 100-1"
        ),
    }
    if p.name in CNN_OVERRIDES:
        base["network"] = base["network"].replace("5x5", f"{KERNEL_QUICK}x{KERNEL_QUICK}")
        base["cnn_overrides"] = CNN_OVERRIDES[p.name]
    if setting == "mnistm_tf_dann":
        base.update(
            network=base["network"].replace("pool |", "pool (SAME convolutions) |"),
            recipe="pumpikano/tf-dann's (experiments/da_tf_dann.py)",
            train_examples=p.train_examples or da_tf_dann.TRAIN_EXAMPLES,
            inputs="binarised digits, (x - per-channel mean) / 255",
            init="truncated normal std 0.1, biases 0.1 (domain classifier: default)",
        )
        if p.name != "quick":
            base["batch_size"] = {"dann": da_tf_dann.DANN_BATCH, "plain": da_tf_dann.PLAIN_BATCH}
    if setting == "two_moons":
        base.update(
            network="MLP 2-15(tanh)-2, logistic domain regressor on the hidden layer",
            optimizer="SGD momentum 0.9, constant 0.05, batch 30 + 30",
            source_points=300,
            target_points=300,
            test_points=1000,
            angle=MOONS_ANGLE,
            noise=MOONS_NOISE,
        )
    return base


# ------------------------------------------------------------------ summary
def _by_setting(records: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {s: [] for s in SETTINGS}
    for r in records:
        out.setdefault(r["setting"], []).append(r)
    return {s: sorted(rs, key=lambda r: r["seed"]) for s, rs in out.items()}


def _accuracy_table(records: list[dict], setting: str, paper: dict | None) -> str:
    bound = "target_only" if setting != "two_moons" else None
    header = [
        "method",
        "target test accuracy (ours)",
        "share of the gap closed (ours)",
        "transfer ratio (target / source accuracy)",
    ]
    if paper:
        header += ["paper", "paper's share of the gap"]
    rows = []
    for m in METHODS[setting]:
        accs = [r["results"].get(m) for r in records]
        gaps = [gap_closed(r["results"], m, bound) for r in records] if bound else []
        ratios = [
            r["results"][m] / r["results"]["source_accuracy"][m]
            for r in records
            if r["results"].get("source_accuracy", {}).get(m)
        ]
        row = [
            m,
            fmt_mean_std(accs),
            fmt_mean_std(gaps, "{:.2f}") if bound else "-",
            fmt_mean_std(ratios, "{:.2f}") if ratios else "-",
        ]
        if paper:
            p = paper.get(m)
            paper_gap = (
                (p - paper["source_only"]) / (paper["target_only"] - paper["source_only"])
                if p
                else None
            )
            row += [
                "-" if p is None else f"{p:.4f}",
                "-" if paper_gap is None else f"{paper_gap:.2f}",
            ]
        rows.append(row)
    return markdown_table(header, rows)


def _figure_accuracies(by: dict[str, list[dict]], figures: Path) -> str | None:
    """Target accuracy per method (bars: mean over seeds; dots: seeds); the paper's as ticks."""
    from ml_adv.plots import subplots

    panels = [s for s in MAIN_SETTINGS if by.get(s)]
    if not panels:
        return None
    fig, axes = subplots(1, len(panels), figsize=(4.6 * len(panels), 3.6), squeeze=False)
    for ax, setting in zip(axes[0], panels):
        methods = METHODS[setting]
        for i, m in enumerate(methods):
            values = [r["results"][m] for r in by[setting] if r["results"].get(m) is not None]
            if values:
                ax.bar(i, np.mean(values), color="C0" if m != "dann" else "C3", alpha=0.6)
                ax.plot([i] * len(values), values, "k.", ms=4)
            if setting == "mnist_to_mnistm" and m in PAPER:
                ax.plot(
                    [i - 0.4, i + 0.4],
                    [PAPER[m]] * 2,
                    "g-",
                    lw=2,
                    label="paper" if i == 0 else None,
                )
        ax.set_xticks(range(len(methods)), [m.replace("_", "\n") for m in methods], fontsize=7)
        ax.set_ylim(0, 1)
        ax.set_title(setting.replace("_", " "), fontsize=9)
        ax.set_ylabel("target test accuracy")
        if setting == "mnist_to_mnistm":
            ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path = figures / "da_mnist_accuracy.png"
    fig.savefig(path, dpi=110)
    return "experiments/results/figures/da_mnist_accuracy.png"


def _figure_moons(records: list[dict], figures: Path) -> str | None:
    """The first seed's decision regions on the target plane, source-only against DANN."""
    from ml_adv.plots import subplots

    if not records:
        return None
    r = records[0]["results"]
    g = r["grid"]
    test = moons(
        300, 3 * records[0]["seed"] + 2, MOONS_ANGLE
    )  # the seed's test draw (first 300 of a new draw)
    fig, axes = subplots(1, 2, figsize=(8, 3.6))
    for ax, name in zip(axes, ("source_only", "dann")):
        z = np.array([int(c) for c in r["grid_predictions"][name]]).reshape(g["size"], g["size"])
        ax.imshow(
            z,
            origin="lower",
            extent=(g["low"], g["high"], g["low"], g["high"]),
            cmap="coolwarm",
            alpha=0.3,
        )
        ax.scatter(test.x[:, 0], test.x[:, 1], c=test.y, cmap="coolwarm", s=5)
        ax.set_title(f"{name.replace('_', '-')}: target accuracy {r[name]:.3f}", fontsize=9)
    fig.suptitle(
        f"two moons, target rotated {MOONS_ANGLE:g} degrees (seed {records[0]['seed']})", fontsize=9
    )
    fig.tight_layout()
    fig.savefig(figures / "da_mnist_moons.png", dpi=110)
    return "experiments/results/figures/da_mnist_moons.png"


def _diagnosis_table(records: list[dict], main: list[dict]) -> str:
    """DANN's target accuracy per variant beside the main protocol's, each variant's share of the
    gap measured against the same seed's source-only and train-on-target models."""
    bounds = {r["seed"]: r["results"] for r in main}
    seeds = [r["seed"] for r in records if r["seed"] in bounds]

    shares: dict[str, float] = {}

    def row(name, change, accs, domain, steps):
        gaps = [
            gap_closed({**bounds[seed], "x": acc}, "x", "target_only") if acc is not None else None
            for seed, acc in zip(seeds, accs)
        ]
        mean, _, _ = mean_std(gaps)
        if mean is not None:
            shares[name] = mean
        return [
            name,
            change,
            steps,
            fmt_mean_std(accs),
            fmt_mean_std(gaps, "{:.2f}"),
            fmt_mean_std(domain, "{:.3f}"),
        ]

    records = [r for r in records if r["seed"] in bounds]
    rows = [
        row(
            "main protocol",
            "none",
            [bounds[s].get("dann") for s in seeds],
            [bounds[s].get("dann_last_epoch", {}).get("train_domain_accuracy") for s in seeds],
            str(bounds[seeds[0]].get("steps", "-")) if seeds else "-",
        )
    ]
    for variant, change in DANN_VARIANTS.items():
        rows.append(
            row(
                variant,
                change,
                [r["results"].get(variant) for r in records],
                [r["results"]["domain_accuracy_last_epoch"].get(variant) for r in records],
                str(records[0]["results"]["steps"].get(variant, "-")) if records else "-",
            )
        )
    header = [
        "DANN variant",
        "change from the main protocol",
        "steps",
        "target test accuracy",
        "share of the gap closed",
        "domain accuracy, last epoch",
    ]
    verdict = ""
    if shares:
        best = max(shares, key=shares.get)
        verdict = (
            f"\n\nThe best row, {best}, closes {shares[best]:.2f} of the gap; "
            + ("it reaches" if shares[best] >= 0.5 else "no row reaches")
            + " the goal of 0.50."
        )
    return f"Seeds: {seeds}.\n\n" + markdown_table(header, rows) + verdict


def _photos_table(records: list[dict], main: list[dict]) -> str:
    """Per photo set: source-only, DANN and train-on-target on that MNIST-M, and DANN's share
    of that target's gap; the main protocol's 6 photos first (the same seeds' main results)."""
    bounds = {r["seed"]: r["results"] for r in main}
    header = [
        "backgrounds cropped from",
        "distinct backgrounds",
        "source-only",
        "DANN",
        "train-on-target",
        "share of the gap closed",
        "domain accuracy, last epoch",
    ]

    shares: dict[int, float] = {}

    def row(name, count, results, domain):
        gaps = [gap_closed(r, "dann", "target_only") for r in results]
        mean, _, _ = mean_std(gaps)
        if mean is not None:
            shares[count] = mean
        return [
            name,
            str(count),
            fmt_mean_std([r.get("source_only") for r in results]),
            fmt_mean_std([r.get("dann") for r in results]),
            fmt_mean_std([r.get("target_only") for r in results]),
            fmt_mean_std(gaps, "{:.2f}"),
            fmt_mean_std(domain, "{:.3f}"),
        ]

    seeds = [r["seed"] for r in records]
    main_rows = [bounds[s] for s in seeds if s in bounds]
    rows = []
    if main_rows:
        rows.append(
            row(
                "the 6 photos (main protocol)",
                6,
                main_rows,
                [m.get("dann_last_epoch", {}).get("train_domain_accuracy") for m in main_rows],
            )
        )
    for variant, change in PHOTO_VARIANTS.items():
        results = [r["results"][variant] for r in records if variant in r["results"]]
        if results:
            rows.append(
                row(
                    change,
                    records[0]["results"]["backgrounds"][variant],
                    results,
                    [
                        r["results"]["dann_last_epoch"][variant].get("train_domain_accuracy")
                        for r in records
                    ],
                )
            )
    return f"Seeds: {seeds}.\n\n" + markdown_table(header, rows) + _trend(shares)


def _trend(shares: dict[int, float]) -> str:
    """One sentence: how DANN's share of the gap moves with the number of backgrounds."""
    if len(shares) < 2:
        return ""
    ordered = [shares[n] for n in sorted(shares)]
    listed = ", ".join(f"{n}: {shares[n]:.2f}" for n in sorted(shares))
    if all(a > b for a, b in zip(ordered, ordered[1:])):
        direction = "falls as the backgrounds get more varied"
    elif all(a < b for a, b in zip(ordered, ordered[1:])):
        direction = "rises as the backgrounds get more varied"
    else:
        direction = "does not move one way with the number of backgrounds"
    return (
        f"\n\nShare of the gap closed by number of distinct backgrounds ({listed}): it {direction}."
    )


def _summary(by: dict[str, list[dict]]) -> dict[str, dict[str, list]]:
    return {
        setting: {m: [r["results"].get(m) for r in by.get(setting, [])] for m in methods}
        for setting, methods in SUMMARY_METHODS.items()
    }


DIFFERENCES = """\
* **Training steps.** The CPU protocol trains each MNIST model for {mnistm_epochs} passes over the
  60,000 source images ({steps} SGD steps of 64 + 64 images for DANN); the paper does not state
  its iteration count for MNIST. `--full` trains 10 passes (9,370 steps), more images than the
  8,600 steps of 32 + 32 of the best-known re-implementation (pumpikano/tf-dann); it needs a GPU.
* **MNIST-M's photos.** Ganin et al. crop BSDS500 (200 training photos); offline we crop 6 real
  colour photos (scikit-image's astronaut, chelsea, coffee, rocket; scikit-learn's china, flower),
  so the target backgrounds are far less varied. The photo-diversity study above tests
  whether that explains the shortfall, by rebuilding the target with fewer and with more
  varied backgrounds. The gray level of the digit is kept (no binarisation; pumpikano/tf-dann
  binarises, and the tf-dann section above runs that construction); crops are 28x28 at the
  photos' resolution (`ml_adv/data/mnist_m.py`).
* **Input scaling.** The built-in models read uint8 as x/255; no per-channel mean subtraction.
* **Domain loss.** The mean binary cross-entropy over the 128 images of a step (source and
  target in equal numbers, so balanced), weight 1; the paper's objective sums a source mean and a
  target mean, i.e. twice ours, with the same lambda schedule.
* **MNIST -> digits** is not in the paper: a real cross-collection shift of our choosing; the 8x8
  digits are resized linearly to 20x20 and padded to 28x28 (MNIST's frame), 0..16 -> 0..255.
  Fine-tuning and transfer (10 labels per class) use Adam 1e-3, batch 32, {adapt_steps} steps,
  through `AdvancedDomainAdaptation`; "transfer" is a new head on the frozen encoder,
  "transfer_probe_then_finetune" the facade's default (head first, then every layer).
* **Two moons.** tanh hidden units (the paper: sigmoid), SGD momentum 0.9 at a constant 0.05,
  batches of 30 + 30, {moons_steps} steps, DANN's lambda ramp and weight 1 (the paper's toy
  uses its shallow algorithm with its own settings).
"""


def summarize(records: list[dict], figures: Path) -> tuple[str, dict]:
    """EXPERIMENTS.md's section and summary.json's part, computed from the records only."""
    figures.mkdir(parents=True, exist_ok=True)
    by = _by_setting(records)
    p = PROTOCOLS.get(
        (records[0]["protocol"].get("protocol") if records else None) or "cpu", PROTOCOLS["cpu"]
    )
    parts = [
        "Target test accuracy, mean ± std over seeds; the share of the source-only -> "
        "train-on-target gap is computed per seed, then averaged. SEED.md claims "
        f'"≥ {SEED_CLAIM:.0%} performance transfer between domains" (target accuracy / source '
        "accuracy, the transfer-ratio column). Goal (issue 25): DANN closes ≥ 50% of the "
        "MNIST -> MNIST-M gap (the paper: 52.25 -> 76.66 against 95.96, 56%)."
    ]
    sections = (
        ("mnist_to_mnistm", "MNIST -> MNIST-M", PAPER),
        ("mnist_to_digits", "MNIST -> digits", None),
        ("two_moons", "Two moons (section 5.1), the sanity check", None),
    )
    for setting, heading, paper in sections:
        rs = by.get(setting, [])
        parts.append(
            f"### {heading}\n\n{len(rs)} seed(s): {[r['seed'] for r in rs]}.\n\n"
            + (_accuracy_table(rs, setting, paper) if rs else "No results yet.")
        )
        if setting == "mnist_to_mnistm" and rs:
            gaps = [gap_closed(r["results"], "dann", "target_only") for r in rs]
            mean, _, _ = mean_std(gaps)
            verdict = "meets" if mean is not None and mean >= 0.5 else "misses"
            domain = [
                r["results"].get("dann_last_epoch", {}).get("train_domain_accuracy") for r in rs
            ]
            parts.append(
                f"DANN closes {fmt_mean_std(gaps, '{:.2f}')} of the gap: it {verdict} the goal "
                f"(≥ 0.50). Domain classifier accuracy in DANN's last epoch: "
                f"{fmt_mean_std(domain, '{:.3f}')} (0.5 = domains indistinguishable)."
            )
    if by.get("mnistm_dann_diagnosis"):
        parts.append(
            "### Why DANN closes less of the MNIST -> MNIST-M gap: one change at a time\n\n"
            "Produced by `python -m experiments.da_mnist --settings mnistm_dann_diagnosis "
            "--seeds 0`; each share of the gap uses the same seed's source-only and "
            "train-on-target models above.\n\n"
            + _diagnosis_table(by["mnistm_dann_diagnosis"], by.get("mnist_to_mnistm", []))
        )
    if by.get("mnistm_photo_diversity"):
        parts.append(
            "### Does the photo set matter? MNIST-M with fewer and more varied backgrounds\n\n"
            "Produced by `python -m experiments.da_mnist --settings mnistm_photo_diversity "
            f"--seeds {' '.join(str(r['seed']) for r in by['mnistm_photo_diversity'])}`: "
            "MNIST-M rebuilt from other photo sets (the same digits and blend), the "
            "main protocol's source-only model, DANN and train-on-target on each; each share "
            "of the gap is that target's own.\n\n"
            + _photos_table(by["mnistm_photo_diversity"], by.get("mnist_to_mnistm", []))
        )
    if by.get("mnistm_tf_dann"):
        parts.append(
            "### The product on tf-dann's recipe, data included\n\n"
            "Produced by `python -m experiments.da_mnist --settings mnistm_tf_dann --seeds "
            f"{' '.join(str(r['seed']) for r in by['mnistm_tf_dann'])}`: source-only, DANN and "
            "train-on-target through `fit` and `fit_dann` on pumpikano/tf-dann's binarised "
            "digits, 55,000 training images, per-channel centring, SAME convolutions, "
            "truncated-normal initialisation and step budget (`experiments/da_tf_dann.py` lists "
            "every choice); the same 6 photos as above, since BSDS500 is not on this machine.\n\n"
            + da_tf_dann.table(by["mnistm_tf_dann"])
        )
    for name, path in (
        ("accuracy", _figure_accuracies(by, figures)),
        ("moons", _figure_moons(by["two_moons"], figures)),
    ):
        if path:
            parts.append(f"![{name}]({path})")
    steps = p.mnistm_epochs * (60000 // p.batch_size)
    parts.append(
        "Differences from the paper's protocol:\n\n"
        + DIFFERENCES.format(
            mnistm_epochs=p.mnistm_epochs,
            steps=steps,
            adapt_steps=p.adapt_steps,
            moons_steps=p.moons_epochs * 10,
        )
    )
    return "\n\n".join(parts), _summary(by)


# ------------------------------------------------------------------ main
def checkpoints_root(root: Path) -> Path:
    """Where runs checkpoint: the ignored ``runs/`` beside the committed results, else inside
    ``--out``."""
    return ROOT / "runs" / "da_mnist" if root == RESULTS else root / "runs" / "da_mnist"


def _rounded(value):
    """A result for the progress line: floats to 4 digits, dicts of them too."""
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return round(value, 4) if isinstance(value, float) else value


def unfinished_diagnosis(
    root: Path, setting: str, seed: int, args: argparse.Namespace
) -> dict[str, Any] | None:
    """The diagnosis record already written for ``seed`` when a variant added since is
    missing from its results (that variant then runs alone); None otherwise."""
    path = result_path(root, EXPERIMENT, setting, seed)
    if setting != "mnistm_dann_diagnosis" or args.force or not path.is_file():
        return None
    record = json.loads(path.read_text())
    return record if any(v not in record["results"] for v in DANN_VARIANTS) else None


def main(argv: list[str] | None = None) -> int:
    p_args = parser(__doc__)
    p_args.add_argument("--full", action="store_true", help="the paper's step budget (for a GPU)")
    p_args.add_argument(
        "--settings",
        nargs="+",
        choices=SETTINGS,
        default=list(MAIN_SETTINGS),
        help="which settings to run",
    )
    p_args.set_defaults(seeds=None)
    args = p_args.parse_args(argv)
    args.seeds = args.seeds or ([0] if args.quick else [0, 1, 2])  # --quick: one seed unless told
    use_shared_data()
    protocol = PROTOCOLS["quick" if args.quick else "full" if args.full else "cpu"]
    root = results_root(args)
    for setting in args.settings:
        for seed in args.seeds:
            finished = unfinished_diagnosis(root, setting, seed, args)
            if finished is None and done(root, EXPERIMENT, setting, seed, args):
                continue
            runs = checkpoints_root(root) / f"{protocol.name}-seed{seed}"
            started = time.perf_counter()
            results = (
                RUNNERS[setting](seed, protocol, runs, finished["results"])
                if finished
                else RUNNERS[setting](seed, protocol, runs)
            )
            earlier = finished["seconds"] if finished else 0.0  # the variants run before
            write_result(
                root,
                EXPERIMENT,
                setting,
                seed,
                protocol=protocol_record(protocol, setting),
                results=results,
                seconds=earlier + time.perf_counter() - started,
                quick=args.quick,
            )
            shown = {
                m: _rounded(results[m]) for m in METHODS[setting] if results.get(m) is not None
            }
            print(
                f"{setting} seed {seed}: {shown} ({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
    print(f"results in {root / EXPERIMENT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
