"""The one vectorised trainer (ensembles over alpha x seed, warm starts, per-member stopping)."""

from phaseprobe.train.trainer import (
    LOSSES,
    OPTIMIZERS,
    STOP_NAMES,
    TrainConfig,
    TrainError,
    Trainer,
    TrainResult,
    TrainState,
    log_epochs,
)

__all__ = ["LOSSES", "OPTIMIZERS", "STOP_NAMES", "TrainConfig", "TrainError", "Trainer", "TrainResult", "TrainState", "log_epochs"]
