"""Scalar (Ricci) curvature of the graph hypersurface ``{(w, E(w))}`` in ``R^(n+1)``.

With ``g = grad E``, ``H = hess E`` and ``W2 = 1 + |g|^2`` (Gauss equation for a graph)::

    R = ((tr H)^2 - tr(H^2)) / W2  -  2 (tr H * g^T H g - g^T H^2 g) / W2^2

At a critical point ``R = (tr H)^2 - tr H^2 = 2 sum_{i<j} lambda_i lambda_j``.

Scale convention: ``E`` is the **mean over training samples** (:mod:`phaseprobe.conventions`).
``R`` is not scale-free: with ``E -> c E`` the first term scales like ``c^2`` only where
``|g| << 1``, and with three or more parameters the sign of ``R`` can change with ``c``; every
result carries :data:`SCALE` so it is never compared across conventions.

Exact: from the dense Hessian (small models). Stochastic: ``tr H`` and ``tr H^2 = E|Hv|^2`` by
Hutchinson, ``(tr H)^2`` by the unbiased U-statistic over probe pairs, ``g^T H g`` and
``g^T H^2 g = |H g|^2`` exactly from one HVP; the estimate is unbiased (linear in unbiased
pieces). The estimate is a U-statistic of degree 2 over the probes; its standard error comes
from the U-statistic's exact variance with sample moments plugged in
(:func:`~phaseprobe.geometry.stochastic.u_statistic_se`): the delete-one jackknife used before kept
only the linear term, which vanishes where ``R`` is stationary in the probe mean, so its error
bars could collapse far below the spread of repeated estimates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from jax.flatten_util import ravel_pytree

from phaseprobe.geometry.base import as_key, num_params, use_exact
from phaseprobe.geometry.hessian import exact_hessian, hvp_flat, value_and_flat_grad
from phaseprobe.geometry.stochastic import probe_samples, u_square, u_statistic_se

SCALE = "E = mean over training samples (phaseprobe.conventions); R of the graph {(w, E(w))}"


def curvature_from_terms(tr_H, tr_H2, gHg, gH2g, g_sq, tr_H_sq=None):
    """``R`` from its ingredients (``tr_H_sq`` defaults to ``tr_H**2``); numpy-broadcasting."""
    tr_H_sq = np.asarray(tr_H, np.float64) ** 2 if tr_H_sq is None else np.asarray(tr_H_sq, np.float64)
    w2 = 1.0 + np.asarray(g_sq, np.float64)
    return (tr_H_sq - tr_H2) / w2 - 2.0 * (tr_H * gHg - gH2g) / (w2 * w2)


def curvature_exact(g, H) -> float:
    """``R`` from a flat gradient ``g`` and the dense Hessian ``H`` (float64)."""
    g = np.asarray(g, np.float64)
    H = np.asarray(H, np.float64)
    Hg = H @ g
    return float(curvature_from_terms(np.trace(H), np.sum(H * H), g @ Hg, Hg @ Hg, g @ g))


def curvature_stochastic(vHv, Hv2, g, Hg) -> tuple[float, float]:
    """``(R, stderr)`` from per-probe Hutchinson samples and the exact ``g``, ``H g``.

    **Arguments:**

    - ``vHv``, ``Hv2``: per-probe ``v^T H v`` and ``|H v|^2`` (at least 2 probes; 3 for the error).
    - ``g``, ``Hg``: the flat gradient and ``H g``.

    **Returns:** ``(R, stderr)``: the unbiased estimate (``(tr H)^2`` by the U-statistic) and the
    standard error of its U-statistic variance (:func:`~phaseprobe.geometry.stochastic.u_statistic_se`).
    """
    g = np.asarray(g, np.float64)
    Hg = np.asarray(Hg, np.float64)
    a = np.asarray(vHv, np.float64)
    b = np.asarray(Hv2, np.float64)
    gHg, gH2g, g_sq = float(g @ Hg), float(Hg @ Hg), float(g @ g)
    R = float(curvature_from_terms(a.mean(), b.mean(), gHg, gH2g, g_sq, u_square(a)))
    w2 = 1.0 + g_sq
    # R = U(a) / w2 + mean(l) + const with l = -b / w2 - 2 gHg a / w2^2: a degree-2 U-statistic
    lin = -b / w2 - 2.0 * gHg * a / (w2 * w2)
    return R, u_statistic_se(a, lin, 1.0 / w2)


@dataclass
class Curvature:
    """Scalar curvature at one point and its ingredients.

    ``stderr`` is 0 for the exact method. ``tr_H2`` is ``tr(H^2)``; ``gH2g`` is ``|H g|^2``.
    """

    R: float
    stderr: float
    tr_H: float
    tr_H2: float
    gHg: float
    gH2g: float
    grad_norm: float
    method: str
    n_probes: int
    n_params: int
    scale: str = SCALE


def scalar_curvature(
    loss_fn: Callable,
    params,
    *,
    exact: bool | None = None,
    n_probes: int = 64,
    key=None,
    max_params: int | None = None,
    probe_batch: int | None = None,
) -> Curvature:
    """Scalar (Ricci) curvature ``R`` of the graph ``{(w, f(w))}`` of ``loss_fn`` at ``params``.

    ``R = ((tr H)^2 - tr(H^2)) / W2 - 2 (tr H g^T H g - g^T H^2 g) / W2^2`` with ``g`` the
    gradient, ``H`` the Hessian and ``W2 = 1 + |g|^2``. Pass ``E``
    (:func:`~phaseprobe.geometry.losses.make_error_fn`) for ``R_E`` or ``L_alpha``
    (:func:`~phaseprobe.geometry.losses.make_loss_fn`) for ``R_L``; ``R`` carries the scale of
    the loss (``E`` is a mean over samples).

    **Arguments:**

    - `loss_fn`: a scalar function of the parameter pytree.
    - `params`: the point, a pytree of float arrays (``n`` numbers in all).
    - `exact`: dense Hessian (``True``), Hutchinson estimate (``False``), or ``None``: dense
      when ``n <= max_params``.
    - `n_probes`: Rademacher probes of the stochastic estimate.
    - `key`: a ``jax.random`` key or an int seed.
    - `max_params`: the largest ``n`` for the dense Hessian (default 5000).
    - `probe_batch`: probes evaluated at once (default: memory-bounded).

    **Returns:** a :class:`Curvature` (``R``, ``stderr`` (0 when exact), ``tr_H``, ``tr_H2``,
    ``gHg``, ``gH2g``, ``grad_norm``, ``method``).
    """
    n = num_params(params)
    _, g = value_and_flat_grad(loss_fn, params)
    g = np.asarray(g, np.float64)
    if use_exact(exact, n, max_params):
        H = exact_hessian(loss_fn, params, max_params=max_params)
        Hg = H.astype(np.float64) @ g
        R = curvature_exact(g, H)
        return Curvature(R=R, stderr=0.0, tr_H=float(np.trace(H)), tr_H2=float(np.sum(H.astype(np.float64) ** 2)),
                         gHg=float(g @ Hg), gH2g=float(Hg @ Hg), grad_norm=float(np.sqrt(g @ g)),
                         method="exact", n_probes=0, n_params=n)
    a, b = probe_samples(loss_fn, params, n_probes, key=as_key(key), probe_batch=probe_batch)
    flat, _ = ravel_pytree(params)
    Hg = np.asarray(hvp_flat(loss_fn, params, g.astype(flat.dtype)), np.float64)
    R, se = curvature_stochastic(a, b, g, Hg)
    return Curvature(R=R, stderr=se, tr_H=float(a.mean()), tr_H2=float(b.mean()), gHg=float(g @ Hg),
                     gH2g=float(Hg @ Hg), grad_norm=float(np.sqrt(g @ g)), method="stochastic",
                     n_probes=int(n_probes), n_params=n)
