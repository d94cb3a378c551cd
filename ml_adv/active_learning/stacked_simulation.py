"""Many simulated active-learning loops in lockstep: one stacked training program per round.

A benchmark of acquisition strategies (Gal et al. 2017: strategies x seeds, 20 initial labels,
10 more per round, up to 1,000) retrains a model in every loop every round. Run one after
another, that is thousands of small trainings. ``simulate_stacked`` runs every
(strategy, seed) loop together: in each round, every live loop's model is one member of one
stacked ``TrainState`` trained by one compiled epoch program (member i: loop i's own
labelled set, keys and, with ``warm_start``, its own previous parameters); then each loop
scores its own pool with ``loop.choose``, the same selection code as ``AdvancedActiveLearning``.

Shapes never change from round to round, so nothing recompiles: every member trains the same
``steps_per_round`` steps (its labelled set is tiled, reshuffled on each pass, to fill them),
the pool is scored as a fixed-size random subset (``pool_subset``) or as the whole pool with
an ``available`` mask, the core-set centres are padded to ``max_labels`` with copies of a
labelled row (a copy cannot change a nearest-centre distance), and test error is measured
on a fixed subset. A new program compiles only when the number of live loops changes
(``stop_error``), or per distinct step count with ``epochs_per_round``.

Why the functional core (``init_run`` + ``EpochRunner``) rather than ``fit_stacked``:
``fit_stacked`` starts every member from the same ``init_params`` (a warm start needs each
loop's own), sizes its epochs by the largest member's mask (a growing labelled set would
recompile every round), and picks the member layout by timing at most 2 s of an epoch, which
keeps ``vmap`` for big epochs; for the 4x4 conv nets of the benchmark the vmapped
(grouped) convolutions ran 1.6-2.5x slower on a 2-core EPYC than one scan per member
(``members_as="scan"``), so the layout is a parameter here.

Reproducibility: every key and order is derived from (seed, round, strategy), never from a
loop's position among the live loops, so a loop's result does not depend on which other
loops run beside it (up to float rounding of a vmapped layout), and a run resumed from its
checkpoint continues exactly. Loops with the same seed share the initial labels, the
validation and test subsets and each round's keys (common random numbers: their first
models are identical), so strategies are compared on paired runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from ml_adv.active_learning.loop import ActiveLearningConfig, Predictor
from ml_adv.active_learning.stacked_protocol import (
    LoopResult,
    StackedSimulationConfig,
    labels_to_error,
    loop_name,
)
from ml_adv.active_learning.stacked_rounds import (
    LoopState,
    MemberStates,
    SeedSplit,
    balanced_indices,
    check_sizes,
    error_rate,
    member_order,
    seed_split,
    select,
    train_members,
)
from ml_adv.active_learning.strategies import Strategy, resolve_strategy
from ml_adv.data.dataset import ArrayDataset
from ml_adv.errors import CheckpointError, ConfigError, check_seed, describe
from ml_adv.training.stacked import unstack_tree

__all__ = [
    "LoopResult",
    "StackedSimulationConfig",
    "balanced_indices",
    "grid",
    "labels_to_error",
    "member_order",
    "seed_split",
    "simulate_stacked",
]

CHECKPOINT_FORMAT = "ml_adv.active_learning.StackedSimulation/1"


class _Checkpoint:
    """The state after a round: host facts as JSON, warm-start parameters with orbax."""

    def __init__(self, folder, fingerprint: str):
        self.folder = Path(folder) if folder is not None else None
        self.fingerprint = fingerprint

    def save(self, next_round: int, loops: list[LoopState]) -> None:
        if self.folder is None:
            return
        from ml_adv.checkpointing import save_pytree

        self.folder.mkdir(parents=True, exist_ok=True)
        params = {
            loop.name: loop.params
            for loop in loops
            if loop.params is not None and not loop.finished
        }
        params_dir = f"params-{next_round:04d}" if params else None
        if params_dir is not None:
            target = self.folder / params_dir
            if target.exists():
                shutil.rmtree(target)
            save_pytree(target, params, {"round": next_round})
        meta = {
            "format": CHECKPOINT_FORMAT,
            "fingerprint": self.fingerprint,
            "next_round": next_round,
            "params_dir": params_dir,
            "loops": {
                loop.name: {
                    "labelled": [int(i) for i in loop.labelled],
                    "curve": loop.curve,
                    "finished": loop.finished,
                    "stopped_early": loop.stopped_early,
                }
                for loop in loops
            },
        }
        part = self.folder / "state.json.part"
        part.write_text(json.dumps(meta))
        os.replace(part, self.folder / "state.json")
        for old in self.folder.glob("params-*"):
            if old.name != params_dir:
                shutil.rmtree(old, ignore_errors=True)

    def restore(self, loops: list[LoopState], abstract_params: Any) -> int:
        """Fill ``loops`` from the checkpoint; the round to run next (0: nothing to resume)."""
        path = None if self.folder is None else self.folder / "state.json"
        if path is None or not path.is_file():
            return 0
        meta = json.loads(path.read_text())
        saved = meta.get("loops", {})
        if meta.get("fingerprint") != self.fingerprint or any(
            loop.name not in saved for loop in loops
        ):
            return 0  # another protocol, or loops it never ran: start afresh
        params = {}
        if meta.get("params_dir"):
            from ml_adv.checkpointing import load_pytree

            names = [loop.name for loop in loops if not saved[loop.name]["finished"]]
            target = {name: abstract_params for name in names}
            try:
                params = load_pytree(self.folder / meta["params_dir"], target) if target else {}
            except CheckpointError:
                return 0
        for loop in loops:
            facts = saved[loop.name]
            loop.labelled, loop.curve = [int(i) for i in facts["labelled"]], list(facts["curve"])
            loop.finished, loop.stopped_early = (
                bool(facts["finished"]),
                bool(facts["stopped_early"]),
            )
            loop.params = params.get(loop.name)
        return int(meta["next_round"])


def _fingerprint(
    spec, train: ArrayDataset, test: ArrayDataset, config: StackedSimulationConfig
) -> str:
    facts = {
        "spec": spec.to_dict(),
        "config": config.to_dict(),
        "train": len(train),
        "test": len(test),
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def grid(
    strategies: Sequence[str | Strategy], seeds: Sequence[int]
) -> list[tuple[str | Strategy, int]]:
    """Every (strategy, seed) pair, seeds outer: the loops of a full benchmark."""
    return [(strategy, seed) for seed in seeds for strategy in strategies]


def _check_loops(loops) -> list[tuple[Strategy, int]]:
    """``[(Strategy, seed)]``: resolved names, valid seeds, no loop twice."""
    if isinstance(loops, (str, bytes)) or not isinstance(loops, Sequence) or not loops:
        raise ConfigError(
            f"loops: expected a non-empty list of (strategy, seed) pairs, got {describe(loops)}"
        )
    out = []
    for pair in loops:
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ConfigError(f"loops: expected (strategy, seed) pairs, got {describe(pair)}")
        out.append((resolve_strategy(pair[0]), check_seed("loops", pair[1])))
    names = [loop_name(s.name, seed) for s, seed in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"loops: expected each (strategy, seed) once, got {names}")
    return out


def simulate_stacked(
    spec,
    train: ArrayDataset,
    test: ArrayDataset,
    *,
    loops: Sequence[tuple[str | Strategy, int]],
    config: StackedSimulationConfig | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    on_finish: Callable[[LoopResult], None] | None = None,
    on_round: Callable[[int, dict[str, Any]], None] | None = None,
    resume: bool = True,
) -> list[LoopResult]:
    """Run every (strategy, seed) loop with an oracle, in lockstep; their learning curves.

    Args:
        spec: the ``ModelSpec`` every loop trains (with dropout for BALD's MC samples).
        train: the labelled training set the oracle answers from (pools, initial labels).
        test: the set test error is measured on.
        loops: ``(strategy, seed)`` pairs (``grid(strategies, seeds)`` for all of them); a
            strategy is a name in ``STRATEGIES`` or a ``Strategy``.
        config: the protocol (``StackedSimulationConfig``).
        checkpoint_dir: save after every ``checkpoint_every`` rounds; a later call with the
            same protocol and loops resumes from there.
        on_finish: called with each ``LoopResult`` as soon as its loop ends.
        on_round: called after each round with ``(round, facts)`` (labels, live loops, seconds).
        resume: continue from ``checkpoint_dir``'s checkpoint when it matches (False: start
            afresh; the checkpoint is overwritten by the next save).

    Returns:
        One ``LoopResult`` per loop, in the order of ``loops``.

    Example:
        >>> from ml_adv.data.catalog import load_dataset
        >>> from ml_adv.models import make_spec
        >>> train, test = (load_dataset("digits_flat", split=s) for s in ("train", "test"))
        >>> spec = make_spec("mlp", input_shape=(64,), input_kind="features", num_classes=10,
        ...                  size="tiny")
        >>> config = StackedSimulationConfig(initial=20, query_size=10, max_labels=30,
        ...                                  validation=20, pool_subset=100, mc_samples=2,
        ...                                  steps_per_round=4, test_subset=100)
        >>> results = simulate_stacked(spec, train, test, loops=grid(["random", "bald"], [0]),
        ...                            config=config)
        >>> [(r.strategy, r.seed, [p["labels"] for p in r.curve]) for r in results]
        [('random', 0, [20, 30]), ('bald', 0, [20, 30])]
    """
    from ml_adv.training.inputs import as_model_inputs, check_model, validate_fit_inputs

    config = config or StackedSimulationConfig()
    if not isinstance(config, StackedSimulationConfig):
        raise ConfigError(f"config: expected a StackedSimulationConfig, got {describe(config)}")
    spec = check_model(spec)
    if spec is None:
        raise ConfigError(
            "spec: expected a ModelSpec (its shapes set the stacked program), got a custom module"
        )
    train, test = as_model_inputs(spec, train), as_model_inputs(spec, test)
    validate_fit_inputs(spec, train, test, config.train)
    check_sizes(train, test, config)
    pairs = _check_loops(loops)
    splits = {
        seed: seed_split(train, test, seed, config)
        for seed in dict.fromkeys(seed for _, seed in pairs)
    }
    loops = [
        LoopState(strategy, seed, [int(i) for i in splits[seed].initial])
        for strategy, seed in pairs
    ]
    module = spec.build()
    abstract = jax.eval_shape(
        lambda: module.init(jax.random.PRNGKey(0), jnp.asarray(train.x[:1]), train=False)
    )
    checkpoint = _Checkpoint(checkpoint_dir, _fingerprint(spec, train, test, config))
    start = checkpoint.restore(loops, abstract["params"]) if resume else 0
    sim = _Simulation.build(spec, module.apply, train, test, splits, config)
    for round_index in range(start, config.rounds):
        live = [loop for loop in loops if not loop.finished]
        if not live:
            break
        facts = sim.round(live, round_index)
        for loop in live:
            if loop.finished and on_finish is not None:
                on_finish(loop.result())
        if (round_index + 1) % config.checkpoint_every == 0 or round_index + 1 == config.rounds:
            checkpoint.save(round_index + 1, loops)
        if on_round is not None:
            on_round(round_index, facts)
    return [loop.result() for loop in loops]


@dataclasses.dataclass
class _Simulation:
    """What every round reads: the model, the training set on device, each seed's subsets."""

    spec: Any
    apply_fn: Any
    train: ArrayDataset
    data: dict[str, Any]
    tests: dict[int, ArrayDataset]
    vals: dict[int, ArrayDataset]
    splits: dict[int, SeedSplit]
    config: StackedSimulationConfig
    al_config: ActiveLearningConfig
    states: MemberStates

    @classmethod
    def build(cls, spec, apply_fn, train, test, splits, config) -> _Simulation:
        from ml_adv.training.loop import device_data

        data = device_data(train)  # the whole training set, on device once
        return cls(
            spec,
            apply_fn,
            train,
            data,
            tests={s: test.subset(split.test) for s, split in splits.items()},
            vals={s: train.subset(split.val) for s, split in splits.items()},
            splits=splits,
            config=config,
            al_config=ActiveLearningConfig(mc_samples=config.mc_samples, chunk=config.chunk),
            states=MemberStates(spec, data["x"][:1]),
        )

    def round(self, live: list[LoopState], round_index: int) -> dict[str, Any]:
        """Train every live loop, record its errors, stop or finish it, acquire its next labels."""
        t0 = time.perf_counter()
        variables, losses = train_members(
            self.spec, self.data, live, round_index, self.config, self.states
        )
        t1 = time.perf_counter()
        members = [unstack_tree(variables, i) for i in range(len(live))]
        for loop, member, loss in zip(live, members, losses, strict=True):
            self.record(loop, member, round_index, float(loss))
        t2 = time.perf_counter()
        for loop, member in zip(live, members, strict=True):
            if not loop.finished:
                split = self.splits[loop.seed]
                predictor = Predictor(self.apply_fn, member)
                picks = select(
                    loop, predictor, self.train, split, round_index, self.config, self.al_config
                )
                loop.labelled.extend(int(i) for i in picks)
        t3 = time.perf_counter()
        return {
            "labels": self.config.labels_at(round_index),
            "live": len(live),
            "finished": [loop.name for loop in live if loop.finished],
            "seconds": {"train": t1 - t0, "evaluate": t2 - t1, "select": t3 - t2},
        }

    def record(self, loop: LoopState, member: Any, round_index: int, loss: float) -> None:
        """Append the round's errors to the loop's curve; finish it at ``stop_error`` or the end."""
        batch = self.config.train.eval_batch_size
        error = error_rate(self.apply_fn, member, self.tests[loop.seed], batch)
        val_error = error_rate(self.apply_fn, member, self.vals[loop.seed], batch)
        loop.curve.append(
            {
                "round": round_index,
                "labels": len(loop.labelled),
                "test_error": error,
                "val_accuracy": 1.0 - val_error,
                "train_loss": loss,
            }
        )
        loop.params = member["params"] if self.config.warm_start else None
        last = round_index + 1 == self.config.rounds
        reached = self.config.stop_error is not None and error <= self.config.stop_error
        loop.finished, loop.stopped_early = reached or last, reached and not last
