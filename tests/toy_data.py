"""Small shared fixtures for the trainer tests: Gaussian-blob classification data and the
inexact-array leaves of a model (stacked or not) as NumPy arrays."""

from __future__ import annotations

import equinox as eqx
import jax
import numpy as np

from phaseprobe.data.base import Dataset


def blobs(n: int = 96, d: int = 6, c: int = 3, seed: int = 0) -> Dataset:
    """``c`` Gaussian blobs in ``d`` dimensions: ``n`` training and ``n`` test points."""
    rng = np.random.default_rng(seed)
    centers = 2.0 * rng.normal(size=(c, d))
    y = rng.integers(0, c, size=2 * n).astype(np.int32)
    x = (centers[y] + rng.normal(size=(2 * n, d))).astype(np.float32)
    return Dataset("blobs", x[:n], y[:n], x[n:], y[n:], c)


def array_leaves(model) -> list[np.ndarray]:
    """The model's inexact-array leaves (its parameters), as NumPy arrays."""
    return [np.asarray(a) for a in jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array))]
