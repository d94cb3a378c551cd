"""The adaptation methods by name (``ADAPTATION_METHODS``), each a function of one ``AdaptRequest``.

* ``domain_adversarial``: DANN (``dann.fit_dann``) from the source model's parameters on
  labelled source(s) + unlabelled target; target labels, when given, only validate.
* ``fine_tuning``: the source model trained further on the labelled target examples,
  with gradual unfreezing (``finetune.finetune_gradual``) or all layers at once.
* ``transfer_learning``: the source model's encoder frozen under a new head trained on
  the labelled target examples, then optional full fine-tuning (``finetune.transfer``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from ml_adv.data.dataset import ArrayDataset
from ml_adv.errors import DataError
from ml_adv.registry import Registry


@dataclasses.dataclass
class AdaptRequest:
    """Everything a method needs: the source model, the domains, the run config and options."""

    spec: Any
    params: Any
    sources: list[ArrayDataset]
    target: ArrayDataset
    labeled: ArrayDataset | None
    val: ArrayDataset | None
    config: Any
    domain_weight: float = 1.0
    discriminator_hidden: tuple[int, ...] = (64,)
    gradual: bool = True
    stages: int = 3
    epochs_per_stage: int | None = None
    lr_decay: float = 1.0
    head_epochs: int | None = None
    finetune_epochs: int = 0
    run: Any = None  # a rundir.Run


@dataclasses.dataclass
class AdaptOutcome:
    """The adapted base model's variables and one record per epoch (``stage`` when staged)."""

    variables: dict[str, Any]
    history: list[dict[str, Any]]


ADAPTATION_METHODS: Registry[Callable[[AdaptRequest], AdaptOutcome]] = Registry("adaptation method")
NEEDS_TARGET_LABELS = ("fine_tuning", "transfer_learning")


def _labeled(request: AdaptRequest, method: str) -> ArrayDataset:
    if request.labeled is None:
        raise DataError(
            f"target labels: {method!r} trains on labelled target examples; "
            "pass set_target_domain(data, labeled=<a few labelled target examples>), got none"
        )
    return request.labeled


def _staged_history(result) -> list[dict[str, Any]]:
    return [{**record, "stage": i + 1} for i, h in enumerate(result.histories) for record in h]


@ADAPTATION_METHODS.register("domain_adversarial")
def domain_adversarial(request: AdaptRequest) -> AdaptOutcome:
    from ml_adv.domain_adaptation.dann import fit_dann

    result = fit_dann(
        request.spec,
        request.sources,
        request.target,
        request.config,
        init_params=request.params,
        val=request.val,
        domain_weight=request.domain_weight,
        discriminator_hidden=request.discriminator_hidden,
        run=request.run,
    )
    return AdaptOutcome(result.variables, result.fit.history)


@ADAPTATION_METHODS.register("fine_tuning")
def fine_tuning(request: AdaptRequest) -> AdaptOutcome:
    from ml_adv.domain_adaptation.finetune import finetune_gradual, thaw_order

    train = _labeled(request, "fine_tuning")
    per_stage = request.epochs_per_stage or max(1, request.config.epochs // max(request.stages, 1))
    groups = thaw_order(request.params)
    result = finetune_gradual(
        request.spec,
        request.params,
        train,
        request.config,
        stages=request.stages if request.gradual else 1,
        epochs_per_stage=per_stage if request.gradual else request.config.epochs,
        groups=groups,
        val=request.val,
        lr_decay=request.lr_decay,
        run=request.run,
    )
    return AdaptOutcome(
        {"params": result.state.params, **result.state.model_state}, _staged_history(result)
    )


@ADAPTATION_METHODS.register("transfer_learning")
def transfer_learning(request: AdaptRequest) -> AdaptOutcome:
    from ml_adv.domain_adaptation.finetune import transfer

    train = _labeled(request, "transfer_learning")
    result = transfer(
        request.spec,
        request.params,
        train,
        request.config,
        head_epochs=request.head_epochs or request.config.epochs,
        finetune_epochs=request.finetune_epochs,
        val=request.val,
        lr_decay=request.lr_decay,
        run=request.run,
    )
    return AdaptOutcome(
        {"params": result.state.params, **result.state.model_state}, _staged_history(result)
    )
