"""Variance-reduced trace estimators on a matrix-free operator: Hutch++ and XTrace.

Plain Hutchinson (:mod:`phaseprobe.geometry.stochastic`) averages ``v^T A v`` over Rademacher
probes; its standard error falls as ``1 / sqrt(matvecs)``. When a few eigenvalues carry most of
the trace (a Hessian's outliers above its bulk) a low-rank sketch removes them exactly and
leaves Hutchinson only the small remainder:

* **Hutch++** (Meyer, Musco, Musco & Woodruff, SOSA 2021). With ``m`` matrix-vector products:
  ``k = m // 3`` for ``Y = A S`` (``S`` Rademacher), ``Q = qr(Y)``, ``k`` for ``A Q`` and the
  exact ``tr(Q^T A Q)``, and the remaining ``m - 2k`` for Hutchinson on the deflated operator
  ``(I - Q Q^T) A (I - Q Q^T)``. Unbiased; the standard error is the sample standard error of
  the deflated probes (given ``Q`` the sketched part is exact, so that is the whole variance).
* **XTrace** (Epperly, Tropp & Webber, SIMAX 2024). ``s = m // 2`` Rademacher probes ``w_i`` both
  build the sketch and probe it (exchangeability): the ``i``-th estimate uses the basis of
  ``A W`` without column ``i`` (a rank-one downdate of one QR, ``Q (I - s_i s_i^T) Q^T`` with
  ``s_i`` the normalised ``i``-th column of ``R^{-T}``) plus ``w_i`` as a Hutchinson probe of
  the deflated remainder. Each of the ``s`` estimates is unbiased; their mean is the estimate
  and their spread the paper's error estimate ``std / sqrt(s)``. XTrace needs ``A W`` of full
  column rank: on an operator of exact rank below ``s`` use Hutch++.

Both run as one compiled program (``lax.map`` over the matrix-vector products); the
loss-based entry points build the Hessian-vector product of ``loss_fn`` inside it, like
:func:`phaseprobe.geometry.lanczos.lanczos`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from phaseprobe.geometry.base import GeometryError, as_key, probe_batch_size
from phaseprobe.geometry.hessian import flat_hvp


@dataclass
class SketchedTrace:
    """A variance-reduced trace estimate (Hutch++ or XTrace) with its standard error.

    ``estimate`` and ``se`` are float64; ``num_matvecs`` is the operator products used,
    ``rank`` the sketch's dimension, ``samples`` the per-probe terms whose spread gives ``se``
    (Hutch++: the deflated Hutchinson samples, to which ``low_rank`` = ``tr(Q^T A Q)`` is
    added; XTrace: the ``s`` exchangeable estimates, ``low_rank`` their mean sketched part).
    """

    method: str
    estimate: float
    se: float
    num_matvecs: int
    rank: int
    low_rank: float
    samples: np.ndarray = field(repr=False)

    @property
    def rel_se(self) -> float:
        """``se / |estimate|`` (``inf`` for a zero estimate)."""
        return float(self.se / abs(self.estimate)) if self.estimate != 0 else float("inf")


def _apply(matvec: Callable, rows, batch: int):
    """``matvec`` of every row of ``rows`` (``(k, n)`` -> ``(k, n)``), ``batch`` at a time."""
    return jax.lax.map(matvec, rows, batch_size=batch)


def _hutchpp_core(matvec: Callable, key, n: int, k: int, p: int, dtype, batch: int):
    """Hutch++ with ``k`` sketch columns and ``p`` deflated probes: ``(low_rank, samples)``."""
    ks, kg = jax.random.split(key)
    S = jax.random.rademacher(ks, (k, n), dtype=dtype)
    Y = _apply(matvec, S, batch)                       # rows: A s_j
    Q, _ = jnp.linalg.qr(Y.T)                          # (n, k) orthonormal
    AQ = _apply(matvec, Q.T, batch)                    # rows: A q_j
    low = jnp.sum(Q.T * AQ)                            # tr(Q^T A Q)
    G = jax.random.rademacher(kg, (p, n), dtype=dtype)
    Gp = G - (G @ Q) @ Q.T                             # (I - Q Q^T) g
    AGp = _apply(matvec, Gp, batch)
    samples = jnp.sum(Gp * AGp, axis=1)                # g^T P A P g
    return low, samples


def _xtrace_core(matvec: Callable, key, n: int, s: int, dtype, batch: int):
    """XTrace with ``s`` probes: ``(low_rank parts (s,), estimates (s,))``."""
    W = jax.random.rademacher(key, (s, n), dtype=dtype)
    AW = _apply(matvec, W, batch)                      # rows: A w_i
    Q, R = jnp.linalg.qr(AW.T)                         # Q (n, s), R (s, s)
    AQ = _apply(matvec, Q.T, batch).T                  # (n, s)
    H = Q.T @ AQ
    H = 0.5 * (H + H.T)
    # s_i: normalised columns of R^{-T}; span(A W without column i) = Q (I - s_i s_i^T) Q^T
    Rinv_T = jax.scipy.linalg.solve_triangular(R.T, jnp.eye(s, dtype=dtype), lower=True)
    Sm = Rinv_T / jnp.linalg.norm(Rinv_T, axis=0, keepdims=True)
    low = jnp.trace(H) - jnp.einsum("ji,jk,ki->i", Sm, H, Sm)       # tr(Q_i^T A Q_i)
    QtW = Q.T @ W.T                                                  # column i: Q^T w_i
    C = QtW - Sm * jnp.sum(Sm * QtW, axis=0, keepdims=True)          # (I - s_i s_i^T) Q^T w_i
    APW = AW.T - AQ @ C                                              # A (I - Q_i Q_i^T) w_i
    QtAPW = Q.T @ APW
    D = QtAPW - Sm * jnp.sum(Sm * QtAPW, axis=0, keepdims=True)
    PAPW = APW - Q @ D                                               # P_i A P_i w_i
    res = jnp.sum(W.T * PAPW, axis=0)
    return low, low + res


@eqx.filter_jit
def _hutchpp_op(matvec, key, n: int, k: int, p: int, dtype, batch: int):
    return _hutchpp_core(matvec, key, n, k, p, dtype, batch)


@eqx.filter_jit
def _xtrace_op(matvec, key, n: int, s: int, dtype, batch: int):
    return _xtrace_core(matvec, key, n, s, dtype, batch)


@eqx.filter_jit
def _hutchpp_loss(loss_fn, params, shift, key, k: int, p: int, batch: int):
    base, flat, _ = flat_hvp(loss_fn, params)
    return _hutchpp_core(lambda u: base(u) + shift * u, key, flat.shape[0], k, p, flat.dtype, batch)


@eqx.filter_jit
def _xtrace_loss(loss_fn, params, shift, key, s: int, batch: int):
    base, flat, _ = flat_hvp(loss_fn, params)
    return _xtrace_core(lambda u: base(u) + shift * u, key, flat.shape[0], s, flat.dtype, batch)


def _check_budget(num_matvecs, n: int, method: str) -> int:
    least = 3 if method == "hutch++" else 4
    if isinstance(num_matvecs, bool) or not isinstance(num_matvecs, (int, np.integer)) or num_matvecs < least:
        raise GeometryError(
            f"num_matvecs: {method} needs an integer >= {least} (a sketch and two probes for a standard error), "
            f"got {num_matvecs!r}"
        )
    m = int(num_matvecs)
    if m >= n:
        raise GeometryError(
            f"num_matvecs: {m} products for an operator of size {n} cost more than the exact trace; "
            f"use fewer than {n} or the exact Hessian"
        )
    return m


def _hutchpp_split(m: int) -> tuple[int, int]:
    k = max(1, m // 3)
    return k, m - 2 * k


def _finish_hutchpp(low, samples, m: int, k: int) -> SketchedTrace:
    low = float(np.asarray(low, np.float64))
    a = np.asarray(samples, np.float64)
    se = float(np.std(a, ddof=1) / np.sqrt(a.shape[0])) if a.shape[0] > 1 else float("nan")
    return SketchedTrace(method="hutch++", estimate=low + float(a.mean()), se=se, num_matvecs=m,
                         rank=k, low_rank=low, samples=a)


def _finish_xtrace(low, ests, m: int, s: int) -> SketchedTrace:
    t = np.asarray(ests, np.float64)
    se = float(np.std(t, ddof=1) / np.sqrt(s))
    return SketchedTrace(method="xtrace", estimate=float(t.mean()), se=se, num_matvecs=2 * s, rank=s,
                         low_rank=float(np.mean(np.asarray(low, np.float64))), samples=t)


def _shift_vector(params, shift):
    flat, _ = ravel_pytree(params)
    n = int(flat.shape[0])
    return n, (jnp.zeros((n,), flat.dtype) if shift is None else jnp.asarray(shift, flat.dtype))


def hutch_plus_plus(loss_fn: Callable, params, num_matvecs: int = 300, *, key=None, shift=None,
                    probe_batch: int | None = None) -> SketchedTrace:
    """Hutch++ estimate of ``tr H`` (the Hessian of ``loss_fn`` at ``params``), with its standard error.

    **Arguments:**

    - ``loss_fn``, ``params``: the scalar loss and the parameter pytree (as for :func:`lanczos`).
    - ``num_matvecs``: Hessian-vector products in all (a third sketch, a third ``A Q``, the
      rest deflated probes); fewer than the number of parameters.
    - ``key``: PRNG key or int seed (default seed 0).
    - ``shift``: flat vector; estimates ``tr(H + diag(shift))`` (e.g. the penalty ``2 alpha m``).
    - ``probe_batch``: products vectorised at once (default one on CPU).

    **Returns:** a :class:`SketchedTrace` (``method="hutch++"``).
    """
    n, sh = _shift_vector(params, shift)
    m = _check_budget(num_matvecs, n, "hutch++")
    k, p = _hutchpp_split(m)
    batch = probe_batch_size(n) if probe_batch is None else int(probe_batch)
    low, samples = _hutchpp_loss(loss_fn, params, sh, as_key(key), k, p, int(min(batch, k, p)))
    return _finish_hutchpp(low, samples, m, k)


def xtrace(loss_fn: Callable, params, num_matvecs: int = 300, *, key=None, shift=None,
           probe_batch: int | None = None) -> SketchedTrace:
    """XTrace estimate of ``tr H`` with the method's error estimate (``num_matvecs // 2`` probes).

    **Arguments:**

    - ``loss_fn``, ``params``: the scalar loss and the parameter pytree.
    - ``num_matvecs``: Hessian-vector products in all (half probes ``A W``, half ``A Q``); an
      odd number uses one product less; fewer than the number of parameters.
    - ``key``: PRNG key or int seed (default seed 0).
    - ``shift``: flat vector; estimates ``tr(H + diag(shift))``.
    - ``probe_batch``: products vectorised at once (default one on CPU).

    **Returns:** a :class:`SketchedTrace` (``method="xtrace"``).
    """
    n, sh = _shift_vector(params, shift)
    m = _check_budget(num_matvecs, n, "xtrace")
    s = m // 2
    batch = probe_batch_size(n) if probe_batch is None else int(probe_batch)
    low, ests = _xtrace_loss(loss_fn, params, sh, as_key(key), s, int(min(batch, s)))
    return _finish_xtrace(low, ests, m, s)


def hutch_plus_plus_operator(matvec: Callable, n: int, num_matvecs: int = 300, *, key=None, dtype=jnp.float32,
                             probe_batch: int | None = None) -> SketchedTrace:
    """:func:`hutch_plus_plus` for any symmetric operator ``matvec`` on flat vectors of length ``n``.

    **Arguments:**

    - ``matvec``: ``v -> A v`` on ``(n,)`` vectors, traceable (it runs inside one compiled
      program); pass the same function object, or an Equinox module holding ``A`` as an array,
      to reuse the compilation.
    - ``n``: the operator's size; ``num_matvecs``, ``key``, ``probe_batch``: as
      :func:`hutch_plus_plus`; ``dtype``: of the probes.

    **Returns:** a :class:`SketchedTrace` (``method="hutch++"``).
    """
    m = _check_budget(num_matvecs, int(n), "hutch++")
    k, p = _hutchpp_split(m)
    batch = probe_batch_size(int(n)) if probe_batch is None else int(probe_batch)
    low, samples = _hutchpp_op(matvec, as_key(key), int(n), k, p, jnp.dtype(dtype), int(min(batch, k, p)))
    return _finish_hutchpp(low, samples, m, k)


def xtrace_operator(matvec: Callable, n: int, num_matvecs: int = 300, *, key=None, dtype=jnp.float32,
                    probe_batch: int | None = None) -> SketchedTrace:
    """:func:`xtrace` for any symmetric operator ``matvec`` on flat vectors of length ``n``.

    **Arguments:** as :func:`hutch_plus_plus_operator`.

    **Returns:** a :class:`SketchedTrace` (``method="xtrace"``).
    """
    m = _check_budget(num_matvecs, int(n), "xtrace")
    s = m // 2
    batch = probe_batch_size(int(n)) if probe_batch is None else int(probe_batch)
    low, ests = _xtrace_op(matvec, as_key(key), int(n), s, jnp.dtype(dtype), int(min(batch, s)))
    return _finish_xtrace(low, ests, m, s)


def trace_matvecs_for(rel_se: float, pilot: SketchedTrace) -> int:
    """Products a method needs for a relative standard error ``rel_se``, extrapolated from a pilot.

    Hutchinson-like spread falls as ``1/sqrt(probes)``; the sketch can only help more, so this
    is an upper estimate for Hutch++ and XTrace.

    **Arguments:**

    - ``rel_se``: the target ``se / |trace|`` (> 0).
    - ``pilot``: a :class:`SketchedTrace` from a smaller budget.

    **Returns:** the number of matrix-vector products (an int).
    """
    if not (rel_se > 0):
        raise GeometryError(f"rel_se: the target relative standard error must be > 0, got {rel_se}")
    factor = (pilot.rel_se / rel_se) ** 2
    return int(np.ceil(pilot.num_matvecs * max(factor, 1e-9)))


__all__ = [
    "SketchedTrace",
    "hutch_plus_plus",
    "hutch_plus_plus_operator",
    "trace_matvecs_for",
    "xtrace",
    "xtrace_operator",
]
