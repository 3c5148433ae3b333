"""Figures of a grokking run: accuracy and weight norm over log steps, the grokking delay
against weight decay and init scale, the phase map of the grid, the hysteresis loop of the
warm-started weight-decay sweep, and the Hessian extremes of plateau vs solution."""

from __future__ import annotations

from phaseprobe.store.run_store import save_figure

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap
from matplotlib.ticker import NullFormatter

PHASE_COLORS = {"underfit": "#bbbbbb", "memorising": "#d62728", "grokking": "#ff9f1c", "generalising": "#2ca02c"}
WD_LABEL = "weight decay beta  (AdamW decoupled; alpha = beta/2)"


def _scale_colors(scales):
    cmap = plt.get_cmap("viridis")
    scales = sorted(scales)
    n = len(scales)
    return {s: cmap(0.1 + 0.75 * (i / max(n - 1, 1))) for i, s in enumerate(scales)}


def _wd_text(wd: float) -> str:
    return "0" if wd == 0 else f"{wd:g}"


def plot_curves(df: pd.DataFrame, summary: pd.DataFrame, out: str | Path, title: str = "", seed: int | None = None) -> Path:
    """``grok_curves.png``: :func:`curves_figure` saved at ``out``. **Returns:** the PNG's path."""
    fig = curves_figure(df, summary, title, seed)
    save_figure(fig, out, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return Path(out)


def curves_figure(df: pd.DataFrame, summary: pd.DataFrame, title: str = "", seed: int | None = None):
    """Train (dashed) and test (solid) accuracy and ||w||^2 against log steps, one column per weight decay.

    The memorising phase of each member (from train fit to test fit, or to the end when it never
    generalises) is shaded in its colour.

    **Arguments:**

    - `df`: the grid's records; `summary`: its per-member summary (``t_train``, ``t_test``).
    - `title`: the figure's title; `seed`: which seed (default: the first).

    **Returns:** the matplotlib figure.
    """
    seed = int(df["seed"].min()) if seed is None else seed
    d = df[(df["seed"] == seed) & (df["step"] > 0)]
    s = summary[summary["seed"] == seed]
    wds = sorted(d["weight_decay"].unique())
    scales = sorted(d["init_scale"].unique())
    colors = _scale_colors(scales)
    fig, axes = plt.subplots(2, len(wds), figsize=(3.6 * len(wds) + 1.0, 6.4), sharex=True, squeeze=False,
                             gridspec_kw={"height_ratios": [1.6, 1.0]})
    for j, wd in enumerate(wds):
        ax, axw = axes[0, j], axes[1, j]
        for sc in scales:
            g = d[(d["weight_decay"] == wd) & (d["init_scale"] == sc)].sort_values("step")
            if g.empty:
                continue
            c = colors[sc]
            ax.plot(g["step"], g["test_acc"], "-", color=c, lw=1.8, label=f"init x{sc:g} test")
            ax.plot(g["step"], g["train_acc"], "--", color=c, lw=1.2, label=f"init x{sc:g} train")
            axw.plot(g["step"], g["w_sq"], "-", color=c, lw=1.5)
            r = s[(s["weight_decay"] == wd) & (s["init_scale"] == sc)]
            if len(r) and np.isfinite(r["t_train"].iloc[0]):
                t0 = r["t_train"].iloc[0]
                t1 = r["t_test"].iloc[0] if np.isfinite(r["t_test"].iloc[0]) else g["step"].max()
                if t1 > t0:
                    ax.axvspan(t0, t1, color=c, alpha=0.10, lw=0)
        ax.set_xscale("log")
        axw.set_xscale("log")
        axw.set_yscale("log")
        axw.yaxis.set_minor_formatter(NullFormatter())  # minor labels of a short log range collide
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(f"weight decay beta = {_wd_text(wd)}", fontsize=11)
        ax.grid(alpha=0.3)
        axw.grid(alpha=0.3, which="both")
        axw.set_xlabel("training step (log)")
        if j == 0:
            ax.set_ylabel("accuracy")
            axw.set_ylabel("||w||^2")
    handles = []
    for sc in scales:
        handles.append(plt.Line2D([], [], color=colors[sc], lw=1.8, label=f"init scale x{sc:g}"))
    handles += [plt.Line2D([], [], color="k", lw=1.8, ls="-", label="test accuracy"),
                plt.Line2D([], [], color="k", lw=1.2, ls="--", label="train accuracy"),
                plt.Rectangle((0, 0), 1, 1, color="k", alpha=0.12, label="memorising (train fit, test not)")]
    fig.tight_layout(rect=(0, 0, 1, 0.86))
    fig.legend(handles=handles, loc="upper center", ncol=min(len(handles), 4), fontsize=9, bbox_to_anchor=(0.5, 0.955))
    fig.suptitle(title, y=0.995, fontsize=12)
    return fig


def delay_figure(dtab: pd.DataFrame, steps: int, title: str = ""):
    """Grokking delay against weight decay (left, a line per init scale) and init scale (right).

    A member that did not grok within the budget has no delay: it is drawn as a censored marker
    (``^``, gid ``"did not grok"``) in a strip above each panel, labelled with the budget, never
    at a made-up delay. Legends sit below the panels (they cover no data).

    **Arguments:**

    - `dtab`: the delays table (``weight_decay``, ``init_scale``, ``delay``, ``delay_std``).
    - `steps`: the training budget (steps).
    - `title`: the figure's title.

    **Returns:** the matplotlib figure.
    """
    fig = plt.figure(figsize=(12, 5.6))
    gs = fig.add_gridspec(2, 2, height_ratios=[0.16, 1.0], hspace=0.05)
    a1, a2 = fig.add_subplot(gs[1, 0]), fig.add_subplot(gs[1, 1])
    s1, s2 = fig.add_subplot(gs[0, 0], sharex=a1), fig.add_subplot(gs[0, 1], sharex=a2)
    scales = sorted(dtab["init_scale"].unique())
    colors = _scale_colors(scales)
    d = dtab[dtab["weight_decay"] > 0]
    n_bad = 0
    for sc in scales:
        g = d[d["init_scale"] == sc].sort_values("weight_decay")
        ok = g[np.isfinite(g["delay"]) & (g["delay"] > 0)]
        a1.plot(ok["weight_decay"], ok["delay"], "o-", color=colors[sc], label=f"init scale x{sc:g}")
        if "delay_std" in ok and ok["delay_std"].notna().any():
            a1.errorbar(ok["weight_decay"], ok["delay"], yerr=ok["delay_std"].fillna(0), fmt="none", color=colors[sc], alpha=0.6)
        bad = g[~np.isfinite(g["delay"])]
        s1.plot(bad["weight_decay"], np.zeros(len(bad)), "^", color=colors[sc], ms=9, mew=1.5, gid="did not grok")
        n_bad += len(bad)
    wds = sorted(d["weight_decay"].unique())
    cmap = plt.get_cmap("plasma")
    for i, wd in enumerate(wds):
        g = d[d["weight_decay"] == wd].sort_values("init_scale")
        ok = g[np.isfinite(g["delay"]) & (g["delay"] > 0)]
        c = cmap(0.1 + 0.75 * i / max(len(wds) - 1, 1))
        a2.plot(ok["init_scale"], ok["delay"], "s-", color=c, label=f"beta = {wd:g}")
        bad = g[~np.isfinite(g["delay"])]
        s2.plot(bad["init_scale"], np.zeros(len(bad)), "^", color=c, ms=9, mew=1.5, gid="did not grok")
    censored = plt.Line2D([], [], ls="", marker="^", color="0.3", ms=9,
                          label=f"did not grok within {steps} steps (strip above; no delay)")
    for strip in (s1, s2):
        strip.set_ylim(-1, 1)
        strip.set_yticks([])
        strip.set_ylabel(f"no grok\nin {steps}", fontsize=8, rotation=0, ha="right", va="center")
        strip.tick_params(axis="x", labelbottom=False)
        strip.grid(alpha=0.3, axis="x")
    notes = []
    z = dtab[dtab["weight_decay"] == 0]
    if len(z):
        grok0 = [f"x{r.init_scale:g}: {r.delay:.0f}" for r in z.itertuples() if np.isfinite(r.delay)]
        msg = ("delay " + ", ".join(grok0)) if grok0 else "no grok at any init scale"
        notes.append(f"beta = 0 (off the log axis): {msg}")
    for ax, vals in ((a1, wds), (a2, scales)):
        ax.set_xscale("log")
        _ticks(ax, vals)
        if (ax.get_lines() and any(len(ln.get_xdata()) for ln in ax.get_lines())):
            ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
    a1.set_xlabel(WD_LABEL)
    a1.set_ylabel("grokking delay  t_test - t_train  (steps)")
    s1.set_title("delay vs weight decay beta")
    a2.set_xlabel("init scale (multiplies every initial parameter)")
    a2.set_ylabel("grokking delay (steps)")
    s2.set_title("delay vs init scale")
    for ax, head in ((a1, "init scale"), (a2, "weight decay")):
        h, lab = ax.get_legend_handles_labels()
        ax.legend(handles=h + ([censored] if n_bad else []), loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=8,
                  ncol=2, title=head, title_fontsize=8)
    if len(scales) < 2:
        a2.text(0.5, 0.5, "one init scale on the grid", transform=a2.transAxes, ha="center")
    fig.suptitle(title, fontsize=12)
    if notes:
        fig.supxlabel(";  ".join(notes), fontsize=9, x=0.01, ha="left")
    fig.set_layout_engine("constrained")
    return fig


def plot_delay(dtab: pd.DataFrame, out: str | Path, steps: int, title: str = "") -> Path:
    """``grok_delay.png``: :func:`delay_figure` saved at ``out``. **Returns:** the PNG's path."""
    fig = delay_figure(dtab, steps, title)
    save_figure(fig, out, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return Path(out)


def _ticks(ax, values) -> None:
    """Major ticks at the grid values (plain numbers), no minor tick labels on a log axis."""
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    vals = [v for v in values if v > 0]
    if not vals:
        return
    ax.xaxis.set_major_locator(FixedLocator(vals))
    ax.set_xticklabels([f"{v:g}" for v in vals])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    lo, hi = min(vals), max(vals)
    ax.set_xlim(lo / 1.5, hi * 1.5)


def plot_phase_map(summary: pd.DataFrame, out: str | Path, steps: int, title: str = "") -> Path:
    """``grok_phase.png``: :func:`phase_map_figure` saved at ``out``. **Returns:** the PNG's path."""
    fig = phase_map_figure(summary, steps, title)
    save_figure(fig, out, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return Path(out)


def phase_map_figure(summary: pd.DataFrame, steps: int, title: str = ""):
    """Final phase of every (weight decay, init scale) cell (first seed), test accuracy and delay
    written in; the colour is the phase (a category, named in the legend below the axes).

    **Returns:** the matplotlib figure.
    """
    s = summary[summary["seed"] == summary["seed"].min()]
    wds = sorted(s["weight_decay"].unique())
    scales = sorted(s["init_scale"].unique())
    names = list(PHASE_COLORS)
    grid = np.full((len(scales), len(wds)), np.nan)
    fig, ax = plt.subplots(figsize=(max(1.5 * len(wds) + 2.5, 6.5), 0.9 * len(scales) + 2.4))
    cmap = ListedColormap([PHASE_COLORS[n] for n in names])
    for r in s.itertuples(index=False):
        i, j = scales.index(r.init_scale), wds.index(r.weight_decay)
        grid[i, j] = names.index(r.final_phase)
    ax.imshow(grid, cmap=cmap, vmin=-0.5, vmax=len(names) - 0.5, aspect="auto", origin="lower")
    for r in s.itertuples(index=False):
        i, j = scales.index(r.init_scale), wds.index(r.weight_decay)
        delay = f"delay {r.delay:.0f}" if np.isfinite(r.delay) else "no grok"
        ax.text(j, i, f"test {r.final_test_acc:.2f}\n{delay}", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(wds)), [_wd_text(w) for w in wds])
    ax.set_yticks(range(len(scales)), [f"x{v:g}" for v in scales])
    ax.set_xlabel(WD_LABEL)
    ax.set_ylabel("init scale")
    handles = [plt.Rectangle((0, 0), 1, 1, color=PHASE_COLORS[n], label=n) for n in names]
    ax.set_title(title or f"phase after {steps} steps")
    fig.set_layout_engine("constrained")
    fig.legend(handles=handles, loc="outside lower center", ncol=4, fontsize=9, title="phase (colour)", title_fontsize=9)
    return fig


def plot_hysteresis(curves: pd.DataFrame, out: str | Path, steps_per_point: int, cold: pd.DataFrame | None = None,
                    cold_steps: int | None = None, title: str = "") -> Path:
    """``grok_hysteresis.png``: :func:`hysteresis_figure` saved at ``out``. **Returns:** the PNG's path."""
    fig = hysteresis_figure(curves, steps_per_point, cold, cold_steps, title)
    save_figure(fig, out, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return Path(out)


def hysteresis_figure(curves: pd.DataFrame, steps_per_point: int, cold: pd.DataFrame | None = None,
                      cold_steps: int | None = None, title: str = ""):
    """Test (solid) and train (dashed) accuracy and ||w||^2 against the weight decay beta on both
    warm branches, one column per loop; the phase of every point is a coloured square above (one
    row per branch, named at its left). Legends sit outside the axes.

    **Arguments:**

    - `curves`: the loop's points (``loop``, ``branch``, ``step_index``, ``weight_decay``,
      ``test_acc``, ``train_acc``, ``w_sq``, ``phase``).
    - `steps_per_point`: training steps at each point; `cold`, `cold_steps`: cold-start
      members to compare (optional).
    - `title`: the figure's title.

    **Returns:** the matplotlib figure.
    """
    loops = list(dict.fromkeys(curves["loop"])) if "loop" in curves.columns else [""]
    fig, axes = plt.subplots(2, len(loops), figsize=(6.6 * len(loops), 7.4), sharex="col", squeeze=False,
                             gridspec_kw={"height_ratios": [1.5, 1.0]})
    col = {"up": "#d62728", "down": "#1f77b4"}
    lab = {"up": "beta up (warm start)", "down": "beta down (warm start)"}
    for j, loop in enumerate(loops):
        ax, axw = axes[0, j], axes[1, j]
        cl = curves[curves["loop"] == loop] if loop else curves
        xmax = cl["weight_decay"].max()
        for b in ("up", "down"):
            g = cl[cl["branch"] == b].sort_values("step_index")
            if g.empty:
                continue
            x = g["weight_decay"].to_numpy()
            ax.plot(x, g["test_acc"], "o-", color=col[b], lw=1.8, label=f"{lab[b]}: test")
            ax.plot(x, g["train_acc"], "--", color=col[b], lw=1.1, alpha=0.8, label=f"{lab[b]}: train")
            axw.plot(x, g["w_sq"], "o-", color=col[b], lw=1.5, label=lab[b])
            for k in range(len(x) - 1):  # arrows along the walk
                y0, y1 = g["test_acc"].iloc[k], g["test_acc"].iloc[k + 1]
                ax.annotate("", xy=(np.sqrt(x[k] * x[k + 1]), (y0 + y1) / 2), xytext=(x[k], y0),
                            arrowprops=dict(arrowstyle="->", color=col[b], lw=0.8, alpha=0.7))
            yb = 1.07 if b == "up" else 1.13
            for xi, ph in zip(x, g["phase"]):
                ax.plot([xi], [yb], "s", color=PHASE_COLORS[ph], ms=8, clip_on=False, markeredgecolor=col[b], mew=0.8)
            ax.text(-0.01, yb, f"phase, {b}", fontsize=8, va="center", ha="right", color=col[b], clip_on=False,
                    transform=ax.get_yaxis_transform())
        if cold is not None and len(cold):
            c = cold[(cold["weight_decay"] > 0) & (cold["weight_decay"] <= xmax * 1.001)].sort_values("weight_decay")
            ax.plot(c["weight_decay"], c["final_test_acc"], "k^", ms=7, alpha=0.7,
                    label=f"cold start, {cold_steps} steps: test")
        ax.set_xscale("log")
        ax.set_ylim(-0.03, 1.17)
        ax.grid(alpha=0.3)
        if j == len(loops) - 1:
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        ax.set_title(f"loop {loop}" if loop else "loop", fontsize=11, pad=8)
        axw.set_yscale("log")
        axw.set_xlabel(WD_LABEL + f"\n{steps_per_point} steps per point")
        if j == len(loops) - 1:
            axw.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        axw.grid(alpha=0.3, which="both")
        if j == 0:
            ax.set_ylabel("accuracy at the end of each point", labelpad=58)
            axw.set_ylabel("||w||^2")
    handles = [plt.Line2D([], [], ls="", marker="s", color=PHASE_COLORS[n], label=f"phase: {n}") for n in PHASE_COLORS]
    fig.suptitle(title or "warm-started weight-decay sweep", fontsize=12)
    fig.set_layout_engine("constrained")
    fig.legend(handles=handles, loc="outside lower center", ncol=4, fontsize=9,
               title="squares above the accuracy panel: phase of each point", title_fontsize=9)
    return fig


def plot_geometry(geo: pd.DataFrame, out: str | Path, title: str = "") -> Path:
    """``grok_geometry.png``: :func:`geometry_figure` saved at ``out``. **Returns:** the PNG's path."""
    fig = geometry_figure(geo, title)
    save_figure(fig, out, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return Path(out)


def geometry_figure(geo: pd.DataFrame, title: str = ""):
    """Extreme Hessian eigenvalues at each compared point (symlog): of the data error E (left)
    and of L = E + alpha ||w||^2 (right), with the saddle index, R and |grad| written above each
    point's column (8 pt, the panel widened to the number of points so they do not touch).

    **Arguments:**

    - `geo`: the geometry table (one row per compared point).
    - `title`: the figure's title.

    **Returns:** the matplotlib figure.
    """
    pts = list(geo["point"])
    fig, axes = plt.subplots(1, 2, figsize=(2 * max(6.5, 2.5 * len(pts)), 6.2))
    for ax, which in zip(axes, ("E", "L")):
        for i, r in enumerate(geo.itertuples(index=False)):
            top = np.asarray(getattr(r, f"top_{which}"), float)
            bot = np.asarray(getattr(r, f"bottom_{which}"), float)
            if len(bot) >= r.n_params:  # the full spectrum (exact mode, lanczos_k >= n): every eigenvalue
                jit = np.random.default_rng(0).uniform(-0.18, 0.18, len(bot))
                ax.plot(i + jit, bot, ".", color="#555555", ms=2, alpha=0.35,
                        label=f"all eigenvalues of H_{which}" if i == 0 else None)
                top, bot = top[:5], bot[:5]
            ax.plot(np.full(len(top), i) + 0.08, top, "o", color="#1f77b4", ms=6, label=f"top eigenvalues of H_{which}" if i == 0 else None)
            res = np.asarray(getattr(r, f"bottom_{which}_residuals", ()), float)
            if res.size == bot.size and bot.size:  # Ritz values with their residual bars; hollow: sign not certified
                sure = np.abs(bot) > res
                ax.errorbar(np.full(len(bot), i) - 0.08, bot, yerr=res, fmt="none", ecolor="#d62728", elinewidth=0.8, capsize=2)
                ax.plot(np.full(int(sure.sum()), i) - 0.08, bot[sure], "v", color="#d62728", ms=6,
                        label=f"bottom Ritz values of H_{which} (bar: residual)" if i == 0 else None)
                ax.plot(np.full(int((~sure).sum()), i) - 0.08, bot[~sure], "v", mfc="none", color="#d62728", ms=6,
                        label=f"hollow: |Ritz value| < residual (sign not certified)" if i == 0 else None)
            else:
                ax.plot(np.full(len(bot), i) - 0.08, bot, "v", color="#d62728", ms=6, label=f"bottom eigenvalues of H_{which}" if i == 0 else None)
            bot = np.asarray(getattr(r, f"bottom_{which}"), float)
            R, se = getattr(r, f"R_{which}"), getattr(r, f"R_{which}_se")
            se_t = f" +- {se:.2g}" if se and np.isfinite(se) and se > 0 else ""
            if which == "E":
                txt = f"neg. eig. (< -{r.neg_eigs_E_tol:.2g}) {r.neg_eigs_E_label}\nR_E = {R:.3g}{se_t}\n|grad E| = {r.grad_norm_E:.2g}\ntest acc {r.test_acc:.2f}"
            else:
                txt = f"saddle index (< -{r.tol:.2g}) {r.saddle_index_L_label}\nR_L = {R:.3g}{se_t}\n|grad L| = {r.grad_norm_L:.2g}\nalpha = {r.alpha:g}"
            ax.text(i, 1.02, txt, transform=ax.get_xaxis_transform(), ha="center", va="bottom", fontsize=8)
        ax.set_yscale("symlog", linthresh=1e-4)
        ax.axhline(0, color="k", lw=0.7)
        ax.set_xticks(range(len(pts)), [f"{p}\n(beta {w:g}, step {s})" for p, w, s in zip(pts, geo["weight_decay"], geo["step"])], fontsize=8)
        ax.set_xlim(-0.6, len(pts) - 0.4)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
        ax.set_ylabel("Hessian eigenvalue of E (mean CE over train)" if which == "E"
                      else "Hessian eigenvalue of L = E + alpha ||w||^2")
        ax.set_title("data error E" if which == "E" else "regularised loss L (alpha = beta/2)", pad=70, fontsize=10)
    method = str(geo["method"].iloc[0])
    fig.suptitle((title + "  " if title else "") + f"[{method}; {int(geo['n_params'].iloc[0])} parameters; symlog axes]", fontsize=11)
    fig.set_layout_engine("constrained")
    return fig
