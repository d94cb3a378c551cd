"""Fine-tuning with gradual unfreezing and discriminative rates; transfer with a new head.

Layer groups are parameter path prefixes (``"head"``, ``"encoder/dense_0"`` ...).
``thaw_order(params)`` lists them top first: the head, then the encoder's children from
the output side down to the embeddings (heuristic below; pass ``groups=`` to choose).
Stage ``i`` of ``finetune_gradual`` trains the first ``thawed[i]`` groups; the others are
frozen (update multiplier 0, weight decay included).

How it runs on the core: one ``TrainConfig(param_groups=...)`` naming every group, so
the optimizer carries per-leaf multipliers as arrays (``optim.scale_by_param_groups``);
each stage is one ``fit`` call whose ``init_state`` is the previous stage's state with a
fresh optimizer state (moments and schedule restart per stage, the usual practice when
the trained set changes) and new multipliers from ``unfreeze_scales`` via
``set_group_scales``. The program structure never changes, so all stages share one
compiled epoch. Discriminative rates: a group ``r`` places below the head gets
``lr_decay ** r`` times the rate (ULMFiT uses 1/2.6).

Transfer learning (``transfer``) is the same machinery with a freshly initialised head
on a pretrained model's other parameters: stage 1 trains the head alone (frozen
encoder), an optional stage 2 fine-tunes everything.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ml_adv.errors import ConfigError, check_non_negative, check_positive, describe
from ml_adv.rundir import QUIET, Run
from ml_adv.training.optim import (
    ParamGroup,
    optimizer_hyperparams,
    set_group_scales,
    set_hyperparams,
)

_BOTTOM = re.compile(r"embed|input")
_INDEXED = re.compile(r"^(.*?)_(\d+)$")
# Among indexed layers, the usual order from the input upwards.
_KIND_RANK = {"conv": 0, "lstm": 1, "block": 2, "layers": 2, "dense": 3}


def _path(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def thaw_order(params: dict[str, Any]) -> list[str]:
    """Layer groups, top first: ``head``, then ``encoder/<child>`` from output to input.

    Depth heuristic for the built-in encoders: embeddings / input projections are lowest,
    indexed layers (``conv_i`` < ``lstm_i`` < ``block_i``/``layers_i`` < ``dense_i``) in
    between, anything else (final norm, pooler) on top.
    """
    if "head" not in params or "encoder" not in params:
        raise ConfigError(
            f"params: expected the built-in layout {{'encoder', 'head'}}, got {sorted(params)}"
        )

    def depth(name: str) -> tuple:
        if _BOTTOM.search(name):  # an embedding's own norm sits just above it
            return (0, int(bool(re.search(r"ln|norm", name))), 0, name)
        m = _INDEXED.match(name)
        if m:
            return (1, _KIND_RANK.get(m.group(1), 2), int(m.group(2)), name)
        return (2, 0, 0, name)

    children = sorted(params["encoder"], key=depth)
    return ["head"] + [f"encoder/{c}" for c in reversed(children)]


def _group_of(name: str, groups: Sequence[str]) -> int | None:
    for i, g in enumerate(groups):
        if name == g or name.startswith(g + "/"):
            return i
    return None


def unfreeze_scales(
    params: Any, groups: Sequence[str], thawed: int, *, lr_decay: float = 1.0
) -> Any:
    """Per-leaf update multipliers: ``lr_decay ** i`` for the first ``thawed`` groups, else 0.

    ``groups`` is the thaw order (``thaw_order``); a leaf in no group stays frozen.
    """

    def scale(path, _):
        i = _group_of(_path(path), groups)
        return jnp.asarray(lr_decay**i if i is not None and i < thawed else 0.0, jnp.float32)

    return jax.tree_util.tree_map_with_path(scale, params)


def stage_plan(num_groups: int, stages: int) -> list[int]:
    """Groups thawed at each of ``stages`` stages, the last one thawing all (evenly spread)."""
    stages = check_positive("stages", stages)
    return [int(np.ceil(num_groups * (i + 1) / stages)) for i in range(stages)]


@dataclasses.dataclass
class FineTuneResult:
    """The last stage's ``FitResult`` state plus each stage's history and thawed groups."""

    state: Any
    histories: list[list[dict[str, Any]]]
    thawed: list[list[str]]
    compiled_epochs: int


def _restart_optimizer(state, config, scales):
    opt_state = state.tx.init(state.params)
    if isinstance(config.optimizer, str):
        opt_state = set_hyperparams(opt_state, **optimizer_hyperparams(config))
    return state.replace(opt_state=set_group_scales(opt_state, scales))


def run_stages(
    spec,
    init_params: Any,
    train,
    config,
    *,
    groups: Sequence[str],
    thawed: Sequence[int],
    epochs: Sequence[int],
    val=None,
    lr_decay: float = 1.0,
    key=None,
    run: Run = QUIET,
) -> FineTuneResult:
    """Train ``spec`` from ``init_params``, stage ``i`` updating ``groups[:thawed[i]]`` for
    ``epochs[i]``.

    With a run folder, stage ``i`` checkpoints into its ``stage_<i>/`` and a rerun resumes
    each stage from its checkpoint (a finished stage restores without training).
    """
    from ml_adv.training.loop import fit
    from ml_adv.training.runner import PROGRAMS
    from ml_adv.training.setup import init_run, run_key

    if len(thawed) != len(epochs) or not thawed:
        raise ConfigError(
            f"epochs: expected one epoch count per stage ({len(thawed)}), got {describe(epochs)}"
        )
    for e in epochs:
        check_positive("epochs", e)
    check_non_negative("lr_decay", lr_decay)
    groups = list(groups)
    base = dataclasses.replace(config, param_groups=tuple(ParamGroup(g) for g in groups))
    root = run_key(config, key)
    state, histories, thawed_names = None, [], []
    before = PROGRAMS.count("epochs")
    for i, (n, e) in enumerate(zip(thawed, epochs)):
        cfg = dataclasses.replace(base, epochs=int(e))
        stage_key = jax.random.fold_in(root, i)  # a fresh shuffle per stage
        if state is None:
            state = init_run(
                spec,
                cfg,
                example_x=train.x[:1],
                steps_per_epoch=len(train) // cfg.batch_size,
                key=stage_key,
                init_params=init_params,
            ).state
        state = _restart_optimizer(
            state, cfg, unfreeze_scales(state.params, groups, n, lr_decay=lr_decay)
        )
        result = fit(
            spec,
            train,
            cfg,
            val=val,
            init_state=state,
            key=stage_key,
            run=run.nested(f"stage_{i + 1}"),
        )
        state = result.state
        histories.append(result.history)
        thawed_names.append(groups[:n])
    return FineTuneResult(state, histories, thawed_names, PROGRAMS.count("epochs") - before)


def finetune_gradual(
    spec,
    init_params: Any,
    train,
    config,
    *,
    stages: int = 3,
    epochs_per_stage: int = 2,
    val=None,
    groups: Sequence[str] | None = None,
    lr_decay: float = 1.0,
    key=None,
    run: Run = QUIET,
) -> FineTuneResult:
    """Gradual unfreezing: ``stages`` stages from head-only to all groups (``thaw_order``)."""
    groups = list(groups) if groups is not None else thaw_order(init_params)
    plan = stage_plan(len(groups), min(stages, len(groups)))
    return run_stages(
        spec,
        init_params,
        train,
        config,
        groups=groups,
        thawed=plan,
        epochs=[epochs_per_stage] * len(plan),
        val=val,
        lr_decay=lr_decay,
        key=key,
        run=run,
    )


def new_head_params(spec, params: Any, *, seed: int = 0) -> Any:
    """``params`` with the ``head`` re-initialised (everything else, e.g. a pretrained
    encoder, kept).
    """
    if "head" not in params:
        raise ConfigError(f"params: expected a 'head' to replace, got {sorted(params)}")
    module = spec.build()

    def head(key, x):
        return module.init({"params": key, "dropout": key}, x, train=False)["params"]["head"]

    # Jitted and returning the head only: XLA drops the rest of the network's initialisation
    # (eagerly, ``init`` compiled every operation of the whole network as a program of its own).
    return {**params, "head": jax.jit(head)(jax.random.PRNGKey(seed), spec.example_input())}


def transfer(
    spec,
    pretrained_params: Any,
    train,
    config,
    *,
    head_epochs: int = 3,
    finetune_epochs: int = 0,
    val=None,
    lr_decay: float = 1.0,
    key=None,
    run: Run = QUIET,
) -> FineTuneResult:
    """Frozen pretrained encoder + a new head (``head_epochs``), then optional full fine-tuning."""
    params = new_head_params(spec, pretrained_params, seed=config.seed)
    groups = thaw_order(params)
    thawed, epochs = [1], [head_epochs]
    if finetune_epochs:
        thawed.append(len(groups))
        epochs.append(finetune_epochs)
    return run_stages(
        spec,
        params,
        train,
        config,
        groups=groups,
        thawed=thawed,
        epochs=epochs,
        val=val,
        lr_decay=lr_decay,
        key=key,
        run=run,
    )
