"""Saddle index, the higher-order escape test, and the classification of a critical point.

The Hessian alone cannot tell a minimum from a **higher-order saddle**: at the origin of a
linear net with three or more weight matrices the Hessian is identically zero, yet the loss
falls like ``-c eps^L`` along a rank-one direction that moves all layers at once. So:

* :func:`saddle_index` counts Hessian eigenvalues below ``-tol`` (``tol`` relative to the
  spectrum's scale): dense ``eigh`` for small models (:func:`count_negative`), the Lanczos bottom
  end for large ones (:func:`count_negative_ritz`: only converged Ritz values count, and the count
  is exact only when a converged non-negative Ritz value closes it, else a lower bound ``">= n"``);
* :func:`escape_test` evaluates ``L(w + eps v) - L(w)`` (in float64) over a geometric range of
  ``eps`` for candidate unit directions ``v`` and their negatives, and fits the leading order
  ``k`` and signed coefficient ``c`` of ``delta(eps) ~ c eps^k`` on the smallest ``eps`` that rise
  above the rounding floor. A direction *escapes* when ``delta < 0`` there;
* :func:`classify_point` combines them: ``"not_critical"`` when the gradient norm exceeds
  ``grad_tol``; ``"strict_saddle"`` when the index is positive; otherwise ``"higher_order_saddle"``
  when some candidate escapes and ``"minimum"`` only when none does.

Candidate directions (when none are given): the bottom Hessian eigenvectors; random
directions inside the Hessian's (near-)null space (where a degenerate critical point must be
left); random directions; and a *multilinear* direction that moves every parameter block
together, found by alternating maximisation of the loss decrease over the blocks (for a deep
linear net at the origin it converges to the rank-one, balanced direction aligned with the
teacher's top singular vectors). :func:`rank_one_chain_direction` builds that direction
explicitly from given singular vectors; pass model-specific ones via ``directions=``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from phaseprobe.geometry.base import (
    GeometryError,
    as_key,
    num_params,
    to_flat_vector,
    to_float64,
    use_exact,
    x64,
)
from phaseprobe.geometry.hessian import exact_hessian, value_and_flat_grad
from phaseprobe.geometry.lanczos import lanczos

DEFAULT_EPS = np.geomspace(1e-3, 1e-1, 11)
KINDS = ("minimum", "strict_saddle", "higher_order_saddle", "not_critical")

#: an eigenvalue counts as negative only below ``-INDEX_REL_TOL * max|lambda|`` (by default):
#: trained points come from float32 training and float32 Lanczos, which resolve eigenvalues to
#: about 1e-4 of the spectrum's scale; anything closer to 0 is not a resolved sign
INDEX_REL_TOL = 1e-4
#: a Ritz value counts as converged when its residual is at most ``RESIDUAL_RTOL * max|theta|``
RESIDUAL_RTOL = 1e-3


def default_tol(max_abs_eig: float, dtype, rel_tol: float | None = None) -> float:
    """Eigenvalue threshold: ``max(rel_tol, 1000 eps(dtype)) * max|lambda|`` (plus a tiny floor).

    ``rel_tol`` defaults to :data:`INDEX_REL_TOL` (a relative threshold, whatever the precision
    the Hessian was evaluated in).
    """
    eps = float(jnp.finfo(dtype).eps)
    rel = INDEX_REL_TOL if rel_tol is None else float(rel_tol)
    return max(max(rel, 1000.0 * eps) * float(max_abs_eig), 1e3 * np.finfo(np.float64).tiny)


def index_label(count: int, exact: bool) -> str:
    """How a negative-eigenvalue count is shown: ``"3"`` when exact, ``">= 3"`` for a lower bound."""
    return f"{int(count)}" if exact else f">= {int(count)}"


@dataclass(frozen=True)
class NegativeCount:
    """A count of Hessian eigenvalues below ``-threshold``, exact or a lower bound.

    ``threshold`` is absolute (``rel_tol * scale``, ``scale`` the largest ``|eigenvalue|`` seen);
    ``residual_tol`` is the largest residual of a Ritz value that counts as converged (0 for a
    dense eigendecomposition). ``exact`` is False when the count is only a lower bound (shown
    as ``">= count"``, :attr:`label`).
    """

    count: int
    exact: bool
    threshold: float
    rel_tol: float
    residual_tol: float
    scale: float
    method: str

    @property
    def label(self) -> str:
        return index_label(self.count, self.exact)


def count_negative(eigenvalues, *, tol: float | None = None, rel_tol: float | None = None, dtype=np.float32) -> NegativeCount:
    """Exact count of ``eigenvalues < -threshold`` from a **full** spectrum (dense ``eigh``).

    **Arguments:**

    - ``eigenvalues``: every eigenvalue of the Hessian.
    - ``tol``: absolute threshold; default :func:`default_tol` of ``max|lambda|`` (``rel_tol``,
      ``dtype`` the precision the Hessian was evaluated in).

    **Returns:** a :class:`NegativeCount` with ``exact=True``.
    """
    lam = np.asarray(eigenvalues, np.float64).ravel()
    scale = float(np.abs(lam).max()) if lam.size else 0.0
    t = default_tol(scale, dtype, rel_tol) if tol is None else float(tol)
    return NegativeCount(count=int(np.sum(lam < -t)), exact=True, threshold=t, rel_tol=t / scale if scale > 0 else float("nan"),
                         residual_tol=0.0, scale=scale, method="exact")


def count_negative_ritz(ritz_values, residuals, k: int | None = None, *, scale: float | None = None, tol: float | None = None,
                        rel_tol: float | None = None, residual_rtol: float | None = None, complete: bool = False,
                        dtype=np.float32) -> NegativeCount:
    """Negative eigenvalues certified by a Lanczos run: a count and whether it is closed.

    A Ritz value ``theta`` with residual ``r`` (``||H y - theta y||``; some eigenvalue lies in
    ``[theta - r, theta + r]``) counts as negative when it is converged (``r <= residual_tol``)
    and its whole interval lies below the threshold (``theta + r < -threshold``). The count is
    **exact** only when it is closed: the next Ritz value up is converged and not below the
    threshold (``theta - r >= -threshold``). Otherwise it is a lower bound. Lanczos' usual
    caveat remains: an eigenvalue the Krylov space has not seen at all (a start vector
    orthogonal to its eigenvector) cannot be counted.

    **Arguments:**

    - ``ritz_values``, ``residuals``: every Ritz value (any order) and its residual.
    - ``k``: only the ``k`` smallest Ritz values are looked at (the requested bottom end);
      default all.
    - ``scale``: the spectrum's scale; default ``max|theta|`` over all Ritz values.
    - ``tol`` / ``rel_tol``: absolute threshold, or relative to ``scale``
      (default :func:`default_tol`).
    - ``residual_rtol``: convergence tolerance relative to ``scale`` (default :data:`RESIDUAL_RTOL`).
    - ``complete``: the Ritz values are the whole spectrum (as many Lanczos steps as
      parameters); then a count over all of them whose values all converged is exact.

    **Returns:** a :class:`NegativeCount` (``method="lanczos"``).
    """
    th = np.asarray(ritz_values, np.float64).ravel()
    rs = np.abs(np.asarray(residuals, np.float64).ravel())
    if th.shape != rs.shape:
        raise GeometryError(f"residuals: need one residual per Ritz value, got {rs.shape[0]} for {th.shape[0]}")
    order = np.argsort(th)
    th, rs = th[order], rs[order]
    if scale is None:
        scale = float(np.abs(th).max()) if th.size else 0.0
    scale = float(scale)
    t = default_tol(scale, dtype, rel_tol) if tol is None else float(tol)
    rtol_abs = (RESIDUAL_RTOL if residual_rtol is None else float(residual_rtol)) * scale
    whole = k is None or int(k) >= th.shape[0]
    if k is not None:
        th, rs = th[: int(k)], rs[: int(k)]
    conv = rs <= rtol_abs
    neg = conv & (th + rs < -t)
    count = int(neg.sum())
    exact = False
    for i in range(th.shape[0]):
        if neg[i]:
            continue
        # the first Ritz value not counted closes the count if it is converged and certainly not below -t
        exact = bool(conv[i] and th[i] - rs[i] >= -t and count == i)
        break
    if complete and whole and conv.all() and count == int(np.sum(th < -t)):
        exact = True
    return NegativeCount(count=count, exact=exact, threshold=t, rel_tol=t / scale if scale > 0 else float("nan"),
                         residual_tol=float(rtol_abs), scale=scale, method="lanczos")


# ---------------------------------------------------------------------------------------------
# saddle index
# ---------------------------------------------------------------------------------------------
@dataclass
class SaddleIndex:
    """Number of Hessian eigenvalues below ``-tol``: exact, or a lower bound (``lower_bound``).

    ``label`` is how the index is shown (``"2"`` or ``">= 2"``); ``rel_tol`` the threshold
    relative to the spectrum's scale; ``residuals`` the Lanczos residuals of ``eigenvalues``
    (zeros for the exact method) and ``residual_tol`` the largest one that counts as converged.
    """

    index: int
    lower_bound: bool
    min_eig: float
    max_eig: float
    tol: float
    method: str
    eigenvalues: np.ndarray = field(repr=False)  # all (exact) or the bottom Ritz values (Lanczos)
    vectors: np.ndarray | None = field(default=None, repr=False)  # bottom eigenvectors (flat), ascending
    null_samples: np.ndarray | None = field(default=None, repr=False)  # random unit vectors in the near-null space
    residuals: np.ndarray | None = field(default=None, repr=False)
    rel_tol: float = float("nan")
    residual_tol: float = 0.0

    @property
    def exact(self) -> bool:
        return not self.lower_bound

    @property
    def label(self) -> str:
        return index_label(self.index, self.exact)

    def __int__(self) -> int:
        return int(self.index)

    __index__ = __int__


def saddle_index(
    loss_fn: Callable,
    params,
    *,
    tol: float | None = None,
    exact: bool | None = None,
    k: int = 20,
    num_iter: int | None = None,
    key=None,
    max_params: int | None = None,
    n_vectors: int = 8,
    rel_tol: float | None = None,
) -> SaddleIndex:
    """Number of Hessian eigenvalues ``< -tol`` at ``params`` (the Morse index of a saddle).

    Exact (dense ``eigh``) for models up to ``max_params`` (:func:`count_negative`); otherwise
    the ``k`` smallest algebraic Ritz values of a Lanczos run, counted by
    :func:`count_negative_ritz`: only converged Ritz values count, and the index is exact only
    when a converged, non-negative Ritz value closes the count; else a lower bound.

    **Arguments:**

    - `loss_fn`: a scalar function of the parameter pytree (``L_alpha`` for the index of a
      regularised minimum or saddle).
    - `params`: the point, a pytree of float arrays (``n`` numbers in all).
    - `tol`: the threshold (default :func:`default_tol`: ``rel_tol`` of the spectrum's scale).
    - `exact`: dense (``True``), Lanczos (``False``) or by size (``None``).
    - `k`: Ritz values at the bottom of the spectrum (Lanczos; raise it when the count is a bound).
    - `num_iter`: Lanczos steps (default from ``n`` and ``k``).
    - `key`: a ``jax.random`` key or an int seed.
    - `max_params`: the largest ``n`` for the dense Hessian (default 5000).
    - `n_vectors`: bottom eigenvectors kept (for the escape test).
    - `rel_tol`: the relative threshold behind the default ``tol``.

    **Returns:** a :class:`SaddleIndex` (``index``, ``lower_bound``, ``min_eig``, ``max_eig``,
    ``tol``, ``method``, ``eigenvalues``, the bottom ``vectors (n_vectors, n)``).
    """
    n = num_params(params)
    dtype = ravel_pytree(params)[0].dtype
    if use_exact(exact, n, max_params):
        H = exact_hessian(loss_fn, params, max_params=max_params)
        lam, vec = np.linalg.eigh(H.astype(np.float64))
        c = count_negative(lam, tol=tol, rel_tol=rel_tol, dtype=dtype)
        t = c.threshold
        return SaddleIndex(index=c.count, lower_bound=False, min_eig=float(lam[0]),
                           max_eig=float(lam[-1]), tol=t, method="exact", eigenvalues=lam,
                           vectors=vec[:, : min(n_vectors, n)].T,
                           null_samples=_null_samples(vec[:, np.abs(lam) <= t], n_vectors, key),
                           residuals=np.zeros_like(lam), rel_tol=c.rel_tol, residual_tol=0.0)
    kk = min(k, n)
    res = lanczos(loss_fn, params, kk, num_iter=num_iter, key=key)
    c = count_negative_ritz(res.ritz_values, res.ritz_residuals, kk, tol=tol, rel_tol=rel_tol, dtype=dtype,
                            complete=res.num_iter == n)
    t = c.threshold
    null = res.smallest_vectors[np.abs(res.smallest) <= t].T
    return SaddleIndex(index=c.count, lower_bound=not c.exact, min_eig=res.min_eig,
                       max_eig=res.max_eig, tol=t, method="lanczos", eigenvalues=res.smallest,
                       vectors=res.smallest_vectors[: min(n_vectors, len(res.smallest))],
                       null_samples=_null_samples(null, n_vectors, key),
                       residuals=res.smallest_residuals, rel_tol=c.rel_tol, residual_tol=c.residual_tol)


def _null_samples(basis: np.ndarray, count: int, key) -> np.ndarray | None:
    """``count`` random unit combinations of the columns of ``basis`` (None if it is empty)."""
    if basis.ndim != 2 or basis.shape[1] == 0 or count < 1:
        return None
    coef = np.asarray(jax.random.normal(jax.random.fold_in(as_key(key), 7), (basis.shape[1], count)), np.float64)
    out = (basis @ coef).T
    return out / np.linalg.norm(out, axis=1, keepdims=True)


# ---------------------------------------------------------------------------------------------
# escape test
# ---------------------------------------------------------------------------------------------
@dataclass
class EscapeDirection:
    """``delta(eps) = L(w + eps v) - L(w)`` along one unit direction and its fitted leading term.

    ``order`` and ``coef`` fit ``delta ~ coef * eps^order`` on the smallest ``eps`` above the
    rounding floor (``nan`` when nothing rises above it); ``escapes`` is ``coef < 0`` there.
    """

    name: str
    eps: np.ndarray
    delta: np.ndarray
    order: float
    coef: float
    escapes: bool
    n_fit: int
    vector: np.ndarray = field(repr=False)

    @property
    def order_int(self) -> int | None:
        if not np.isfinite(self.order):
            return None
        r = int(round(self.order))
        return r if abs(self.order - r) < 0.25 else None


@dataclass
class EscapeResult:
    """All tested directions, the best escape (lowest order, then steepest) and the gradient norm."""

    directions: list[EscapeDirection]
    best: EscapeDirection | None
    grad_norm: float
    loss: float
    floor: float

    @property
    def escapes(self) -> bool:
        return self.best is not None

    @property
    def order(self) -> float | None:
        return None if self.best is None else self.best.order

    def table(self):
        import pandas as pd

        return pd.DataFrame([{"direction": d.name, "escapes": d.escapes, "order": d.order, "coef": d.coef,
                              "n_fit": d.n_fit} for d in self.directions])


def fit_leading_order(eps, delta, floor: float, n_fit: int = 5):
    """Fit ``delta ~ coef * eps^order`` on the run of same-sign points from the smallest valid eps.

    Returns ``(order, coef, n_used)``; ``(nan, 0.0, 0)`` if no point exceeds ``floor``.
    """
    eps = np.asarray(eps, np.float64)
    delta = np.asarray(delta, np.float64)
    order_idx = np.argsort(eps)
    eps, delta = eps[order_idx], delta[order_idx]
    valid = np.abs(delta) > floor
    if not valid.any():
        return float("nan"), 0.0, 0
    start = int(np.argmax(valid))
    sign = np.sign(delta[start])
    run = []
    for i in range(start, len(eps)):
        if not valid[i] or np.sign(delta[i]) != sign:
            break
        run.append(i)
        if len(run) >= n_fit:
            break
    run = np.array(run)
    if len(run) == 1:
        return float("nan"), float(delta[run[0]]), 1
    slope, intercept = np.polyfit(np.log(eps[run]), np.log(np.abs(delta[run])), 1)
    return float(slope), float(sign * np.exp(intercept)), len(run)


@eqx.filter_jit
def _deltas(loss_fn, params, v, eps, g, remove_linear):
    """``L(w + eps v) - L(w)`` (minus ``eps g.v`` if ``remove_linear``) for every eps; one direction."""
    flat, unravel = ravel_pytree(params)
    base = loss_fn(params)

    def at(e):
        return loss_fn(unravel(flat + e * v)) - base - jnp.where(remove_linear, e * jnp.vdot(g, v), 0.0)

    return base, jax.vmap(at)(eps)


def _unit(v):
    v = np.asarray(v, np.float64)
    nrm = np.linalg.norm(v)
    return None if not np.isfinite(nrm) or nrm == 0 else v / nrm


def rank_one_chain_direction(params, u_out, u_in, *, key=None):
    """Balanced rank-one direction moving every layer of a matrix chain together (unit norm).

    ``params``' leaves must be the matrices ``W_1, ..., W_L`` of a chain (``W_l`` of shape
    ``(d_l, d_{l-1})``, as in :class:`phaseprobe.models.DeepLinear`). The direction is
    ``V_l = u_l u_{l-1}^T / sqrt(L)`` with ``u_0 = u_in``, ``u_L = u_out`` (normalised) and random
    unit intermediate vectors: at the origin of ``1/2 ||W_L...W_1 - T||^2`` with ``u_out, u_in``
    the top singular pair of ``T`` the loss falls as ``-s_1 L^(-L/2) eps^L``.
    """
    leaves, treedef = jax.tree_util.tree_flatten(params)
    shapes = [np.shape(x) for x in leaves]
    if not leaves or any(len(s) != 2 for s in shapes) or any(shapes[i][1] != shapes[i - 1][0] for i in range(1, len(shapes))):
        raise GeometryError(f"params: a rank-one chain direction needs the leaves to be chained matrices W_1..W_L, got shapes {shapes}")
    L = len(leaves)
    u_in = np.asarray(u_in, np.float64).ravel()
    u_out = np.asarray(u_out, np.float64).ravel()
    if u_in.shape[0] != shapes[0][1] or u_out.shape[0] != shapes[-1][0]:
        raise GeometryError(f"u_in/u_out: need lengths {shapes[0][1]} and {shapes[-1][0]}, got {u_in.shape[0]} and {u_out.shape[0]}")
    keys = jax.random.split(as_key(key), max(L - 1, 1))
    us = [u_in / np.linalg.norm(u_in)]
    for l in range(1, L):
        u = np.asarray(jax.random.normal(keys[l - 1], (shapes[l - 1][0],)), np.float64)
        us.append(u / np.linalg.norm(u))
    us.append(u_out / np.linalg.norm(u_out))
    mats = [np.outer(us[l + 1], us[l]) / np.sqrt(L) for l in range(L)]
    return jax.tree_util.tree_unflatten(treedef, [jnp.asarray(m, leaves[i].dtype) for i, m in enumerate(mats)])


@eqx.filter_jit
def _moved_grad(loss_fn, params, V, keep):
    """Gradient at ``w + keep_l * V_l`` blockwise (``keep`` has one traced factor per leaf)."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    vl = jax.tree_util.tree_leaves(V)
    moved = [x + keep[i] * v for i, (x, v) in enumerate(zip(leaves, vl))]
    return jax.tree_util.tree_leaves(jax.grad(loss_fn)(jax.tree_util.tree_unflatten(treedef, moved)))


def multilinear_escape_direction(loss_fn: Callable, params, *, n_iter: int = 20, delta: float = 1e-2, key=None):
    """A unit direction moving all parameter blocks together, by alternating maximisation.

    Each block ``V_l`` (one pytree leaf) in turn is set to minus the gradient of the loss with
    respect to that block, evaluated with the other blocks moved by ``delta * V`` and block ``l``
    at ``w``; every block has norm ``1/sqrt(B)``. For a deep linear net at the origin this is
    the higher-order power method on ``Tr(G^T V_L ... V_1)``. Runs in float64. Returns a flat
    vector.
    """
    key = as_key(key)
    with x64():
        p64 = to_float64(params)
        leaves, treedef = jax.tree_util.tree_flatten(p64)
        B = len(leaves)
        keys = jax.random.split(key, B)
        V = [jax.random.normal(k, x.shape, jnp.float64) for k, x in zip(keys, leaves)]
        V = [v / jnp.linalg.norm(v) / np.sqrt(B) for v in V]
        for _ in range(int(n_iter)):
            for l in range(B):
                keep = jnp.full((B,), float(delta), jnp.float64).at[l].set(0.0)
                G = _moved_grad(loss_fn, p64, jax.tree_util.tree_unflatten(treedef, V), keep)[l]
                nrm = jnp.linalg.norm(G)
                if float(nrm) > 0 and np.isfinite(float(nrm)):
                    V[l] = -G / nrm / np.sqrt(B)
        flat = ravel_pytree(jax.tree_util.tree_unflatten(treedef, V))[0]
        return np.asarray(flat / jnp.linalg.norm(flat), np.float64)


def escape_test(
    loss_fn: Callable,
    params,
    direction=None,
    *,
    directions: Sequence | None = None,
    eps=None,
    key=None,
    n_random: int = 4,
    hessian: bool = True,
    multilinear: bool = True,
    remove_linear: bool = False,
    exact: bool | None = None,
    max_params: int | None = None,
    n_fit: int = 5,
    tol: float | None = None,
    index_result: "SaddleIndex | None" = None,
) -> EscapeResult:
    """Probe ``L(w + eps v) - L(w)`` along candidate directions (each tested as ``+v`` and ``-v``).

    ``direction`` / ``directions``: pytrees shaped like ``params`` or flat vectors (normalised
    here). Without any, the candidates are built (see the module doc): the bottom Hessian
    eigenvectors and random null-space directions (``hessian=True``), ``n_random`` random
    directions, and the multilinear direction (``multilinear=True``, when ``params`` has two or
    more blocks); ``index_result`` reuses a :func:`saddle_index` result. ``eps`` defaults to ``geomspace(1e-3, 1e-1, 11)`` (absolute step lengths
    along unit directions). ``remove_linear`` subtracts ``eps g.v`` so that only the higher
    orders are fitted (for points that are critical only up to a small gradient). With ``tol``
    (the eigenvalue tolerance) a quadratic decrease ``-c eps^2`` with ``2c <= tol`` does not count
    as an escape. Everything is evaluated in float64.
    """
    eps = DEFAULT_EPS if eps is None else np.sort(np.asarray(eps, np.float64))
    if eps.ndim != 1 or eps.size < 2 or np.any(eps <= 0):
        raise GeometryError("eps: pass at least two positive step lengths, e.g. numpy.geomspace(1e-3, 1e-1, 11)")
    key = as_key(key)
    k_rand, k_multi, k_lanc = jax.random.split(key, 3)
    n = num_params(params)
    cands: list[tuple[str, np.ndarray]] = []
    given = list(directions or [])
    if direction is not None:
        given.insert(0, direction)
    for i, d in enumerate(given):
        v = _unit(np.asarray(to_flat_vector(d, params), np.float64))
        if v is None:
            raise GeometryError(f"directions[{i}]: is zero or not finite; pass nonzero directions")
        cands.append((f"given[{i}]", v))
    if not given:
        if hessian:
            si = index_result
            if si is None:
                si = saddle_index(loss_fn, params, tol=tol, exact=exact, max_params=max_params, key=k_lanc, k=min(20, n))
            for j, v in enumerate(si.vectors[:3] if si.vectors is not None else []):
                u = _unit(v)
                if u is not None:
                    cands.append((f"hessian_bottom[{j}]", u))
            for j, v in enumerate(si.null_samples[: max(2, n_random)] if si.null_samples is not None else []):
                u = _unit(v)
                if u is not None:
                    cands.append((f"hessian_null[{j}]", u))
        for j, kk in enumerate(jax.random.split(k_rand, max(n_random, 0)) if n_random > 0 else []):
            u = _unit(np.asarray(jax.random.normal(kk, (n,))))
            cands.append((f"random[{j}]", u))
        if multilinear and len(jax.tree_util.tree_leaves(params)) >= 2:
            u = _unit(multilinear_escape_direction(loss_fn, params, key=k_multi))
            if u is not None:
                cands.append(("multilinear", u))
    if not cands:
        raise GeometryError("directions: no candidate direction to test; pass directions= or enable hessian/n_random")
    names, vecs = [], []
    for name, v in cands:
        names += [name + "+", name + "-"]
        vecs += [v, -v]
    with x64():
        p64 = to_float64(params)
        _, g = value_and_flat_grad(loss_fn, p64)
        deltas = []
        for v in vecs:  # one compiled program whatever the number of candidates
            base, dl = _deltas(loss_fn, p64, jnp.asarray(v), jnp.asarray(eps), g, bool(remove_linear))
            deltas.append(np.asarray(dl, np.float64))
        base = float(base)
        gnorm = float(jnp.linalg.norm(g))
    floor = 256.0 * np.finfo(np.float64).eps * max(abs(base), 1e-300)
    out = []
    for name, v, d in zip(names, vecs, deltas):
        order, coef, used = fit_leading_order(eps, d, floor, n_fit)
        escapes = bool(used >= 2 and coef < 0)
        if escapes and tol is not None and 1.5 <= order < 2.5 and 2.0 * abs(coef) <= float(tol):
            escapes = False  # a quadratic decrease flatter than the eigenvalue tolerance: rounding, not a saddle
        out.append(EscapeDirection(name=name, eps=eps, delta=d, order=order, coef=coef,
                                   escapes=escapes, n_fit=used, vector=v))
    esc = [d for d in out if d.escapes]
    best = None
    if esc:
        # lowest leading order first (escapes fastest as eps -> 0), then the steepest at the smallest eps
        best = min(esc, key=lambda d: (round(d.order * 4) / 4, d.coef))
    return EscapeResult(directions=out, best=best, grad_norm=gnorm, loss=base, floor=floor)


# ---------------------------------------------------------------------------------------------
# classification
# ---------------------------------------------------------------------------------------------
@dataclass
class PointClass:
    """What kind of point ``params`` is for ``loss_fn``.

    ``kind`` in ``{"minimum", "strict_saddle", "higher_order_saddle", "not_critical"}``;
    ``index`` the number of eigenvalues below ``-tol`` (a lower bound when ``index_lower_bound``);
    ``order`` the leading order of the best escape (2 for a strict saddle, ``None`` for a
    minimum). ``"minimum"`` means: PSD Hessian and no escape among the tested candidates.
    """

    kind: str
    index: int
    order: float | None
    min_eig: float
    max_eig: float
    grad_norm: float
    tol: float
    index_lower_bound: bool = False
    method: str = "exact"
    escape: EscapeResult | None = field(default=None, repr=False)

    @property
    def index_label(self) -> str:
        """The index as shown: ``"2"``, or ``">= 2"`` when it is a lower bound."""
        return index_label(self.index, not self.index_lower_bound)


def classify_point(
    loss_fn: Callable,
    params,
    *,
    grad_tol: float = 1e-4,
    tol: float | None = None,
    exact: bool | None = None,
    k: int = 20,
    directions: Sequence | None = None,
    eps=None,
    key=None,
    n_random: int = 4,
    max_params: int | None = None,
    escape_strict: bool = False,
) -> PointClass:
    """Classify ``params`` as a minimum, strict saddle, higher-order saddle or not critical.

    Never calls a point a minimum because its Hessian is PSD: a PSD point is a minimum only if
    the escape test (user ``directions`` plus the built-in candidates) finds no direction along
    which the loss decreases. ``escape_strict=True`` also runs the escape test at strict
    saddles (to report the fitted order instead of 2).
    """
    key = as_key(key)
    k1, k2 = jax.random.split(key)
    _, g = value_and_flat_grad(loss_fn, params)
    gnorm = float(np.linalg.norm(np.asarray(g, np.float64)))
    si = saddle_index(loss_fn, params, tol=tol, exact=exact, k=k, key=k1, max_params=max_params)
    common = dict(index=si.index, min_eig=si.min_eig, max_eig=si.max_eig, grad_norm=gnorm, tol=si.tol,
                  index_lower_bound=si.lower_bound, method=si.method)
    if not np.isfinite(gnorm) or gnorm > grad_tol:
        return PointClass(kind="not_critical", order=1.0, **common)
    if si.index > 0 and not escape_strict:
        return PointClass(kind="strict_saddle", order=2.0, **common)
    esc = escape_test(loss_fn, params, directions=None, eps=eps, key=k2, n_random=n_random, exact=exact,
                      max_params=max_params, remove_linear=True, tol=si.tol, index_result=si)
    if directions:
        extra = escape_test(loss_fn, params, directions=directions, eps=eps, remove_linear=True, tol=si.tol)
        dirs = extra.directions + esc.directions
        escs = [d for d in dirs if d.escapes]
        best = min(escs, key=lambda d: (round(d.order * 4) / 4, d.coef)) if escs else None
        esc = EscapeResult(directions=dirs, best=best, grad_norm=esc.grad_norm, loss=esc.loss, floor=esc.floor)
    if si.index > 0:
        return PointClass(kind="strict_saddle", order=esc.order if esc.escapes else 2.0, escape=esc, **common)
    if esc.escapes:
        return PointClass(kind="higher_order_saddle", order=esc.order, escape=esc, **common)
    return PointClass(kind="minimum", order=None, escape=esc, **common)
