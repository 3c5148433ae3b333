"""Figures of an escape run: survival curves per temperature, ``ln tau`` against ``1/T``."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from phaseprobe.store import save_figure  # noqa: E402


def survival_figure(rec, path):
    """``escape_survival.png``: :func:`survival_plot` saved at ``path``. **Returns:** the PNG's path."""
    fig = survival_plot(rec)
    out = save_figure(fig, path, bbox_inches="tight")
    plt.close(fig)
    return out


def survival_plot(rec):
    """Kaplan-Meier survival (fraction still trapped) against steps, one curve per temperature
    (colour = temperature, each named in the legend to the right of the axes); replicas that did
    not escape are censored at the budget, marked by a dotted line.

    **Arguments:**

    - `rec`: the escape records (``temperature_index``, ``temperature``, ``barrier_ratio``,
      ``escaped``, ``first_passage_step``, ``steps_done``).

    **Returns:** the matplotlib figure.
    """
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    budget = int(rec["steps_done"].max())
    cmap = plt.get_cmap("plasma")
    groups = list(rec.groupby("temperature_index", sort=True))
    for j, (_, g) in enumerate(groups):
        n = len(g)
        fp = np.sort(g.loc[g["escaped"], "first_passage_step"].to_numpy())
        t = np.concatenate([[0], fp, [budget]])
        s = np.concatenate([[1.0], 1.0 - np.arange(1, len(fp) + 1) / n, [1.0 - len(fp) / n]])
        T = float(g["temperature"].iloc[0])
        ax.step(t, s, where="post", color=cmap(0.85 * j / max(len(groups) - 1, 1)),
                label=f"T = {T:.3g} (dV/T = {g['barrier_ratio'].iloc[0]:.2g}), {len(fp)}/{n} escaped")
    ax.set_xlabel("Langevin steps")
    ax.set_ylabel("fraction still trapped (rank 0)")
    ax.set_yscale("log")
    ax.axvline(budget, color="0.4", ls=":", lw=1.2, label=f"budget: {budget} steps (censored after)")
    ax.set_title("survival in the metastable rank-0 phase\n(censored at the budget)", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0,
              title="temperature T (barrier dV / T)", title_fontsize=8)
    fig.tight_layout()
    return fig


def arrhenius_figure(times, fit, barrier, path, spec=None, measured=None):
    """``escape_arrhenius.png``: :func:`arrhenius_plot` saved at ``path``. **Returns:** the PNG's path."""
    fig = arrhenius_plot(times, fit, barrier, spec=spec, measured=measured)
    out = save_figure(fig, path, bbox_inches="tight")
    plt.close(fig)
    return out


def arrhenius_plot(times, fit, barrier, spec=None, measured=None):
    """``ln tau`` (steps) against ``1/T``: per-temperature estimates with intervals (a temperature
    where no replica escaped as its lower bound, ``^``), the censored maximum-likelihood line and
    the closed-form barrier's slope through the same mean; the legend below the axes.

    **Arguments:**

    - `times`: the per-temperature escape table; `fit`: the censored fit (``dF``, ``dF_lo``,
      ``dF_hi``, ``c``); `barrier`: the closed-form barrier dV.
    - `spec`: the escape spec (for the title); `measured`: the barrier measured on the loss path.

    **Returns:** the matplotlib figure.
    """
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    x = times["inv_temperature"].to_numpy()
    y = np.log(times["tau_steps"].to_numpy())
    lo = np.log(times["tau_lo"].to_numpy())
    hi = np.log(times["tau_hi"].to_numpy())
    ok = np.isfinite(y)
    ax.errorbar(x[ok], y[ok], yerr=[y[ok] - lo[ok], np.where(np.isfinite(hi[ok]), hi[ok] - y[ok], 0)], fmt="o",
                color="k", label="tau = exposure / escapes (95 % Poisson interval)")
    if (~ok).any():  # no replica escaped: only a lower bound on tau is known
        ax.plot(x[~ok], lo[~ok], "^", color="0.4", label="no escape within the budget: tau >= (95 % lower bound)")
    xs = np.linspace(x.min() * 0.95, x.max() * 1.05, 50)
    if np.isfinite(fit["dF"]):
        ax.plot(xs, fit["dF"] * xs + fit["c"], "C0-",
                label=f"censored ML fit: dF = {fit['dF']:.4g} [{fit['dF_lo']:.4g}, {fit['dF_hi']:.4g}]")
        c_b = np.mean(fit["dF"] * x + fit["c"]) - barrier * np.mean(x)
        extra = "" if measured is None else f"; on the loss path {measured:.4g}"
        ax.plot(xs, barrier * xs + c_b, "C3--", label=f"barrier prediction: closed form dV = {barrier:.4g}{extra}")
    ax.set_xlabel("1 / T   (T of w <- w - lr grad L + sqrt(2 lr T) xi)")
    ax.set_ylabel("ln tau   (tau in Langevin steps)")
    span = np.exp(np.nanmax(y[ok]) - np.nanmin(y[ok])) if ok.sum() > 1 else 1.0
    title = f"Arrhenius: escape times span x{span:.0f}"
    if spec is not None:
        title += f" (depth {spec.depth}, alpha {spec.alpha:g}, s {spec.singular_value:g})"
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16))
    fig.set_layout_engine("constrained")
    return fig
