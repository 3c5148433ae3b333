"""Censored maximum-likelihood Arrhenius fit of first-passage times.

Each replica at temperature ``T_i`` either escaped at step ``t_i`` (event ``d_i = 1``) or was
still trapped when the budget ended at ``t_i`` (right-censored, ``d_i = 0``). For exponential
first-passage times of rate ``k(T) = A exp(-dF / T)`` the log-likelihood is::

    l(ln A, dF) = sum_i d_i (ln A - dF / T_i) - A sum_i t_i exp(-dF / T_i)

and ``ln tau = -ln k = dF / T + c`` with ``c = -ln A``. For fixed ``dF`` the best ``A`` is
``D / sum_i t_i exp(-dF / T_i)`` (``D`` the number of escapes), which gives the profile
likelihood of ``dF``; its 95 % interval is where ``2 (l_max - l_prof(dF)) <= 3.84``. Per
temperature, ``tau = exposure / escapes`` with the exact chi-square interval of a Poisson count.
Censored replicas enter through their exposure; they are never dropped.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import brentq, minimize_scalar
from scipy.stats import chi2

CHI2_95 = float(chi2.ppf(0.95, 1))


def _profile(dF: float, inv_t: np.ndarray, exposure: np.ndarray, events: np.ndarray) -> tuple[float, float]:
    """(profile log-likelihood, ln A at its maximum) for barrier ``dF``."""
    d = float(events.sum())
    # log of sum_i t_i exp(-dF/T_i), computed stably
    z = np.log(exposure) - dF * inv_t
    zmax = z.max()
    log_s = zmax + math.log(np.exp(z - zmax).sum())
    ln_a = math.log(d) - log_s
    return float(np.sum(events * (ln_a - dF * inv_t)) - d), ln_a


def fit_arrhenius(temperatures, exposure, escaped, level: float = 0.95) -> dict:
    """Fit ``ln tau = dF / T + c`` to right-censored first-passage times by maximum likelihood.

    **Arguments:**

    - `temperatures`: (n,) each replica's temperature.
    - `exposure`: (n,) its first-passage time if it escaped, else the budget (same units).
    - `escaped`: (n,) bool, whether it escaped within the budget.
    - `level`: the interval's coverage (profile likelihood).

    **Returns:** a dict with ``dF``, ``dF_lo``, ``dF_hi``, ``c`` (``ln tau`` intercept, in the
    exposure's units), ``log_likelihood``, ``events``, ``censored``.
    """
    inv_t = 1.0 / np.asarray(temperatures, np.float64)
    t = np.asarray(exposure, np.float64)
    d = np.asarray(escaped, bool).astype(np.float64)
    if d.sum() < 2:
        raise ValueError("fit_arrhenius: fewer than two escapes; raise the budget or the temperatures")
    span = 1.0 / (inv_t.max() - inv_t.min())
    scale = 50.0 * span * math.log(max(t.max() / max(t.min(), 1e-300), 10.0)) + 50.0 * span
    neg = lambda x: -_profile(x, inv_t, t, d)[0]  # noqa: E731
    lo_b, hi_b = -scale, scale
    best = minimize_scalar(neg, bounds=(lo_b, hi_b), method="bounded", options={"xatol": 1e-12 * scale})
    dF = float(best.x)
    lmax = -float(best.fun)
    cut = float(chi2.ppf(level, 1)) / 2.0
    g = lambda x: lmax - (-neg(x)) - cut  # noqa: E731
    lo = brentq(g, lo_b, dF) if g(lo_b) > 0 else -math.inf
    hi = brentq(g, dF, hi_b) if g(hi_b) > 0 else math.inf
    _, ln_a = _profile(dF, inv_t, t, d)
    return {"dF": dF, "dF_lo": float(lo), "dF_hi": float(hi), "c": -ln_a, "log_likelihood": lmax,
            "events": int(d.sum()), "censored": int((1 - d).sum()), "level": level}


def escape_time_table(records: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Per temperature: replicas, escapes, the censored fraction, the maximum-likelihood mean
    escape time ``tau = exposure / escapes`` (steps and Langevin time ``lr x steps``) with its
    exact Poisson interval, and the Kaplan-Meier median (NaN when fewer than half escaped)."""
    rows = []
    a = (1 - level) / 2
    for ti, g in records.groupby("temperature_index", sort=True):
        n, d = len(g), int(g["escaped"].sum())
        expo = float(g["exposure_steps"].sum())
        tau = expo / d if d else math.inf
        lo = 2 * expo / chi2.ppf(1 - a, 2 * d + 2)
        hi = 2 * expo / chi2.ppf(a, 2 * d) if d else math.inf
        fp = np.sort(g.loc[g["escaped"], "first_passage_step"].to_numpy())
        median = float(fp[(n + 1) // 2 - 1]) if len(fp) >= (n + 1) // 2 else math.nan
        lr = float(g["lr"].iloc[0])
        rows.append({"temperature_index": int(ti), "temperature": float(g["temperature"].iloc[0]),
                     "inv_temperature": 1.0 / float(g["temperature"].iloc[0]),
                     "barrier_ratio": float(g["barrier_ratio"].iloc[0]), "replicas": n, "escaped": d,
                     "censored_frac": 1 - d / n, "tau_steps": tau, "tau_lo": lo, "tau_hi": hi,
                     "tau_time": tau * lr, "median_steps": median, "budget_steps": int(g["steps_done"].max())})
    return pd.DataFrame(rows)


def budget_records(records: pd.DataFrame, piece: str | None = None) -> pd.DataFrame:
    """The replica rows at the end of ``piece`` (default: the longest budget stored)."""
    rec = records[records["piece"].astype(str).str.startswith("t")]
    if piece is None:
        piece = sorted(rec["piece"].unique())[-1]
    out = rec[rec["piece"] == piece].sort_values("member").reset_index(drop=True)
    # the run's records also hold the preparation's row (no replica columns): restore the dtypes
    return out.astype({"escaped": bool, "first_passage_step": np.int64, "exposure_steps": np.int64,
                       "member": np.int64, "temperature_index": np.int64, "replica": np.int64, "steps_done": np.int64})


def summarize_escape(run_dir, figures: bool = True) -> dict:
    """Tables (``escape_times.csv``, ``arrhenius.csv``) and figures of an escape run, from its store.

    ``arrhenius.csv`` puts the fitted ``dF`` next to the closed-form barrier and the barrier
    measured with the trainer's loss along the path from the trapped to the learned minimum
    (:func:`phaseprobe.escape.kind.measure_barrier`)."""
    from phaseprobe.escape.spec import make_escape_spec
    from phaseprobe.store import RunStore, save_frame_csv

    run_dir = Path(run_dir)
    store = RunStore(run_dir)
    spec = make_escape_spec(json.loads((run_dir / "spec.json").read_text())["spec"])
    records = store.load_records()
    rec = budget_records(records)
    times = escape_time_table(rec)
    barrier = spec.barrier()
    prep = records[records["piece"] == "prepare"]
    measured = float(prep["barrier_path_max"].iloc[0])
    try:
        fit = fit_arrhenius(rec["temperature"], rec["exposure_steps"], rec["escaped"])
    except ValueError:
        fit = {"dF": math.nan, "dF_lo": math.nan, "dF_hi": math.nan, "c": math.nan, "log_likelihood": math.nan,
               "events": int(rec["escaped"].sum()), "censored": int((~rec["escaped"]).sum()), "level": 0.95}
    arr = pd.DataFrame([{
        "dF_fit": fit["dF"], "dF_lo": fit["dF_lo"], "dF_hi": fit["dF_hi"], "c_ln_steps": fit["c"],
        "barrier_closed_form": barrier.barrier, "dF_over_barrier": fit["dF"] / barrier.barrier,
        "barrier_measured": measured, "learned_minus_trapped_loss": float(prep["learned_minus_trapped_loss"].iloc[0]),
        "escapes": fit["events"], "censored": fit["censored"], "budget_steps": int(rec["steps_done"].max()),
        "alpha": spec.alpha, "depth": spec.depth, "width": spec.width, "singular_value": spec.singular_value,
        "lr": spec.lr, "criterion": str(rec["criterion"].iloc[0]),
    }])
    save_frame_csv(times, run_dir / "escape_times.csv", index=False)
    save_frame_csv(arr, run_dir / "arrhenius.csv", index=False)
    out = {"escape_times": times, "arrhenius": arr, "fit": fit, "records": rec}
    if figures:
        from phaseprobe.escape.figures import arrhenius_figure, survival_figure

        out["figures"] = [survival_figure(rec, run_dir / "escape_survival.png"),
                          arrhenius_figure(times, fit, barrier.barrier, run_dir / "escape_arrhenius.png", spec=spec,
                                           measured=measured)]
    return out
