"""What the trainer carries and returns: per-member state, results, stop reasons."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import equinox as eqx
import jax
import numpy as np

# stop reasons (per member)
RUNNING, STOP_PATIENCE, STOP_GRAD, STOP_DIVERGED, STOP_MAX_EPOCHS = 0, 1, 2, 3, 4
STOP_NAMES = {RUNNING: "running", STOP_PATIENCE: "patience", STOP_GRAD: "grad_tol",
              STOP_DIVERGED: "diverged", STOP_MAX_EPOCHS: "max_epochs"}


class TrainState(eqx.Module):
    """Per-member state (a pytree), every array with a leading member axis K."""

    params: Any
    opt_state: Any
    key: jax.Array
    active: jax.Array
    diverged: jax.Array
    reason: jax.Array
    best: jax.Array
    bad: jax.Array
    epochs: jax.Array
    last_err: jax.Array
    last_gnorm: jax.Array
    epoch_offset: jax.Array = None  # epochs trained before this call (shuffle keys continue from it)

    @property
    def total_epochs(self):
        """Epochs trained in all, this call's plus the ``epoch_offset`` it continued from."""
        return self.epochs + self.epoch_offset


@dataclass
class TrainResult:
    """What :meth:`Trainer.train` returns: the final model (stacked), state, and the metric records."""

    model: Any
    state: TrainState
    records: list[dict] = field(default_factory=list)

    @property
    def params(self):
        return eqx.filter(self.model, eqx.is_inexact_array)

    def stop_reasons(self) -> list[str]:
        return [STOP_NAMES[int(r)] for r in np.asarray(self.state.reason)]
