"""Stacked training: K members as one program equal K single runs; populations, folds, NaN
isolation, resume."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ml_adv.errors import ConfigError, DataError
from ml_adv.rundir import Run
from ml_adv.training import TrainConfig, fit
from ml_adv.training.setup import member_keys
from ml_adv.training.stacked import fit_stacked, fold_masks

CFG = TrainConfig(epochs=2, batch_size=32, learning_rate=3e-3)


@pytest.fixture(scope="module")
def spec(small_digits):
    from ml_adv import make_spec

    return make_spec(
        "mlp",
        input_shape=small_digits.example_shape,
        input_kind="image",
        num_classes=10,
        size="tiny",
    )


def _max_diff(stacked_params, i, single_params):
    return max(
        float(np.max(np.abs(np.asarray(a[i]) - np.asarray(b))))
        for a, b in zip(jax.tree.leaves(stacked_params), jax.tree.leaves(single_params))
    )


def test_stacked_members_equal_single_runs_with_the_same_keys(spec, small_digits, digits_images):
    _, test = digits_images
    key = jax.random.PRNGKey(7)
    r = fit_stacked(
        spec,
        small_digits,
        CFG,
        members=3,
        key=key,
        val=test,
        member_orders=True,
        run=Run(progress=False),
    )
    keys = member_keys(key, 3)
    for i in (0, 2):
        single = fit(spec, small_digits, CFG, val=test, key=keys[i], run=Run(progress=False))
        assert _max_diff(r.state.params, i, single.state.params) < 1e-5
        assert r.histories[i][-1]["val_accuracy"] == pytest.approx(
            single.history[-1]["val_accuracy"], abs=1e-6
        )
    probs = r.model.predict_proba(test.x)
    assert probs.shape == (3, len(test), 10)
    np.testing.assert_allclose(probs[1], r.member(1).predict_proba(test.x), atol=1e-6)


def test_population_member_equals_a_single_run_with_its_learning_rate(spec, small_digits):
    rates = [1e-3, 3e-3, 1e-2, 3e-2]
    key = jax.random.PRNGKey(1)
    cfg = CFG.replace(optimizer="adamw", weight_decay=1e-4, label_smoothing=0.05)
    pop = fit_stacked(
        spec,
        small_digits,
        cfg,
        members=4,
        key=key,
        member_orders=True,
        run=Run(progress=False),
        member_hparams={
            "learning_rate": rates,
            "b1": [0.9, 0.8, 0.9, 0.85],
            "label_smoothing": [0.0, 0.05, 0.1, 0.0],
        },
    )
    np.testing.assert_allclose(pop.hyperparams["learning_rate"], rates, rtol=1e-6)
    keys = member_keys(key, 4)
    single = fit(
        spec,
        small_digits,
        cfg.replace(learning_rate=rates[2], optimizer_options={"b1": 0.9}, label_smoothing=0.1),
        key=keys[2],
        run=Run(progress=False),
    )
    assert _max_diff(pop.state.params, 2, single.state.params) < 1e-5


def test_fold_masked_members_equal_separate_runs_on_the_fold_splits(spec, small_digits):
    masks = fold_masks(small_digits.y, 3, seed=0)
    assert masks.shape == (3, len(small_digits)) and (~masks).sum(0).tolist() == [1] * len(
        small_digits
    )
    key = jax.random.PRNGKey(3)
    cv = fit_stacked(
        spec, small_digits, CFG, members=3, key=key, example_masks=masks, run=Run(progress=False)
    )
    keys = member_keys(key, 3)
    for i in (1,):
        train_i = small_digits.subset(np.flatnonzero(masks[i]))
        held_out = small_digits.subset(np.flatnonzero(~masks[i]))
        single = fit(spec, train_i, CFG, val=held_out, key=keys[i], run=Run(progress=False))
        assert _max_diff(cv.state.params, i, single.state.params) < 1e-5
        # member i is validated on its own held-out fold
        assert cv.histories[i][-1]["val_accuracy"] == pytest.approx(
            single.history[-1]["val_accuracy"], abs=1e-6
        )
        assert cv.histories[i][-1]["step"] == single.history[-1]["step"]


def test_a_diverging_member_is_frozen_and_the_others_go_on(spec, small_digits):
    cfg = CFG.replace(optimizer="sgd", epochs=3)
    key = jax.random.PRNGKey(0)
    r = fit_stacked(
        spec,
        small_digits,
        cfg,
        members=3,
        key=key,
        member_orders=True,
        run=Run(progress=False),
        member_hparams={"learning_rate": [0.05, 1e30, 0.05]},
    )
    assert r.failed.tolist() == [False, True, False]
    assert all(np.all(np.isfinite(np.asarray(a)[[0, 2]])) for a in jax.tree.leaves(r.state.params))
    single = fit(
        spec,
        small_digits,
        cfg.replace(learning_rate=0.05),
        key=member_keys(key, 3)[0],
        run=Run(progress=False),
    )
    assert _max_diff(r.state.params, 0, single.state.params) < 1e-5
    assert len(r.histories[1]) <= len(r.histories[0]) and r.histories[1][-1]["failed"]


def test_per_member_early_stopping_masks_updates(spec, small_digits, digits_images):
    _, test = digits_images
    cfg = CFG.replace(
        epochs=12, early_stopping=True, patience=1, monitor="val_loss", monitor_mode="min"
    )
    r = fit_stacked(
        spec,
        small_digits,
        cfg,
        members=2,
        val=test,
        run=Run(progress=False),
        member_hparams={"learning_rate": [0.3, 1e-3]},
    )
    assert r.stopped_early[0] and len(r.histories[0]) < len(r.histories[1])
    # restore_best: member 0's parameters are its best epoch's
    best_loss = min(h["val_loss"] for h in r.histories[0])
    from ml_adv.training.stacked import member_metrics

    logits = r.model.logits(test.x)
    assert member_metrics(logits, test.y)["loss"][0] == pytest.approx(best_loss, rel=1e-5)


@pytest.mark.parametrize(
    "kwargs, error, fragment",
    [
        ({"members": 0}, ConfigError, "members"),
        (
            {"members": 2, "member_hparams": {"learning_rate": [1e-3, 1e-3, 1e-3]}},
            ConfigError,
            "one per member",
        ),
        ({"members": 2, "member_hparams": {"optimizer": ["adam", "sgd"]}}, ConfigError, "traced"),
        (
            {"members": 2, "member_hparams": {"learning_rate": ["fast", "slow"]}},
            ConfigError,
            "traced",
        ),
        ({"members": 2, "example_masks": np.ones((3, 256), bool)}, DataError, "example_masks"),
        (
            {"members": 2, "example_masks": np.ones((2, 256), bool), "bootstrap": True},
            ConfigError,
            "bootstrap",
        ),
    ],
)
def test_bad_stacked_input_fails_before_compiling(spec, small_digits, kwargs, error, fragment):
    with pytest.raises(error, match=fragment):
        fit_stacked(spec, small_digits, CFG, run=Run(progress=False), **kwargs)


def test_fold_count_is_checked(small_digits):
    with pytest.raises(ConfigError, match="folds"):
        fold_masks(small_digits.y, 1)
    with pytest.raises(ConfigError, match="smallest class"):
        fold_masks(np.array([0, 0, 0, 1, 1, 2]), 3)


def test_bagging_draws_one_bootstrap_sample_per_member(spec, small_digits):
    from ml_adv.training.sampling import StackedPlan

    plan = StackedPlan(
        256,
        32,
        np.asarray(member_keys(jax.random.PRNGKey(0), 3)),
        jax.random.PRNGKey(1),
        bootstrap=True,
    )
    order, active = plan.draw(0)
    assert order.shape == (8, 3, 32) and active.all()
    uniques = [len(np.unique(p)) for p in plan.pools]
    assert all(140 < u < 190 for u in uniques)  # ~63% of 256 distinct rows
    assert not np.array_equal(plan.pools[0], plan.pools[1])
    np.testing.assert_array_equal(order, plan.draw(0)[0])  # same epoch, same draw


def test_streams_of_different_lengths_cycle_and_feed_one_objective(small_digits):
    from ml_adv.training.sampling import EpochPlan

    plan = EpochPlan((200, 70), 32, jax.random.PRNGKey(0), ("source", "target"))
    order, _ = plan.draw(0)
    assert order["source"].shape == order["target"].shape == (6, 32)
    assert len(np.unique(order["source"])) == 192 and order["target"].max() < 70
    assert len(np.unique(order["target"][:2])) == 64  # the first 64 rows come from one permutation

    seen = []

    def two_stream_objective(params, model_state, batch, key, hparams):
        from ml_adv.training.objectives import forward

        logits, _ = forward(
            module.apply, params, model_state, batch["source"]["x"], train=True, dropout_key=key
        )
        target_logits, _ = forward(
            module.apply, params, model_state, batch["target"]["x"], train=False
        )
        import optax

        loss = jnp.mean(
            optax.softmax_cross_entropy_with_integer_labels(logits, batch["source"]["y"])
        )
        entropy = -jnp.mean(
            jnp.sum(jax.nn.softmax(target_logits) * jax.nn.log_softmax(target_logits), -1)
        )
        seen.append(batch["target"]["x"].shape)
        return loss + 0.1 * entropy, {"model_state": model_state, "metrics": {"accuracy": entropy}}

    from ml_adv import make_spec

    spec = make_spec(
        "mlp",
        input_shape=small_digits.example_shape,
        input_kind="image",
        num_classes=10,
        size="tiny",
    )
    module = spec.build()
    target = small_digits.subset(np.arange(64))
    r = fit(
        spec,
        {"source": small_digits, "target": target},
        CFG,
        objective=two_stream_objective,
        run=Run(progress=False),
    )
    assert seen and seen[0] == (32, 8, 8, 1) and np.isfinite(r.history[-1]["train_loss"])
    with pytest.raises(DataError, match="example shape"):
        fit(spec, {"source": small_digits, "target": _flat(target)}, CFG, run=Run(progress=False))


def _flat(data):
    from ml_adv.data.dataset import ArrayDataset

    return ArrayDataset(np.asarray(data.x).reshape(len(data), -1), data.y)


def test_param_groups_freeze_and_rescale_without_recompiling(spec, small_digits):
    from ml_adv.training import ParamGroup, build_optimizer, set_group_scales
    from ml_adv.training.optim import group_scales

    cfg = CFG.replace(
        param_groups=(ParamGroup("encoder", trainable=False), ParamGroup("head", lr_scale=0.5))
    )
    start = spec.build().init(jax.random.PRNGKey(0), small_digits.x[:1])["params"]
    r = fit(spec, small_digits, cfg, init_params=start, run=Run(progress=False))
    for a, b in zip(jax.tree.leaves(r.state.params["encoder"]), jax.tree.leaves(start["encoder"])):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(r.state.params["head"]["kernel"], start["head"]["kernel"])
    tx = build_optimizer(cfg, 10)
    state = tx.init(start)
    scales = group_scales(state)
    assert (
        float(scales["encoder"]["dense_0"]["kernel"]) == 0.0
        and float(scales["head"]["kernel"]) == 0.5
    )
    unfrozen = set_group_scales(state, jax.tree.map(lambda s: jnp.ones_like(s), scales))
    assert jax.tree.structure(unfrozen) == jax.tree.structure(state)
    assert float(group_scales(unfrozen)["encoder"]["dense_0"]["kernel"]) == 1.0


KILL_SCRIPT = textwrap.dedent(
    """
    import sys, jax, numpy as np
    from ml_adv import load_dataset, make_spec
    from ml_adv.training import TrainConfig
    from ml_adv.rundir import Run
    from ml_adv.training.stacked import fit_stacked
    train = load_dataset("digits", split="train").subset(np.arange(256))
    spec = make_spec("mlp", input_shape=train.example_shape, input_kind="image", num_classes=10,
                     size="tiny")
    cfg = TrainConfig(epochs=int(sys.argv[2]), batch_size=32, learning_rate=3e-3)
    r = fit_stacked(spec, train, cfg, members=3, member_orders=True,
                    run=Run.at(sys.argv[1], progress=False),
                    member_hparams={"learning_rate": [1e-3, 3e-3, 1e-2]})
    """
)


@pytest.mark.slow
def test_stacked_run_resumes_bitwise_after_sigkill(tmp_path, spec, small_digits):
    run_dir = tmp_path / "run"
    epochs = 16  # the kill lands after epoch 3: 13 epochs (~0.2 s each, mostly the save) of margin
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(run_dir), str(epochs)],
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
    )
    latest = run_dir / "checkpoints" / "latest"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        steps = (
            [int(p.name) for p in latest.glob("[0-9]*") if p.name.isdigit()]
            if latest.exists()
            else []
        )
        if steps and max(steps) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    cfg = TrainConfig(epochs=epochs, batch_size=32, learning_rate=3e-3)
    hp = {"learning_rate": [1e-3, 3e-3, 1e-2]}
    resumed = fit_stacked(
        spec,
        small_digits,
        cfg,
        members=3,
        member_orders=True,
        run=Run.at(run_dir, progress=False),
        member_hparams=hp,
    )
    assert resumed.resumed_from is not None and 3 <= resumed.resumed_from < epochs
    straight = fit_stacked(
        spec,
        small_digits,
        cfg,
        members=3,
        member_orders=True,
        run=Run(progress=False),
        member_hparams=hp,
    )
    for a, b in zip(jax.tree.leaves(resumed.state.params), jax.tree.leaves(straight.state.params)):
        np.testing.assert_array_equal(a, b)
    assert [len(h) for h in resumed.histories] == [epochs] * 3
    assert json.loads(json.dumps(resumed.histories[0][-1]))["epoch"] == epochs


def test_members_as_map_equals_vmap(spec, small_digits):
    """The two member formulations of the stacked epoch give the same states."""
    from ml_adv.training.setup import init_run
    from ml_adv.training.steps import epoch_order, make_epoch_fn

    setup = init_run(
        spec,
        CFG,
        example_x=small_digits.x[:1],
        steps_per_epoch=8,
        members=2,
        member_hparams={"learning_rate": [1e-3, 1e-2]},
    )
    data = {"x": jnp.asarray(small_digits.x), "y": jnp.asarray(small_digits.y)}
    order = epoch_order(jax.random.PRNGKey(0), 256, 32)
    a, _ = make_epoch_fn(setup.train_step, stacked=True)(
        jax.tree.map(jnp.copy, setup.state), data, order
    )
    b, _ = make_epoch_fn(setup.train_step, stacked=True, members_as="map")(setup.state, data, order)
    for u, v in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_allclose(u, v, atol=1e-6)
