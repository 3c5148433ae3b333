"""Figures of an MLP escape run (``phaseprobe escape --system mlp``) and of the grokking-delay
study: survival per noise level and ``ln tau`` against ``1/T`` with the censored fit."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from phaseprobe.store import save_figure  # noqa: E402


def level_survival_plot(rec, *, title: str, level_label: str, time_col: str = "first_passage_step",
                        budget_col: str = "steps_done", xlabel: str = "steps", ylabel: str = "fraction still trapped"):
    """Fraction of replicas not yet escaped against time, one curve per noise level (censored at the budget).

    **Arguments:**

    - `rec`: one row per replica with ``temperature_index``, ``temperature``, ``escaped`` and the
      time and budget columns named by `time_col` and `budget_col`.
    - `title`, `level_label` (what the noise level is called), `xlabel`, `ylabel`.

    **Returns:** the matplotlib figure.
    """
    fig, ax = plt.subplots(figsize=(6.6, 4.2))
    budget = float(rec[budget_col].max())
    cmap = plt.get_cmap("plasma")
    groups = list(rec.groupby("temperature_index", sort=True))
    for j, (_, g) in enumerate(groups):
        n = len(g)
        fp = np.sort(g.loc[g["escaped"], time_col].to_numpy(np.float64))
        t = np.concatenate([[0], fp, [float(g[budget_col].max())]])  # each level to its own budget
        s = np.concatenate([[1.0], 1.0 - np.arange(1, len(fp) + 1) / n, [1.0 - len(fp) / n]])
        ax.step(t, np.maximum(s, 0.5 / n), where="post", color=cmap(0.85 * j / max(len(groups) - 1, 1)),
                label=f"{level_label} = {float(g['temperature'].iloc[0]):.3g}: {len(fp)}/{n} escaped")
    ax.axvline(budget, color="0.4", ls=":", lw=1.2, label=f"longest budget {budget:.0f} (censored after)")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    fig.tight_layout()
    return fig


def level_arrhenius_plot(times, fit, *, title: str, xlabel: str, ylabel: str, barrier: float | None = None,
                         barrier_label: str = ""):
    """``ln tau`` against ``1/T``: per-level maximum-likelihood ``tau`` (``tau``, ``tau_lo``,
    ``tau_hi`` columns, in the fit's units) with 95 % intervals, lower bounds where none escaped,
    the censored fit and, if given, a line of slope ``barrier`` through the same mean.

    **Returns:** the matplotlib figure.
    """
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    x = 1.0 / times["temperature"].to_numpy(np.float64)
    y = np.log(times["tau"].to_numpy(np.float64))
    lo = np.log(times["tau_lo"].to_numpy(np.float64))
    hi = np.log(times["tau_hi"].to_numpy(np.float64))
    ok = np.isfinite(y)
    ax.errorbar(x[ok], y[ok], yerr=[y[ok] - lo[ok], np.where(np.isfinite(hi[ok]), hi[ok] - y[ok], 0)], fmt="o", color="k",
                label="tau = exposure / escapes (95 % Poisson interval)")
    if (~ok).any():
        ax.plot(x[~ok], lo[~ok], "^", color="0.4", label="no escape within the budget: tau >= (95 % lower bound)")
    xs = np.linspace(x.min() * 0.95, x.max() * 1.05, 50)
    if np.isfinite(fit.get("dF", np.nan)):
        ax.plot(xs, fit["dF"] * xs + fit["c"], "C0-",
                label=f"censored ML fit: slope dF = {fit['dF']:.4g} [{fit['dF_lo']:.4g}, {fit['dF_hi']:.4g}]")
        if barrier is not None and np.isfinite(barrier):
            c_b = np.mean(fit["dF"] * x + fit["c"]) - barrier * np.mean(x)
            ax.plot(xs, barrier * xs + c_b, "C3--", label=f"slope = {barrier_label}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if ok.sum() > 1:
        sub = f"measured times span x{np.exp(np.nanmax(y[ok]) - np.nanmin(y[ok])):.1f}"
    else:
        sub = "no escapes at two or more levels: no fit; lower bounds only" if ok.sum() == 0 else "escapes at one level only: no fit"
    ax.set_title(f"{title}\n({sub})", fontsize=9)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16))
    fig.set_layout_engine("constrained")
    return fig


def save(fig, path):
    """Save ``fig`` atomically at ``path`` and close it. **Returns:** the path."""
    out = save_figure(fig, path, bbox_inches="tight")
    plt.close(fig)
    return out
