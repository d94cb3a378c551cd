"""Population search: stacked trials (batched asks) and successive halving in stacked programs."""

import numpy as np
import pytest

from ml_adv.data import load_dataset
from ml_adv.errors import ConfigError
from ml_adv.hpo import TrainingObjective
from ml_adv.hpo.journal import TrialJournal
from ml_adv.hpo.population import member_fields, rung_epochs, structural_groups
from ml_adv.hpo.space import Float, SearchSpace
from ml_adv.hpo.study import Study
from ml_adv.training.config import TrainConfig

SPACE = SearchSpace(
    [Float("learning_rate", 1e-3, 3e-2, log=True), Float("label_smoothing", 0.0, 0.2)]
)


@pytest.fixture(scope="module")
def objective():
    data = load_dataset("digits_flat", split="train").subset(np.arange(300))
    return TrainingObjective.from_data(
        data, architectures=("mlp",), size="tiny", base_config=TrainConfig(epochs=2, batch_size=32)
    )


def test_rung_schedule():
    assert rung_epochs(27, 27, 3) == [1, 3, 9, 27]
    assert rung_epochs(9, 16, 2) == [
        1,
        2,
        4,
        9,
    ]  # 16 -> 8 -> 4 -> 2 -> ... capped at >= 1 epoch, merged
    assert rung_epochs(3, 9, 3) == [1, 3]
    assert rung_epochs(5, 1, 3) == [5]


def test_stacked_studies_need_a_training_objective_and_no_pruner(objective):
    with pytest.raises(ConfigError, match="TrainingObjective"):
        Study(lambda c: 0.0, SPACE, method="random", max_trials=2, stacked=True)
    with pytest.raises(ConfigError, match="TrainingObjective"):
        Study(lambda c: 0.0, SPACE, method="population", max_trials=2)
    with pytest.raises(ConfigError, match="pruner"):
        Study(objective, SPACE, method="random", max_trials=2, stacked=True, pruner="median")
    with pytest.raises(ConfigError, match="reduction_factor"):
        Study(
            objective,
            SPACE,
            method="population",
            max_trials=2,
            method_options={"reduction_factor": 1},
        ).run()


def test_configurations_group_by_everything_but_traced_hyper_parameters(objective):
    varying = member_fields(objective)
    assert {
        "learning_rate",
        "weight_decay",
        "label_smoothing",
    } <= varying and "batch_size" not in varying
    configs = [
        {"learning_rate": 1e-3, "batch_size": 32},
        {"learning_rate": 2e-3, "batch_size": 64},
        {"learning_rate": 3e-3, "batch_size": 32},
        {"learning_rate": 4e-3, "batch_size": 64, "dropout": 0.1},
    ]
    assert structural_groups(configs, varying) == [[0, 2], [1], [3]]


def test_batched_asks_train_as_one_stacked_program(objective):
    result = Study(
        objective,
        SPACE,
        method="genetic",
        max_trials=4,
        trials_per_batch=4,
        stacked=True,
        progress=False,
    ).run()
    assert [t["status"] for t in result.trials] == ["ok"] * 4
    assert all(t["stacked_members"] == 4 for t in result.trials)  # the four trials were one program
    assert all(
        len(t["intermediate"]) == 2 and t["score"] == t["intermediate"][-1] for t in result.trials
    )
    assert len({t["config"]["learning_rate"] for t in result.trials}) == 4
    assert len({t["score"] for t in result.trials}) > 1


@pytest.mark.slow
def test_population_successive_halving_resumes_at_the_next_rung(tmp_path, objective):
    kwargs = dict(
        method="population",
        max_trials=4,
        seed=0,
        progress=False,
        method_options={"reduction_factor": 2},
    )
    full = Study(objective, SPACE, run_dir=tmp_path / "full", **kwargs).run()
    statuses = sorted(t["status"] for t in full.trials)
    assert statuses == ["ok", "ok", "pruned", "pruned"]  # rungs of 1 and 2 epochs: 4 -> 2
    for t in full.trials:
        assert len(t["intermediate"]) == (2 if t["status"] == "ok" else 1)
        assert t["rung_epochs"] == (2 if t["status"] == "ok" else 1)
    pruned_best = max(t["score"] for t in full.trials if t["status"] == "pruned")
    first_rung = [t["intermediate"][0] for t in full.trials if t["status"] == "ok"]
    assert min(first_rung) >= pruned_best  # the better half went on
    assert full.best_score == max(t["score"] for t in full.trials if t["status"] == "ok")

    # a study killed after the first rung: its journal ends with that rung's record
    lines = (tmp_path / "full" / "trials.jsonl").read_text().splitlines(keepends=True)
    cut = next(i for i, line in enumerate(lines) if '"type": "rung"' in line) + 1
    (tmp_path / "killed").mkdir()
    (tmp_path / "killed" / "trials.jsonl").write_text("".join(lines[:cut]))
    resumed = Study(objective, SPACE, run_dir=tmp_path / "killed", **kwargs).run()
    assert resumed.resumed_trials == 2
    assert [(t["trial"], t["status"], t["config"]) for t in resumed.trials] == [
        (t["trial"], t["status"], t["config"]) for t in full.trials
    ]
    assert resumed.best_score == pytest.approx(full.best_score, abs=1e-6)
    assert len(TrialJournal(tmp_path / "killed" / "trials.jsonl").read_records("rung")) == 2
