"""The trainer's settings (:class:`TrainConfig`) and their validation.

Everything here is plain data checked before any compute: a bad value raises
:class:`TrainError` with one line, "field: problem; fix".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from phaseprobe.errors import PhaseprobeError

OPTIMIZERS = ("sgd", "momentum", "adam", "adamw", "gd")
LOSSES = ("ce", "mse")
SCHEDULES = ("constant", "warmup", "cosine", "warmup_cosine")
NOISES = ("none", "langevin")


class TrainError(PhaseprobeError):
    """A bad training request; the message names the field and the fix (one line)."""


@dataclass(frozen=True)
class TrainConfig:
    """Settings shared by all members of an ensemble (per-member values go to :meth:`Trainer.train`).

    ``batch_size=None`` (or ``optimizer="gd"``) is full-batch: one step per epoch.
    ``shuffle="member"`` gives every member its own minibatch order (from its own key);
    ``shuffle="shared"`` gives all members one order (member 0's key, the ensemble's epoch count):
    the minibatch is then gathered once per step and the members' first-layer products become one
    large matrix product (about 1.25x the throughput on CPU), at the price of a common data order.
    ``member_chunk=None`` trains all members at once (one vmap: what a GPU wants); an integer c
    trains them c at a time (``lax.map(..., batch_size=c)``: bounded memory, and on CPU a small
    chunk keeps each member's parameters and optimiser moments in cache -- c = 4 was 1.2x faster
    than all 16 at once for 784-128-128-10 MLPs on 2 cores). Results do not depend on either.
    ``unroll`` minibatch steps run per iteration of the compiled epoch loop (``lax.scan(unroll=...)``):
    the compiler then sees two or more steps at once (fewer copies of the loop-carried parameters and
    moments); the results are bit for bit those of ``unroll=1``.
    With ``optimizer="adamw"`` the decay is decoupled: ``w <- w - lr * 2 * alpha * w`` (that is,
    PyTorch's AdamW with ``weight_decay = beta = 2 alpha``) and no penalty enters the gradient.
    ``b1``, ``b2``, ``eps`` are Adam's and AdamW's decay rates and epsilon; ``momentum`` is the
    heavy-ball coefficient of ``optimizer="momentum"``.

    **Learning-rate schedule** (counted in optimiser steps, one per minibatch; the peak is each
    member's ``lr``; see :func:`phaseprobe.train.optimisers.make_schedule`):

    * ``"constant"`` (default): ``lr`` at every step;
    * ``"warmup"``: linear from 0 to ``lr`` over ``warmup_steps`` steps, then ``lr``;
    * ``"cosine"``: cosine decay from ``lr`` to ``end_lr_factor * lr`` at step ``decay_steps``,
      then constant;
    * ``"warmup_cosine"``: linear warm-up to ``lr`` over ``warmup_steps``, then cosine decay to
      ``end_lr_factor * lr`` at step ``decay_steps`` (counted from step 0, warm-up included,
      as in ``optax.warmup_cosine_decay_schedule``).

    The step count lives in the optimiser state: a warm start with the carried ``opt_state``
    continues the schedule, a fresh optimiser state restarts it.

    **Noise.** ``noise="langevin"`` (with ``optimizer="sgd"`` or ``"gd"``) adds Gaussian noise
    to the plain gradient step, ``w <- w - lr * grad L + sqrt(2 * lr * T) * xi`` with
    ``xi ~ N(0, I)`` and ``T`` the member's ``temperature`` (the config's value, or one per
    member given to :meth:`Trainer.train`); see :func:`phaseprobe.train.optimisers.langevin_noise`.
    ``L`` is the regularised loss of :mod:`phaseprobe.conventions` (``E`` a mean over samples), so
    ``T`` is in its units. With minibatches the minibatch gradient's own noise adds to it; full
    batch (``optimizer="gd"``) gives the Langevin noise alone.
    """

    loss: str = "ce"
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    batch_size: int | None = 64
    epochs: int = 10
    penalty_on: str = "all"
    patience: int | None = None
    min_delta: float = 0.0
    grad_tol: float | None = None
    eval_batch: int = 8192
    shuffle: str = "member"
    member_chunk: int | None = None
    unroll: int = 1
    schedule: str = "constant"
    warmup_steps: int = 0
    decay_steps: int | None = None
    end_lr_factor: float = 0.0
    noise: str = "none"
    temperature: float = 0.0

    def validate(self) -> "TrainConfig":
        for name in ("batch_size", "epochs", "patience", "eval_batch", "member_chunk", "unroll", "warmup_steps",
                     "decay_steps"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer))):
                raise TrainError(f"{name}: must be an integer, got {v!r}")
        for name in ("lr", "momentum", "b1", "b2", "eps", "min_delta", "grad_tol", "end_lr_factor", "temperature"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating))):
                raise TrainError(f"{name}: must be a number, got {v!r}")
        if self.loss not in LOSSES:
            raise TrainError(f"loss: unknown '{self.loss}'; use one of {', '.join(LOSSES)}")
        if self.optimizer not in OPTIMIZERS:
            raise TrainError(f"optimizer: unknown '{self.optimizer}'; use one of {', '.join(OPTIMIZERS)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise TrainError(f"lr: must be a positive number, got {self.lr}")
        if self.batch_size is not None and self.batch_size <= 0:
            raise TrainError(f"batch_size: must be a positive integer (or None for full batch), got {self.batch_size}")
        if self.epochs < 0:
            raise TrainError(f"epochs: must be >= 0, got {self.epochs}")
        if self.member_chunk is not None and self.member_chunk <= 0:
            raise TrainError(f"member_chunk: must be a positive integer (or None for all members at once), got {self.member_chunk}")
        if self.unroll < 1:
            raise TrainError(f"unroll: must be a positive integer (minibatch steps per loop iteration), got {self.unroll}")
        if self.shuffle not in ("member", "shared"):
            raise TrainError(f"shuffle: unknown '{self.shuffle}'; use 'member' or 'shared'")
        if self.penalty_on not in ("all", "weights"):
            raise TrainError(f"penalty_on: unknown '{self.penalty_on}'; use 'all' or 'weights'")
        if self.patience is not None and self.patience < 1:
            raise TrainError(f"patience: must be >= 1 epoch (or None to disable), got {self.patience}")
        if not (0.0 <= self.momentum < 1.0):
            raise TrainError(f"momentum: must be in [0, 1), got {self.momentum}")
        if not (0.0 <= self.b1 < 1.0) or not (0.0 <= self.b2 < 1.0):
            raise TrainError(f"b1, b2: Adam's decay rates must be in [0, 1), got b1={self.b1}, b2={self.b2}")
        if not (self.eps > 0 and math.isfinite(self.eps)):
            raise TrainError(f"eps: must be a positive number, got {self.eps}")
        if not (self.min_delta >= 0 and math.isfinite(self.min_delta)):
            raise TrainError(f"min_delta: must be a finite number >= 0, got {self.min_delta}")
        if self.grad_tol is not None and not (self.grad_tol > 0 and math.isfinite(self.grad_tol)):
            raise TrainError(f"grad_tol: must be a positive number (or None to disable), got {self.grad_tol}")
        if self.eval_batch <= 0:
            raise TrainError(f"eval_batch: must be a positive integer, got {self.eval_batch}")
        self._validate_schedule()
        self._validate_noise()
        return self

    def _validate_schedule(self):
        if self.schedule not in SCHEDULES:
            raise TrainError(f"schedule: unknown '{self.schedule}'; use one of {', '.join(SCHEDULES)}")
        if self.warmup_steps < 0:
            raise TrainError(f"warmup_steps: must be >= 0, got {self.warmup_steps}")
        if self.decay_steps is not None and self.decay_steps < 1:
            raise TrainError(f"decay_steps: must be a positive integer, got {self.decay_steps}")
        if not (0.0 <= self.end_lr_factor <= 1.0):
            raise TrainError(f"end_lr_factor: the final learning rate as a fraction of lr must be in [0, 1], got {self.end_lr_factor}")
        if self.schedule in ("warmup", "warmup_cosine") and self.warmup_steps < 1:
            raise TrainError(f"warmup_steps: schedule '{self.schedule}' needs at least 1 warm-up step; set warmup_steps")
        if self.schedule in ("cosine", "warmup_cosine") and self.decay_steps is None:
            raise TrainError(f"decay_steps: schedule '{self.schedule}' needs the step at which the decay ends; set decay_steps")
        if self.schedule == "warmup_cosine" and self.decay_steps <= self.warmup_steps:
            raise TrainError(f"decay_steps: counts the warm-up too and must exceed warmup_steps ({self.warmup_steps}), got {self.decay_steps}")
        if self.schedule in ("constant", "warmup") and self.decay_steps is not None:
            raise TrainError(f"decay_steps: schedule '{self.schedule}' does not decay; use schedule='cosine' or 'warmup_cosine', or decay_steps=None")
        if self.schedule in ("constant", "cosine") and self.warmup_steps:
            raise TrainError(f"warmup_steps: schedule '{self.schedule}' has no warm-up; use schedule='warmup' or 'warmup_cosine', or warmup_steps=0")

    def _validate_noise(self):
        if self.noise not in NOISES:
            raise TrainError(f"noise: unknown '{self.noise}'; use one of {', '.join(NOISES)}")
        if not (self.temperature >= 0 and math.isfinite(self.temperature)):
            raise TrainError(f"temperature: must be a finite number >= 0, got {self.temperature}")
        if self.noise == "langevin" and self.optimizer not in ("sgd", "gd"):
            raise TrainError(f"noise: 'langevin' is a plain gradient step plus Gaussian noise; use optimizer='sgd' or 'gd', not '{self.optimizer}'")
        if self.noise == "none" and self.temperature != 0:
            raise TrainError("temperature: only used with noise='langevin'; set noise='langevin' or temperature=0")
