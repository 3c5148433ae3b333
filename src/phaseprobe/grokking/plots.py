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
    """Train (dashed) and test (solid) accuracy and ||w||^2 against log steps, one column per weight decay.

    The memorising phase of each member (from train fit to test fit, or to the end when it never
    generalises) is shaded in its colour.
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
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(f"weight decay {_wd_text(wd)}", fontsize=11)
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
    fig.tight_layout(rect=(0, 0, 1, 0.90))
    fig.legend(handles=handles, loc="upper center", ncol=min(len(handles), 6), fontsize=9, bbox_to_anchor=(0.5, 0.955))
    fig.suptitle(title, y=0.995, fontsize=12)
    save_figure(fig, out, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return Path(out)


def plot_delay(dtab: pd.DataFrame, out: str | Path, steps: int, title: str = "") -> Path:
    """Grokking delay against weight decay (left, a line per init scale) and init scale (right)."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.3))
    scales = sorted(dtab["init_scale"].unique())
    colors = _scale_colors(scales)
    d = dtab[dtab["weight_decay"] > 0]
    top = steps * 1.6
    for sc in scales:
        g = d[d["init_scale"] == sc].sort_values("weight_decay")
        ok = g[np.isfinite(g["delay"]) & (g["delay"] > 0)]
        a1.plot(ok["weight_decay"], ok["delay"], "o-", color=colors[sc], label=f"init scale x{sc:g}")
        if "delay_std" in ok and ok["delay_std"].notna().any():
            a1.errorbar(ok["weight_decay"], ok["delay"], yerr=ok["delay_std"].fillna(0), fmt="none", color=colors[sc], alpha=0.6)
        bad = g[~np.isfinite(g["delay"])]
        a1.plot(bad["weight_decay"], np.full(len(bad), top), "x", color=colors[sc], ms=9, mew=2)
    a1.axhline(top, color="k", lw=0.6, ls=":")
    notes = [f"x on the dotted line: did not grok within {steps} steps"]
    z = dtab[dtab["weight_decay"] == 0]
    if len(z):
        grok0 = [f"x{r.init_scale:g}: {r.delay:.0f}" for r in z.itertuples() if np.isfinite(r.delay)]
        msg = ("delay " + ", ".join(grok0)) if grok0 else "no grok at any init scale"
        notes.append(f"weight decay 0 (off the log axis): {msg}")
    a1.set_xscale("log")
    _ticks(a1, sorted(d["weight_decay"].unique()))
    a1.set_yscale("log")
    a1.set_xlabel(WD_LABEL)
    a1.set_ylabel("grokking delay  t_test - t_train  (steps)")
    a1.set_title("delay vs weight decay")
    a1.grid(alpha=0.3, which="both")
    a1.legend(fontsize=9, loc="lower left")
    wds = sorted(d["weight_decay"].unique())
    cmap = plt.get_cmap("plasma")
    for i, wd in enumerate(wds):
        g = d[d["weight_decay"] == wd].sort_values("init_scale")
        ok = g[np.isfinite(g["delay"]) & (g["delay"] > 0)]
        c = cmap(0.1 + 0.75 * i / max(len(wds) - 1, 1))
        a2.plot(ok["init_scale"], ok["delay"], "s-", color=c, label=f"weight decay {wd:g}")
        bad = g[~np.isfinite(g["delay"])]
        a2.plot(bad["init_scale"], np.full(len(bad), top), "x", color=c, ms=9, mew=2)
    a2.axhline(top, color="k", lw=0.6, ls=":")
    a2.set_xscale("log")
    _ticks(a2, scales)
    a2.set_yscale("log")
    a2.set_xlabel("init scale (multiplies every initial parameter)")
    a2.set_ylabel("grokking delay (steps)")
    a2.set_title("delay vs init scale")
    a2.grid(alpha=0.3, which="both")
    a2.legend(fontsize=9, loc="best")
    if len(scales) < 2:
        a2.text(0.5, 0.5, "one init scale on the grid", transform=a2.transAxes, ha="center")
    fig.suptitle(title, fontsize=12)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.text(0.01, 0.01, ";  ".join(notes), fontsize=9)
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
    """Final phase of every (weight decay, init scale) cell (seed 0), test accuracy and delay written in."""
    s = summary[summary["seed"] == summary["seed"].min()]
    wds = sorted(s["weight_decay"].unique())
    scales = sorted(s["init_scale"].unique())
    names = list(PHASE_COLORS)
    grid = np.full((len(scales), len(wds)), np.nan)
    fig, ax = plt.subplots(figsize=(1.5 * len(wds) + 2.5, 0.9 * len(scales) + 1.8))
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
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=4, fontsize=9)
    ax.set_title(title or f"phase after {steps} steps")
    fig.tight_layout()
    save_figure(fig, out, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return Path(out)


def plot_hysteresis(curves: pd.DataFrame, out: str | Path, steps_per_point: int, cold: pd.DataFrame | None = None,
                    cold_steps: int | None = None, title: str = "") -> Path:
    """Test (solid) and train (dashed) accuracy and ||w||^2 against weight decay on both warm
    branches, one column per loop; the phase of every point is a coloured square above."""
    loops = list(dict.fromkeys(curves["loop"])) if "loop" in curves.columns else [""]
    fig, axes = plt.subplots(2, len(loops), figsize=(6.6 * len(loops), 7.4), sharex="col", squeeze=False,
                             gridspec_kw={"height_ratios": [1.5, 1.0]})
    col = {"up": "#d62728", "down": "#1f77b4"}
    lab = {"up": "wd up (warm)", "down": "wd down (warm)"}
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
            ax.text(xmax * 1.35, yb, f"{b}", fontsize=8, va="center", color=col[b], clip_on=False)
        if cold is not None and len(cold):
            c = cold[(cold["weight_decay"] > 0) & (cold["weight_decay"] <= xmax * 1.001)].sort_values("weight_decay")
            ax.plot(c["weight_decay"], c["final_test_acc"], "k^", ms=7, alpha=0.7,
                    label=f"cold start, {cold_steps} steps: test")
        ax.set_xscale("log")
        ax.set_ylim(-0.03, 1.17)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="center left")
        ax.set_title(f"loop {loop}" if loop else "loop", fontsize=11, pad=22)
        axw.set_yscale("log")
        axw.set_xlabel(WD_LABEL + f"\n{steps_per_point} steps per point")
        axw.grid(alpha=0.3, which="both")
        if j == 0:
            ax.set_ylabel("accuracy at the end of each point")
            axw.set_ylabel("||w||^2")
    handles = [plt.Line2D([], [], ls="", marker="s", color=PHASE_COLORS[n], label=f"phase: {n}") for n in PHASE_COLORS]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=9, bbox_to_anchor=(0.5, -0.03))
    fig.suptitle(title or "warm-started weight-decay sweep", fontsize=12)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    save_figure(fig, out, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return Path(out)


def plot_geometry(geo: pd.DataFrame, out: str | Path, title: str = "") -> Path:
    """Extreme Hessian eigenvalues at each compared point (symlog): of the data error E (left)
    and of L = E + alpha ||w||^2 (right), with the saddle index, R and |grad| written above."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    pts = list(geo["point"])
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
        ax.set_xticks(range(len(pts)), [f"{p}\n(wd {w:g}, step {s})" for p, w, s in zip(pts, geo["weight_decay"], geo["step"])], fontsize=8)
        ax.set_xlim(-0.6, len(pts) - 0.4)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8, loc="best")
        ax.set_ylabel("Hessian eigenvalue of E (mean CE over train)" if which == "E"
                      else "Hessian eigenvalue of L = E + alpha ||w||^2")
        ax.set_title(f"data error E" if which == "E" else "regularised loss L (alpha = beta/2)", pad=62, fontsize=10)
    method = str(geo["method"].iloc[0])
    fig.suptitle((title + "  " if title else "") + f"[{method}; {int(geo['n_params'].iloc[0])} parameters; symlog axes]", fontsize=11)
    fig.tight_layout()
    save_figure(fig, out, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return Path(out)
