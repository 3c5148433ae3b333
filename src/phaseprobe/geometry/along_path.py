"""Geometry along a path of trained models (an alpha sweep, an L2-probe path).

:func:`analyze_minima` takes the trained members (a stacked Equinox model or a list), their
alphas and optional penalty centres, and returns one table row per point: scalar curvatures
``R_E`` and ``R_L`` (with standard errors when stochastic), extreme eigenvalues of ``H_E`` and
``H_L = H_E + diag(2 alpha m)``, ``tr H_E``, the saddle index of ``L_alpha`` and both gradient
norms. One compiled error function serves every member; the penalty enters as data (the
diagonal ``2 alpha m``), so the alpha grid never triggers a recompilation. Lanczos along the
path is warm-started from the previous point's extreme Ritz vectors.

:func:`curvature_change_points` finds where ``R(alpha)`` changes character: sign changes,
**jumps** (the signature of a first-order transition, where ``R`` jumps, e.g. to ``R_E = 0`` at
``w = 0`` for two or more hidden layers, rather than crossing zero) and **kinks** (slope
changes, the continuous transitions). :func:`match_transitions` pairs each accuracy transition
with its nearest change point.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax.flatten_util import ravel_pytree

from phaseprobe.geometry.base import (
    GeometryError,
    as_key,
    num_params,
    params_of,
    use_exact,
)
from phaseprobe.geometry.curvature import SCALE, curvature_exact, curvature_stochastic
from phaseprobe.geometry.hessian import exact_hessian, hvp_flat, value_and_flat_grad
from phaseprobe.geometry.lanczos import lanczos
from phaseprobe.geometry.stochastic import probe_samples
from phaseprobe.geometry.losses import make_error_fn
from phaseprobe.geometry.saddle import count_negative, count_negative_ritz


def _leading(tree):
    return {int(np.shape(x)[0]) if np.ndim(x) else -1 for x in jax.tree_util.tree_leaves(tree)}


def _members(models, k: int):
    """List of per-member models from a list or a stacked model with leading axis ``k``."""
    if isinstance(models, (list, tuple)):
        if len(models) != k:
            raise GeometryError(f"models: got {len(models)} models for {k} alphas; pass one alpha per model")
        return list(models)
    lead = _leading(params_of(models))
    if lead == {k}:
        return [jax.tree_util.tree_map(lambda x: x[i] if isinstance(x, jax.Array) or isinstance(x, np.ndarray) else x, models)
                for i in range(k)]
    if k == 1:
        return [models]
    raise GeometryError(f"models: the stacked model's leading axis is {sorted(lead)}, not the {k} alphas; pass one alpha per member")


def _refs(refs, k: int, params0):
    if refs is None:
        return [None] * k
    if isinstance(refs, (list, tuple)) and len(refs) == k and not isinstance(refs, type(params0)):
        return [None if r is None else params_of(r) for r in refs]
    r = params_of(refs)
    if jax.tree_util.tree_structure(r) != jax.tree_util.tree_structure(params0):
        raise GeometryError("refs: not shaped like the model's parameters; pass a stacked parameter pytree, a list, or None")
    shapes0 = [np.shape(x) for x in jax.tree_util.tree_leaves(params0)]
    shapes = [np.shape(x) for x in jax.tree_util.tree_leaves(r)]
    if shapes == shapes0:
        return [r] * k
    if all(s[1:] == s0 and s[0] == k for s, s0 in zip(shapes, shapes0)):
        return [jax.tree_util.tree_map(lambda x: x[i], r) for i in range(k)]
    raise GeometryError("refs: leaf shapes match neither one member nor a stack of the members; pass one ref per alpha")


def _flat_mask(mask, params):
    return np.asarray(ravel_pytree(jax.tree_util.tree_map(lambda p, m: jnp.full(jnp.shape(p), m, jnp.result_type(p)), params, mask))[0], np.float64)


def analyze_minima(
    models,
    data,
    loss: str = "ce",
    alphas=None,
    refs=None,
    *,
    penalty_on: str = "all",
    mask=None,
    exact: bool | None = None,
    n_probes: int = 64,
    lanczos_k: int = 3,
    num_iter: int | None = None,
    key=None,
    max_params: int | None = None,
    chunk_size: int = 4096,
    tol: float | None = None,
    warm_start: bool = True,
    rel_tol: float | None = None,
) -> pd.DataFrame:
    """Curvature, spectrum ends and saddle index at each trained point of a path.

    ``models``: a stacked Equinox model (leading member axis) or a list of models; ``alphas``
    one canonical L2 strength per member (``L_alpha = E + alpha ||w - ref||^2`` on the masked
    leaves); ``refs`` None (penalty at 0), one parameter pytree for all, a stack, or a list.
    ``exact=None`` uses dense Hessians when a member has at most ``max_params`` parameters
    (default 5000); otherwise Hutchinson (``n_probes``) and Lanczos (``lanczos_k`` per end).

    Columns: ``member, alpha, E, L, grad_norm_E, grad_norm_L, dist_ref, R_E, R_E_se, R_L, R_L_se,
    tr_H_E, tr_H_E_se, tr_H_L, lambda_max_E, lambda_min_E, lambda_max_L, lambda_min_L,
    top_E, bottom_E, top_L, bottom_L`` (arrays of the ``lanczos_k`` extreme eigenvalues),
    ``bottom_E_residuals, bottom_L_residuals`` (their Lanczos residuals; zeros when exact),
    ``saddle_index_L`` (eigenvalues of ``H_L`` below ``-tol``), ``saddle_index_L_exact`` (False:
    a lower bound), ``saddle_index_L_label`` (``"2"`` or ``">= 2"``), ``saddle_index_lower_bound``
    (``not saddle_index_L_exact``), ``tol`` (absolute threshold), ``saddle_rel_tol`` (``tol`` over
    the spectrum's scale ``max|lambda(H_L)|``), ``residual_tol`` (largest residual of a Ritz value
    counted as converged), ``neg_eigs_E, neg_eigs_E_exact, neg_eigs_E_label, neg_eigs_E_tol`` (the
    same count for ``H_E``, relative to its own scale), ``method, n_params, n_probes, scale``.
    Counts follow :func:`~phaseprobe.geometry.saddle.count_negative` (exact spectrum) and
    :func:`~phaseprobe.geometry.saddle.count_negative_ritz` (Lanczos; ``rel_tol`` or ``tol``).
    """
    if alphas is None:
        raise GeometryError("alphas: pass one L2 strength per member (canonical alpha, L = E + alpha*||w||^2)")
    alphas = np.atleast_1d(np.asarray(alphas, np.float64))
    if alphas.ndim != 1 or not np.all(np.isfinite(alphas)) or np.any(alphas < 0):
        raise GeometryError("alphas: every L2 strength must be finite and >= 0 (one per member)")
    k = int(alphas.shape[0])
    members = _members(models, k)
    from phaseprobe.models import penalty_mask

    params0 = params_of(members[0])
    if mask is None:
        mask = penalty_mask(members[0], penalty_on)
    ref_list = _refs(refs, k, params0)
    E = make_error_fn(members[0], data, loss, chunk_size=chunk_size)
    n = num_params(params0)
    do_exact = use_exact(exact, n, max_params)
    if not do_exact and (not isinstance(n_probes, (int, np.integer)) or n_probes < 2):
        raise GeometryError(f"n_probes: needs an integer >= 2 for standard errors, got {n_probes!r}")
    m_flat = _flat_mask(mask, params0)
    key = as_key(key)
    rows = []
    warm = None
    for i, (model, alpha, ref) in enumerate(zip(members, alphas, ref_list)):
        p = params_of(model)
        ki = jax.random.fold_in(key, i)
        w = np.asarray(ravel_pytree(p)[0], np.float64)
        diff = w if ref is None else w - np.asarray(ravel_pytree(ref)[0], np.float64)
        dvec = 2.0 * alpha * m_flat
        e_val, gE = value_and_flat_grad(E, p)
        e_val = float(e_val)
        gE = np.asarray(gE, np.float64)
        gL = gE + dvec * diff
        l_val = e_val + alpha * float(np.sum(m_flat * diff * diff))
        row = dict(member=i, alpha=float(alpha), E=e_val, L=l_val, grad_norm_E=float(np.linalg.norm(gE)),
                   grad_norm_L=float(np.linalg.norm(gL)), dist_ref=float(np.sqrt(np.sum(m_flat * diff * diff))))
        kk = min(lanczos_k, n)
        if do_exact:
            H = exact_hessian(E, p, max_params=max_params).astype(np.float64)
            HL = H + np.diag(dvec)
            lamE = np.linalg.eigvalsh(H)
            lamL = np.linalg.eigvalsh(HL)
            dt = ravel_pytree(p)[0].dtype
            cL = count_negative(lamL, tol=tol, rel_tol=rel_tol, dtype=dt)
            cE = count_negative(lamE, tol=tol, rel_tol=rel_tol, dtype=dt)
            row.update(R_E=curvature_exact(gE, H), R_E_se=0.0, R_L=curvature_exact(gL, HL), R_L_se=0.0,
                       tr_H_E=float(np.trace(H)), tr_H_E_se=0.0, tr_H_L=float(np.trace(HL)),
                       top_E=lamE[::-1][:kk], bottom_E=lamE[:kk], top_L=lamL[::-1][:kk], bottom_L=lamL[:kk],
                       bottom_E_residuals=np.zeros(kk), bottom_L_residuals=np.zeros(kk),
                       method="exact", n_probes=0)
        else:
            dt = ravel_pytree(p)[0].dtype
            aE, bE, aL, bL = probe_samples(E, p, int(n_probes), key=jax.random.fold_in(ki, 1), shift=dvec)
            HgE = np.asarray(hvp_flat(E, p, jnp.asarray(gE, dt)), np.float64)
            HgL = np.asarray(hvp_flat(E, p, jnp.asarray(gL, dt)), np.float64) + dvec * gL
            rE, seE = curvature_stochastic(aE, bE, gE, HgE)
            rL, seL = curvature_stochastic(aL, bL, gL, HgL)
            v0E = v0L = None
            if warm_start and warm is not None:
                v0E, v0L = warm
            resE = lanczos(E, p, kk, num_iter=num_iter, v0=v0E, key=jax.random.fold_in(ki, 2))
            resL = lanczos(E, p, kk, num_iter=num_iter, v0=v0L, key=jax.random.fold_in(ki, 3), shift=dvec)
            if warm_start:
                # start the next point from a mix of both ends (plus noise, so no Krylov space is trivial)
                noise = np.asarray(jax.random.normal(jax.random.fold_in(ki, 4), (n,)), np.float64) * 1e-3
                warm = tuple(r.largest_vectors[0] + r.smallest_vectors[0] + noise / np.sqrt(n) for r in (resE, resL))
            cL = count_negative_ritz(resL.ritz_values, resL.ritz_residuals, kk, tol=tol, rel_tol=rel_tol, dtype=dt,
                                     complete=resL.num_iter == n)
            cE = count_negative_ritz(resE.ritz_values, resE.ritz_residuals, kk, tol=tol, rel_tol=rel_tol, dtype=dt,
                                     complete=resE.num_iter == n)
            row.update(R_E=rE, R_E_se=seE, R_L=rL, R_L_se=seL, tr_H_E=float(aE.mean()),
                       tr_H_E_se=float(aE.std(ddof=1) / np.sqrt(len(aE))), tr_H_L=float(aL.mean()),
                       top_E=resE.largest, bottom_E=resE.smallest, top_L=resL.largest, bottom_L=resL.smallest,
                       bottom_E_residuals=resE.smallest_residuals, bottom_L_residuals=resL.smallest_residuals,
                       method="stochastic", n_probes=int(n_probes))
        row.update(saddle_index_L=cL.count, saddle_index_L_exact=cL.exact, saddle_index_L_label=cL.label,
                   saddle_index_lower_bound=not cL.exact, tol=cL.threshold, saddle_rel_tol=cL.rel_tol,
                   residual_tol=cL.residual_tol, neg_eigs_E=cE.count, neg_eigs_E_exact=cE.exact,
                   neg_eigs_E_label=cE.label, neg_eigs_E_tol=cE.threshold)
        row.update(lambda_max_E=float(row["top_E"][0]), lambda_min_E=float(row["bottom_E"][0]),
                   lambda_max_L=float(row["top_L"][0]), lambda_min_L=float(row["bottom_L"][0]),
                   n_params=n, scale=SCALE)
        rows.append(row)
    cols = ["member", "alpha", "E", "L", "grad_norm_E", "grad_norm_L", "dist_ref", "R_E", "R_E_se", "R_L", "R_L_se",
            "tr_H_E", "tr_H_E_se", "tr_H_L", "lambda_max_E", "lambda_min_E", "lambda_max_L", "lambda_min_L",
            "top_E", "bottom_E", "top_L", "bottom_L", "bottom_E_residuals", "bottom_L_residuals",
            "saddle_index_L", "saddle_index_L_exact", "saddle_index_L_label", "saddle_index_lower_bound", "tol",
            "saddle_rel_tol", "residual_tol", "neg_eigs_E", "neg_eigs_E_exact", "neg_eigs_E_label", "neg_eigs_E_tol",
            "method", "n_params", "n_probes", "scale"]
    return pd.DataFrame(rows, columns=cols)


# ---------------------------------------------------------------------------------------------
# change points of R(alpha)
# ---------------------------------------------------------------------------------------------
def _local_median(values: np.ndarray, i: int, half: int, exclude: set[int]) -> float:
    lo, hi = max(0, i - half), min(len(values), i + half + 1)
    idx = [j for j in range(lo, hi) if j not in exclude]
    if not idx:
        return 0.0
    return float(np.median(np.abs(values[idx])))


CHANGE_COLUMNS = ["kind", "alpha", "i_left", "i_right", "size", "score", "significant"]


def curvature_change_points(
    alpha,
    R,
    R_se=None,
    *,
    jump_factor: float = 5.0,
    kink_factor: float = 5.0,
    min_rel: float = 0.1,
    window: int = 3,
    log_alpha: bool = True,
) -> pd.DataFrame:
    """Sign changes, jumps and kinks of ``R`` along ``alpha`` (one row per change point).

    The abscissa is ``log(alpha)`` (``log_alpha=True``). With ``d_i = R_{i+1} - R_i``:

    * ``sign_change``: consecutive nonzero values of opposite sign; ``alpha`` at the linear zero
      crossing in the abscissa (at the zeros when ``R`` is exactly 0 in between);
    * ``jump``: ``|d_i|`` exceeds ``jump_factor`` times the median ``|d|`` of the ``window``
      neighbours on each side and ``min_rel`` times the range of ``R``; ``alpha`` at the
      midpoint in the abscissa (a first-order transition: ``R`` jumps, e.g. to 0 at ``w = 0``);
    * ``kink``: the slope change at a grid point exceeds ``kink_factor`` times its neighbours'
      median and ``min_rel`` times the range of slopes (adjacent flags merged, jumps excluded).

    ``score`` is the ratio to the local baseline; ``significant`` (when ``R_se`` is given) means
    the jump or slope change exceeds 3 standard errors, or both sides of a sign change are 2
    standard errors away from 0. NaN values of ``R`` are skipped.
    """
    a = np.asarray(alpha, np.float64).ravel()
    r = np.asarray(R, np.float64).ravel()
    if a.shape != r.shape:
        raise GeometryError(f"R: has {r.size} values for {a.size} alphas; pass one value per alpha")
    se = None if R_se is None else np.asarray(R_se, np.float64).ravel()
    if se is not None and se.shape != r.shape:
        raise GeometryError(f"R_se: has {se.size} values for {a.size} alphas; pass one per alpha or None")
    if log_alpha and np.any(a[np.isfinite(r)] <= 0):
        raise GeometryError("alpha: a log-alpha axis needs alpha > 0; pass log_alpha=False for alpha = 0 points")
    keep = np.isfinite(r) & np.isfinite(a)
    a, r = a[keep], r[keep]
    se = None if se is None else np.nan_to_num(se[keep], nan=0.0)
    o = np.argsort(a)
    a, r = a[o], r[o]
    se = None if se is None else se[o]
    rows: list[dict] = []
    if a.size < 2:
        return pd.DataFrame(rows, columns=CHANGE_COLUMNS)
    x = np.log(a) if log_alpha else a.copy()
    to_alpha = np.exp if log_alpha else (lambda v: v)
    d = np.diff(r)
    dx = np.diff(x)
    rng = float(r.max() - r.min())
    # sign changes between consecutive nonzero values (exact zeros in between are crossed)
    nz = np.flatnonzero(r != 0.0)
    for j, k in zip(nz[:-1], nz[1:]):
        if np.sign(r[j]) != np.sign(r[k]):
            if k == j + 1:
                x0 = x[j] + dx[j] * r[j] / (r[j] - r[k])
            else:
                x0 = float(np.mean(x[j + 1:k]))
            sig = True if se is None else bool(abs(r[j]) > 2 * se[j] and abs(r[k]) > 2 * se[k])
            rows.append(dict(kind="sign_change", alpha=float(to_alpha(x0)), i_left=int(j), i_right=int(k),
                             size=float(r[k] - r[j]), score=float("nan"), significant=sig))
    # jumps
    jumps = []
    for i in range(len(d)):
        base = _local_median(d, i, window, {i})
        if abs(d[i]) > jump_factor * base and abs(d[i]) > min_rel * rng and rng > 0:
            sig = True if se is None else bool(abs(d[i]) > 3 * np.hypot(se[i], se[i + 1]))
            jumps.append(i)
            rows.append(dict(kind="jump", alpha=float(to_alpha(0.5 * (x[i] + x[i + 1]))), i_left=i, i_right=i + 1,
                             size=float(d[i]), score=float(abs(d[i]) / base) if base > 0 else float("inf"), significant=sig))
    # kinks (slope changes at interior grid points not touching a jump)
    if len(d) >= 2:
        s = d / dx
        ks = np.diff(s)  # ks[j] is the slope change at grid point j + 1
        srng = float(s.max() - s.min())
        bad = set()
        for i in jumps:
            bad |= {i - 1, i, i + 1}  # slope changes at points i, i+1 (indices i-1, i)
        flagged = []
        for j in range(len(ks)):
            if j in bad:
                continue
            base = _local_median(ks, j, window, {j - 1, j, j + 1})
            if abs(ks[j]) > kink_factor * base and abs(ks[j]) > min_rel * srng and srng > 0:
                flagged.append(j)
        groups: list[list[int]] = []
        for j in flagged:
            if groups and j == groups[-1][-1] + 1:
                groups[-1].append(j)
            else:
                groups.append([j])
        for g in groups:
            j = max(g, key=lambda q: abs(ks[q]))
            base = _local_median(ks, j, window, set(range(g[0] - 1, g[-1] + 2)))
            if se is None:
                sig = True
            else:
                # slope change at point j+1 uses R at j, j+1, j+2
                sd = np.sqrt((se[j] / dx[j]) ** 2 + (se[j + 1] * (1 / dx[j] + 1 / dx[j + 1])) ** 2 + (se[j + 2] / dx[j + 1]) ** 2)
                sig = bool(abs(ks[j]) > 3 * sd)
            rows.append(dict(kind="kink", alpha=float(a[j + 1]), i_left=j, i_right=j + 2, size=float(ks[j]),
                             score=float(abs(ks[j]) / base) if base > 0 else float("inf"), significant=sig))
    out = pd.DataFrame(rows, columns=CHANGE_COLUMNS)
    return out.sort_values("alpha", kind="stable").reset_index(drop=True)


def match_transitions(
    transition_alphas: Sequence[float],
    change_points,
    *,
    kinds: Sequence[str] | None = None,
    max_log10_distance: float | None = None,
) -> pd.DataFrame:
    """Nearest curvature change point (in ``log10 alpha``) for each accuracy transition.

    ``change_points``: the table of :func:`curvature_change_points` or plain alphas. ``kinds``
    restricts the kinds considered. Columns: ``transition_alpha, change_alpha, kind,
    log10_distance, matched`` (``matched`` = within ``max_log10_distance``, always True if None;
    False with NaN columns when there is no change point).
    """
    t = np.atleast_1d(np.asarray(transition_alphas, np.float64))
    if np.any(t <= 0) or not np.all(np.isfinite(t)):
        raise GeometryError("transition_alphas: need finite alphas > 0 (distances are in log10 alpha)")
    if isinstance(change_points, pd.DataFrame):
        cp = change_points
        if kinds is not None:
            cp = cp[cp["kind"].isin(list(kinds))]
        ca = cp["alpha"].to_numpy(np.float64)
        ck = cp["kind"].astype(str).to_numpy()
    else:
        ca = np.atleast_1d(np.asarray(change_points, np.float64))
        ck = np.array(["change"] * ca.size)
    ok = np.isfinite(ca) & (ca > 0)
    ca, ck = ca[ok], ck[ok]
    rows = []
    for ta in t:
        if ca.size == 0:
            rows.append(dict(transition_alpha=float(ta), change_alpha=float("nan"), kind=None,
                             log10_distance=float("nan"), matched=False))
            continue
        dist = np.abs(np.log10(ca) - np.log10(ta))
        j = int(np.argmin(dist))
        m = True if max_log10_distance is None else bool(dist[j] <= max_log10_distance)
        rows.append(dict(transition_alpha=float(ta), change_alpha=float(ca[j]), kind=str(ck[j]),
                         log10_distance=float(dist[j]), matched=m))
    return pd.DataFrame(rows, columns=["transition_alpha", "change_alpha", "kind", "log10_distance", "matched"])
