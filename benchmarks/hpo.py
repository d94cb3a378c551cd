"""Hyper-parameter search rows (issue 11): P trials as one stacked population against the same
P trials one after another.

``hpo/population-mlp``, ``hpo/population-cnn``: P=16 configurations (learning rate, label
smoothing; seeded random draws) of the tiny digits MLP / CNN, 2 epochs each on the
digits training split minus a 20% validation part, scored on that part. Contenders, on
the same configurations, data and objective:

* ``ml_adv population``: ``ml_adv.hpo.population.stacked_trials``, the evaluator behind
  ``Study(stacked=True)`` and the ``population`` method: one ``fit_stacked`` program;
* ``sequential trials``: ``ml_adv.hpo.objective.run_trial`` 16 times, what every
  sequential method (bayesian, genetic, random, grid) does per trial: one ``fit`` each,
  compilation included, as a user sees it.

Work is trials per second; the target of the issue is >= 8x.
"""

from __future__ import annotations

import numpy as np

from benchmarks.harness import Context, make_row, register

P, EPOCHS = 16, 2
POPULATION, SEQUENTIAL = "ml_adv population", "sequential trials"


def _row(
    ctx: Context, arch: str, p: int = P, epochs: int = EPOCHS, examples: int | None = None
) -> list[dict]:
    """The row; ``examples`` keeps that many digits (the GPU check's CPU dry run)."""
    from ml_adv.data.catalog import load_dataset, view_for
    from ml_adv.hpo.methods import make_searcher
    from ml_adv.hpo.objective import TrainingObjective, run_trial
    from ml_adv.hpo.population import stacked_trials
    from ml_adv.hpo.space import Float, SearchSpace
    from ml_adv.training.config import TrainConfig

    data = "digits"
    if examples is not None:
        view = load_dataset(view_for("digits", arch), split="train")
        data = view.subset(np.arange(min(examples, len(view))))
    objective = TrainingObjective.from_data(
        data,
        architectures=(arch,),
        size="tiny",
        base_config=TrainConfig(epochs=epochs, batch_size=32),
    )
    space = SearchSpace(
        [Float("learning_rate", 1e-4, 3e-2, log=True), Float("label_smoothing", 0.0, 0.2)]
    )
    searcher = make_searcher("random", space, p, seed=0)
    configs = [searcher.ask().config for _ in range(p)]
    scores = {}

    def checked(outcomes):
        failed = [o["error"] for o in outcomes if o["status"] != "ok"]
        if failed:  # a benchmark of failing trials would time nothing real
            raise RuntimeError(f"hpo benchmark: {len(failed)} trial(s) failed: {failed[0]}")
        return [o["score"] for o in outcomes]

    def population():
        scores[POPULATION] = checked(stacked_trials(objective, configs))

    def sequential():
        scores[SEQUENTIAL] = checked([run_trial(objective, c) for c in configs])

    timing = ctx.time({POPULATION: population, SEQUENTIAL: sequential})
    best = {k: max(v) for k, v in scores.items()}
    title = f"P={p} trials, digits {arch} (tiny), {epochs} epochs"
    return [
        make_row(
            f"hpo/population-{arch}",
            "hpo",
            title,
            timing,
            rounds=ctx.rounds,
            work_per_round=p,
            unit="trials/s",
            subject=POPULATION,
            peers=(SEQUENTIAL,),
            extra={
                "population": p,
                "epochs": epochs,
                "best_val_accuracy": best,
                "examples": examples,
                "note": "compilation included on both sides; same configurations and data",
            },
        )
    ]


register("hpo/population-mlp", group="hpo", quick=False)(lambda ctx: _row(ctx, "mlp"))
register("hpo/population-cnn", group="hpo", quick=False)(lambda ctx: _row(ctx, "cnn"))
