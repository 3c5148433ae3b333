"""Loss plateaus in log time, escape times, and the proof that a plateau sits at a saddle.

Plateaus (:func:`detect_plateaus`): maximal runs of record points where the local slope
``|d log E / d log t|`` of the excess loss stays below ``slope_tol`` for at least
``min_decades`` decades of time, above a loss floor (the final descent to a global minimum is
not a plateau). Time is measured from the fastest time scale at initialisation,
``t >= 1 / lambda_bound(theta_0)``: before it nothing can move, and every curve looks flat on
a log axis there.

For every plateau (:func:`analyze_member`): its level (median loss), the rank of ``W_L...W_1``
there (median of the records' ranks), the learned singular values at the record of smallest
gradient norm (the saddle point), and the escape time -- when the loss first falls halfway
from this plateau's level to the next one (interpolated in log time).

Saddle certificate (:func:`certify_saddle`), at the saddle point of a plateau:

* the Hessian's index (exact for small nets): a **strict** saddle has eigenvalues near
  ``-sigma_1(grad C)`` -- for two weight layers, at the rank-k saddle of the whitened teacher,
  exactly ``-s_{k+1}`` with multiplicity ``(w - k)`` per missing mode;
* the **higher-order escape test** (:func:`phaseprobe.geometry.escape_test`) along the rank-one
  direction that adds the top singular pair ``(u, v)`` of ``-grad C(A)`` through hidden units the
  network does not use: ``V_1 = h_1 v^T, V_l = h_l h_{l-1}^T, V_L = u h_{L-1}^T`` (each of norm
  ``1/sqrt L``) with ``h_l`` the direction least used by ``W_l`` and ``W_{l+1}``. Every mixed term
  of the product vanishes there, so ``E(theta + eps V) - E(theta) = -L^{-L/2} sigma_1 eps^L + ...``:
  order 2 for two layers, order ``L`` -- with **no** negative Hessian eigenvalue -- for three or
  more, where a Hessian-index test would wrongly report a minimum.

A negative eigenvalue counts toward the index only below ``-hess_rel_tol * sigma_1`` (default a
tenth of the curvature ``-sigma_1`` a two-layer strict saddle has along its escape): near, not
at, a depth-L >= 3 saddle the curvature is weak but not zero -- about ``-2 s a`` along the
escaping mode of layer scale ``a``, and ``-s ||W_l||`` from the unused random part of the layers,
both vanishing with the init scale.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from phaseprobe.dynamics.observe import LinearStats, chain
from phaseprobe.dynamics.teacher import DynamicsError


# ---- plateau detection ------------------------------------------------------------------------

@dataclass
class LossPlateau:
    """One plateau of one member's loss curve (times in lr x steps)."""

    index: int
    t_start: float
    t_end: float
    level: float  # median loss on the plateau
    rank: int  # median rank of W_L...W_1 on the plateau
    stable_rank: float
    i_start: int  # record rows (member-local) of the first and last flat points
    i_end: int
    i_saddle: int  # record of smallest gradient norm inside the plateau
    t_saddle: float
    grad_norm: float
    learned_sv: list = field(default_factory=list)  # top-`rank` singular values at the saddle point
    t_escape: float = float("nan")  # loss halfway to the next level
    oracle_level: float = float("nan")
    certificate: dict | None = None

    @property
    def decades(self) -> float:
        return math.log10(self.t_end / self.t_start) if self.t_start > 0 else float("inf")

    def as_row(self) -> dict:
        d = asdict(self)
        cert = d.pop("certificate") or {}
        d["learned_sv"] = [float(x) for x in self.learned_sv]
        d["decades"] = self.decades
        for k, v in cert.items():
            d[f"cert_{k}"] = v
        return d


def log_slope(t: np.ndarray, y: np.ndarray, half_window: float) -> np.ndarray:
    """Local ``d log y / d log t`` at every point: centred over +-``half_window`` decades (interpolated)."""
    t = np.asarray(t, np.float64)
    y = np.asarray(y, np.float64)
    x = np.log10(t)
    ly = np.log(np.maximum(y, 1e-300))
    lo = np.maximum(x - half_window, x[0])
    hi = np.minimum(x + half_window, x[-1])
    dy = np.interp(hi, x, ly) - np.interp(lo, x, ly)
    dx = (hi - lo) * math.log(10.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.where(dx > 0, dy / np.where(dx > 0, dx, 1.0), 0.0)
    return s


def detect_plateaus(
    t, loss, *, slope_tol: float = 0.1, min_decades: float = 0.05, floor: float = 0.0, t_min: float = 0.0,
    half_window: float | None = None,
):
    """Index ranges ``(i, j)`` (inclusive) of the plateaus of ``loss(t)`` (see the module doc).

    ``loss`` should be the excess loss (above the global minimum). Points with ``t <= t_min`` or
    ``loss <= floor`` never belong to a plateau.
    """
    t = np.asarray(t, np.float64)
    loss = np.asarray(loss, np.float64)
    if slope_tol <= 0 or min_decades <= 0:
        raise DynamicsError("slope_tol/min_decades: must be > 0")
    ok = (t > 0) & np.isfinite(loss)
    idx = np.flatnonzero(ok)
    if idx.size < 3:
        return []
    tt, ll = t[idx], loss[idx]
    hw = min_decades / 4.0 if half_window is None else half_window
    s = log_slope(tt, ll, hw)
    flat = (np.abs(s) < slope_tol) & (ll > floor) & (tt > t_min)
    out = []
    i = 0
    n = len(tt)
    while i < n:
        if not flat[i]:
            i += 1
            continue
        j = i
        while j + 1 < n and flat[j + 1]:
            j += 1
        if math.log10(tt[j] / tt[i]) >= min_decades:
            out.append((int(idx[i]), int(idx[j])))
        i = j + 1
    return out


def crossing_time(t, y, level: float, start: int = 0) -> float:
    """First time after record ``start`` at which ``y`` falls below ``level`` (log-linear interpolation)."""
    t = np.asarray(t, np.float64)
    y = np.asarray(y, np.float64)
    below = np.flatnonzero(y[start:] < level)
    if below.size == 0:
        return float("nan")
    j = start + int(below[0])
    if j == 0 or t[j - 1] <= 0:
        return float(t[j])
    y0, y1 = y[j - 1], y[j]
    if not (y0 > level > y1) or y0 <= 0 or y1 <= 0:
        return float(t[j])
    f = (math.log(y0) - math.log(level)) / (math.log(y0) - math.log(y1))
    return float(10 ** (math.log10(t[j - 1]) + f * (math.log10(t[j]) - math.log10(t[j - 1]))))


def oracle_escape_times(t, excess_loss, levels_excess) -> np.ndarray:
    """Escape time ``k`` (k = 1..r): the loss first below the midpoint of oracle levels ``k-1`` and ``k``."""
    lv = np.asarray(levels_excess, np.float64)
    return np.array([crossing_time(t, excess_loss, 0.5 * (lv[k - 1] + lv[k])) for k in range(1, len(lv))])


def analyze_member(
    run, m: int, *, slope_tol: float = 0.1, min_decades: float = 0.05, certify: bool = False,
    hess_rel_tol: float = 0.1, max_params: int = 3000,
) -> list[LossPlateau]:
    """Plateaus of member ``m`` of a :class:`~phaseprobe.dynamics.run.DLNRun`, with their saddle data.

    ``certify=True`` runs :func:`certify_saddle` at each plateau's saddle point (needs the run
    made with ``keep_params=True``).
    """
    stats: LinearStats = run.stats
    df = run.member(m)
    t = df["t"].to_numpy()
    ex = np.maximum(df["excess_loss"].to_numpy(), 0.0)
    lv = stats.levels() - stats.e_min
    pos = lv[lv > 0]
    floor = 0.1 * float(pos.min()) if pos.size else 1e-12
    lam0 = float(df["lam_bound"].iloc[0])
    t_min = 1.0 / lam0 if lam0 > 0 else 0.0
    ranges = detect_plateaus(t, ex, slope_tol=slope_tol, min_decades=min_decades, floor=floor, t_min=t_min)
    sv = run.sv(m)
    out: list[LossPlateau] = []
    for k, (i, j) in enumerate(ranges):
        seg = slice(i, j + 1)
        g = df["grad_norm"].to_numpy()[seg]
        i_search = i
        if k == 0:
            # the first plateau usually began before the fastest init time scale: search the
            # saddle point back to t = 0 while the loss stays on the plateau's level
            lv0 = np.median(ex[seg])
            while i_search > 0 and t[i_search - 1] > 0 and abs(ex[i_search - 1] - lv0) <= 0.01 * lv0:
                i_search -= 1
        gs = df["grad_norm"].to_numpy()[i_search: j + 1]
        isad = i_search + int(np.argmin(gs))
        rank = int(np.round(np.median(df["rank"].to_numpy()[seg])))
        level = float(np.median(df["loss"].to_numpy()[seg]))
        nearest = int(np.argmin(np.abs(lv + stats.e_min - level)))
        p = LossPlateau(
            index=k, t_start=float(t[i]), t_end=float(t[j]), level=level, rank=rank,
            stable_rank=float(np.median(df["stable_rank"].to_numpy()[seg])), i_start=i, i_end=j,
            i_saddle=isad, t_saddle=float(t[isad]), grad_norm=float(g.min()),
            learned_sv=[float(x) for x in sv[isad, :rank]], oracle_level=float(lv[nearest] + stats.e_min),
        )
        out.append(p)
    # escape: halfway (in loss) to the next plateau, or to the final loss
    last = len(df) - 1
    for k, p in enumerate(out):
        nxt = out[k + 1].level if k + 1 < len(out) else float(df["loss"].iloc[-1])
        if p.i_end >= last or (k + 1 == len(out) and nxt > 0.9 * p.level):
            continue  # the run ended on this plateau: no escape seen
        p.t_escape = crossing_time(t, df["loss"].to_numpy(), 0.5 * (p.level + nxt), start=p.i_end)
    if certify:
        for p in out:
            _, w = run.weights_at(m, p.i_saddle)
            p.certificate = certify_saddle(w, stats, hess_rel_tol=hess_rel_tol, max_params=max_params)
    return out


def plateau_table(run, members=None, **kw) -> pd.DataFrame:
    """All plateaus of the given members (default all) as one table."""
    rows = []
    for m in range(run.n_members) if members is None else members:
        for p in analyze_member(run, m, **kw):
            r = p.as_row()
            r["member"] = m
            rows.append(r)
    return pd.DataFrame(rows)


# ---- saddle certificates --------------------------------------------------------------------------

class LinearLoss(eqx.Module):
    """``E(W_1..W_L) = 1/2 ||(W_L...W_1 - A*) S^{1/2}||_F^2 + E_min`` (the trainer's MSE, closed form).

    A module (its arrays are leaves), so compiled geometry routines are reused across points
    and data sets of the same shapes.
    """

    A_star: jax.Array
    S_half: jax.Array
    e_min: jax.Array

    def __call__(self, weights):
        left, _ = chain(tuple(weights))
        D = left[-1] - self.A_star.astype(left[-1].dtype)
        return 0.5 * jnp.sum((D @ self.S_half.astype(D.dtype)) ** 2) + self.e_min.astype(D.dtype)


def loss_function(stats: LinearStats) -> LinearLoss:
    """The closed-form training error of a deep linear net on data with these statistics (float64)."""
    with jax.enable_x64(True):
        return LinearLoss(jnp.asarray(stats.A_star, jnp.float64), jnp.asarray(stats.S_half, jnp.float64),
                          jnp.asarray(stats.e_min, jnp.float64))


def escape_direction(weights, stats: LinearStats):
    """The rank-one escape direction of the module doc: ``(V_1..V_L)`` with total norm 1, and ``sigma_1``.

    Returns ``(V, sigma_1, u, v)`` where ``(u, v)`` is the top singular pair of ``-grad C(A)``.
    """
    ws = [np.asarray(w, np.float64) for w in weights]
    L = len(ws)
    A = ws[0]
    for w in ws[1:]:
        A = w @ A
    G = (A - stats.A_star) @ stats.S
    U, s, Vt = np.linalg.svd(-G)
    u, v, s1 = U[:, 0], Vt[0], float(s[0])
    if L == 1:
        return (np.outer(u, v),), s1, u, v
    hs = []
    for l in range(L - 1):  # hidden layer l+1 sits between W_{l+1} = ws[l] and W_{l+2} = ws[l+1]
        M = np.concatenate([ws[l], ws[l + 1].T], axis=1)  # (w, n_l + n_{l+2})
        Uh, _, _ = np.linalg.svd(M, full_matrices=True)
        hs.append(Uh[:, -1])  # least used hidden direction
    vecs = [v] + hs + [u]
    V = tuple(np.outer(vecs[l + 1], vecs[l]) / math.sqrt(L) for l in range(L))
    return V, s1, u, v


def certify_saddle(
    weights, stats: LinearStats, *, hess_rel_tol: float = 0.1, grad_rel_tol: float = 0.05, max_params: int = 3000,
    eps=None,
) -> dict:
    """Prove (or refute) that ``weights`` (one member) sits at a saddle; see the module doc.

    Returns a dict: ``kind`` (``strict_saddle``, ``higher_order_saddle``, ``minimum`` or
    ``not_critical``), ``index`` (Hessian eigenvalues below ``-hess_rel_tol * sigma_1``; -1 when
    the net is too large for the exact Hessian), ``min_eig``, ``sigma_1`` (top singular value of
    ``-grad C``), ``escape_order`` and ``escape_coef`` (fit of ``E(theta + eps V) - E(theta) ~ coef
    eps^order`` along the rank-one escape direction), ``predicted_coef`` (``-L^{-L/2} sigma_1``),
    ``grad_norm``.
    """
    from phaseprobe.geometry import classify_point, escape_test, saddle_index

    ws = tuple(jnp.asarray(np.asarray(w, np.float64)) for w in weights)
    L = len(ws)
    loss = loss_function(stats)
    V, s1, _, _ = escape_direction(weights, stats)
    n = int(sum(np.size(w) for w in weights))
    # step lengths: from well above the unused directions' scale to a fraction of the learned one
    scale = math.sqrt(max(L * float(np.sum(stats.s_eff[: max(stats.rank, 1)] ** (2.0 / L))), 1e-30))
    eps = np.geomspace(0.03, 0.3, 9) * scale / math.sqrt(L) if eps is None else np.asarray(eps, np.float64)
    tol = hess_rel_tol * s1
    with jax.enable_x64(True):
        ws64 = tuple(jnp.asarray(w, jnp.float64) for w in ws)
        V64 = tuple(jnp.asarray(v, jnp.float64) for v in V)
        g = jax.grad(lambda p: loss(p))(ws64)
        gnorm = float(np.sqrt(sum(float(jnp.sum(x ** 2)) for x in g)))
        if n <= max_params:
            si = saddle_index(loss, ws64, tol=tol, exact=True, max_params=max_params)
            index, min_eig = int(si.index), float(si.min_eig)
        else:
            si = None
            index, min_eig = -1, float("nan")
        esc = escape_test(loss, ws64, directions=[V64], eps=eps, hessian=False, multilinear=False, n_random=0,
                          remove_linear=True, tol=tol)
    d = esc.directions[0]  # +V
    order, coef = float(d.order), float(d.coef)
    grad_scale = s1 * (scale / math.sqrt(L)) ** (L - 1)
    critical = gnorm <= grad_rel_tol * max(grad_scale, 1e-30)
    if not critical:
        kind = "not_critical"
    elif index > 0:
        kind = "strict_saddle"
    elif d.escapes and order >= 2.5:
        kind = "higher_order_saddle"
    elif d.escapes:
        kind = "strict_saddle"  # index unknown (large net) but a quadratic escape
    else:
        kind = "minimum"
    return {
        "kind": kind, "index": index, "min_eig": min_eig, "hess_tol": float(tol), "sigma_1": s1,
        "escape_order": order, "escape_coef": coef, "predicted_coef": -(L ** (-L / 2.0)) * s1,
        "grad_norm": gnorm, "grad_tol": float(grad_rel_tol * grad_scale), "n_params": n,
    }
