"""Training core: config, state, optimizers, losses, compiled steps, the fit loop, data parallelism."""

from ml_adv.training.config import TrainConfig
from ml_adv.training.loop import FitResult, fit
from ml_adv.training.losses import LOSSES, masked_lm_loss
from ml_adv.training.optim import OPTIMIZERS, SCHEDULES, build_optimizer
from ml_adv.training.state import TrainState, create_train_state
from ml_adv.training.steps import epoch_order, make_epoch_fn, make_train_step, predict_logits

__all__ = [
    "LOSSES", "OPTIMIZERS", "SCHEDULES", "FitResult", "TrainConfig", "TrainState", "build_optimizer",
    "create_train_state", "epoch_order", "fit", "make_epoch_fn", "make_train_step", "masked_lm_loss", "predict_logits",
]
