"""Figures of deep-linear dynamics (matplotlib, Agg): one run, escape-time scaling, the phase diagram."""

from __future__ import annotations

from phaseprobe.store.run_store import save_figure

import math
from pathlib import Path
from typing import Sequence

import matplotlib
import matplotlib.ticker
import matplotlib.transforms

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

TIME_LABEL = "time  t = lr x steps  (log scale)"


def _edges(values: Sequence[float], log: bool = False) -> np.ndarray:
    v = np.asarray(sorted(values), np.float64)
    x = np.log(v) if log else v
    if len(x) == 1:
        e = np.array([x[0] - 0.5, x[0] + 0.5])
    else:
        mid = 0.5 * (x[1:] + x[:-1])
        e = np.concatenate([[x[0] - (mid[0] - x[0])], mid, [x[-1] + (x[-1] - mid[-1])]])
    return np.exp(e) if log else e


def plot_run(run, plateaus, path, *, member: int = 0, title: str | None = None):
    """``dln_saddle_to_saddle.png``: :func:`run_figure` saved at ``path``. **Returns:** the PNG's path."""
    fig = run_figure(run, plateaus, member=member, title=title)
    save_figure(fig, path, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def run_figure(run, plateaus, *, member: int = 0, title: str | None = None):
    """Loss with plateaus shaded and tagged ``P0``, ``P1``, ... (oracle saddle levels dashed) and
    the singular values of W_L...W_1 (teacher's dashed), over log time. Legends and the plateau
    list sit to the right of the axes, so they cover no data.

    **Arguments:**

    - `run`: a :class:`phaseprobe.dynamics.run.DLNRun`; `plateaus`: its member's plateaus.
    - `member`: which member; `title`: the figure's title.

    **Returns:** the matplotlib figure.
    """
    df = run.member(member)
    df = df[df["t"] > 0]
    t = df["t"].to_numpy()
    stats = run.stats
    levels = stats.levels()
    s_t = stats.s_eff[: stats.rank]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 8), sharex=True, gridspec_kw={"height_ratios": [1.15, 1]})
    fig.subplots_adjust(left=0.1, right=0.9, top=0.94, bottom=0.07, hspace=0.12)
    ax1.plot(t, df["loss"], color="k", lw=1.6, label="training loss")
    lo = max(float(df["loss"].min()), 1e-6 * float(levels[0]) if levels[0] > 0 else 1e-12)
    for k, lv in enumerate(levels):
        if lv <= 0 or lv < 0.5 * lo:  # below the axis: neither line nor label
            continue
        ax1.axhline(lv, color="tab:blue", ls="--", lw=0.8, alpha=0.7,
                    label="rank-k saddle levels 1/2 sum_(i>k) s_i^2" if k == 0 else None)
        ax1.text(t[-1], lv * 1.06, f"rank {k}: {lv:.3g}", fontsize=8, color="tab:blue", va="bottom", ha="right")
    lines = []
    for i, p in enumerate(plateaus):
        for ax in (ax1, ax2):
            ax.axvspan(p.t_start, p.t_end, color="tab:orange", alpha=0.18, lw=0, gid="plateau",
                       label="plateau (saddle visited)" if i == 0 and ax is ax1 else None)
        ax1.text(math.sqrt(p.t_start * p.t_end), p.level * 0.8, f"P{i}", ha="center", va="top", fontsize=9,
                 color="tab:red", fontweight="bold")
        line = f"P{i}: rank {p.rank}, loss {p.level:.4g} (oracle {p.oracle_level:.4g})"
        if p.certificate:
            c = p.certificate
            kind = {"strict_saddle": "strict saddle", "higher_order_saddle": "higher-order saddle"}.get(c["kind"], c["kind"])
            idx = (f"{c['index']} Hessian eigenvalues < -{c['hess_tol']:.2g}" if c.get("index", -1) >= 0
                   else "Hessian not computed")
            line += f"\n      {kind}: {idx}, escape order {c['escape_order']:.2f}"
        lines.append(line)
    if lines:
        ax1.text(1.02, 0.0, "\n".join(lines), transform=ax1.transAxes, fontsize=8, va="bottom", ha="left",
                 family="monospace", bbox=dict(boxstyle="round", fc="white", ec="0.7", alpha=0.9))
    ax1.set_yscale("log")
    ax1.set_ylabel("loss  E = mean 1/2 ||f(x) - y||^2  (log)")
    ax1.set_ylim(lo * 0.5, float(df["loss"].max()) * 3)
    ax1.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, fontsize=8)
    ax1.grid(alpha=0.25, which="both")
    svc = [c for c in df.columns if c.startswith("sv_")]
    cmap = plt.get_cmap("viridis")
    for i, c in enumerate(svc):
        ax2.plot(t, df[c], color=cmap(i / max(len(svc) - 1, 1)), lw=1.5, label=f"sigma_{i + 1}(W_L...W_1)")
    for i, s in enumerate(s_t):
        ax2.axhline(s, color="gray", ls="--", lw=0.8)
        ax2.text(1.005, s, f"s_{i + 1} = {s:.3g}", fontsize=8, va="center", color="gray",
                 transform=matplotlib.transforms.blended_transform_factory(ax2.transAxes, ax2.transData))
    ax2.set_xscale("log")
    ax2.set_xlabel(TIME_LABEL)
    ax2.set_ylabel("singular values of the end-to-end map")
    ax2.plot([], [], color="gray", ls="--", lw=0.8, label="teacher's singular values s_i")
    ax2.legend(loc="upper left", bbox_to_anchor=(1.12, 1.0), borderaxespad=0, fontsize=8, ncol=1)
    ax2.grid(alpha=0.25, which="both")
    fig.suptitle(title or f"deep linear net, depth {run.depth}, width {run.width}: saddle-to-saddle dynamics", fontsize=11)
    return fig


def plot_escape_scaling(table: pd.DataFrame, path, *, singular_values: Sequence[float]):
    """``dln_escape_times.png``: :func:`escape_scaling_figure` saved at ``path``. **Returns:** the PNG's path."""
    fig = escape_scaling_figure(table, singular_values=singular_values)
    save_figure(fig, path, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def escape_scaling_figure(table: pd.DataFrame, *, singular_values: Sequence[float]):
    """Escape time against the init scale: linear in log(1/sigma) at depth 2, ``sigma^-(L-2)`` at
    depth >= 3; each fit (dotted) named in the legend (below the panel) with its slope and the
    theory's.

    **Arguments:**

    - `table`: columns ``depth``, ``sigma``, ``k`` (which escape) and ``t_escape``.
    - `singular_values`: the teacher's singular values (the depth-2 slopes' theory).

    **Returns:** the matplotlib figure.
    """
    depths = sorted(table["depth"].unique())
    fig, axes = plt.subplots(1, len(depths), figsize=(5.6 * len(depths), 4.8))
    axes = np.atleast_1d(axes)
    for ax, L in zip(axes, depths):
        sub = table[table["depth"] == L]
        for k, g in sub.groupby("k"):
            g = g.sort_values("sigma")
            ax.plot(g["sigma"], g["t_escape"], "o-", label=f"escape {k} (to rank {k})")
            if L == 2:
                x = np.log(1.0 / g["sigma"].to_numpy())
                b = np.polyfit(x, g["t_escape"], 1)
                sk = singular_values[int(k) - 1]
                ax.plot(g["sigma"], np.polyval(b, x), ":", color="gray",
                        label=f"fit {k}: slope/decade {b[0] * math.log(10):.3f} (ln10/s_{k} = {math.log(10) / sk:.3f})")
            else:
                b = np.polyfit(np.log(g["sigma"]), np.log(g["t_escape"]), 1)
                ax.plot(g["sigma"], np.exp(np.polyval(b, np.log(g["sigma"]))), ":", color="gray",
                        label=f"fit {k}: log-log slope {b[0]:.3f} (theory {-(L - 2)})")
        ax.set_xscale("log")
        if L >= 3:
            ax.set_yscale("log")
            sv = sorted(sub["sigma"].unique())
            ax.set_xticks(sv)
            ax.set_xticklabels([f"{v:.3g}" for v in sv])
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("init scale sigma (log)")
        ax.set_ylabel("escape time  t = lr x steps" + (" (log)" if L >= 3 else ""))
        ax.set_title(f"depth {L}: " + ("t_esc ~ log(1/sigma)/s_k" if L == 2 else f"t_esc ~ sigma^-{L - 2}"))
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18))
    fig.set_layout_engine("constrained")
    return fig


def _heat(ax, summary, column, *, log=False, title="", cmap="viridis", fmt="{:.2g}", vmin=None, vmax=None):
    """Heat map over (gamma, width) with equal cells; the line gamma = 1 drawn where it falls."""
    piv = summary.groupby(["width", "gamma"])[column].mean().unstack("gamma")
    gam = np.asarray(piv.columns, np.float64)
    wid = np.asarray(piv.index, np.float64)
    Z = piv.to_numpy(np.float64)
    C = np.log10(np.where(Z > 0, Z, np.nan)) if log else Z
    m = ax.imshow(C, origin="lower", aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest",
                  extent=(-0.5, len(gam) - 0.5, -0.5, len(wid) - 0.5))
    finite = C[np.isfinite(C)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    cm = plt.get_cmap(cmap)
    for i in range(len(wid)):
        for j in range(len(gam)):
            if np.isfinite(Z[i, j]):
                frac = 0.5 if hi <= lo or not np.isfinite(C[i, j]) else (C[i, j] - lo) / (hi - lo)
                r, g, b, _ = cm(frac)
                col = "k" if 0.299 * r + 0.587 * g + 0.114 * b > 0.55 else "w"
                ax.text(j, i, fmt.format(Z[i, j]), ha="center", va="center", fontsize=8, color=col)
    ax.set_xticks(range(len(gam)))
    ax.set_xticklabels([f"{g:g}" for g in gam])
    ax.set_yticks(range(len(wid)))
    ax.set_yticklabels([str(int(w)) for w in wid])
    x1 = float(np.interp(1.0, gam, np.arange(len(gam)))) if gam.min() <= 1.0 <= gam.max() else None
    if x1 is not None:
        ax.axvline(x1, color="r", lw=2.0, ls="--", label="gamma = 1", gid="gamma = 1")
    ax.set_xlabel("gamma  (init variance sigma^2 = width^-gamma)")
    ax.set_ylabel("width")
    ax.set_title(title, fontsize=10)
    cb = plt.colorbar(m, ax=ax)
    cb.set_label(("log10 " if log else "") + column, fontsize=9)
    return m


def plot_phase(summary: pd.DataFrame, transitions: dict, path, *, depth: int | None = None):
    """``dln_phase_diagram.png``: :func:`phase_figure` saved at ``path``. **Returns:** the PNG's path."""
    fig = phase_figure(summary, transitions, depth=depth)
    save_figure(fig, path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def phase_figure(summary: pd.DataFrame, transitions: dict, *, depth: int | None = None):
    """Heat maps over gamma x width (the line gamma = 1 dashed red, each with a colour bar) and
    the width exponents with the located transition; every text at least 8 pt, legends and the
    per-width-pair transitions below the panels.

    **Arguments:**

    - `summary`: one row per (gamma, width, seed) with the order parameters.
    - `transitions`: an order-parameter column -> :func:`~phaseprobe.dynamics.phase.locate_transition`'s result.
    - `depth`: the networks' depth (for the title).

    **Returns:** the matplotlib figure.
    """
    fig, axes = plt.subplots(2, 3, figsize=(19, 11.5), layout="constrained")
    _heat(axes[0, 0], summary, "disp_abs", title="absolute displacement ||theta_end - theta_0||\n(order parameter: -> 0 with width iff lazy)")
    _heat(axes[0, 1], summary, "disp_rel", log=True, title="relative displacement ||theta_end - theta_0|| / ||theta_0||\n(log10)")
    _heat(axes[0, 2], summary, "n_plateaus", title="number of loss plateaus (saddles visited)", cmap="magma", fmt="{:.1f}")
    _heat(axes[1, 0], summary, "t_escape_1", log=True, title="first escape time (loss halfway to the rank-1 level)\n(log10, t = lr x steps)",
          cmap="cividis")
    ax = axes[1, 1]
    gam = sorted(summary["gamma"].unique())
    cmap = plt.get_cmap("coolwarm")
    for i, g in enumerate(gam):
        sub = summary[summary["gamma"] == g].groupby("width")["disp_abs"].mean()
        ax.plot(sub.index, sub.values, "o-", color=cmap(i / max(len(gam) - 1, 1)), label=f"gamma = {g:g}", ms=3.5)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("width (log2)")
    ax.set_ylabel("absolute displacement ||theta_end - theta_0|| (log)")
    ax.set_title("displacement vs width:\nfalls for gamma < 1 (lazy), flat for gamma > 1", fontsize=10)
    ax.legend(fontsize=8, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.16))
    ax.grid(alpha=0.3, which="both")
    ax = axes[1, 2]
    styles = {"disp_abs": ("o-", "width exponent of ||theta_end - theta_0||"), "t_escape_1": ("s-", "width exponent of the first escape time")}
    for col, tr in transitions.items():
        sty, lab = styles.get(col, ("^-", f"width exponent of {col}"))
        sl = tr["slopes"]
        ax.plot(sl["gamma"], sl["slope"], sty, label=f"{lab}: zero at gamma_c = {tr['gamma_c']:.3f}")
        if np.isfinite(tr["gamma_c"]):
            ax.axvline(tr["gamma_c"], color=ax.lines[-1].get_color(), lw=0.8, ls=":")
    ax.axhline(0, color="k", lw=0.8)
    ax.axvline(1.0, color="r", lw=1.8, ls="--", label="gamma = 1 (theory)")
    ax.set_xlabel("gamma")
    ax.set_ylabel("d log(order parameter) / d log(width)")
    txt = []
    for col, tr in transitions.items():
        pr = tr["pairs"]
        if len(pr):
            txt.append(f"{col}: gamma_c per width pair: " + ", ".join(
                f"{int(a)}-{int(b)}: {g:.2f}" for a, b, g in zip(pr["w_lo"], pr["w_hi"], pr["gamma_c"])))
    ax.set_title("locating the transition from the data", fontsize=10)
    ax.plot([], [], ls="", label="\n".join(txt)) if txt else None
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16))
    ax.grid(alpha=0.3)
    for a in (*axes[0], axes[1, 0]):  # the gamma = 1 line of each heat map, named
        if any(ln.get_gid() == "gamma = 1" for ln in a.get_lines()):
            a.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize=8)
    fig.suptitle(f"deep linear networks{'' if depth is None else f', depth {depth}'}: lazy (gamma < 1) vs saddle-to-saddle (gamma > 1)",
                 fontsize=12)
    fig.set_layout_engine("constrained")
    return fig
