"""The phase diagram of deep linear training over the init scale ``gamma`` and the width ``w``.

Every layer starts i.i.d. ``N(0, w^-gamma)``. Per width, all ``gamma x seed`` combinations are
the members of ONE ensemble (same shapes) integrated together; a seed fixes the unit-variance
draws, so across ``gamma`` only the scale changes. Per member (:func:`order_parameters`):

* ``disp_abs`` = ``||theta_end - theta_0||`` -- THE order parameter: it goes to 0 as the width
  grows in the lazy regime (``gamma < 1``, displacement ``~ w^-(1-gamma)(L-1)/2``) and stays O(1)
  in the saddle-to-saddle regime; ``disp_rel`` = ``disp_abs / ||theta_0||`` (misleading for
  ``1 < gamma < 2`` at depth >= 3, where ``||theta_0|| ~ w^(1 - gamma/2)`` grows with the width);
* ``n_plateaus`` -- plateaus of the loss in log time (:func:`~phaseprobe.dynamics.plateaus.detect_plateaus`);
* ``t_escape_k`` -- the loss first halfway between the oracle levels of the rank-(k-1) and rank-k
  saddles;
* ``ntk0`` (top NTK eigenvalue at init), ``dist_gm0`` (distance to the nearest global minimum at
  init, projection bound) and ``dist_gm0_lower``.

:func:`locate_transition` fits, per ``gamma``, the log-log slope of an order parameter against
the width, and locates where it crosses zero (interpolated in ``gamma``), for the whole width
range and for each pair of consecutive widths (to see it move as the width grows).

The grid's pieces (:func:`integrate_width`, :func:`width_order_parameters`; escape times:
:func:`integrate_escape_depth`, :func:`escape_rows`) are what the ``dln-grid`` and ``dln-escape``
experiment kinds (:mod:`phaseprobe.dynamics.kind`) run one ensemble at a time;
:func:`run_gamma_width_grid` and :func:`escape_scaling` compose them in one call.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import jax
import numpy as np
import pandas as pd

from phaseprobe.dynamics.observe import linear_stats
from phaseprobe.dynamics.plateaus import analyze_member, oracle_escape_times
from phaseprobe.dynamics.run import DLNRun, IntegrateConfig, dln_ensemble, integrate
from phaseprobe.dynamics.teacher import DynamicsError


@dataclass(frozen=True)
class PhaseGridSpec:
    """A ``gamma x width x seed`` grid at one depth on one data set."""

    gammas: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0)
    widths: tuple[int, ...] = (16, 32, 64, 128, 256)
    seeds: tuple[int, ...] = (0, 1)
    depth: int = 3
    integrate: IntegrateConfig = field(default_factory=lambda: IntegrateConfig(t_max=3000.0, loss_tol=1e-4))
    slope_tol: float = 0.1
    min_decades: float = 0.05

    def validate(self, rank: int | None = None) -> "PhaseGridSpec":
        if len(self.gammas) == 0 or len(self.widths) == 0 or len(self.seeds) == 0:
            raise DynamicsError("grid: gammas, widths and seeds must each list at least one value")
        g = np.asarray(self.gammas, np.float64)
        if not np.all(np.isfinite(g)):
            raise DynamicsError(f"gammas: must be finite numbers, got {list(self.gammas)}")
        for w in self.widths:
            if isinstance(w, bool) or int(w) != w or int(w) < 1:
                raise DynamicsError(f"widths: every width must be a positive integer, got {w}")
            if rank is not None and int(w) < rank:
                raise DynamicsError(f"widths: width {int(w)} is below the teacher's rank {rank}; use widths >= {rank}")
        if self.depth < 2:
            raise DynamicsError(f"depth: the phase diagram needs depth >= 2 weight matrices, got {self.depth}")
        self.integrate.validate()
        return self


def sigma_of(gamma: float, width: int) -> float:
    """Init standard deviation ``sigma = w^(-gamma/2)`` (variance ``w^-gamma``)."""
    return float(width) ** (-float(gamma) / 2.0)


def order_parameters(run: DLNRun, m: int, *, slope_tol: float = 0.1, min_decades: float = 0.05) -> dict:
    """Order parameters of member ``m`` of ``run`` (see the module doc).

    **Arguments:**

    - `run`: a :class:`~phaseprobe.dynamics.run.DLNRun` (its records, teacher statistics and
      per-member divergence flags are read).
    - `m`: the member.
    - `slope_tol`, `min_decades`: the plateau criterion.

    **Returns:** a dict (``disp_abs``, ``n_plateaus``, ``t_escape_k``, ...).
    """
    df = run.member(m)
    stats = run.stats
    lv = stats.levels() - stats.e_min
    esc = oracle_escape_times(df["t"].to_numpy(), np.maximum(df["excess_loss"].to_numpy(), 0.0), lv)
    plats = analyze_member(run, m, slope_tol=slope_tol, min_decades=min_decades)
    last = df.iloc[-1]
    first = df.iloc[0]
    conv = lv[0] * 1e-3
    ex = df["excess_loss"].to_numpy()
    hit = np.flatnonzero(ex <= conv)
    out = {
        "disp_abs": float(last["disp_abs"]),
        "disp_rel": float(last["disp_rel"]),
        "n_plateaus": len(plats),
        "plateau_ranks": [p.rank for p in plats],
        "plateau_levels": [p.level for p in plats],
        "t_converge": float(df["t"].iloc[hit[0]]) if hit.size else float("nan"),
        "t_end": float(last["t"]),
        "final_excess_loss": float(last["excess_loss"]),
        "final_stable_rank": float(last["stable_rank"]),
        "final_rank": int(last["rank"]),
        "init_loss": float(first["loss"]),
        "ntk0": float(first["lam_gn"]),
        "norm0": float(first["param_norm"]),
        "dist_gm0": float(first["dist_global_min"]),
        "dist_gm0_lower": float(first["dist_global_min_lower"]),
        "diverged": bool(run.diverged[m]),
        "n_records": int(len(df)),
        "steps": int(last["step"]),
    }
    for k, e in enumerate(esc, start=1):
        out[f"t_escape_{k}"] = float(e)
    return out


@dataclass
class PhaseGridResult:
    summary: pd.DataFrame  # one row per (gamma, width, seed)
    records: pd.DataFrame  # every record of every member, with gamma/width/seed columns
    spec: PhaseGridSpec
    seconds: float = 0.0


def width_members(spec: PhaseGridSpec, width: int) -> list[tuple[float, int, float]]:
    """The members of the width-``width`` ensemble in order: ``(gamma, seed, sigma)``."""
    return [(float(g), int(s), sigma_of(g, int(width))) for g in spec.gammas for s in spec.seeds]


def integrate_width(spec: PhaseGridSpec, data, width: int, *, stats=None,
                    progress: Callable[[float, float, int], None] | None = None) -> DLNRun:
    """Integrate the ``gamma x seed`` ensemble of one width of the grid.

    Seed ``s`` draws its unit-variance weights from ``fold_in(PRNGKey(s), width)``; member order
    as :func:`width_members`.

    **Arguments:**

    - `spec`: the grid (validated).
    - `data`: the teacher data set.
    - `width`: one of ``spec.widths``.
    - `stats`: :func:`~phaseprobe.dynamics.observe.linear_stats` of ``data`` (computed when omitted).
    - `progress`: ``progress(t_done, t_max, n_active)`` after every integration chunk.

    **Returns:** the :class:`~phaseprobe.dynamics.run.DLNRun` of the ensemble.
    """
    stats = linear_stats(data) if stats is None else stats
    w = int(width)
    members = width_members(spec, w)
    sig = [m[2] for m in members]
    keys = np.stack([np.asarray(jax.random.fold_in(jax.random.PRNGKey(int(s)), w)) for _, s, _ in members])
    model = dln_ensemble(stats.in_dim, stats.out_dim, spec.depth, w, sig, keys)
    return integrate(model, data, spec.integrate, progress=progress, stats=stats)


def width_records(spec: PhaseGridSpec, run: DLNRun, width: int) -> pd.DataFrame:
    """The records of one width's ensemble with ``gamma``, ``seed`` and ``width`` columns."""
    members = width_members(spec, width)
    r = run.records.copy()
    r["gamma"] = [members[i][0] for i in r["member"]]
    r["seed"] = [members[i][1] for i in r["member"]]
    r["width"] = int(width)
    return r


def width_order_parameters(spec: PhaseGridSpec, run: DLNRun, width: int) -> list[dict]:
    """One summary row per member of one width's ensemble (:func:`order_parameters`)."""
    rows = []
    for m, (g, s, sg) in enumerate(width_members(spec, width)):
        row = {"gamma": float(g), "width": int(width), "seed": int(s), "sigma": sg, "depth": spec.depth}
        row.update(order_parameters(run, m, slope_tol=spec.slope_tol, min_decades=spec.min_decades))
        rows.append(row)
    return rows


def run_gamma_width_grid(
    spec: PhaseGridSpec,
    data,
    *,
    progress: Callable[[str, float, float, int], None] | None = None,
    keep_records: bool = True,
) -> PhaseGridResult:
    """Integrate the whole ``gamma x width x seed`` grid in this process, one ensemble per width.

    **Arguments:**

    - `spec`: the grid.
    - `data`: the teacher data set.
    - `progress`: ``progress(label, t_done, t_max, n_active)`` after every chunk of every width.
    - `keep_records`: return every record (else only the summary).

    **Returns:** a :class:`PhaseGridResult` (summary: one row per member, see :func:`order_parameters`).
    """
    stats = linear_stats(data)
    spec = spec.validate(rank=stats.rank)
    rows, recs = [], []
    t0 = time.time()
    for w in spec.widths:
        w = int(w)
        cb = None
        if progress is not None:
            cb = lambda td, tm, na, w=w: progress(f"width {w}", td, tm, na)
        run = integrate_width(spec, data, w, stats=stats, progress=cb)
        rows.extend(width_order_parameters(spec, run, w))
        if keep_records:
            recs.append(width_records(spec, run, w))
    return PhaseGridResult(summary=pd.DataFrame(rows), records=pd.concat(recs, ignore_index=True) if recs else pd.DataFrame(),
                           spec=spec, seconds=time.time() - t0)


def width_slopes(summary: pd.DataFrame, column: str = "disp_abs") -> pd.DataFrame:
    """Per gamma: the least-squares slope of ``log column`` against ``log width`` (seed means)."""
    out = []
    for g, grp in summary.groupby("gamma"):
        m = grp.groupby("width")[column].apply(lambda v: float(np.exp(np.mean(np.log(np.asarray(v, np.float64))))))
        m = m[np.isfinite(m.values) & (m.values > 0)]
        if len(m) < 2:
            out.append({"gamma": g, "slope": float("nan")})
            continue
        slope = np.polyfit(np.log(m.index.values.astype(float)), np.log(m.values), 1)[0]
        out.append({"gamma": float(g), "slope": float(slope)})
    return pd.DataFrame(out)


def zero_crossing(gammas, slopes, level: float = 0.0) -> float:
    """First ``gamma`` where ``slopes`` rises through ``level`` (linear interpolation); NaN if none."""
    g = np.asarray(gammas, np.float64)
    s = np.asarray(slopes, np.float64) - level
    order = np.argsort(g)
    g, s = g[order], s[order]
    for i in range(len(g) - 1):
        if np.isfinite(s[i]) and np.isfinite(s[i + 1]) and s[i] < 0 <= s[i + 1]:
            return float(g[i] + (g[i + 1] - g[i]) * (-s[i]) / (s[i + 1] - s[i]))
    return float("nan")


def locate_transition(summary: pd.DataFrame, column: str = "disp_abs", level: float = 0.0) -> dict:
    """Where the width exponent of ``column`` crosses ``level``: over all widths and per width pair.

    For ``disp_abs`` the exponent is negative in the lazy phase (the displacement vanishes as the
    width grows) and reaches 0 at the transition; for ``t_escape_1`` it is ``-(1-gamma)(L-1)``
    (lazy: faster with width) and turns positive past it.
    """
    sl = width_slopes(summary, column)
    gc = zero_crossing(sl["gamma"], sl["slope"], level)
    widths = sorted(summary["width"].unique())
    pairs = []
    for a, b in zip(widths[:-1], widths[1:]):
        sub = summary[summary["width"].isin([a, b])]
        s2 = width_slopes(sub, column)
        pairs.append({"w_lo": int(a), "w_hi": int(b), "w_mid": float(math.sqrt(a * b)),
                      "gamma_c": zero_crossing(s2["gamma"], s2["slope"], level)})
    return {"column": column, "gamma_c": gc, "slopes": sl, "pairs": pd.DataFrame(pairs)}


# ---- escape times against the init scale ------------------------------------------------------------

def escape_sigmas(depth: int, sigmas=None) -> list[float]:
    """The init scales of the escape-time ensemble at ``depth``: ``sigmas`` or the defaults
    ``10^-2 .. 10^-6`` (depth 2) and ``0.04 / 2^j``, j = 0..4 (depth >= 3)."""
    if sigmas is None:
        sigmas = [10.0 ** -e for e in range(2, 7)] if depth == 2 else [0.04 / 2 ** j for j in range(5)]
    return [float(x) for x in sigmas]


def escape_config(depth: int, sigmas) -> IntegrateConfig:
    """The default integration of the escape-time ensemble: up to ``t = 60`` at depth 2,
    ``40 / sigma_min^(L-2)`` deeper, converged at ``1e-5`` of the first level."""
    tmax = 60.0 if depth == 2 else 40.0 / (min(sigmas) ** (depth - 2))
    return IntegrateConfig(t_max=tmax, loss_tol=1e-5, distance_every=0)


def integrate_escape_depth(data, depth: int, *, width: int = 16, sigmas=None, seed: int = 0,
                           config: IntegrateConfig | None = None, stats=None, progress=None) -> DLNRun:
    """Integrate the escape-time ensemble of one depth: every sigma of :func:`escape_sigmas`,
    all from the same unit-variance draw (``PRNGKey(seed)``), so only the scale changes.

    **Returns:** the :class:`~phaseprobe.dynamics.run.DLNRun` (member m has ``escape_sigmas(...)[m]``).
    """
    stats = linear_stats(data) if stats is None else stats
    sig = escape_sigmas(depth, sigmas)
    cfg = config or escape_config(depth, sig)
    keys = np.stack([np.asarray(jax.random.PRNGKey(seed))] * len(sig))
    model = dln_ensemble(stats.in_dim, stats.out_dim, depth, width, sig, keys)
    return integrate(model, data, cfg, progress=progress, stats=stats)


def escape_rows(run: DLNRun, depth: int, width: int, sigmas) -> list[dict]:
    """One row per (sigma, k) of one depth's ensemble: ``t_escape`` (loss halfway between the
    rank-(k-1) and rank-k levels) and ``s_k``."""
    stats = run.stats
    lv = stats.levels() - stats.e_min
    rows = []
    for m, sgm in enumerate(sigmas):
        df = run.member(m)
        esc = oracle_escape_times(df["t"].to_numpy(), np.maximum(df["excess_loss"].to_numpy(), 0.0), lv)
        for k, e in enumerate(esc, start=1):
            rows.append({"depth": depth, "width": width, "sigma": float(sgm), "k": k, "t_escape": float(e),
                         "s_k": float(stats.s_eff[k - 1])})
    return rows


def escape_scaling(data, *, depths=(2, 3), width: int = 16, sigmas: dict | None = None, seed: int = 0,
                   config: IntegrateConfig | None = None, progress=None) -> pd.DataFrame:
    """Oracle escape times for a range of init scales, all sigmas of a depth as one ensemble.

    The unit-variance draws are shared (one ``seed``), so ``theta_0 = sigma * theta_bar``: only
    the scale changes. Defaults: ``sigma = 10^-2 .. 10^-6`` at depth 2 (times grow like
    ``log(1/sigma) / s_k``), ``0.04 / 2^j`` at depth >= 3 (like ``sigma^-(L-2)``). Returns one row
    per (depth, sigma, k) with ``t_escape`` (loss halfway between the rank-(k-1) and rank-k levels).
    """
    stats = linear_stats(data)
    rows = []
    for L in depths:
        sig = escape_sigmas(L, None if sigmas is None else sigmas.get(L))
        cb = None if progress is None else (lambda td, tm, na, L=L: progress(f"depth {L}", td, tm, na))
        run = integrate_escape_depth(data, L, width=width, sigmas=sig, seed=seed, config=config, stats=stats, progress=cb)
        rows.extend(escape_rows(run, L, width, sig))
    return pd.DataFrame(rows)


def escape_fits(table: pd.DataFrame) -> pd.DataFrame:
    """Per (depth, k): depth 2 -- time per decade of 1/sigma vs ln(10)/s_k; depth >= 3 -- log-log slope vs -(L-2)."""
    out = []
    for (L, k), g in table.groupby(["depth", "k"]):
        g = g[np.isfinite(g["t_escape"])].sort_values("sigma")
        if len(g) < 2:
            continue
        s_k = float(g["s_k"].iloc[0])
        if L == 2:
            slope = float(np.polyfit(np.log10(1.0 / g["sigma"]), g["t_escape"], 1)[0])
            out.append({"depth": L, "k": k, "measure": "time per decade of 1/sigma", "measured": slope,
                        "theory": math.log(10) / s_k})
        else:
            slope = float(np.polyfit(np.log(g["sigma"]), np.log(g["t_escape"]), 1)[0])
            r = g["t_escape"].to_numpy()
            out.append({"depth": L, "k": k, "measure": "d log t / d log sigma", "measured": slope, "theory": -(L - 2.0),
                        "halving_ratio_last": float(r[0] / r[1]) if len(r) > 1 else float("nan")})
    return pd.DataFrame(out)
