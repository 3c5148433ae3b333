"""Stochastic estimators of Hessian spectra: Hutchinson traces and stochastic Lanczos quadrature.

Hutchinson: with Rademacher probes ``v``, ``E[v^T H v] = tr H`` and ``E[|H v|^2] = tr H^2``
(one HVP per probe gives both). ``(tr H)^2`` is estimated without bias by the U-statistic
over probe pairs, ``sum_{i != j} a_i a_j / (N (N - 1))``; every estimate carries a standard
error (the sample standard error of a mean; for the U-statistic its exact variance
``Var(2 c mu a + l) / N + 2 c^2 sigma^4 / (N (N - 1))`` with the sample moments plugged in,
:func:`u_statistic_se`; a delete-one jackknife keeps only the first, linear term and collapses
where it vanishes).

Stochastic Lanczos quadrature (SLQ): a Lanczos run from a normalised Rademacher probe gives
nodes ``theta_i`` and weights ``tau_i = s_{1,i}^2`` (summing to 1); the spectral density is
their Gaussian-broadened average over probes. Its first moment is ``mean v^T H v / n``, the
Hutchinson estimate of ``tr H / n``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from phaseprobe.geometry.base import GeometryError, as_key, num_params, probe_batch_size
from phaseprobe.geometry.hessian import flat_hvp
from phaseprobe.geometry.lanczos import _lanczos_iterations, tridiagonal_eigh


# ---------------------------------------------------------------------------------------------
# Hutchinson
# ---------------------------------------------------------------------------------------------
@eqx.filter_jit
def _probe_stats(loss_fn, params, shift, key, n_probes: int, batch: int):
    """Per-probe ``v^T H v`` and ``|H v|^2`` (and the same for ``H + diag(shift)``)."""
    matvec, flat, _ = flat_hvp(loss_fn, params)
    n = flat.shape[0]
    keys = jax.random.split(key, n_probes)

    def one(k):
        v = jax.random.rademacher(k, (n,), dtype=flat.dtype)
        hv = matvec(v)
        hl = hv + shift * v
        return jnp.vdot(v, hv), jnp.vdot(hv, hv), jnp.vdot(v, hl), jnp.vdot(hl, hl)

    return jax.lax.map(one, keys, batch_size=batch)


@dataclass
class TraceEstimate:
    """Hutchinson estimates with standard errors (``n_probes`` Rademacher probes).

    ``tr_H_sq`` is the unbiased U-statistic for ``(tr H)^2``; ``samples_vHv`` and
    ``samples_Hv2`` are the per-probe ``v^T H v`` and ``|H v|^2``.
    """

    tr_H: float
    tr_H_se: float
    tr_H2: float
    tr_H2_se: float
    tr_H_sq: float
    tr_H_sq_se: float
    n_probes: int
    samples_vHv: np.ndarray = field(repr=False)
    samples_Hv2: np.ndarray = field(repr=False)


def u_square(a: np.ndarray) -> float:
    """Unbiased estimate of ``(E a)^2`` from i.i.d. samples: ``sum_{i != j} a_i a_j / (N (N-1))``."""
    a = np.asarray(a, np.float64)
    n = a.shape[0]
    if n < 2:
        return float("nan")
    s = a.sum()
    return float((s * s - np.sum(a * a)) / (n * (n - 1)))


def u_statistic_se(a: np.ndarray, lin: np.ndarray | None = None, c: float = 1.0) -> float:
    """Standard error of ``c * U(a) + mean(lin)`` (``U`` of :func:`u_square`) over i.i.d. probes.

    The estimator is a U-statistic of degree 2 with kernel ``c a_i a_j + (l_i + l_j) / 2``; its
    exact variance is ``Var(2 c mu a + l) / N + 2 c^2 sigma^4 / (N (N - 1))`` (``mu, sigma^2`` the
    mean and variance of ``a``). The first term is the linear (delta-method, jackknife) part; the
    second is the quadratic part, which dominates where the first vanishes (e.g. ``mu ~ 0``) and
    which a delete-one jackknife misses. Sample moments are plugged in.

    **Arguments:**

    - ``a``: per-probe samples entering quadratically (e.g. ``v^T H v``).
    - ``lin``: per-probe samples entering linearly (default none).
    - ``c``: the coefficient of ``U(a)``.

    **Returns:** the standard error (``nan`` with fewer than 3 probes).
    """
    a = np.asarray(a, np.float64)
    n = a.shape[0]
    if n < 3:
        return float("nan")
    lin = np.zeros_like(a) if lin is None else np.asarray(lin, np.float64)
    mu = a.mean()
    s2 = a.var(ddof=1)
    # the plug-in Var(2 c mean(a) a + l) is biased up by 4 c^2 sigma^4 / N (mean(a)^2 = mu^2 + sigma^2 / N
    # on average), which would double the quadratic term where mu ~ 0: subtract it (never below 0)
    lin_var = max(float(np.var(2.0 * c * mu * a + lin, ddof=1)) - 4.0 * c * c * s2 * s2 / n, 0.0)
    return float(np.sqrt(lin_var / n + 2.0 * c * c * s2 * s2 / (n * (n - 1))))


def jackknife(stat: Callable[[np.ndarray], np.ndarray], *arrays) -> tuple[float, float]:
    """``(estimate, delete-one jackknife standard error)`` of ``stat(*arrays)`` over the probes.

    ``stat`` must accept arrays whose first axis is the probe axis and return a scalar.
    """
    arrays = [np.asarray(a, np.float64) for a in arrays]
    n = arrays[0].shape[0]
    full = float(stat(*arrays))
    if n < 3:
        return full, float("nan")
    loo = np.array([stat(*[np.delete(a, i, axis=0) for a in arrays]) for i in range(n)], np.float64)
    se = float(np.sqrt((n - 1) / n * np.sum((loo - loo.mean()) ** 2)))
    return full, se


def trace_estimates(vHv: np.ndarray, Hv2: np.ndarray) -> TraceEstimate:
    """Build a :class:`TraceEstimate` from per-probe samples."""
    a = np.asarray(vHv, np.float64)
    b = np.asarray(Hv2, np.float64)
    n = a.shape[0]
    se = lambda x: float(np.std(x, ddof=1) / np.sqrt(n)) if n > 1 else float("nan")  # noqa: E731
    sq, sq_se = u_square(a), u_statistic_se(a)
    return TraceEstimate(
        tr_H=float(a.mean()), tr_H_se=se(a), tr_H2=float(b.mean()), tr_H2_se=se(b),
        tr_H_sq=sq, tr_H_sq_se=sq_se, n_probes=n, samples_vHv=a, samples_Hv2=b,
    )


def _check_probes(n_probes) -> int:
    if not (isinstance(n_probes, (int, np.integer)) and n_probes >= 2):
        raise GeometryError(f"n_probes: needs an integer >= 2 (standard errors need two probes), got {n_probes!r}")
    return int(n_probes)


def probe_samples(loss_fn: Callable, params, n_probes: int = 64, *, key=None, shift=None, probe_batch: int | None = None):
    """Per-probe ``(vHv, |Hv|^2)`` as numpy arrays; with ``shift`` also those of ``H + diag(shift)``."""
    n_probes = _check_probes(n_probes)
    n = num_params(params)
    batch = probe_batch_size(n) if probe_batch is None else int(probe_batch)
    flat, _ = ravel_pytree(params)
    sh = jnp.zeros((n,), flat.dtype) if shift is None else jnp.asarray(shift, flat.dtype)
    out = _probe_stats(loss_fn, params, sh, as_key(key), n_probes, int(min(batch, n_probes)))
    out = tuple(np.asarray(o, np.float64) for o in out)
    return out if shift is not None else out[:2]


def hutchinson(loss_fn: Callable, params, n_probes: int = 64, *, key=None, probe_batch: int | None = None) -> TraceEstimate:
    """Hutchinson estimates of ``tr H``, ``tr H^2 = E|Hv|^2`` and unbiased ``(tr H)^2``, with standard errors.

    **Arguments:**

    - `loss_fn`: a scalar function of the parameter pytree.
    - `params`: the point, a pytree of float arrays.
    - `n_probes`: Rademacher probe vectors.
    - `key`: a ``jax.random`` key or an int seed.
    - `probe_batch`: probes evaluated at once (default: memory-bounded).

    **Returns:** a :class:`TraceEstimate` (``tr_H``, ``tr_H_se``, ``tr_H2``, ``tr_H2_se``,
    ``tr_H_sq`` and the per-probe samples, each ``(n_probes,)``).
    """
    a, b = probe_samples(loss_fn, params, n_probes, key=key, probe_batch=probe_batch)
    return trace_estimates(a, b)


# ---------------------------------------------------------------------------------------------
# stochastic Lanczos quadrature
# ---------------------------------------------------------------------------------------------
@eqx.filter_jit
def _slq_runs(loss_fn, params, key, n_probes: int, m: int, batch: int):
    matvec, flat, _ = flat_hvp(loss_fn, params)
    n = flat.shape[0]
    keys = jax.random.split(key, n_probes)

    def one(k):
        kv, kr = jax.random.split(k)
        v = jax.random.rademacher(kv, (n,), dtype=flat.dtype)
        _, alphas, betas = _lanczos_iterations(matvec, v, kr, m)
        return alphas, betas

    return jax.lax.map(one, keys, batch_size=batch)


@dataclass
class SpectralDensity:
    """SLQ spectral density of the Hessian on a grid.

    ``density`` integrates to 1 over ``grid`` (Gaussian broadening ``sigma``); ``nodes`` and
    ``weights`` are the per-probe quadrature rules (weights of each probe sum to 1).
    """

    grid: np.ndarray
    density: np.ndarray
    nodes: np.ndarray
    weights: np.ndarray
    sigma: float
    n_params: int
    n_probes: int
    num_iter: int

    def moment(self, p: int = 1) -> float:
        """``p``-th moment of the (unbroadened) quadrature: estimates ``tr(H^p) / n``."""
        return float(np.mean(np.sum(self.weights * self.nodes**p, axis=1)))

    def moment_se(self, p: int = 1) -> float:
        """Standard error of :meth:`moment` over the probes."""
        per = np.sum(self.weights * self.nodes**p, axis=1)
        return float(np.std(per, ddof=1) / np.sqrt(len(per))) if len(per) > 1 else float("nan")

    def integral(self) -> float:
        return float(np.trapezoid(self.density, self.grid))

    def grid_moment(self, p: int = 1) -> float:
        return float(np.trapezoid(self.density * self.grid**p, self.grid))


def slq_density(
    loss_fn: Callable,
    params,
    *,
    n_probes: int = 8,
    num_iter: int = 64,
    n_grid: int = 1000,
    sigma: float | None = None,
    grid=None,
    key=None,
    probe_batch: int | None = None,
) -> SpectralDensity:
    """Gaussian-broadened stochastic Lanczos quadrature (SLQ) estimate of the Hessian's eigenvalue density.

    **Arguments:**

    - `loss_fn`: a scalar function of the parameter pytree.
    - `params`: the point, a pytree of float arrays (``n`` numbers in all).
    - `n_probes`: Rademacher start vectors (one Lanczos run each).
    - `num_iter`: Lanczos steps per probe (at most ``n``).
    - `n_grid`: points of the default grid.
    - `sigma`: the Gaussian broadening (default 1 % of the span of the nodes).
    - `grid`: eigenvalue points to evaluate the density at (default: from the smallest node
      minus 6 sigma to the largest plus 6 sigma), so it integrates to 1 up to quadrature error.
    - `key`: a ``jax.random`` key or an int seed.
    - `probe_batch`: probes run at once (default: memory-bounded).

    **Returns:** a :class:`SpectralDensity` with ``grid (n_grid,)``, ``density (n_grid,)``,
    ``nodes`` and ``weights`` ``(n_probes, num_iter)``.
    """
    if not (isinstance(n_probes, (int, np.integer)) and n_probes >= 1):
        raise GeometryError(f"n_probes: needs a positive integer, got {n_probes!r}")
    n = num_params(params)
    m = int(min(num_iter, n))
    if m < 1:
        raise GeometryError(f"num_iter: must be a positive integer, got {num_iter}")
    batch = probe_batch_size(n, per_probe_vectors=m + 4) if probe_batch is None else int(probe_batch)
    alphas, betas = _slq_runs(loss_fn, params, as_key(key), int(n_probes), m, int(min(batch, n_probes)))
    alphas, betas = np.asarray(alphas, np.float64), np.asarray(betas, np.float64)
    nodes, weights = [], []
    for a, b in zip(alphas, betas):
        theta, S = tridiagonal_eigh(a, b)
        nodes.append(theta)
        weights.append(S[0, :] ** 2)
    nodes, weights = np.array(nodes), np.array(weights)
    span = float(nodes.max() - nodes.min())
    if sigma is None:
        sigma = 0.01 * span if span > 0 else max(1e-6, 1e-3 * float(np.abs(nodes).max()) or 1e-6)
    if sigma <= 0:
        raise GeometryError(f"sigma: the broadening must be > 0, got {sigma}")
    if grid is None:
        grid = np.linspace(nodes.min() - 6 * sigma, nodes.max() + 6 * sigma, int(n_grid))
    grid = np.asarray(grid, np.float64)
    z = (grid[None, None, :] - nodes[:, :, None]) / sigma
    dens = np.sum(weights[:, :, None] * np.exp(-0.5 * z * z), axis=1).mean(axis=0) / (sigma * np.sqrt(2 * np.pi))
    return SpectralDensity(grid=grid, density=dens, nodes=nodes, weights=weights, sigma=float(sigma),
                           n_params=n, n_probes=int(n_probes), num_iter=m)
