import numpy as np
import pytest

from ml_adv.data.catalog import load_dataset
from ml_adv.errors import ConfigError, DataError, NotFittedError
from ml_adv.rundir import Run


@pytest.fixture(scope="module")
def domains():
    source = load_dataset("digits_m_source", split="train")
    target = load_dataset("digits_m", split="train")
    target_test = load_dataset("digits_m", split="test").subset(np.arange(120))
    # Disjoint rows: the target sample is not the source's digits in another domain.
    return source.subset(np.arange(256)), target.subset(np.arange(256, 512)), target_test


@pytest.fixture(scope="module")
def source_model(domains):
    from ml_adv import make_spec
    from ml_adv.training.config import TrainConfig
    from ml_adv.training.loop import fit
    from ml_adv.training.trained_model import TrainedModel

    source = domains[0]
    spec = make_spec(
        "mlp", input_shape=source.example_shape, input_kind="image", num_classes=10, size="tiny"
    )
    result = fit(spec, source, TrainConfig(epochs=3, batch_size=32), run=Run(progress=False))
    return TrainedModel(spec, result.state.variables())


def test_both_import_paths_and_bad_settings():
    from ml_adv import AdvancedDomainAdaptation as A
    from ml_adv.domain_adaptation import AdvancedDomainAdaptation as B

    assert A is B
    with pytest.raises(ConfigError, match="adaptation_method: unknown name 'magic'"):
        A(adaptation_method="magic")
    da = A()
    with pytest.raises(ConfigError, match="schedule"):
        da.set_learning_rate_scheduling("zigzag")
    da.set_learning_rate_scheduling(enabled=True)  # SEED.md's call: the cosine default
    assert da.config.schedule == "cosine"
    da.set_learning_rate_scheduling(enabled=False)
    assert da.config.schedule == "constant"
    with pytest.raises(ConfigError, match="enabled"):
        da.set_learning_rate_scheduling(enabled="yes")
    with pytest.raises(ConfigError, match="patience"):
        da.set_early_stopping(patience=0)


def test_bad_input_fails_before_training(domains, source_model):
    from ml_adv import AdvancedDomainAdaptation

    source, target, _ = domains
    da = AdvancedDomainAdaptation("fine_tuning")
    with pytest.raises(NotFittedError, match="set the domains first"):
        da.adapt_model(source_model)
    da.set_source_domain(source)
    flat = load_dataset("digits_flat", split="train").subset(np.arange(64))
    with pytest.raises(DataError, match="target example shape"):
        da.set_target_domain(flat)
    da.set_target_domain(target)
    with pytest.raises(DataError, match="labelled target examples"):
        da.adapt_model(source_model)
    with pytest.raises(ConfigError, match="TrainedModel"):
        da.adapt_model("model.ckpt")


def test_domain_adversarial_end_to_end(domains, source_model):
    from ml_adv import AdvancedDomainAdaptation
    from ml_adv.training.config import TrainConfig

    source, target, target_test = domains
    da = AdvancedDomainAdaptation(
        adaptation_method="domain_adversarial", config=TrainConfig(batch_size=32), steps=None
    )
    # Two source domains: three streams per step and a 3-way domain discriminator.
    da.set_source_domain([source.subset(np.arange(128)), source.subset(np.arange(128, 256))])
    da.set_target_domain(target, test=target_test, target_trained_accuracy=0.95)
    adapted = da.adapt_model(source_model)
    ev = da.evaluate_adaptation(adapted)
    # What a user cares about: on this seed and data DANN does not lose target accuracy
    # against the source-only model (margin: 3 of the 120 test images).
    assert ev["target_accuracy"] >= ev["unadapted_target_accuracy"] - 3 / 120
    assert ev["target_accuracy"] == pytest.approx(adapted.evaluate(target_test)["accuracy"])
    assert ev["worse_than_unadapted"] is None  # no labelled target examples were given
    # The similarity is the MMD of the model's features: DANN's are different from the
    # source-only model's, so the two figures differ (a constant would pass a range check).
    before, after = da.similarity_report(source_model), da.similarity_report(adapted)
    assert da.get_domain_similarity() == after["mmd_similarity"] != before["mmd_similarity"]
    metrics = da.get_domain_adaptation_metrics()
    assert metrics["evaluation"] == ev and len(metrics["runs"][0]["history"]) == da.config.epochs
    assert "train_domain_loss" in metrics["runs"][0]["history"][0]


def test_default_run_is_sized_in_steps_and_warns_when_adapting_loses(domains, source_model):
    from ml_adv import AdvancedDomainAdaptation
    from ml_adv.training.config import TrainConfig

    source, target, target_test = domains
    labeled = target.subset(np.arange(40))
    da = AdvancedDomainAdaptation("fine_tuning", TrainConfig(batch_size=16), steps=60)
    da.set_gradual_unfreezing(enabled=False)
    da.set_source_domain(source)
    da.set_target_domain(target, labeled=labeled, test=target_test)
    adapted = da.adapt_model(source_model)
    assert da.runs[0]["config"]["epochs"] == 30  # 60 steps of 2 per epoch (40 examples, batch 16)
    check = da.runs[0]["labelled_target_accuracy"]
    assert check["adapted"] == pytest.approx(adapted.evaluate(labeled)["accuracy"])
    assert check["adapted"] >= check["unadapted"] and da.runs[0]["worse_than_unadapted"] is False
    # A model that lost accuracy on the labelled target data is reported, loudly.
    ev = da.evaluate_adaptation(adapted)
    assert ev["worse_than_unadapted"] is False and ev["labelled_target_accuracy"] == check


def test_fine_tuning_with_gradual_unfreezing_schedule_early_stopping_and_resume(
    domains, source_model, tmp_path
):
    from ml_adv import AdvancedDomainAdaptation
    from ml_adv.training.config import TrainConfig

    source, target, target_test = domains
    labeled = target.subset(np.arange(100))

    def make():
        da = AdvancedDomainAdaptation(
            "fine_tuning", TrainConfig(epochs=2, batch_size=16), steps=None
        )
        da.set_gradual_unfreezing(stages=2, epochs_per_stage=1)
        da.set_learning_rate_scheduling("cosine")
        da.set_early_stopping(patience=1)
        da.set_source_domain(source)
        da.set_target_domain(target, labeled=labeled, test=target_test)
        return da

    da = make()
    adapted = da.adapt_model(source_model, run_dir=tmp_path / "ft")
    history = da.get_domain_adaptation_metrics()["runs"][0]["history"]
    assert [h["stage"] for h in history] == [1, 2] and all("val_accuracy" in h for h in history)
    assert da.runs[0]["config"]["schedule"] == "cosine" and da.runs[0]["config"]["early_stopping"]
    assert (tmp_path / "ft" / "stage_2" / "metrics.jsonl").exists()
    ev = da.evaluate_adaptation(adapted)
    assert ev["gap_closed"] is None and ev["target_accuracy"] is not None
    # The same call again resumes each stage from its checkpoint: nothing retrains.
    again = make()
    resumed = again.adapt_model(source_model, run_dir=tmp_path / "ft")
    np.testing.assert_array_equal(
        resumed.params["encoder"]["dense_0"]["kernel"],
        adapted.params["encoder"]["dense_0"]["kernel"],
    )
    assert again.runs[0]["history"] == history


def test_transfer_learning_keeps_the_encoder(domains, source_model):
    from ml_adv import AdvancedDomainAdaptation
    from ml_adv.training.config import TrainConfig

    source, target, _ = domains
    from ml_adv.errors import AdaptationWarning

    # One epoch of 4 steps cannot fit a new head: the run is worse than the model it started
    # from, and says so (the transfer_learning with default settings, in small).
    da = AdvancedDomainAdaptation(
        "transfer_learning", TrainConfig(epochs=1, batch_size=16), steps=None, head_fraction=1.0
    )
    da.set_source_domain(source)
    da.set_target_domain(target, labeled=target.subset(np.arange(64)))
    with pytest.warns(AdaptationWarning, match="below the unadapted model"):
        adapted = da.adapt_model(source_model)
    assert da.runs[0]["worse_than_unadapted"] is True
    with pytest.warns(
        AdaptationWarning, match="^evaluate_adaptation: the transfer_learning model scores"
    ):
        assert da.evaluate_adaptation(adapted)["worse_than_unadapted"] is True
    np.testing.assert_array_equal(
        adapted.params["encoder"]["dense_0"]["kernel"],
        source_model.params["encoder"]["dense_0"]["kernel"],
    )
    assert not np.allclose(adapted.params["head"]["kernel"], source_model.params["head"]["kernel"])
    # The adapted model joins an ensemble with the source model like any TrainedModel.
    from ml_adv import AdvancedModelEnsemble

    ensemble = AdvancedModelEnsemble("averaging")
    assert ensemble.add_model(source_model) and ensemble.add_model(adapted)
    want = (source_model.predict_proba(target.x[:20]) + adapted.predict_proba(target.x[:20])) / 2
    np.testing.assert_allclose(ensemble.predict_proba(target.x[:20]), want, atol=1e-5)
