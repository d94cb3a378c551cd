"""Training core: config validation, losses, optimizers, the compiled step and the fit loop."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from default_xla import rerun_under_default_xla

from ml_adv.data.dataset import ArrayDataset
from ml_adv.errors import ConfigError, DataError, ShapeError, TrainingDivergedError
from ml_adv.rundir import Run
from ml_adv.training import (
    LOSSES,
    TrainConfig,
    build_optimizer,
    create_train_state,
    fit,
    make_train_step,
)
from ml_adv.training.losses import focal_loss, masked_lm_loss, resolve_loss, resolve_traced_loss
from ml_adv.training.objectives import supervised_objective
from ml_adv.training.optim import SCHEDULES, build_schedule
from ml_adv.training.steps import (
    GUARDS,
    epoch_order,
    guard_for_architecture,
    make_epoch_fn,
    make_step_fn,
    run_epoch_stepwise,
)


class TinyNet(nn.Module):
    """A small MLP with dropout so the tests exercise the rng path."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(32)(x))
        x = nn.Dropout(0.1, deterministic=not train)(x)
        return nn.Dense(10)(x)


def _objective(cfg, module=None, mixed=False):
    module = TinyNet() if module is None else module
    return supervised_objective(
        module.apply, resolve_traced_loss(cfg), compute_dtype=jnp.bfloat16 if mixed else None
    )


# ---------------------------------------------------------------- config
@pytest.mark.parametrize(
    "changes, fragment",
    [
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": -4}, "batch_size"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"learning_rate": -1e-3}, "learning_rate"),
        ({"epochs": 0}, "epochs"),
        ({"optimizer": "adamm"}, "optimizer"),
        ({"schedule": "cosinee"}, "schedule"),
        ({"loss": "crossentropy"}, "loss"),
        ({"nan_policy": "ignore"}, "nan_policy"),
        ({"grad_accum_steps": 0}, "grad_accum_steps"),
        ({"label_smoothing": 1.5}, "label_smoothing"),
        ({"augment": 3}, "augment"),
        ({"seed": -1}, "seed"),
    ],
)
def test_config_rejects_bad_values(changes, fragment):
    with pytest.raises(ConfigError, match=fragment):
        TrainConfig(**changes)


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ConfigError) as info:
        TrainConfig(schedule="nope")
    assert "warmup_cosine" in str(info.value) and "'nope'" in str(info.value)


def test_config_accepts_custom_objects():
    cfg = TrainConfig(
        optimizer=optax.sgd(0.1), loss=lambda logits, y: jnp.zeros(y.shape), schedule=lambda s: 0.1
    )
    assert cfg.to_dict()["optimizer"] == "GradientTransformationExtraArgs"


# ---------------------------------------------------------------- losses & schedules
def test_losses_match_references():
    key = jax.random.PRNGKey(0)
    logits = jax.random.normal(key, (6, 4))
    labels = jnp.array([0, 1, 2, 3, 0, 1])
    ce = LOSSES.get("cross_entropy")(logits, labels)
    ref = -jax.nn.log_softmax(logits)[jnp.arange(6), labels]
    np.testing.assert_allclose(ce, ref, rtol=1e-6)
    # focal with gamma=0 is cross-entropy
    np.testing.assert_allclose(focal_loss(logits, labels, gamma=0.0), ref, rtol=1e-6)
    smoothed = resolve_loss(TrainConfig(label_smoothing=0.1))(logits, labels)
    assert smoothed.shape == (6,) and not np.allclose(smoothed, ce)
    margin = LOSSES.get("multi_margin")(jnp.array([[3.0, 0.0], [0.0, 0.5]]), jnp.array([0, 0]))
    np.testing.assert_allclose(margin, [0.0, 1.5])


def test_masked_lm_loss_only_counts_masked_positions():
    logits = jnp.zeros((1, 3, 5)).at[0, 0, 2].set(10.0)
    targets = jnp.array([[2, 4, 4]])
    only_first = masked_lm_loss(logits, targets, jnp.array([[1, 0, 0]]))
    assert float(only_first) < 1e-3
    assert float(masked_lm_loss(logits, targets, jnp.array([[0, 1, 0]]))) == pytest.approx(
        np.log(5), rel=1e-5
    )


@pytest.mark.parametrize("name", SCHEDULES.names())
def test_every_schedule_is_finite_and_peaks_at_the_learning_rate(name):
    cfg = TrainConfig(learning_rate=0.01, schedule=name, warmup_fraction=0.1)
    sched = build_schedule(cfg, 100)
    values = np.array([float(sched(s)) for s in range(0, 101, 5)])
    assert np.all(np.isfinite(values)) and values.max() <= 0.01 + 1e-9 and values.max() > 0.002


# ---------------------------------------------------------------- steps
def _state(cfg=None, total=10, x=None):
    cfg = TrainConfig() if cfg is None else cfg
    x = np.zeros((2, 8, 8, 1), np.float32) if x is None else x
    return create_train_state(
        TinyNet(),
        x,
        build_optimizer(cfg, total),
        init_key=jax.random.PRNGKey(0),
        rng=jax.random.PRNGKey(1),
    )


def test_epoch_order_is_a_seeded_permutation():
    key = jax.random.PRNGKey(7)
    order = epoch_order(key, 100, 32)
    assert order.shape == (3, 32) and order.dtype == np.int32
    assert len(np.unique(order)) == 96 and order.min() >= 0 and order.max() < 100
    np.testing.assert_array_equal(order, epoch_order(jax.random.PRNGKey(7), 100, 32))
    np.testing.assert_array_equal(order, epoch_order(jax.random.key(7), 100, 32))  # typed keys too
    assert not np.array_equal(order, epoch_order(jax.random.fold_in(key, 1), 100, 32))


def test_scan_epoch_equals_one_dispatch_per_step(small_digits):
    cfg = TrainConfig(batch_size=32)
    step = make_train_step(_objective(cfg))
    data = {"x": jnp.asarray(small_digits.x), "y": jnp.asarray(small_digits.y)}
    key = jax.random.PRNGKey(3)
    a, ma = make_epoch_fn(step)(_state(cfg), data, epoch_order(key, 256, 32))
    b, mb = run_epoch_stepwise(make_step_fn(step), _state(cfg), data, epoch_order(key, 256, 32))
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_array_equal(x, y)
    assert set(ma) == set(mb) == {"loss", "accuracy", "grad_norm", "nonfinite", "live"}
    for name in ma:
        assert mb[name].shape == ma[name].shape == (256 // 32,)
        np.testing.assert_array_equal(ma[name], mb[name])
    assert int(a.step) == int(b.step) == 256 // 32


@pytest.mark.parametrize("guard", GUARDS)
def test_nonfinite_update_is_dropped_and_flagged(small_digits, guard):
    cfg = TrainConfig()
    state = _state(cfg)
    step = jax.jit(make_train_step(_objective(cfg), guard=guard))
    batch = {
        "x": jnp.asarray(small_digits.x[:8]).at[0, 0, 0, 0].set(jnp.nan),
        "y": jnp.asarray(small_digits.y[:8]),
    }
    new, metrics = step(state, batch, jax.random.PRNGKey(0))
    assert float(metrics["nonfinite"]) == 1.0
    for x, y in zip(jax.tree.leaves(new.params), jax.tree.leaves(state.params)):
        np.testing.assert_array_equal(x, y)
    assert int(new.step) == 1


def test_both_guards_give_bitwise_identical_epochs(small_digits, request):
    if rerun_under_default_xla(request):  # bitwise equality is a property of XLA's codegen
        return
    cfg = TrainConfig(batch_size=32)
    # One poisoned example: 256 examples in 8 batches of 32, so exactly one step is dropped.
    data = {
        "x": jnp.asarray(small_digits.x).at[40, 0, 0, 0].set(jnp.nan),
        "y": jnp.asarray(small_digits.y),
    }
    runs = {
        guard: make_epoch_fn(make_train_step(_objective(cfg), guard=guard))(
            _state(cfg), data, epoch_order(jax.random.PRNGKey(3), 256, 32)
        )
        for guard in GUARDS
    }
    (a, ma), (b, mb) = runs["cond"], runs["select"]
    for u, v in zip(
        jax.tree.leaves((a.params, a.opt_state)), jax.tree.leaves((b.params, b.opt_state))
    ):
        np.testing.assert_array_equal(u, v)
    np.testing.assert_array_equal(ma["loss"], mb["loss"])
    assert float(np.sum(ma["nonfinite"])) == 1.0 and float(np.sum(mb["nonfinite"])) == 1.0


def test_guard_choice_and_validation():
    assert guard_for_architecture("lstm") == "select"
    assert {guard_for_architecture(a) for a in ("mlp", "cnn", "transformer", "bert", None)} == {
        "cond"
    }
    with pytest.raises(ConfigError, match="guard"):
        make_train_step(_objective(TrainConfig()), guard="where")


def test_mixed_precision_keeps_float32_master_weights(small_digits):
    cfg = TrainConfig(mixed_precision=True)
    state = _state(cfg)
    step = jax.jit(make_train_step(_objective(cfg, mixed=True)))
    batch = {"x": jnp.asarray(small_digits.x[:16]), "y": jnp.asarray(small_digits.y[:16])}
    new, metrics = step(state, batch, jax.random.PRNGKey(0))
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(new.params))
    assert metrics["loss"].dtype == jnp.float32 and np.isfinite(float(metrics["loss"]))
    # the forward really ran in bfloat16: the jaxpr contains bf16 dot products
    jaxpr = jax.make_jaxpr(make_train_step(_objective(cfg, mixed=True)))(
        state, batch, jax.random.PRNGKey(0)
    )
    assert "bf16" in str(jaxpr)


def test_gradient_accumulation_matches_the_large_batch_update(small_digits):
    """SGD on 4 micro-batches of 8 with MultiSteps == one step on the 32-example batch."""
    x, y = jnp.asarray(small_digits.x[:32]), jnp.asarray(small_digits.y[:32])

    class NoDropout(nn.Module):
        @nn.compact
        def __call__(self, x, train=False):
            return nn.Dense(10)(x.reshape(x.shape[0], -1))

    def run(accum):
        cfg = TrainConfig(optimizer="sgd", learning_rate=0.5, grad_accum_steps=accum)
        state = create_train_state(
            NoDropout(),
            x[:1],
            build_optimizer(cfg, 10),
            init_key=jax.random.PRNGKey(0),
            rng=jax.random.PRNGKey(1),
        )
        step = jax.jit(make_train_step(_objective(cfg, NoDropout())))
        micro = 32 // accum
        for i in range(accum):
            state, _ = step(
                state,
                {"x": x[i * micro : (i + 1) * micro], "y": y[i * micro : (i + 1) * micro]},
                jax.random.PRNGKey(i),
            )
        return state.params

    big, accumulated = run(1), run(4)
    for a, b in zip(jax.tree.leaves(big), jax.tree.leaves(accumulated)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_augmentation_is_a_function_of_the_key(small_digits):
    from ml_adv.training.augment import random_shift

    aug = random_shift(1)
    batch = {"x": jnp.asarray(small_digits.x[:16]), "y": jnp.asarray(small_digits.y[:16])}
    a, b = aug(batch, jax.random.PRNGKey(0)), aug(batch, jax.random.PRNGKey(0))
    c = aug(batch, jax.random.PRNGKey(1))
    np.testing.assert_array_equal(a["x"], b["x"])
    assert not np.array_equal(a["x"], c["x"]) and a["x"].shape == batch["x"].shape
    np.testing.assert_array_equal(a["y"], batch["y"])


# ---------------------------------------------------------------- fit
def test_fit_is_deterministic_and_learns(small_digits, digits_images):
    _, test = digits_images
    cfg = TrainConfig(epochs=10, batch_size=32, learning_rate=5e-3, seed=5)
    r1 = fit(TinyNet(), small_digits, cfg, val=test, run=Run(progress=False))
    r2 = fit(TinyNet(), small_digits, cfg, val=test, run=Run(progress=False))
    for a, b in zip(jax.tree.leaves(r1.state.params), jax.tree.leaves(r2.state.params)):
        np.testing.assert_array_equal(a, b)
    assert r1.history[-1]["val_accuracy"] > 0.7
    assert r1.history[-1]["train_loss"] < r1.history[0]["train_loss"]
    r3 = fit(TinyNet(), small_digits, cfg.replace(seed=6), val=test, run=Run(progress=False))
    assert not np.array_equal(
        jax.tree.leaves(r1.state.params)[0], jax.tree.leaves(r3.state.params)[0]
    )


def test_early_stopping_stops_and_restores_best(small_digits, digits_images):
    _, test = digits_images
    cfg = TrainConfig(
        epochs=60,
        batch_size=64,
        learning_rate=0.05,
        early_stopping=True,
        patience=2,
        monitor="val_loss",
        monitor_mode="min",
    )
    r = fit(TinyNet(), small_digits, cfg, val=test, run=Run(progress=False))
    assert r.stopped_early and len(r.history) < 60
    assert r.best_epoch == len(r.history) - 2
    best_loss = min(h["val_loss"] for h in r.history)
    from ml_adv.training.steps import classification_metrics, predict_logits

    restored = classification_metrics(
        predict_logits(r.state.apply_fn, r.state.variables(), test.x), test.y
    )
    assert restored["loss"] == pytest.approx(best_loss, rel=1e-5)


def test_early_stopping_needs_validation_data(small_digits):
    with pytest.raises(ConfigError, match="early_stopping"):
        fit(TinyNet(), small_digits, TrainConfig(early_stopping=True), run=Run(progress=False))


def test_nan_loss_raises_and_keeps_last_good_checkpoint(small_digits, tmp_path):
    """A learning rate that explodes at step 20 (epoch 3 of 8 steps) makes the loss non-finite:
    training stops with TrainingDivergedError and the epoch-2 checkpoint stays, finite."""
    exploding = lambda step: jnp.where(step < 20, 0.05, 1e30)  # noqa: E731
    cfg = TrainConfig(epochs=10, batch_size=32, optimizer="sgd", schedule=exploding)
    with pytest.raises(TrainingDivergedError) as info:
        fit(TinyNet(), small_digits, cfg, run=Run.at(tmp_path / "run", progress=False))
    err = info.value
    assert "NaN" in str(err) and 16 <= err.step < 24
    assert err.last_good_checkpoint is not None and err.last_good_checkpoint.endswith("2")
    from ml_adv.checkpointing import RunCheckpointer

    with RunCheckpointer(tmp_path / "run" / "checkpoints") as ckpt:
        assert ckpt.latest_step() == 2
        items, meta = ckpt.restore(_state(cfg, x=small_digits.x[:1]).checkpoint_items())
    assert meta["epoch"] == 2
    assert all(np.all(np.isfinite(a)) for a in jax.tree.leaves(items["params"]))


def test_nan_policy_skip_continues(small_digits):
    x = small_digits.x.copy()
    poisoned = ArrayDataset(x, small_digits.y)

    def nan_on_label_9(logits, labels):
        base = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        return jnp.where(labels == 9, jnp.nan, base)

    cfg = TrainConfig(epochs=2, batch_size=32, loss=nan_on_label_9, nan_policy="skip")
    r = fit(TinyNet(), poisoned, cfg, run=Run(progress=False))
    assert r.nonfinite_steps > 0
    assert all(np.all(np.isfinite(a)) for a in jax.tree.leaves(r.state.params))
    with pytest.raises(TrainingDivergedError):
        fit(TinyNet(), poisoned, cfg.replace(nan_policy="raise"), run=Run(progress=False))


def test_fit_per_step_path_matches_the_scanned_epochs(small_digits):
    """``scan_epochs=False`` (one dispatch per step, metrics written on device) gives the same
    parameters and per-epoch records, including skipped non-finite steps."""

    def nan_when_batch_starts_with_9(logits, labels):
        base = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        return jnp.where(labels[0] == 9, jnp.nan, base)

    cfg = TrainConfig(
        epochs=3, batch_size=32, loss=nan_when_batch_starts_with_9, nan_policy="skip", seed=2
    )
    scanned = fit(TinyNet(), small_digits, cfg, run=Run(progress=False))
    stepwise = fit(TinyNet(), small_digits, cfg.replace(scan_epochs=False), run=Run(progress=False))
    for a, b in zip(jax.tree.leaves(scanned.state.params), jax.tree.leaves(stepwise.state.params)):
        np.testing.assert_array_equal(a, b)
    assert 0 < stepwise.nonfinite_steps == scanned.nonfinite_steps < 3 * 8
    for a, b in zip(scanned.history, stepwise.history, strict=True):
        a.pop("epoch_seconds"), b.pop("epoch_seconds")
        assert a == b


def test_fit_rejects_bad_inputs_before_compiling(small_digits):
    with pytest.raises(ConfigError, match="batch_size"):
        fit(TinyNet(), small_digits, TrainConfig(batch_size=10_000), run=Run(progress=False))
    with pytest.raises(DataError, match="train"):
        fit(TinyNet(), (small_digits.x, small_digits.y), TrainConfig(), run=Run(progress=False))
    with pytest.raises(DataError, match="val.x"):
        fit(
            TinyNet(),
            small_digits,
            TrainConfig(),
            val=ArrayDataset(np.zeros((4, 3)), np.zeros(4, int)),
            run=Run(progress=False),
        )
    assert ShapeError  # imported for the spec-level checks in test_facade


def test_a_new_learning_rate_never_recompiles(small_digits, monkeypatch):
    """Trials that differ only in traced values (rates, decay, smoothing, seed) share one
    program."""
    from ml_adv import make_spec
    from ml_adv.training import runner as host

    built = []
    real = host.make_epoch_fn
    monkeypatch.setattr(host, "make_epoch_fn", lambda *a, **k: built.append(1) or real(*a, **k))
    spec = make_spec(
        "mlp",
        input_shape=small_digits.example_shape,
        input_kind="image",
        num_classes=10,
        size="tiny",
        hidden_sizes=(24,),
    )
    base = TrainConfig(epochs=1, batch_size=32, schedule="warmup_cosine", optimizer="adamw")
    runs = [
        fit(
            spec,
            small_digits,
            base.replace(learning_rate=lr, weight_decay=wd, label_smoothing=ls, seed=s),
            run=Run(progress=False),
        )
        for lr, wd, ls, s in ((1e-3, 0.0, 0.0, 0), (5e-3, 1e-2, 0.1, 1), (1e-3, 0.0, 0.0, 0))
    ]
    assert len(built) == 1
    assert runs[0].history[-1]["train_loss"] == runs[2].history[-1]["train_loss"]
    assert runs[0].history[-1]["train_loss"] != runs[1].history[-1]["train_loss"]
    fit(
        spec, small_digits, base.replace(optimizer="sgd"), run=Run(progress=False)
    )  # a new structure compiles
    assert len(built) == 2


def test_a_masked_pool_equals_training_on_the_subset_and_grows_without_recompiling(
    small_digits, monkeypatch
):
    from ml_adv import make_spec
    from ml_adv.training import runner as host

    spec = make_spec(
        "mlp",
        input_shape=small_digits.example_shape,
        input_kind="image",
        num_classes=10,
        size="tiny",
        hidden_sizes=(20,),
    )
    cfg = TrainConfig(epochs=2, batch_size=32)
    mask = np.zeros(len(small_digits), bool)
    mask[::3] = True
    pooled = fit(spec, small_digits, cfg, example_mask=mask, run=Run(progress=False))
    subset = fit(spec, small_digits.subset(np.flatnonzero(mask)), cfg, run=Run(progress=False))
    for a, b in zip(jax.tree.leaves(pooled.state.params), jax.tree.leaves(subset.state.params)):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert pooled.history[-1]["step"] == subset.history[-1]["step"]
    built = []
    real = host.make_epoch_fn
    monkeypatch.setattr(host, "make_epoch_fn", lambda *a, **k: built.append(1) or real(*a, **k))
    mask[1::3] = (
        True  # the labelled set grows: same pool, same program, optimizer state carried over
    )
    grown = fit(
        spec, small_digits, cfg, example_mask=mask, init_state=pooled.state, run=Run(progress=False)
    )
    assert built == [] and grown.history[-1]["step"] == pooled.history[-1]["step"] + 2 * (
        int(mask.sum()) // 32
    )
    with pytest.raises(DataError, match="example_mask"):
        fit(spec, small_digits, cfg, example_mask=np.ones(3, bool), run=Run(progress=False))


def test_tied_validation_accuracy_breaks_on_validation_loss():
    from ml_adv.training.tracking import EarlyStopping

    tracker = EarlyStopping(1, "max", 0.0, 3, True)
    assert tracker.update(0.9, 1, tiebreak=0.5)[0]
    assert not tracker.update(0.9, 2, tiebreak=0.6)[0]  # tied, worse loss: not the best
    assert tracker.update(0.9, 3, tiebreak=0.4)[0]  # tied, lower loss: the new best epoch
    assert int(tracker.best_epoch[0]) == 3 and int(tracker.bad_epochs[0]) == 0
    assert not tracker.update(0.8, 4, tiebreak=0.1)[0]


def test_unrolled_epoch_loop_trains_the_same_model(small_digits):
    """``scan_unroll`` puts several steps in one loop iteration: a speed knob, not a new model."""
    from ml_adv import make_spec

    spec = make_spec(
        "mlp",
        input_shape=small_digits.example_shape,
        input_kind="image",
        num_classes=10,
        size="tiny",
    )
    runs = [
        fit(
            spec,
            small_digits,
            TrainConfig(epochs=2, batch_size=32, scan_unroll=u),
            run=Run(progress=False),
        )
        for u in (1, 4)
    ]
    for a, b in zip(jax.tree.leaves(runs[0].state.params), jax.tree.leaves(runs[1].state.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="scan_unroll: expected a positive integer"):
        TrainConfig(scan_unroll=0)
