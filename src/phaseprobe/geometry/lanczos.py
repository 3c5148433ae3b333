"""Lanczos eigenpairs at both ends of a Hessian (and power iteration).

Lanczos runs on a Hessian-vector-product operator with **full reorthogonalisation** (after the
three-term recurrence, a classical Gram-Schmidt pass against every previous Lanczos vector, and
a second pass where the first removed much of the vector, so the basis stays orthonormal to
working precision and no ghost eigenvalues appear). When the Krylov space
becomes invariant (``beta = 0``: an exactly low-rank Hessian, a start on an eigenvector) the
run continues from a fresh random vector orthogonal to the basis; that vector is drawn and
orthogonalised only on such a breakdown (``lax.cond``), so a step costs one Hessian-vector
product and one reorthogonalisation. The whole run is one compiled
``fori_loop``; the tridiagonal eigenproblem is solved in float64
(``scipy.linalg.eigh_tridiagonal``).

Both ends come from the same Krylov space: the ``k`` **largest algebraic** and the ``k``
**smallest algebraic** Ritz values (never the bottom inferred from a largest-magnitude list),
each with the residual bound ``|beta_m s_{m,i}|`` (``||H y - theta y||`` for the Ritz pair).
Stochastic estimators (Hutchinson traces, SLQ densities) are in
:mod:`phaseprobe.geometry.stochastic`.
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

from phaseprobe.geometry.base import GeometryError, as_key, to_flat_vector
from phaseprobe.geometry.hessian import flat_hvp


# ---------------------------------------------------------------------------------------------
# the Lanczos iteration on a flat operator
# ---------------------------------------------------------------------------------------------
def _orthogonalise(V, w):
    w = w - V.T @ (V @ w)
    return w - V.T @ (V @ w)


def _reorthogonalise(V, w):
    """One classical Gram-Schmidt pass against ``V``, and a second only where the first removed
    more than 30 % of ``w``'s norm (the Daniel-Gragg-Kaufman-Stewart test, "twice is enough")."""
    n0 = jnp.linalg.norm(w)
    w = w - V.T @ (V @ w)
    return jax.lax.cond(jnp.linalg.norm(w) < 0.7 * n0, lambda u: u - V.T @ (V @ u), lambda u: u, w)


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
        # the three-term recurrence first, then full reorthogonalisation of what is left
        prev = jnp.maximum(j - 1, 0)
        w = w - a * v - jnp.where(j > 0, betas[prev], 0.0) * V[prev]
        w = _reorthogonalise(V, w)
        b = jnp.linalg.norm(w)
        scale = jnp.maximum(scale, jnp.abs(a) + b)
        broke = b <= 64.0 * eps * scale

        def restart(_):
            # only on breakdown: a fresh random direction orthogonal to the basis
            r = jax.random.normal(jax.random.fold_in(key, j), (n,), dtype)
            r = _orthogonalise(V, r)
            return r / jnp.maximum(jnp.linalg.norm(r), jnp.finfo(dtype).tiny)

        vnext = jax.lax.cond(broke, restart, lambda _: w / jnp.where(broke, 1.0, b), None)
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

    Only Hessian-vector products are used, so it scales to large models; check the
    ``*_residuals`` of the result for convergence.

    **Arguments:**

    - `loss_fn`: a scalar function of the parameter pytree.
    - `params`: the point, a pytree of float arrays (``n`` numbers in all).
    - `k`: eigenpairs at each end of the spectrum.
    - `num_iter`: Lanczos steps (default :func:`default_num_iter`).
    - `v0`: a start vector (a pytree shaped like ``params`` or a flat ``(n,)`` vector, e.g. the
      previous point's top eigenvector along an alpha path); default a Gaussian vector from ``key``.
    - `key`: a ``jax.random`` key or an int seed.
    - `shift`: a flat ``(n,)`` vector added to the Hessian's diagonal, e.g. the penalty
      diagonal ``2 alpha m``.

    **Returns:** a :class:`LanczosResult`: ``largest (k,)`` descending, ``smallest (k,)``
    ascending, their flat eigenvectors ``(k, n)`` and residuals ``(k,)``.
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
