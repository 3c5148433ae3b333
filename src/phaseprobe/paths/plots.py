"""Figures of paths and probes (matplotlib, Agg)."""

from __future__ import annotations

from phaseprobe.store.run_store import save_figure

from pathlib import Path
from typing import Sequence

import numpy as np

from phaseprobe import conventions
from phaseprobe.paths.metrics import PathEval
from phaseprobe.paths.probe import ProbeResult

STYLE = {"linear": ("tab:gray", "--"), "bezier": ("tab:blue", "-"), "probe": ("tab:orange", "-."),
         "probe+saddle": ("tab:red", "-")}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_paths(evals: Sequence[PathEval], path: str | Path, *, title: str = "paths between minima",
               class_names: Sequence[str] | None = None) -> Path:
    """Training error (top) and test accuracy (middle) along every path against the arc-length
    fraction; the bottom row shows per-class test accuracy along each method's path (first pair)."""
    plt = _plt()
    path = Path(path)
    methods = list(dict.fromkeys(e.method for e in evals))
    has_acc = any(np.isfinite(e.metrics.get("test_acc", np.array([np.nan]))).any() for e in evals)
    has_cls = any("test_class_acc" in e.metrics for e in evals)
    nrow = 1 + int(has_acc) + int(has_cls)
    ncol = max(1, len(methods)) if has_cls else 1
    fig = plt.figure(figsize=(max(9, 3.2 * ncol), 3.2 * nrow))
    gs = fig.add_gridspec(nrow, ncol)
    ax = fig.add_subplot(gs[0, :])
    ax2 = fig.add_subplot(gs[1, :], sharex=ax) if has_acc else None
    pairs = list(dict.fromkeys(e.pair for e in evals))
    for e in evals:
        col, ls = STYLE.get(e.method, ("k", "-"))
        alpha = 1.0 if e.pair == pairs[0] else 0.45
        lab = f"{e.method}: barrier {e.barrier:.3g}, {e.grad_evals:.3g} grad evals" if e.pair == pairs[0] else None
        ax.plot(e.t, e.train_error, ls, color=col, alpha=alpha, lw=1.6, label=lab)
        if e.method.startswith("probe") and len(e.vertex_t):
            ax.plot(e.vertex_t, np.interp(e.vertex_t, e.t, e.train_error), ".", color=col, ms=3, alpha=alpha)
        for name, tm in e.marks.items():
            ax.plot([tm], [np.interp(tm, e.t, e.train_error)], "x", color=col, ms=8, mew=2, alpha=alpha)
        if ax2 is not None:
            ax2.plot(e.t, e.metrics["test_acc"], ls, color=col, alpha=alpha, lw=1.4)
    ax.set_ylabel("training error E (mean CE)" if has_acc else "E")
    sub = f" ({len(pairs)} pairs; first pair bold)" if len(pairs) > 1 else ""
    ax.set_title(title + sub + "; x = saddle")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    if ax2 is not None:
        ax2.set_ylabel("test accuracy")
        ax2.set_xlabel("arc-length fraction along the path")
        ax2.grid(alpha=0.3)
    else:
        ax.set_xlabel("arc-length fraction along the path")
    if has_cls:
        for j, m in enumerate(methods):
            e = next((x for x in evals if x.method == m and x.pair == pairs[0]), None)
            if e is None:  # a method only some pairs have (probe+saddle): its first pair
                e = next((x for x in evals if x.method == m), None)
            axh = fig.add_subplot(gs[nrow - 1, j])
            if e is None or "test_class_acc" not in e.metrics:
                axh.axis("off")
                continue
            ca = np.asarray(e.metrics["test_class_acc"])
            tt = e.t
            im = axh.imshow(ca.T, aspect="auto", origin="lower", vmin=0, vmax=1, cmap="viridis",
                            extent=(tt[0], tt[-1], -0.5, ca.shape[1] - 0.5), interpolation="nearest")
            axh.set_title(f"{m}: per-class test acc" + (f"\n({e.pair})" if len(pairs) > 1 else ""), fontsize=9)
            axh.set_xlabel("arc fraction")
            if j == 0:
                axh.set_ylabel("class")
                if class_names is not None and len(class_names) == ca.shape[1]:
                    axh.set_yticks(range(ca.shape[1]))
                    axh.set_yticklabels([str(c)[:10] for c in class_names], fontsize=6)
        fig.colorbar(im, ax=fig.axes[-1], fraction=0.05)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path


def plot_probe(res: ProbeResult, path: str | Path, *, title: str = "L2 probe", class_names: Sequence[str] | None = None) -> Path:
    """Per strength: training error, regularised loss, distance to the reference, test accuracy
    (every member), the per-class test accuracy of member 0; bisected transitions as bands."""
    plt = _plt()
    path = Path(path)
    rec = res.records[res.records["phase"] == "probe"]
    has_cls = "class_acc_0" in rec.columns
    has_acc = np.isfinite(rec["test_acc"]).any()
    n = 3 + int(has_acc) + int(has_cls)
    fig, axes = plt.subplots(n, 1, figsize=(9, 2.3 * n), sharex=True)
    xlab = "strength  " + ("(L = E + beta*||w - w_ref||^2)" if res.convention == "l2" else "(L = E + beta/2*||w - w_ref||^2)")
    cols = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k in range(res.n_members):
        s = rec[rec["member"] == k].sort_values("index")
        c = cols[k % len(cols)]
        lab = res.labels[k] if res.labels else str(k)
        axes[0].plot(s["strength"], s["train_error"], ".-", color=c, ms=3, label=lab)
        axes[0].plot(s["strength"], s["train_error_running"], ":", color=c, lw=0.8)
        axes[1].plot(s["strength"], s["loss"], ".-", color=c, ms=3)
        axes[2].plot(s["strength"], s["dist"], ".-", color=c, ms=3)
        if has_acc:
            axes[3].plot(s["strength"], s["test_acc"], ".-", color=c, ms=3)
    for t in res.transitions:
        if t.confirmed is False:
            continue
        for ax in axes:
            ax.axvspan(t.strength_lo, t.strength_hi, color="tab:red", alpha=0.25)
            ax.axvline(t.strength_c, color="tab:red", lw=0.6, alpha=0.6)
    axes[0].set_ylabel("train error E")
    axes[0].legend(fontsize=7, title="member (dotted: epoch-mean)", title_fontsize=7)
    axes[1].set_ylabel("L = E + pen.")
    axes[2].set_ylabel("||w - w_ref||")
    if has_acc:
        axes[3].set_ylabel("test accuracy")
    if has_cls:
        s = rec[rec["member"] == 0].sort_values("index")
        cc = sorted([c for c in s.columns if c.startswith("class_acc_")], key=lambda c: int(c.split("_")[-1]))
        ca = s[cc].to_numpy()
        x = s["strength"].to_numpy()
        ax = axes[-1]
        edges = np.concatenate([[x[0] - 0.5 * (x[1] - x[0])], 0.5 * (x[1:] + x[:-1]), [x[-1] + 0.5 * (x[-1] - x[-2])]])
        ax.pcolormesh(edges, np.arange(len(cc) + 1) - 0.5, ca.T, vmin=0, vmax=1, cmap="viridis", shading="flat")
        ax.set_ylabel("class (member 0)")
        if class_names is not None and len(class_names) == len(cc):
            ax.set_yticks(range(len(cc)))
            ax.set_yticklabels([str(c)[:10] for c in class_names], fontsize=6)
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel(xlab)
    axes[0].set_title(title + " (red bands: bisected transitions)")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path


def plot_bezier_progress(history_rows, probe_barrier: float, probe_evals: float, path: str | Path, *, title: str = "") -> Path:
    """Barrier of the Bezier curve against its gradient evaluations, with the probe's point."""
    plt = _plt()
    path = Path(path)
    fig, ax = plt.subplots(figsize=(7, 4))
    g = np.array([r["grad_evals"] for r in history_rows], float)
    b = np.array([r["barrier"] for r in history_rows], float)
    ax.plot(g, b, "o-", color="tab:blue", label="Bezier (trained control point)")
    ax.plot([probe_evals], [probe_barrier], "*", color="tab:red", ms=14, label="L2 probe (+saddle)")
    ax.set_xscale("log")
    ax.set_xlabel("per-sample gradient evaluations")
    ax.set_ylabel("barrier (max E along path - mean of ends)")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path


def plot_toy_landscape(fn, paths: dict, path: str | Path, *, xlim=(-1.6, 1.6), ylim=(-0.8, 1.3), marks: dict | None = None,
                       title: str = "", levels=None, side_panel: Sequence[PathEval] | None = None) -> Path:
    """Contours of a 2-D error ``fn(x, y)`` (numpy-vectorised) with paths drawn on top.

    ``paths`` maps a name to an ``(m, 2)`` array of points; ``marks`` a name to a point (saddles).
    ``side_panel`` (optional) adds the error along each evaluated path."""
    plt = _plt()
    path = Path(path)
    ncol = 2 if side_panel else 1
    fig, axes = plt.subplots(1, ncol, figsize=(6.2 * ncol, 5))
    ax = axes[0] if ncol == 2 else axes
    xs = np.linspace(*xlim, 300)
    ys = np.linspace(*ylim, 300)
    X, Y = np.meshgrid(xs, ys)
    Z = fn(X, Y)
    lv = levels if levels is not None else np.concatenate([np.linspace(0, 1.0, 11)[1:], np.linspace(1.2, 4, 8)])
    cs = ax.contour(X, Y, Z, levels=lv, colors="0.6", linewidths=0.7)
    ax.clabel(cs, fontsize=6, fmt="%.1f")
    for name, pts in paths.items():
        col, ls = STYLE.get(name.split(" ")[0], ("k", "-"))
        pts = np.asarray(pts)
        ax.plot(pts[:, 0], pts[:, 1], ls, color=col, lw=1.8, label=name)
        if name.startswith("probe"):
            ax.plot(pts[:, 0], pts[:, 1], ".", color=col, ms=4)
    for name, p in (marks or {}).items():
        ax.plot([p[0]], [p[1]], "x", color="k", ms=10, mew=2)
        ax.annotate(name, (p[0], p[1]), textcoords="offset points", xytext=(6, 6), fontsize=8)
    ax.set_xlabel("w1")
    ax.set_ylabel("w2")
    ax.legend(fontsize=8, loc="lower center")
    ax.set_title(title, fontsize=10)
    if side_panel:
        ax2 = axes[1]
        for e in side_panel:
            col, ls = STYLE.get(e.method, ("k", "-"))
            ax2.plot(e.t, e.train_error, ls, color=col, label=f"{e.method}: barrier {e.barrier:.3g}")
        ax2.set_xlabel("arc-length fraction along the path")
        ax2.set_ylabel("E")
        ax2.grid(alpha=0.3)
        ax2.legend(fontsize=8)
        ax2.set_title("error along the paths")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path
