"""Lanczos eigenpairs at both ends, stochastic Lanczos quadrature, Hutchinson traces.

Lanczos runs on a Hessian-vector-product operator with **full reorthogonalisation** (two
classical Gram-Schmidt passes against every previous Lanczos vector, so the basis stays
orthonormal to working precision and no ghost eigenvalues appear). When the Krylov space
becomes invariant (``beta = 0``: an exactly low-rank Hessian, a start on an eigenvector) the
run continues from a fresh random vector orthogonal to the basis. The whole run is one compiled
``fori_loop``; the tridiagonal eigenproblem is solved in float64
(``scipy.linalg.eigh_tridiagonal``).

Both ends come from the same Krylov space: the ``k`` **largest algebraic** and the ``k``
**smallest algebraic** Ritz values (never the bottom inferred from a largest-magnitude list),
each with the residual bound ``|beta_m s_{m,i}|`` (``||H y - theta y||`` for the Ritz pair).

Stochastic Lanczos quadrature (SLQ): a Lanczos run from a normalised Rademacher probe gives
nodes ``theta_i`` and weights ``tau_i = s_{1,i}^2`` (summing to 1); the spectral density is
their Gaussian-broadened average over probes. Its first moment is ``mean v^T H v / n``, the
Hutchinson estimate of ``tr H / n``.

Hutchinson: with Rademacher probes ``v``, ``E[v^T H v] = tr H`` and ``E[|H v|^2] = tr H^2``
(one HVP per probe gives both). ``(tr H)^2`` is estimated without bias by the U-statistic
over probe pairs, ``sum_{i != j} a_i a_j / (N (N - 1))``; every estimate carries a standard
error (the sample standard error of a mean; for the U-statistic its exact variance
``Var(2 c mu a + l) / N + 2 c^2 sigma^4 / (N (N - 1))`` with the sample moments plugged in,
:func:`u_statistic_se`; a delete-one jackknife keeps only the first, linear term and collapses
where it vanishes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
from jax.flatten_util import ravel_pytree

from phaseprobe.geometry.base import GeometryError, as_key, num_params, probe_batch_size, to_flat_vector
from phaseprobe.geometry.hessian import flat_hvp


# ---------------------------------------------------------------------------------------------
# the Lanczos iteration on a flat operator
# ---------------------------------------------------------------------------------------------
def _orthogonalise(V, w):
    w = w - V.T @ (V @ w)
    return w - V.T @ (V @ w)


def _lanczos_iterations(matvec: Callable, v0, key, m: int):
    """``m`` Lanczos steps with full reorthogonalisation. Returns ``(V (m, n), alphas, betas)``.

    ``betas[j]`` couples ``v_j`` and ``v_{j+1}`` (0 where the run restarted after an invariant
    subspace); ``betas[m-1]`` is the final residual norm.
    """
    n = v0.shape[0]
    dtype = v0.dtype
    eps = jnp.finfo(dtype).eps
    v0 = v0 / jnp.linalg.norm(v0)
    V = jnp.zeros((m + 1, n), dtype).at[0].set(v0)
    alphas = jnp.zeros((m,), dtype)
    betas = jnp.zeros((m,), dtype)

    def body(j, state):
        V, alphas, betas, scale = state
        v = V[j]
        w = matvec(v)
        a = jnp.vdot(v, w)
        w = _orthogonalise(V, w)
        b = jnp.linalg.norm(w)
        scale = jnp.maximum(scale, jnp.abs(a) + b)
        broke = b <= 64.0 * eps * scale
        r = jax.random.normal(jax.random.fold_in(key, j), (n,), dtype)
        r = _orthogonalise(V, r)
        r = r / jnp.maximum(jnp.linalg.norm(r), jnp.finfo(dtype).tiny)
        vnext = jnp.where(broke, r, w / jnp.where(broke, 1.0, b))
        V = V.at[j + 1].set(vnext)
        alphas = alphas.at[j].set(a)
        betas = betas.at[j].set(jnp.where(broke, 0.0, b))
        return V, alphas, betas, scale

    V, alphas, betas, _ = jax.lax.fori_loop(0, m, body, (V, alphas, betas, jnp.zeros((), dtype)))
    return V[:m], alphas, betas


@eqx.filter_jit
def _lanczos_loss(loss_fn, params, shift, v0, key, m: int):
    base, _, _ = flat_hvp(loss_fn, params)
    return _lanczos_iterations(lambda u: base(u) + shift * u, v0, key, m)


@eqx.filter_jit
def _lanczos_op(matvec, v0, key, m: int):
    return _lanczos_iterations(matvec, v0, key, m)


def tridiagonal_eigh(alphas, betas):
    """Eigen-decomposition of the Lanczos tridiagonal matrix in float64 (ascending)."""
    a = np.asarray(alphas, np.float64)
    b = np.asarray(betas, np.float64)[: len(a) - 1]
    if len(a) == 1:
        return a.copy(), np.ones((1, 1))
    return scipy.linalg.eigh_tridiagonal(a, b)


@dataclass
class LanczosResult:
    """Extreme Ritz pairs of one Lanczos run (values float64; vectors flat, ``ravel_pytree`` order).

    ``largest`` is descending, ``smallest`` ascending; ``*_residuals`` are ``||H y - theta y||``
    (the cheap bound ``|beta_m s_{m,i}|``). ``ritz_values`` holds every Ritz value (ascending) and
    ``ritz_residuals`` the residual of each. ``unravel`` maps a flat vector back to the
    parameter pytree.
    """

    largest: np.ndarray
    largest_vectors: np.ndarray
    largest_residuals: np.ndarray
    smallest: np.ndarray
    smallest_vectors: np.ndarray
    smallest_residuals: np.ndarray
    ritz_values: np.ndarray
    num_iter: int
    n_params: int
    ritz_residuals: np.ndarray | None = None
    unravel: Callable | None = field(default=None, repr=False)

    @property
    def max_eig(self) -> float:
        return float(self.largest[0])

    @property
    def min_eig(self) -> float:
        return float(self.smallest[0])


def _ritz(V, alphas, betas, k: int, n: int, unravel=None) -> LanczosResult:
    m = int(alphas.shape[0])
    theta, S = tridiagonal_eigh(alphas, betas)
    resid = np.abs(float(np.asarray(betas)[-1]) * S[-1, :])
    k = int(min(k, m))
    Vn = np.asarray(V, np.float64)
    lo = np.arange(k)
    hi = np.arange(m - 1, m - 1 - k, -1)
    return LanczosResult(
        largest=theta[hi], largest_vectors=(S[:, hi].T @ Vn), largest_residuals=resid[hi],
        smallest=theta[lo], smallest_vectors=(S[:, lo].T @ Vn), smallest_residuals=resid[lo],
        ritz_values=theta, ritz_residuals=resid, num_iter=m, n_params=n, unravel=unravel,
    )


def default_num_iter(n: int, k: int) -> int:
    """Lanczos steps used when none are given: ``max(40, 4k + 20)``, at most ``n``."""
    return int(min(n, max(40, 4 * k + 20)))


def _check_k_iter(k: int, num_iter: int | None, n: int) -> int:
    if not (isinstance(k, (int, np.integer)) and k >= 1):
        raise GeometryError(f"k: the number of eigenpairs per end must be a positive integer, got {k!r}")
    m = default_num_iter(n, int(k)) if num_iter is None else int(num_iter)
    if m < 1:
        raise GeometryError(f"num_iter: must be a positive integer, got {num_iter}")
    m = min(m, n)
    if k > m:
        raise GeometryError(f"k: {k} eigenpairs per end need num_iter >= k, got {m}; raise num_iter")
    return m


def lanczos(loss_fn: Callable, params, k: int = 1, *, num_iter: int | None = None, v0=None, key=None, shift=None) -> LanczosResult:
    """``k`` largest and ``k`` smallest (algebraic) eigenpairs of the Hessian of ``loss_fn``.

    ``v0`` warm-starts the run (a pytree shaped like ``params`` or a flat vector, e.g. the
    previous point's top eigenvector along an alpha path); default a Gaussian vector from
    ``key``. ``shift`` (flat vector) adds ``diag(shift)`` to the Hessian, e.g. the penalty
    diagonal ``2 alpha m``. ``num_iter`` Lanczos steps (default :func:`default_num_iter`); check
    ``*_residuals`` for convergence.
    """
    flat, unravel = ravel_pytree(params)
    n = int(flat.shape[0])
    m = _check_k_iter(k, num_iter, n)
    key = as_key(key)
    k0, k1 = jax.random.split(key)
    start = jax.random.normal(k0, (n,), flat.dtype) if v0 is None else to_flat_vector(v0, params)
    if not np.isfinite(float(jnp.linalg.norm(start))) or float(jnp.linalg.norm(start)) == 0.0:
        raise GeometryError("v0: the start vector is zero or not finite; pass a nonzero direction or None")
    # the shift is always an array (zeros by default): one compilation serves H_E and H_L
    sh = jnp.zeros((n,), flat.dtype) if shift is None else jnp.asarray(shift, flat.dtype)
    V, alphas, betas = _lanczos_loss(loss_fn, params, sh, start, k1, m)
    return _ritz(V, alphas, betas, k, n, unravel)


def lanczos_operator(matvec: Callable, n: int, k: int = 1, *, num_iter: int | None = None, v0=None, key=None, dtype=jnp.float32) -> LanczosResult:
    """Same as :func:`lanczos` for any symmetric operator ``matvec`` on flat vectors of length ``n``."""
    m = _check_k_iter(k, num_iter, n)
    key = as_key(key)
    k0, k1 = jax.random.split(key)
    start = jax.random.normal(k0, (n,), dtype) if v0 is None else jnp.asarray(v0, dtype)
    V, alphas, betas = _lanczos_op(matvec, start, k1, m)
    return _ritz(V, alphas, betas, k, n)


# ---------------------------------------------------------------------------------------------
# power iteration (the baseline PyHessian uses; largest MAGNITUDE only)
# ---------------------------------------------------------------------------------------------
@eqx.filter_jit
def _power(loss_fn, params, v0, num_iter: int):
    matvec, _, _ = flat_hvp(loss_fn, params)

    def body(_, state):
        v, _lam = state
        hv = matvec(v)
        lam = jnp.vdot(v, hv)
        return hv / jnp.linalg.norm(hv), lam

    v0 = v0 / jnp.linalg.norm(v0)
    v, lam = jax.lax.fori_loop(0, num_iter, body, (v0, jnp.zeros((), v0.dtype)))
    return lam, v


def power_iteration(loss_fn: Callable, params, *, num_iter: int = 100, key=None, v0=None):
    """Largest-**magnitude** eigenvalue by ``num_iter`` power steps: ``(eigenvalue, flat vector)``.

    Kept as the baseline of the benchmark; it cannot give the bottom of the spectrum: use
    :func:`lanczos` for either end.
    """
    flat, _ = ravel_pytree(params)
    start = jax.random.normal(as_key(key), flat.shape, flat.dtype) if v0 is None else to_flat_vector(v0, params)
    lam, v = _power(loss_fn, params, start, int(num_iter))
    return float(lam), np.asarray(v)


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
    """Hutchinson estimates of ``tr H``, ``tr H^2 = E|Hv|^2`` and unbiased ``(tr H)^2``, with standard errors."""
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
    """Gaussian-broadened SLQ estimate of the Hessian's eigenvalue density.

    ``sigma`` defaults to 1% of the span of the nodes; the default grid runs from the smallest
    node minus 6 sigma to the largest plus 6 sigma (``n_grid`` points), so the density
    integrates to 1 up to the grid's quadrature error.
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
