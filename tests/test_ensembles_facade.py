"""AdvancedModelEnsemble (ml_adv.ensembles.facade, views, persistence) on real digits models.

Four tiny members, trained once per session (``ensembles_fixtures``): a CNN on images and
an LSTM on row sequences with ``fit``, and the two MLPs of the shared deep ensemble
(``AdvancedModelEnsemble.train``: one stacked program) on flat features. They are
combined through their own input views of the same examples. Validation and test halves
have the same size, so every compiled ensemble function is reused between them.
"""

import dataclasses
import math

import jax
import numpy as np
import pytest
from ensembles_fixtures import heterogeneous_members, split_views

from ml_adv import TrainedModel, make_spec
from ml_adv.errors import CheckpointError, ConfigError, DataError, NotFittedError, ShapeError
from ml_adv.model_ensemble import AdvancedModelEnsemble


@pytest.fixture(scope="module")
def members():
    return list(heterogeneous_members())


@pytest.fixture(scope="module")
def views():
    """(val, test): dicts of ArrayDataset views keyed by input kind, same examples in each."""
    return split_views()


def _ensemble(members, method="weighted", weights=(0.4, 0.2, 0.2, 0.2)):
    ensemble = AdvancedModelEnsemble(combination_method=method)
    for model, w in zip(members, weights):
        assert ensemble.add_model(model, weight=w) is True
    return ensemble


def _x(split):
    return {kind: ds.x for kind, ds in split.items()}


def test_heterogeneous_ensemble_end_to_end(members, views):
    val, test = views
    ensemble = _ensemble(members)
    stats = ensemble.get_ensemble_statistics()
    assert stats["stacked_groups"] == [
        ["cnn0"],
        ["mlp0", "mlp1"],
        ["lstm0"],
    ]  # the MLPs run as one pass
    assert math.isclose(sum(stats["weights"].values()), 1.0, rel_tol=1e-6)
    probs = ensemble.predict_proba(_x(test))
    assert probs.shape == (179, 10) and np.allclose(probs.sum(-1), 1, atol=1e-5)
    np.testing.assert_array_equal(ensemble.predict(_x(test)), probs.argmax(-1))
    member_probs = ensemble.member_probabilities(_x(test))
    np.testing.assert_allclose(
        probs, np.einsum("k,knc->nc", [0.4, 0.2, 0.2, 0.2], member_probs), atol=1e-5
    )

    perf = ensemble.get_ensemble_performance(test)
    members_nll = [m["nll"] for m in perf["members"].values()]
    assert set(perf["ensemble"]) == {"accuracy", "nll", "brier", "ece"}
    assert perf["ensemble"]["nll"] <= float(np.dot([0.4, 0.2, 0.2, 0.2], members_nll))  # Jensen
    assert perf["ensemble"]["accuracy"] > 0.5
    div = perf["diversity"]
    assert (
        np.asarray(div["disagreement_matrix"]).shape == (4, 4) and len(div["js_to_ensemble"]) == 4
    )
    assert div["ambiguity"] > 0 and 0 < div["mean_disagreement"] < 1
    # Krogh-Vedelsby through the facade: ensemble Brier = weighted member Brier - ambiguity.
    member_brier = np.dot([0.4, 0.2, 0.2, 0.2], [m["brier"] for m in perf["members"].values()])
    assert math.isclose(perf["ensemble"]["brier"], member_brier - div["ambiguity"], abs_tol=1e-4)

    # Voting: weighted hard votes; its probabilities are vote shares.
    voting = _ensemble(members, "voting")
    shares = voting.predict_proba(_x(test))
    assert np.allclose(shares.sum(-1), 1) and set(np.unique(np.round(shares * 10))) <= {
        0,
        2,
        4,
        6,
        8,
        10,
    }
    assert voting.get_ensemble_performance(test)["ensemble"]["accuracy"] > 0.5

    # Averaging ignores the weights.
    averaging = _ensemble(members, "averaging")
    np.testing.assert_allclose(averaging.predict_proba(_x(test)), member_probs.mean(0), atol=1e-5)


def test_learned_weights_stacking_calibration_and_persistence(members, views, tmp_path):
    val, test = views
    ensemble = _ensemble(members, weights=(1, 1, 1, 1))
    uniform_nll = ensemble.get_ensemble_performance(val)["ensemble"]["nll"]
    assert ensemble.update_model_weights(val) is True
    weights = ensemble.get_ensemble_statistics()["weights"]
    assert math.isclose(sum(weights.values()), 1.0, rel_tol=1e-5) and min(weights.values()) >= 0
    assert ensemble.get_ensemble_performance(val)["ensemble"]["nll"] <= uniform_nll + 1e-6
    # SEED.md's calls without data use the held-out data last given.
    assert ensemble.update_model_weights() is True
    assert ensemble.get_ensemble_statistics()["weights"] == pytest.approx(weights)
    assert (
        ensemble.get_ensemble_performance()["ensemble"]
        == (ensemble.get_ensemble_performance(val)["ensemble"])
    )
    fresh = _ensemble(members, weights=(1, 1, 1, 1))
    with pytest.raises(ConfigError, match="no held-out data was given before"):
        fresh.update_model_weights()
    with pytest.raises(NotFittedError, match="no held-out data seen yet"):
        fresh.get_ensemble_performance()
    report = ensemble.calibrate(val)
    assert report["temperature"] > 0 and report["nll_after"] <= report["nll_before"] + 1e-6
    assert ensemble.get_ensemble_statistics()["calibration"] == report

    stacking = _ensemble(members, "stacking")
    with pytest.raises(NotFittedError, match="meta-learner"):
        stacking.predict(_x(test))
    stacking.update_model_weights(val)
    stacked = stacking.get_ensemble_statistics()["stacking"]
    assert stacked["folds"] == 5 and 0 < stacked["out_of_fold"]["accuracy"] <= 1
    assert stacking.get_ensemble_performance(test)["ensemble"]["accuracy"] > 0.5

    # The fitted stacking ensemble, calibrated, saves and loads as one orbax pytree + JSON.
    stacking.calibrate(val)
    path = stacking.save(tmp_path / "ens")
    loaded = AdvancedModelEnsemble.load(path)
    assert loaded.model_ids == stacking.model_ids and loaded.combination_method == "stacking"
    np.testing.assert_allclose(
        loaded.predict_proba(_x(test)), stacking.predict_proba(_x(test)), atol=1e-6
    )
    assert (
        loaded.get_ensemble_statistics()["calibration"]
        == stacking.get_ensemble_statistics()["calibration"]
    )
    with pytest.raises(CheckpointError, match="new or empty directory"):
        stacking.save(path)
    members[0].save(tmp_path / "single")
    with pytest.raises(CheckpointError, match="expected an ensemble saved by"):
        AdvancedModelEnsemble.load(tmp_path / "single")
    assert not list(tmp_path.rglob("*.pkl"))


def test_pruning_and_diversity_rules_through_the_facade(members, views):
    val, _ = views
    ensemble = _ensemble(members, weights=(1, 1, 1, 1))
    # mlp1 replaced by a copy of mlp0 (four members, so the programs compiled above are reused).
    ensemble.update_model(
        "mlp1", TrainedModel(members[1].spec, members[1].variables, model_id="mlp0-copy")
    )
    before = ensemble.model_ids
    result = ensemble.optimize_diversity(val)
    assert (
        "mlp0-copy" not in result["selected"] or "mlp0" not in result["selected"]
    )  # never both copies
    assert ensemble.model_ids == result["selected"] and set(result["removed"]) == set(before) - set(
        result["selected"]
    )
    ensemble = _ensemble(members, weights=(1, 1, 1, 1))
    nll = ensemble.get_ensemble_performance(val)["ensemble"]["nll"]
    removed = ensemble.prune_models(threshold=0.0, data=val)
    steps = ensemble.get_ensemble_statistics()["pruning"]["steps"]
    assert (
        sorted(s["member"] for s in steps) == sorted(removed)
        and len(ensemble) == 4 - len(removed) >= 1
    )
    assert all(s["nll_after"] <= s["nll_before"] for s in steps)
    assert ensemble.get_ensemble_performance(val)["ensemble"]["nll"] <= nll + 1e-5
    # Automatic steps run inside update_model_weights.
    auto = _ensemble(members, weights=(1, 1, 1, 1))
    auto.set_automatic_pruning(True, threshold=10.0)
    auto.update_model_weights(val)
    assert len(auto) == 1
    assert auto.prune_models(10.0) == []  # without data: the validation data seen last


def test_bad_input_leaves_the_ensemble_unchanged(members, views):
    _, test = views
    with pytest.raises(ConfigError, match="combination_method.*'median'"):
        AdvancedModelEnsemble(combination_method="median")
    empty = AdvancedModelEnsemble()
    with pytest.raises(NotFittedError, match="no members"):
        empty.predict(_x(test))
    with pytest.raises(ConfigError, match="at least one positive weight"):
        empty.add_model(members[0], weight=0.0)
    assert len(empty) == 0

    ensemble = _ensemble(members[:2], weights=(1.0, 2.0))
    state = (ensemble.model_ids, ensemble.get_ensemble_statistics()["weights"])
    three = make_spec("mlp", input_shape=(64,), input_kind="features", num_classes=3, size="tiny")
    shapes = jax.eval_shape(
        lambda: three.build().init(jax.random.PRNGKey(0), three.example_input(), train=False)
    )
    other = TrainedModel(three, jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), dict(shapes)))
    for call, error, match in [
        (lambda: ensemble.add_model(other), ConfigError, "10 classes.*got 3"),
        (
            lambda: ensemble.add_model(members[2], weight=-1.0),
            ConfigError,
            "weight: expected a finite number >= 0",
        ),
        (lambda: ensemble.add_model(members[2], weight=float("nan")), ConfigError, "weight"),
        (lambda: ensemble.add_model(members[0]), ConfigError, "already in the ensemble"),
        (lambda: ensemble.add_model("model"), ConfigError, "expected a TrainedModel"),
        (
            lambda: ensemble.update_model_weights(weights=[0.0, 0.0]),
            ConfigError,
            "at least one positive",
        ),
        (
            lambda: ensemble.update_model_weights(weights=[1.0, -1.0]),
            ConfigError,
            "finite weights >= 0",
        ),
        (lambda: ensemble.update_model_weights(weights={"nope": 1.0}), ConfigError, "unknown ids"),
        (lambda: ensemble.remove_model("nope"), ConfigError, "model_id: expected one of"),
        (lambda: ensemble.update_model("nope", members[2]), ConfigError, "model_id"),
        (lambda: ensemble.predict(np.zeros((3, 5, 5), np.float32)), ShapeError, "fits no member"),
        (
            lambda: ensemble.predict(test["image"].x),
            ShapeError,
            "1 of 2 members cannot take this input",
        ),
        (
            lambda: ensemble.predict({"image": test["image"].x}),
            DataError,
            "no input view for member 'mlp0'",
        ),
        (
            lambda: ensemble.predict(
                {"image": test["image"].x, "features": test["features"].x[:5]}
            ),
            DataError,
            "same examples",
        ),
        (
            lambda: ensemble.get_ensemble_performance(test["image"]),
            ShapeError,
            "cannot take this input",
        ),
        (lambda: ensemble.prune_models(-1.0), ConfigError, "threshold"),
        (
            lambda: ensemble.set_cross_validation(folds=1),
            ConfigError,
            "folds: expected an integer >= 2",
        ),
    ]:
        with pytest.raises(error, match=match):
            call()
        assert (ensemble.model_ids, ensemble.get_ensemble_statistics()["weights"]) == state
    # Views keyed by model id take precedence over input kind.
    by_id = ensemble.predict({"cnn0": test["image"].x, "features": test["features"].x})
    np.testing.assert_array_equal(by_id, ensemble.predict(_x(test)))


def test_members_can_be_updated_and_removed(members, views):
    _, test = views
    ensemble = _ensemble(members[:3], weights=(1, 1, 1))
    assert ensemble.update_model("mlp1", members[3], weight=2.0) is True
    assert ensemble.model_ids == ["cnn0", "mlp0", "lstm0"]
    assert ensemble.get_ensemble_statistics()["weights"]["lstm0"] == pytest.approx(0.5)
    assert ensemble.remove_model("cnn0") is True and ensemble.model_ids == ["mlp0", "lstm0"]
    assert ensemble.update_model_weights(weights={"mlp0": 3.0}) is True
    assert ensemble.get_ensemble_statistics()["weights"] == pytest.approx(
        {"mlp0": 0.6, "lstm0": 0.4}
    )
    assert ensemble.predict(_x(test)).shape == (179,)


def test_a_retrained_model_replaces_its_older_version(members):
    """SEED.md's ``ensemble.update_model(updated_model, weight=0.5)``: no member named."""
    first, adapted, other = (dataclasses.replace(m, lineage=None) for m in members[:3])
    first.lineage = "trainer-a"
    ensemble = _ensemble([first, adapted], weights=(1, 1))
    retrained = dataclasses.replace(first, model_id="retrained")  # same trainer, new model
    assert ensemble.update_model(retrained, weight=0.5) is True
    assert ensemble.model_ids == ["retrained", adapted.model_id]
    assert ensemble.get_ensemble_statistics()["weights"]["retrained"] == pytest.approx(1 / 3)
    with pytest.raises(ConfigError, match="newer version of exactly one member.*no member"):
        ensemble.update_model(other)  # no lineage in common: which member is unclear
    assert ensemble.model_ids == ["retrained", adapted.model_id]
