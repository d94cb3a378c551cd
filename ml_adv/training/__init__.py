"""Training core: config, state, optimizers, objectives, compiled steps, the fit loops, data
parallelism."""

from ml_adv.training.config import TrainConfig
from ml_adv.training.loop import FitResult, fit
from ml_adv.training.losses import LOSSES, masked_lm_loss
from ml_adv.training.objectives import masked_lm_objective, supervised_objective
from ml_adv.training.optim import (
    OPTIMIZERS,
    SCHEDULES,
    ParamGroup,
    build_optimizer,
    hyperparams,
    set_group_scales,
    set_hyperparams,
)
from ml_adv.training.setup import RunSetup, init_run
from ml_adv.training.state import TrainState, create_train_state
from ml_adv.training.steps import epoch_order, make_epoch_fn, make_train_step, predict_logits

__all__ = [
    "LOSSES",
    "OPTIMIZERS",
    "SCHEDULES",
    "FitResult",
    "ParamGroup",
    "RunSetup",
    "TrainConfig",
    "TrainState",
    "build_optimizer",
    "create_train_state",
    "epoch_order",
    "fit",
    "hyperparams",
    "init_run",
    "make_epoch_fn",
    "make_train_step",
    "masked_lm_loss",
    "masked_lm_objective",
    "predict_logits",
    "set_group_scales",
    "set_hyperparams",
    "supervised_objective",
]
