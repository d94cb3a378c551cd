"""Experiment: digits -> digits_m domain adaptation, several seeds, every method.

Per seed, with the DESIGN reference CNN (``size="small"``: conv32-pool-conv64-pool-dense128):
  * source-only: trained on the source train split (digits as RGB), tested on the target;
  * DANN (``AdvancedDomainAdaptation("domain_adversarial")``) from the source-only model,
    on the unlabelled target train split, and the same run with domain weight 0 (control);
  * fine-tuning of the source-only model on 10 labelled target examples per class,
    gradual unfreezing in 3 stages, and all layers at once for the same steps;
  * transfer: the source-only model's encoder frozen under a new head trained on the same
    10 labels per class;
  * train-on-target: the upper bound (all target train labels).
Reported: target test accuracy (mean +- std over seeds) and the share of the
source-only -> train-on-target gap each method closes (per seed, then averaged).
No target test label is used for any choice: settings are fixed in ``SETTINGS``. (One
caveat: the fine-tuning/transfer step budgets were raised from 45/90 to 450 steps after
ad-hoc runs on seeds 0-1 that showed training accuracy 0.74-0.80 at 45 steps; those runs
also printed target test accuracy.)

    python experiments/domain_adaptation.py [--seeds 0 1 2 3 4]
    python experiments/domain_adaptation.py --bert small --seeds 0   # the BERT worked example only

``--bert SIZE`` runs the transfer worked example instead: BERT masked-token pretraining on
the digits token view's train split (labels unused), then a new head on the frozen
encoder followed by full fine-tuning, against the same BERT trained from scratch for the
same number of epochs, each with 10 and 50 labelled examples per class.

Writes ``runs/domain_adaptation/report.json``.

``--diagnose`` checks the gradient reversal on the experiment's CNN and fits a linear probe
on the target test features (with their labels) of source-only, DANN and target-trained
models: how much target class information the features hold. Writes ``diagnose.json``.

Measured 2026-11-30 (seeds 0-4, CPU, 2-6 min per seed on a shared machine):

| method | target test accuracy (mean +- std) | share of gap closed |
|---|---|---|
| source-only | 0.428 +- 0.015 | 0.00 |
| DANN | 0.439 +- 0.005 | 0.02 |
| DANN, domain weight 0 (control) | 0.427 +- 0.015 | 0.00 |
| fine-tuning, 10 labels per class, gradual unfreezing | 0.636 +- 0.034 | 0.40 |
| fine-tuning, same, all layers at once | 0.640 +- 0.022 | 0.40 |
| transfer, frozen encoder + new head | 0.435 +- 0.019 | 0.01 |
| train-on-target | 0.951 +- 0.005 | 1.00 |

DANN falls well short of the issue's goal (>= 50% of the gap; the paper's MNIST -> MNIST-M
closes ~56%), with no wiring fault (``--diagnose``): it aligns the features (MMD similarity
0.930 -> 0.982, discriminator ~0.65) but the aligned features hold little target class
information (linear probe with target labels: DANN 0.56-0.62, source-only 0.56-0.59,
target-trained 0.93-0.95, seeds 0-2). Most of the gap is digit polarity: on the 112 target
test images with backgrounds brighter than 0.5 (inverted strokes) source-only scores 0.00-0.01
and DANN 0.01-0.03, against 0.90-0.94 on dark backgrounds. See docs/digits_notes.md, "Domain
adaptation" section.

BERT worked example (``--bert small --seeds 0``, then ``--seeds 1 2`` and ``--seeds 3 4``;
169-516 s a seed on CPU; masked-token accuracy after pretraining 0.60-0.62), digits token test
accuracy at equal epochs (30), mean ± std over seeds 0-4 (2026-11-30, seeds 3-4 2026-12-01):

| labels per class | pretrained encoder: new head, then full fine-tune | from scratch |
|---|---|---|
| 10 | 0.605 ± 0.062 | 0.389 ± 0.021 |
| 50 | 0.889 ± 0.016 | 0.786 ± 0.060 |
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from ml_adv.rundir import Run

SETTINGS = {
    "source": {"epochs": 15, "batch_size": 64, "learning_rate": 1e-3},
    # The DANN paper's optimizer (SGD, momentum 0.9, lr 0.01), its lambda ramp and weight 1.
    "dann": {
        "epochs": 30,
        "batch_size": 64,
        "learning_rate": 1e-2,
        "optimizer": "momentum",
        "discriminator_hidden": (256,),
        "domain_weight": 1.0,
    },
    # 100 labelled examples at batch 32 are 3 steps an epoch: budgets are counted in steps.
    # 3 stages x 50 epochs = 450 steps (5 epochs a stage, 45 steps, stopped far from
    # convergence: training accuracy < 1; 100 a stage adds nothing over 50).
    "fine_tuning": {
        "epochs": 150,
        "batch_size": 32,
        "learning_rate": 1e-3,
        "stages": 3,
        "epochs_per_stage": 50,
    },
    "transfer": {"epochs": 150, "batch_size": 32, "learning_rate": 1e-3},  # 450 head-only steps
    "labels_per_class": 10,
}


def _row(name, accuracies, gaps):
    return {
        "method": name,
        "target_accuracy": accuracies,
        "mean": statistics.mean(accuracies),
        "std": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
        "gap_closed": gaps,
        "gap_closed_mean": statistics.mean(gaps) if gaps else None,
    }


def run_seed(seed: int, data) -> dict[str, float]:
    from ml_adv import AdvancedDomainAdaptation, make_spec
    from ml_adv.domain_adaptation.workflow import labelled_sample
    from ml_adv.training.config import TrainConfig
    from ml_adv.training.loop import fit
    from ml_adv.training.trained_model import TrainedModel

    source, source_test, target, target_test = data
    spec = make_spec(
        "cnn", input_shape=source.example_shape, input_kind="image", num_classes=10, size="small"
    )
    cfg = TrainConfig(seed=seed, **SETTINGS["source"])
    source_model = TrainedModel(
        spec, fit(spec, source, cfg, run=Run(progress=False)).state.variables()
    )
    bound = TrainedModel(
        spec, fit(spec, target, cfg, run=Run(progress=False)).state.variables()
    ).evaluate(target_test)["accuracy"]
    labeled = labelled_sample(target, SETTINGS["labels_per_class"], seed)
    out = {"source_only": source_model.evaluate(target_test)["accuracy"], "train_on_target": bound}

    d = SETTINGS["dann"]
    da = AdvancedDomainAdaptation(
        "domain_adversarial",
        epochs=d["epochs"],
        batch_size=d["batch_size"],
        learning_rate=d["learning_rate"],
        optimizer=d["optimizer"],
        seed=seed,
        discriminator_hidden=d["discriminator_hidden"],
        domain_weight=d["domain_weight"],
    )
    da.set_source_domain(source, test=source_test)
    da.set_target_domain(target, test=target_test, target_trained_accuracy=bound)
    out["dann"] = da.evaluate_adaptation(da.adapt_model(source_model))["target_accuracy"]
    out["similarity_source_only"] = da.get_domain_similarity(source_model)
    out["similarity_dann"] = da.get_domain_similarity()
    da.domain_weight = 0.0  # control: the same run without the adversarial term
    out["dann_domain_weight_0"] = da.evaluate_adaptation(da.adapt_model(source_model))[
        "target_accuracy"
    ]

    f = SETTINGS["fine_tuning"]
    ft = AdvancedDomainAdaptation(
        "fine_tuning",
        epochs=f["epochs"],
        batch_size=f["batch_size"],
        learning_rate=f["learning_rate"],
        seed=seed,
    )
    ft.set_gradual_unfreezing(stages=f["stages"], epochs_per_stage=f["epochs_per_stage"])
    ft.set_source_domain(source, test=source_test)
    ft.set_target_domain(target, labeled=labeled, test=target_test, target_trained_accuracy=bound)
    out["fine_tuning_10_per_class"] = ft.evaluate_adaptation(ft.adapt_model(source_model))[
        "target_accuracy"
    ]
    ft.set_gradual_unfreezing(False)  # the same 450 steps with every layer trainable from the start
    out["fine_tuning_all_layers"] = ft.evaluate_adaptation(ft.adapt_model(source_model))[
        "target_accuracy"
    ]

    t = SETTINGS["transfer"]
    tr = AdvancedDomainAdaptation(
        "transfer_learning",
        epochs=t["epochs"],
        batch_size=t["batch_size"],
        learning_rate=t["learning_rate"],
        seed=seed,
    )
    tr.set_source_domain(source, test=source_test)
    tr.set_target_domain(target, labeled=labeled, test=target_test, target_trained_accuracy=bound)
    out["transfer_frozen_encoder"] = tr.evaluate_adaptation(tr.adapt_model(source_model))[
        "target_accuracy"
    ]
    return out


def grl_check(seed: int, data) -> dict[str, float]:
    """On the experiment's CNN: the domain term's gradient over the encoder is ``-lambda`` times
    the gradient without reversal, the discriminator's is the plain one, the head gets none."""
    import jax
    import jax.numpy as jnp

    from ml_adv import make_spec
    from ml_adv.domain_adaptation.dann import PROGRESS, DANNModel, dann_objective, domain_loss

    source, _, target, _ = data
    spec = make_spec(
        "cnn", input_shape=source.example_shape, input_kind="image", num_classes=10, size="small"
    )
    module = DANNModel(spec.build(), discriminator_hidden=SETTINGS["dann"]["discriminator_hidden"])
    variables = module.init(
        {"params": jax.random.PRNGKey(seed), "dropout": jax.random.PRNGKey(seed)},
        jnp.asarray(source.x[:2]),
        train=False,
    )
    params, state = variables["params"], {PROGRESS: {"step": jnp.int32(300)}}
    batch = {
        name: {"x": jnp.asarray(d.x[:64]), "y": jnp.asarray(d.y[:64])}
        for name, d in (("source", source), ("target", target))
    }
    key = jax.random.PRNGKey(seed + 1)

    def total(weight):
        objective = dann_objective(
            module, streams=("source", "target"), total_steps=660, domain_weight=weight
        )
        return jax.grad(lambda p: objective(p, state, batch, key, {})[0])(params)

    reversed_ = jax.tree.map(lambda a, b: a - b, total(1.0), total(0.0))  # the domain term's share
    ids = jnp.concatenate([jnp.zeros(64, jnp.int32), jnp.ones(64, jnp.int32)])
    x = jnp.concatenate([batch["source"]["x"], batch["target"]["x"]])

    def plain_loss(p):  # same features (same dropout key), no reversal layer
        v = {"params": p, **state}
        f = module.apply(
            v, x, True, method=DANNModel.features, rngs={"dropout": jax.random.split(key)[1]}
        )
        return domain_loss(module.apply(v, f, method=lambda m, f: m.discriminator(f)), ids)

    plain = jax.grad(plain_loss)(params)
    ratio = lambda a, b: float(jnp.vdot(a, b) / jnp.vdot(b, b))  # noqa: E731
    enc, disc = reversed_["base"]["encoder"], plain["base"]["encoder"]
    return {
        "lambda": float(2 / (1 + jnp.exp(-10 * 300 / 660)) - 1),
        "conv_0_ratio": ratio(enc["conv_0"]["kernel"], disc["conv_0"]["kernel"]),
        "dense_0_ratio": ratio(enc["dense_0"]["kernel"], disc["dense_0"]["kernel"]),
        "discriminator_ratio": ratio(
            reversed_["discriminator"]["Dense_0"]["kernel"],
            plain["discriminator"]["Dense_0"]["kernel"],
        ),
        "head_gradient_norm": float(jnp.linalg.norm(reversed_["base"]["head"]["kernel"])),
    }


def diagnose(seed: int, data) -> dict[str, object]:
    """How much target class information the features hold: a linear probe fitted on the target
    test features with their labels (5-fold CV), next to the model's own head, the head's
    prediction histogram and its accuracy by background brightness, for source-only, DANN and
    train-on-target models."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    from ml_adv import AdvancedDomainAdaptation, make_spec
    from ml_adv.domain_adaptation.similarity import features_of
    from ml_adv.training.config import TrainConfig
    from ml_adv.training.loop import fit
    from ml_adv.training.trained_model import TrainedModel

    source, source_test, target, target_test = data
    spec = make_spec(
        "cnn", input_shape=source.example_shape, input_kind="image", num_classes=10, size="small"
    )
    cfg = TrainConfig(seed=seed, **SETTINGS["source"])
    models = {
        "source_only": TrainedModel(
            spec, fit(spec, source, cfg, run=Run(progress=False)).state.variables()
        )
    }
    d = SETTINGS["dann"]
    da = AdvancedDomainAdaptation(
        "domain_adversarial",
        epochs=d["epochs"],
        batch_size=d["batch_size"],
        learning_rate=d["learning_rate"],
        optimizer=d["optimizer"],
        seed=seed,
        discriminator_hidden=d["discriminator_hidden"],
        domain_weight=d["domain_weight"],
    )
    da.set_source_domain(source)
    da.set_target_domain(target)
    models["dann"] = da.adapt_model(models["source_only"])
    models["train_on_target"] = TrainedModel(
        spec, fit(spec, target, cfg, run=Run(progress=False)).state.variables()
    )
    # Background brightness of each target test image: the mean of its four 2x2 corners (the
    # digits rarely reach them). Above ~0.5 the |photo - digit| strokes are darker than the
    # background: the digit's polarity is inverted relative to the source.
    x = target_test.x
    corners = np.concatenate([x[:, :2, :2], x[:, :2, -2:], x[:, -2:, :2], x[:, -2:, -2:]], axis=1)
    background = corners.reshape(len(x), -1).mean(1)
    bins = ((0.0, 0.2), (0.2, 0.35), (0.35, 0.5), (0.5, 1.01))
    out: dict[str, object] = {
        "background_bins": {
            f"{lo}-{hi}": int(np.sum((background >= lo) & (background < hi))) for lo, hi in bins
        },
        "dann_last_epoch": {
            k: da.runs[-1]["history"][-1][k]
            for k in ("train_domain_accuracy", "train_grl_lambda", "train_accuracy")
        },
    }
    for name, model in models.items():
        f = features_of(model, target_test, max_examples=len(target_test))
        f = (f - f.mean(0)) / (f.std(0) + 1e-6)
        probe = cross_val_score(
            LogisticRegression(max_iter=2000, C=0.1), f, target_test.y, cv=5
        ).mean()
        pred = np.asarray(model.predict(target_test))
        right = pred == target_test.y
        out[name] = {
            "head_accuracy": float(np.mean(right)),
            "target_probe_accuracy": float(probe),
            "predicted_class_counts": np.bincount(pred, minlength=10).tolist(),
            "accuracy_by_background": {
                f"{lo}-{hi}": float(np.mean(right[(background >= lo) & (background < hi)]))
                for lo, hi in bins
            },
        }
    return out


BERT = {
    "pretrain_epochs": 20,
    "head_epochs": 10,
    "finetune_epochs": 20,
    "batch_size": 32,
    "learning_rate": 1e-3,
    "labels_per_class": (10, 50),
}


def bert_transfer(seed: int, size: str) -> dict[str, float]:
    """Pretrained-encoder transfer vs from-scratch training at equal epochs (digits tokens)."""
    import dataclasses

    from ml_adv import load_dataset, make_spec
    from ml_adv.domain_adaptation.finetune import transfer
    from ml_adv.domain_adaptation.workflow import labelled_sample
    from ml_adv.training.config import TrainConfig
    from ml_adv.training.loop import fit
    from ml_adv.training.pretraining import pretrain_masked_lm
    from ml_adv.training.trained_model import TrainedModel

    train, test = (
        load_dataset("digits_tokens", split="train"),
        load_dataset("digits_tokens", split="test"),
    )
    spec = make_spec(
        "bert", input_shape=train.example_shape, input_kind="tokens", num_classes=10, size=size
    )
    b = BERT
    pre = pretrain_masked_lm(
        spec,
        train,
        TrainConfig(
            epochs=b["pretrain_epochs"],
            batch_size=b["batch_size"],
            learning_rate=b["learning_rate"],
            seed=seed,
        ),
    )
    out = {"mlm_accuracy": pre.history[-1]["mlm_accuracy"]}
    for per_class in b["labels_per_class"]:
        labeled = labelled_sample(train, per_class, seed)
        cfg = TrainConfig(
            epochs=1,
            batch_size=min(b["batch_size"], len(labeled)),
            learning_rate=b["learning_rate"],
            seed=seed,
        )
        r = transfer(
            spec,
            pre.variables["params"],
            labeled,
            cfg,
            head_epochs=b["head_epochs"],
            finetune_epochs=b["finetune_epochs"],
        )
        out[f"transfer_{per_class}_per_class"] = TrainedModel(
            spec, {"params": r.state.params}
        ).evaluate(test)["accuracy"]
        scratch = fit(
            spec,
            labeled,
            dataclasses.replace(cfg, epochs=b["head_epochs"] + b["finetune_epochs"]),
            run=Run(progress=False),
        )
        out[f"scratch_{per_class}_per_class"] = TrainedModel(
            spec, scratch.state.variables()
        ).evaluate(test)["accuracy"]
    return out


def main() -> None:
    from ml_adv.data.catalog import load_dataset

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--out", default="runs/domain_adaptation")
    parser.add_argument(
        "--bert", metavar="SIZE", help="run the BERT transfer worked example with this size"
    )
    parser.add_argument(
        "--diagnose",
        action="store_true",
        help=(
            "check the gradient reversal on the CNN and probe target class information in the "
            "features"
        ),
    )
    args = parser.parse_args()
    if args.bert:
        rows = []
        for seed in args.seeds:
            started = time.perf_counter()
            rows.append(bert_transfer(seed, args.bert))
            print(
                f"seed {seed} ({time.perf_counter() - started:.0f} s): "
                + ", ".join(f"{k} {v:.4f}" for k, v in rows[-1].items()),
                flush=True,
            )
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"bert_{args.bert}.json").write_text(
            json.dumps({"settings": BERT, "seeds": args.seeds, "rows": rows}, indent=2)
        )
        return
    data = (
        load_dataset("digits_m_source", split="train"),
        load_dataset("digits_m_source", split="test"),
        load_dataset("digits_m", split="train"),
        load_dataset("digits_m", split="test"),
    )
    if args.diagnose:
        rows = []
        for seed in args.seeds:
            rows.append(
                {"seed": seed, "gradient_reversal": grl_check(seed, data), **diagnose(seed, data)}
            )
            print(json.dumps(rows[-1]), flush=True)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "diagnose.json").write_text(
            json.dumps({"settings": SETTINGS, "rows": rows}, indent=2)
        )
        return
    per_seed = []
    for seed in args.seeds:
        started = time.perf_counter()
        per_seed.append(run_seed(seed, data))
        print(
            f"seed {seed} ({time.perf_counter() - started:.0f} s): "
            + ", ".join(f"{k} {v:.4f}" for k, v in per_seed[-1].items()),
            flush=True,
        )
    methods = [
        "source_only",
        "dann",
        "dann_domain_weight_0",
        "fine_tuning_10_per_class",
        "fine_tuning_all_layers",
        "transfer_frozen_encoder",
        "train_on_target",
    ]
    rows = []
    for m in methods:
        accs = [r[m] for r in per_seed]
        gaps = [
            (r[m] - r["source_only"]) / (r["train_on_target"] - r["source_only"]) for r in per_seed
        ]
        rows.append(_row(m, accs, gaps))
    print("\n| method | target test accuracy (mean +- std) | share of gap closed |\n|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['mean']:.3f} +- {r['std']:.3f} | {r['gap_closed_mean']:.2f} |")
    sims = {
        k: statistics.mean(r[k] for r in per_seed)
        for k in ("similarity_source_only", "similarity_dann")
    }
    print(
        "\nMMD similarity of source/target features: "
        f"source-only {sims['similarity_source_only']:.3f}, "
        f"DANN {sims['similarity_dann']:.3f}"
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(
        json.dumps(
            {
                "settings": SETTINGS,
                "seeds": args.seeds,
                "per_seed": per_seed,
                "rows": rows,
                "similarity": sims,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
