"""Population Based Training: exploit/explore inside one compiled stacked program."""

import json

import jax
import numpy as np
import pytest
from compile_counter import CompileCounter

from ml_adv.data import load_dataset
from ml_adv.errors import ConfigError
from ml_adv.hpo import TrainingObjective
from ml_adv.hpo.journal import TrialJournal
from ml_adv.hpo.pbt import (
    PBTOptions,
    exploit,
    explore,
    next_generation,
    select,
    set_member_values,
)
from ml_adv.hpo.pbt_study import run_pbt_study
from ml_adv.hpo.space import Categorical, Float, SearchSpace
from ml_adv.hpo.study import Study
from ml_adv.training.config import TrainConfig
from ml_adv.training.setup import init_run, state_hyperparams

SPACE = SearchSpace(
    [Float("learning_rate", 1e-3, 3e-2, log=True), Float("label_smoothing", 0.0, 0.2)]
)
OPTIONS = {"ready": 1, "fraction": 0.25}


@pytest.fixture(scope="module")
def objective():
    # The population tests' objective: the same stacked program, compiled once per session.
    data = load_dataset("digits_flat", split="train").subset(np.arange(300))
    return TrainingObjective.from_data(
        data, architectures=("mlp",), size="tiny", base_config=TrainConfig(epochs=3, batch_size=32)
    )


def test_bad_input_fails_before_anything_compiles(objective):
    with CompileCounter() as compiles:
        for options, match in (
            ({"ready": 0}, "ready"),
            ({"ready": 3}, "ready"),
            ({"fraction": 0.0}, "fraction"),
            ({"fraction": 0.6}, "fraction"),
            ({"resample_probability": 1.5}, "resample"),
            ({"perturb_factors": []}, "perturb_factors"),
            ({"readdy": 1}, "unknown"),
        ):
            with pytest.raises(ConfigError, match=match):
                Study(objective, SPACE, method="pbt", max_trials=4, method_options=options)
        with pytest.raises(ConfigError, match="continuous"):
            Study(
                objective,
                SearchSpace([Categorical("learning_rate", [1e-3, 1e-2])]),
                method="pbt",
                max_trials=4,
            )
        with pytest.raises(ConfigError, match="structural.*batch_size"):
            Study(
                objective,
                SearchSpace(
                    [Float("learning_rate", 1e-3, 1e-2), Categorical("batch_size", [16, 32])]
                ),
                method="pbt",
                max_trials=4,
            )
        with pytest.raises(ConfigError, match="max_trials"):
            Study(objective, SPACE, method="pbt", max_trials=1)
    assert compiles.count == 0


def test_truncation_selection_and_explore_stay_in_the_space():
    rng = np.random.default_rng(0)
    scores = [0.5, 0.9, np.nan, 0.7, 0.1, 0.8, 0.3, 0.6]
    sources = select(scores, [1.0] * 8, 0.25, rng)
    # bottom two (0.1, and NaN: a diverged member) copy one of the top two (0.9, 0.8); the rest
    # keep theirs
    assert set(sources[[2, 4]].tolist()) <= {1, 5} and all(
        sources[i] == i for i in (0, 1, 3, 5, 6, 7)
    )
    # exact ties in the score break on the lower validation loss
    assert select([0.5, 0.5, 0.2, 0.5], [0.3, 0.1, 0.5, 0.2], 0.25, rng).tolist() == [0, 1, 1, 3]
    assert select([np.nan, np.nan], [1.0, 1.0], 0.5, rng) is None
    options = PBTOptions(resample_probability=0.25)
    config, moved = {"learning_rate": 0.02, "label_smoothing": 0.19}, 0
    for _ in range(200):
        new = explore(config, SPACE, options, rng)
        assert 1e-3 <= new["learning_rate"] <= 3e-2 and 0.0 <= new["label_smoothing"] <= 0.2
        ratio = new["learning_rate"] / config["learning_rate"]
        moved += any(np.isclose(ratio, f) for f in (0.8, 1.2)) or new["learning_rate"] == 3e-2
    assert (
        100 < moved < 200
    )  # most are perturbed by 0.8 / 1.2 (clipped at the bound), some resampled
    # one seed, one decision; another interval draws afresh
    configs = [{"learning_rate": 0.001 * (i + 1), "label_smoothing": 0.0} for i in range(8)]
    a = next_generation(scores, [1.0] * 8, configs, SPACE, options, seed=3, interval=1)
    assert repr(a) == repr(
        next_generation(scores, [1.0] * 8, configs, SPACE, options, seed=3, interval=1)
    )
    assert repr(a) != repr(
        next_generation(scores, [1.0] * 8, configs, SPACE, options, seed=3, interval=2)
    )


def test_exploit_copies_the_exact_state_of_the_source_member(objective):
    spec, config, train, _ = objective.build({"learning_rate": 1e-3})
    state = init_run(
        spec,
        config,
        example_x=train.x[:1],
        steps_per_epoch=7,
        members=4,
        member_hparams={"learning_rate": [1e-3, 2e-3, 3e-3, 4e-3]},
        freeze_on_nonfinite=True,
    ).state
    # distinct optimizer moments per member, so a copy is visible in the whole optimizer state
    state = state.replace(
        opt_state=jax.tree.map(
            lambda a: (
                a + np.arange(4, dtype=a.dtype).reshape((4,) + (1,) * (a.ndim - 1))
                if a.dtype.kind == "f"
                else a
            ),
            state.opt_state,
        )
    )
    copied = exploit(state, np.array([0, 1, 1, 0]))
    for name in ("params", "opt_state", "model_state", "hparams"):
        for before, after in zip(
            jax.tree.leaves(getattr(state, name)), jax.tree.leaves(getattr(copied, name))
        ):
            before, after = np.asarray(before), np.asarray(after)
            np.testing.assert_array_equal(after[[0, 1]], before[[0, 1]])
            np.testing.assert_array_equal(after[2], before[1])  # member 2 is now member 1 ...
            np.testing.assert_array_equal(after[3], before[0])
    np.testing.assert_array_equal(copied.rng, state.rng)  # ... with its own dropout key
    values = [
        {"learning_rate": v, "label_smoothing": s}
        for v, s in ((1e-3, 0), (2e-3, 0), (5e-3, 0.1), (1e-2, 0.2))
    ]
    hp = state_hyperparams(set_member_values(copied, values))
    np.testing.assert_allclose(hp["learning_rate"], [1e-3, 2e-3, 5e-3, 1e-2], rtol=1e-6)
    np.testing.assert_allclose(hp["label_smoothing"], [0, 0, 0.1, 0.2], rtol=1e-6)


def test_pbt_trains_one_program_records_its_lineage_and_resumes_exactly(tmp_path, objective):
    kwargs = dict(method="pbt", max_trials=4, seed=0, progress=False, method_options=OPTIONS)
    counts = []
    with CompileCounter() as compiles:
        full = run_pbt_study(
            Study(objective, SPACE, **kwargs),
            on_interval=lambda record: counts.append(compiles.count),
        )
    assert (
        len(counts) == 3 and counts[1] == counts[0]
    )  # the second interval (train, exploit, explore) compiles nothing
    assert [t["status"] for t in full.trials] == ["ok"] * 4 and full.best_score == max(
        t["score"] for t in full.trials
    )
    intervals = full.summary()["pbt"]["intervals"]
    assert [r["epochs"] for r in intervals] == [[0, 1], [1, 2], [2, 3]] and intervals[-1][
        "sources"
    ] is None
    for r in intervals[:-1]:
        copies = [(i, j) for i, j in enumerate(r["sources"]) if i != j]
        assert len(copies) == 1  # bottom 25% of 4: one member copies the best one
        ((i, j),) = copies
        assert r["scores"][j] == max(r["scores"]) and r["scores"][i] == min(r["scores"])
        assert {"epoch": r["epochs"][1], "copied_from": j} in [
            {k: c[k] for k in ("epoch", "copied_from")} for c in full.trials[i]["lineage"]
        ]
    for t in full.trials:
        segments = t["schedule"]
        assert [s["epochs"] for s in segments] == [[0, 1], [1, 2], [2, 3]]
        assert segments[-1]["config"] == t["config"] and segments[-1]["trained_by"] == t["trial"]
        assert len(t["intermediate"]) == 3 and t["score"] == t["intermediate"][-1]

    # killed after the second interval's checkpoint, before its record: the same study started
    # again goes on from the first interval's state
    def kill(record):
        if record["interval"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_pbt_study(
            Study(objective, SPACE, run_dir=tmp_path / "killed", **kwargs), on_interval=kill
        )
    path = tmp_path / "killed" / "trials.jsonl"
    path.write_text(
        "".join(path.read_text().splitlines(keepends=True)[:-1])
    )  # its last record never made it
    assert len(TrialJournal(path).read_records("interval")) == 1
    resumed = Study(objective, SPACE, run_dir=tmp_path / "killed", **kwargs).run()
    strip = lambda trials: [
        {k: v for k, v in t.items() if k not in ("seconds", "finished_at")} for t in trials
    ]  # noqa: E731
    assert strip(resumed.trials) == strip(
        full.trials
    )  # same seed, same scores, lineage and schedules
    assert resumed.best_config == full.best_config and resumed.best_score == full.best_score
    # the result keeps the best member's weights (also saved under model/)
    assert full.model.metrics["member"] == full.best_trial
    for a, b in zip(
        jax.tree.leaves(full.model.variables), jax.tree.leaves(resumed.model.variables)
    ):
        np.testing.assert_array_equal(a, b)
    _, val = objective.views["*"]
    assert full.model.evaluate(val)["accuracy"] == pytest.approx(full.best_score, abs=1e-6)
    journal = TrialJournal(tmp_path / "killed" / "trials.jsonl")
    assert len(journal.read_records("interval")) == 3 and len(journal.read()[1]) == 4
    report = json.loads((tmp_path / "killed" / "report.json").read_text())
    assert report["pbt"]["best_schedule"] == full.trials[full.best_trial]["schedule"]
    assert (tmp_path / "killed" / "model").is_dir() and (
        tmp_path / "killed" / "plots" / "pbt_lineage.png"
    ).is_file()
    with CompileCounter() as compiles:  # started once more: replays the journal, trains nothing
        again = Study(objective, SPACE, run_dir=tmp_path / "killed", **kwargs).run()
    assert strip(again.trials) == strip(full.trials) and again.resumed_trials == 4
    assert again.model.metrics["member"] == full.best_trial and compiles.count == 0
