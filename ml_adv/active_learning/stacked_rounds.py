"""The pieces of one lockstep round of ``stacked_simulation``: splits, orders, training, picks.

Every key and order is derived from (seed, round, tag), never from a loop's position among
the live loops (``round_key``, ``round_rng``), so a loop trains and picks the same whether it
runs alone or beside others. Loops with the same seed share the initial labels, the
validation and test subsets and each round's keys (common random numbers).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from ml_adv.active_learning.loop import ActiveLearningConfig, Predictor, choose
from ml_adv.active_learning.stacked_protocol import LoopResult, StackedSimulationConfig, loop_name
from ml_adv.active_learning.strategies import Strategy
from ml_adv.data.dataset import ArrayDataset
from ml_adv.errors import ConfigError, DataError
from ml_adv.training.stacked import stack_trees
from ml_adv.training.steps import predict_logits

# key tags: a round's training, its selection, and the seed's data split
_TRAIN, _SELECT, _SPLIT = 1, 2, 3


@dataclasses.dataclass
class LoopState:
    """A loop's host state: its labelled indices, curve and (warm start) parameters."""

    strategy: Strategy
    seed: int
    labelled: list[int]
    curve: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    params: Any = None
    finished: bool = False
    stopped_early: bool = False

    @property
    def name(self) -> str:
        return loop_name(self.strategy.name, self.seed)

    def result(self) -> LoopResult:
        return LoopResult(
            self.strategy.name, self.seed, list(self.curve), list(self.labelled), self.stopped_early
        )


@dataclasses.dataclass(frozen=True)
class SeedSplit:
    """What every loop of one seed shares: initial labels, validation and test subsets, pool."""

    initial: np.ndarray
    val: np.ndarray
    test: np.ndarray
    pool: np.ndarray  # training indices that may ever be labelled (all but the validation images)


def round_key(seed: int, round_index: int, tag: int) -> jax.Array:
    return jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), round_index), tag)


def round_rng(seed: int, round_index: int, tag: int) -> np.random.Generator:
    return np.random.default_rng([seed, round_index, tag])


def balanced_indices(
    labels: np.ndarray, n: int, rng: np.random.Generator, num_classes: int
) -> np.ndarray:
    """``n`` indices, ``n // C`` from each class (the remainder from random classes), sorted."""
    extra = set(rng.choice(num_classes, n % num_classes, replace=False).tolist())
    picks = []
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        want = n // num_classes + (c in extra)
        if len(members) < want:
            raise DataError(
                f"train: class {c} has {len(members)} examples, a balanced initial set needs {want}"
            )
        picks.append(rng.choice(members, want, replace=False))
    return np.sort(np.concatenate(picks))


def seed_split(
    train: ArrayDataset, test: ArrayDataset, seed: int, config: StackedSimulationConfig
) -> SeedSplit:
    """The seed's initial labels, validation images and test subset (shared by its loops)."""
    rng = round_rng(seed, 0, _SPLIT)
    if config.balanced_initial:
        initial = balanced_indices(train.y, config.initial, rng, train.num_classes)
    else:
        initial = np.sort(rng.choice(len(train), config.initial, replace=False))
    rest = np.setdiff1d(np.arange(len(train)), initial)
    val = np.sort(rng.choice(rest, config.validation, replace=False))
    test_idx = (
        np.arange(len(test))
        if config.test_subset is None
        else np.sort(rng.choice(len(test), config.test_subset, replace=False))
    )
    return SeedSplit(initial, val, test_idx, np.setdiff1d(np.arange(len(train)), val))


def check_sizes(train: ArrayDataset, test: ArrayDataset, config: StackedSimulationConfig) -> None:
    """DataError unless the data hold the protocol: validation, every label, the scored subset."""
    needed = config.validation + config.max_labels + (config.pool_subset or 1)
    if len(train) < needed:
        raise DataError(
            f"train: the protocol needs {needed} training examples (validation {config.validation} "
            f"+ max_labels {config.max_labels} + pool_subset {config.pool_subset}), "
            f"got {len(train)}"
        )
    if config.test_subset is not None and config.test_subset > len(test):
        raise DataError(
            f"test: test_subset={config.test_subset} exceeds the {len(test)} test examples"
        )
    if config.balanced_initial and config.initial < train.num_classes:
        raise ConfigError(
            f"initial: a class-balanced initial set needs at least {train.num_classes} labels "
            f"(one per class), got {config.initial}"
        )


def member_order(
    labelled: np.ndarray, steps: int, batch_size: int, rng: np.random.Generator
) -> np.ndarray:
    """``[steps, batch_size]`` rows: passes over ``labelled``, each freshly shuffled, cut to length.

    A set smaller than a batch (20 labels, batch 32) is tiled inside the batch, so every
    round runs the same number of steps whatever the labelled-set size.
    """
    passes = -(-steps * batch_size // len(labelled))
    flat = np.concatenate([rng.permutation(labelled) for _ in range(passes)])[: steps * batch_size]
    return flat.reshape(steps, batch_size).astype(np.int32)


class MemberStates:
    """A round's stacked ``TrainState``: member i as ``init_run(key=k_i, init_params=p_i)`` has it.

    ``init_run`` runs once per distinct step count (it gives the optimizer, the train step
    and a one-member template); each member then gets its own parameters (its previous ones,
    or a fresh ``module.init`` from its key), dropout key and fresh optimizer state. Why not
    ``init_run(members=K)``: it compiles a vmapped initialiser for every new K, which took
    longer than the whole training of a small round on a 2-core CPU.
    """

    def __init__(self, spec, example_x):
        self.spec, self.example_x = spec, example_x
        self.module = spec.build()
        self._setups: dict[int, Any] = {}
        self._opt_init: dict[int, Any] = {}
        # One compiled initialiser (eagerly, ``init`` compiles each operation of the network
        # as a program of its own the first time).
        self._init_params = jax.jit(
            lambda key, x: self.module.init({"params": key, "dropout": key}, x, train=False)[
                "params"
            ]
        )

    def setup(self, config: StackedSimulationConfig, steps: int):
        from ml_adv.training.setup import init_run

        if steps not in self._setups:
            self._setups[steps] = init_run(
                self.spec, config.train, example_x=self.example_x, steps_per_epoch=steps
            )
        return self._setups[steps]

    def __call__(
        self, loops: list[LoopState], round_index: int, config: StackedSimulationConfig, steps: int
    ):
        from ml_adv.training.optim import optimizer_hyperparams, set_hyperparams

        setup = self.setup(config, steps)
        tx = setup.tx
        if id(tx) not in self._opt_init:
            self._opt_init[id(tx)] = (tx, jax.jit(tx.init))  # tx kept so its id stays its own
        members = []
        for loop in loops:
            init_key, dropout_key, _ = jax.random.split(
                round_key(loop.seed, round_index, _TRAIN), 3
            )
            params = (
                loop.params
                if config.warm_start and loop.params is not None
                else self._init_params(init_key, self.example_x)
            )
            opt_state = self._opt_init[id(tx)][1](params)
            if isinstance(config.train.optimizer, str):
                opt_state = set_hyperparams(opt_state, **optimizer_hyperparams(config.train))
            members.append(setup.state.replace(params=params, opt_state=opt_state, rng=dropout_key))
        return setup, stack_trees(members)


def train_members(
    spec,
    data: dict[str, jax.Array],
    loops: list[LoopState],
    round_index: int,
    config: StackedSimulationConfig,
    states: MemberStates,
) -> tuple[Any, np.ndarray]:
    """Train one member per loop in one stacked program: ``(stacked variables, [K] mean loss)``.

    Member i starts as ``init_run`` with loop i's own key would start it (with ``warm_start``,
    from the loop's previous parameters and a fresh optimizer state) and trains on its own
    labelled set; the members share nothing but the compiled program.
    """
    from ml_adv.training.runner import EpochRunner

    steps = config.steps_at(config.labels_at(round_index))
    setup, state = states(loops, round_index, config, steps)
    order = np.stack(
        [
            member_order(
                np.asarray(loop.labelled),
                steps,
                config.train.batch_size,
                round_rng(loop.seed, round_index, _TRAIN),
            )
            for loop in loops
        ],
        axis=1,
    )
    runner = EpochRunner(
        setup.train_step,
        stacked=True,
        member_batches=True,
        members_as=config.members_as,
        guard_steps=setup.guard_steps,
    )
    state, metrics = runner(state, data, order, np.ones(order.shape[:2], bool))
    loss = np.asarray(metrics["loss"], np.float64)
    good = np.asarray(metrics["nonfinite"]) == 0
    mean_loss = np.where(
        good.any(0), np.where(good, loss, 0).sum(0) / np.maximum(good.sum(0), 1), np.nan
    )
    return {"params": state.params, **state.model_state}, mean_loss


def error_rate(apply_fn, variables, data: ArrayDataset, batch_size: int) -> float:
    """Fraction of ``data`` misclassified by ``variables`` (evaluation mode)."""
    logits = predict_logits(apply_fn, variables, data.x, chunk=batch_size)
    return float(np.mean(np.argmax(np.asarray(logits), -1) != data.y))


def select(
    loop: LoopState,
    predictor: Predictor,
    train: ArrayDataset,
    split: SeedSplit,
    round_index: int,
    config: StackedSimulationConfig,
    al_config: ActiveLearningConfig,
) -> np.ndarray:
    """The loop's next ``query_size`` training indices, by ``loop.choose`` on its pool."""
    labelled = np.asarray(loop.labelled)
    key = round_key(loop.seed, round_index, _SELECT)
    diversity = loop.strategy.diversity
    if config.pool_subset is None:
        # The whole pool keeps one shape; labelled rows are unavailable (and, for the
        # core-set, the centres).
        candidates = split.pool
        available = ~np.isin(candidates, labelled)
        labelled_x = None
    else:
        unlabelled = np.setdiff1d(split.pool, labelled)
        rng = round_rng(loop.seed, round_index, _SELECT)
        candidates = np.sort(rng.choice(unlabelled, config.pool_subset, replace=False))
        available = np.ones(len(candidates), bool)
        # Fixed-size centres: copies of the first labelled row never change a minimum distance.
        padded = np.concatenate([labelled, np.full(config.max_labels - len(labelled), labelled[0])])
        labelled_x = train.x[padded] if diversity else None
    al_config = dataclasses.replace(
        al_config, mc_predictive=loop.strategy.name in config.mc_predictive
    )
    picks = choose(
        loop.strategy,
        predictor if loop.strategy.uses_model else None,
        train.x[candidates],
        available,
        config.query_size,
        key,
        labelled_x=labelled_x,
        config=al_config,
    )
    return candidates[np.asarray(picks)]
