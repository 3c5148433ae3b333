"""The common dataset type: train/test arrays, number of classes, a name."""

from __future__ import annotations

from dataclasses import dataclass, field

from phaseprobe.errors import PhaseprobeError

import numpy as np


class DataError(PhaseprobeError):
    """A bad dataset request; the message names the field and the fix (one line)."""


@dataclass(frozen=True)
class Dataset:
    """Train and test arrays plus what a model needs to know about them.

    ``x_*`` are float32 arrays, ``(n, d)`` when flattened or ``(n, c, h, w)`` for images.
    ``y_*`` are int32 class labels for classification (``task == "classification"``),
    float32 targets ``(n, k)`` for regression. ``classes`` lists the original class ids
    kept (labels are re-indexed to ``0..n_classes-1`` in that order).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    task: str = "classification"  # or "regression"
    classes: tuple[int, ...] = ()
    meta: dict = field(default_factory=dict)

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.x_test.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def input_dim(self) -> int:
        return int(np.prod(self.input_shape))

    @property
    def output_dim(self) -> int:
        if self.task == "classification":
            return int(self.n_classes)
        return int(self.y_train.shape[1])

    def summary(self) -> str:
        return (
            f"{self.name}: {self.n_train} train / {self.n_test} test, input {self.input_shape}, "
            f"{'classes ' + str(self.n_classes) if self.task == 'classification' else 'outputs ' + str(self.output_dim)}"
        )
