"""The one vectorised trainer (ensembles over alpha x seed, warm starts, per-member stopping).

Modules: :mod:`~phaseprobe.train.config` (settings and validation), :mod:`~phaseprobe.train.optimisers`
(named optimisers as Optax recipes, learning-rate schedules, Langevin noise),
:mod:`~phaseprobe.train.losses` (loss pieces, the :class:`Minibatch` a loss hook sees),
:mod:`~phaseprobe.train.evaluate` (full-pass metrics), :mod:`~phaseprobe.train.state` (state, results),
:mod:`~phaseprobe.train.trainer` (the loop).
"""

from phaseprobe.train.config import LOSSES, NOISES, OPTIMIZERS, SCHEDULES, TrainConfig, TrainError
from phaseprobe.train.evaluate import Evaluator
from phaseprobe.train.losses import Minibatch, example_errors
from phaseprobe.train.optimisers import OPTIMIZER_RECIPES, build_optimizer, langevin_noise, make_schedule
from phaseprobe.train.state import STOP_NAMES, TrainResult, TrainState
from phaseprobe.train.trainer import Trainer, log_epochs

__all__ = ["LOSSES", "NOISES", "OPTIMIZERS", "OPTIMIZER_RECIPES", "SCHEDULES", "STOP_NAMES", "Evaluator", "Minibatch",
           "TrainConfig", "TrainError", "Trainer", "TrainResult", "TrainState", "build_optimizer", "example_errors",
           "langevin_noise", "log_epochs", "make_schedule"]
