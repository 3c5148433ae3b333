"""Figures of paths and probes (matplotlib, Agg)."""

from __future__ import annotations

from phaseprobe.store.run_store import save_figure

from pathlib import Path
from typing import Sequence

import numpy as np

from phaseprobe import conventions
from phaseprobe.paths.metrics import PathEval
from phaseprobe.paths.probe import ProbeResult
from phaseprobe.plots.tables import fmt_num

STYLE = {"linear": ("tab:gray", "--"), "bezier": ("tab:blue", "-"), "probe": ("tab:orange", "-."),
         "probe+saddle": ("tab:red", "-")}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _legend_outside(ax, **kw):
    """A legend to the right of ``ax``, outside it (it covers no data)."""
    if ax.get_legend_handles_labels()[0] or kw.get("handles"):
        return ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, fontsize=8, title_fontsize=8, **kw)
    return None


def _class_rows(ax, n: int, class_names: Sequence[str] | None) -> None:
    """Class names (else indices) on a heat map's rows."""
    ax.set_yticks(range(n))
    names = list(class_names) if class_names is not None and len(class_names) == n else [str(i) for i in range(n)]
    ax.set_yticklabels([str(c)[:12] for c in names], fontsize=8 if n <= 12 else 7)


def paths_figure(evals: Sequence[PathEval], *, title: str = "paths between minima",
                 class_names: Sequence[str] | None = None):
    """Training error (top) and test accuracy (middle) along every path against the arc-length
    fraction; the bottom row shows per-class test accuracy along each method's path (first pair).

    A saddle refined at a jump of the probe is drawn as an ``x`` on its path (artists with gid
    ``"saddle"``); the legend and title name it only when the run refined one.

    **Arguments:**

    - `evals`: the densely evaluated paths (every method, every pair).
    - `title`: the figure's title.
    - `class_names`: one name per class (default: indices).

    **Returns:** the matplotlib figure.
    """
    plt = _plt()
    methods = list(dict.fromkeys(e.method for e in evals))
    has_acc = any(np.isfinite(e.metrics.get("test_acc", np.array([np.nan]))).any() for e in evals)
    has_cls = any("test_class_acc" in e.metrics for e in evals)
    nrow = 1 + int(has_acc) + int(has_cls)
    ncol = max(1, len(methods)) if has_cls else 1
    fig = plt.figure(figsize=(max(11, 3.6 * ncol + 2.5), 3.3 * nrow + 0.4), layout="constrained")
    gs = fig.add_gridspec(nrow, ncol)
    ax = fig.add_subplot(gs[0, :])
    ax2 = fig.add_subplot(gs[1, :], sharex=ax) if has_acc else None
    pairs = list(dict.fromkeys(e.pair for e in evals))
    n_saddles = 0
    for e in evals:
        col, ls = STYLE.get(e.method, ("k", "-"))
        alpha = 1.0 if e.pair == pairs[0] else 0.45
        lab = f"{e.method}: barrier {e.barrier:.3g}, {e.grad_evals:.3g} grad evals" if e.pair == pairs[0] else None
        ax.plot(e.t, e.train_error, ls, color=col, alpha=alpha, lw=1.6, label=lab)
        if e.method.startswith("probe") and len(e.vertex_t):
            ax.plot(e.vertex_t, np.interp(e.vertex_t, e.t, e.train_error), ".", color=col, ms=3, alpha=alpha)
        for name, tm in e.marks.items():
            ax.plot([tm], [np.interp(tm, e.t, e.train_error)], "x", color=col, ms=9, mew=2, alpha=alpha, gid="saddle",
                    label=None if n_saddles else "x: saddle refined at a probe jump")
            n_saddles += 1
        if ax2 is not None:
            ax2.plot(e.t, e.metrics["test_acc"], ls, color=col, alpha=alpha, lw=1.4,
                     label=e.method if e.pair == pairs[0] else None)
    ax.set_ylabel("training error E (mean CE)" if has_acc else "E")
    sub = f" ({len(pairs)} pairs; first pair bold)" if len(pairs) > 1 else ""
    ax.set_title(title + sub + ("; x = saddle" if n_saddles else "; no saddle refined"))
    _legend_outside(ax, title="paths (first pair)")
    ax.grid(alpha=0.3)
    if ax2 is not None:
        ax2.set_ylabel("test accuracy")
        ax2.set_xlabel("arc-length fraction along the path")
        ax2.grid(alpha=0.3)
        plt.setp(ax.get_xticklabels(), visible=False)
    else:
        ax.set_xlabel("arc-length fraction along the path")
    if has_cls:
        im = None
        heat_axes = []
        for j, m in enumerate(methods):
            e = next((x for x in evals if x.method == m and x.pair == pairs[0]), None)
            if e is None:  # a method only some pairs have (probe+saddle): its first pair
                e = next((x for x in evals if x.method == m), None)
            axh = fig.add_subplot(gs[nrow - 1, j])
            if e is None or "test_class_acc" not in e.metrics:
                axh.axis("off")
                continue
            heat_axes.append(axh)
            ca = np.asarray(e.metrics["test_class_acc"])
            tt = e.t
            im = axh.imshow(ca.T, aspect="auto", origin="lower", vmin=0, vmax=1, cmap="viridis",
                            extent=(tt[0], tt[-1], -0.5, ca.shape[1] - 0.5), interpolation="nearest")
            axh.set_title(f"{m}" + (f" ({e.pair})" if len(pairs) > 1 else ""), fontsize=9)
            axh.set_xlabel("arc fraction", fontsize=9)
            if j == 0:
                axh.set_ylabel("class")
                _class_rows(axh, ca.shape[1], class_names)
            else:
                axh.set_yticks([])
        if im is not None:
            fig.colorbar(im, ax=heat_axes[-1], fraction=0.08, pad=0.03).set_label("per-class test accuracy\n(recall)", fontsize=8)
    return fig


def plot_paths(evals: Sequence[PathEval], path: str | Path, *, title: str = "paths between minima",
               class_names: Sequence[str] | None = None) -> Path:
    """``paths.png``: :func:`paths_figure` saved at ``path``. **Returns:** the PNG's path."""
    plt = _plt()
    path = Path(path)
    fig = paths_figure(evals, title=title, class_names=class_names)
    save_figure(fig, path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _probe_strength_label(convention: str) -> str:
    s = "alpha" if convention == "l2" else "beta"
    return f"{s}  (L = E + {s}*||w - w_ref||^2)" if convention == "l2" else f"{s}  (L = E + {s}/2*||w - w_ref||^2)"


def probe_figure(res: ProbeResult, *, title: str = "L2 probe", class_names: Sequence[str] | None = None):
    """Per strength: training error, regularised loss, distance to the reference, test accuracy
    (every member), the per-class test accuracy of member 0 (with a colour bar); every jump the
    probe found as a line tagged ``J1``, ``J2``, ... above the top panel, with its bracket as a
    band: red when bisected (gid ``"bisected transition"``, the legend gives the steps), orange
    when only the grid brackets it, grey hatched when the retraining check did not confirm it.

    **Arguments:**

    - `res`: the probe's result (records, transitions).
    - `title`: the figure's title.
    - `class_names`: one name per class (default: indices).

    **Returns:** the matplotlib figure.
    """
    from phaseprobe.plots.sweep_plots import _place_tags

    plt = _plt()
    rec = res.records[res.records["phase"] == "probe"]
    has_cls = "class_acc_0" in rec.columns
    has_acc = np.isfinite(rec["test_acc"]).any()
    n = 3 + int(has_acc) + int(has_cls)
    fig, axes = plt.subplots(n, 1, figsize=(13, 2.3 * n + 0.6), sharex=True)
    s_name = "alpha" if res.convention == "l2" else "beta"
    cols = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k in range(res.n_members):
        s = rec[rec["member"] == k].sort_values("index")
        c = cols[k % len(cols)]
        lab = res.labels[k] if res.labels else str(k)
        axes[0].plot(s["strength"], s["train_error"], ".-", color=c, ms=3, label=f"member {lab}")
        axes[0].plot(s["strength"], s["train_error_running"], ":", color=c, lw=0.8)
        axes[1].plot(s["strength"], s["loss"], ".-", color=c, ms=3)
        axes[2].plot(s["strength"], s["dist"], ".-", color=c, ms=3)
        if has_acc:
            axes[3].plot(s["strength"], s["test_acc"], ".-", color=c, ms=3)
    tags: list = []
    kinds = {"bisected": ("tab:red", None, "bisected transition"), "grid": ("tab:orange", None, "grid-bracketed jump"),
             "unconfirmed": ("0.5", "//", "unconfirmed jump")}
    handles = []
    for j, t in enumerate(sorted(res.transitions, key=lambda t: (t.strength_c, t.member)), start=1):
        kind = "unconfirmed" if t.confirmed is False else "bisected" if t.bisect_steps > 0 else "grid"
        color, hatch, gid = kinds[kind]
        lab = res.labels[t.member] if res.labels and t.member < len(res.labels) else str(t.member)
        how = {"bisected": f"bisected, {t.bisect_steps} steps", "grid": "grid bracket, not bisected",
               "unconfirmed": "not confirmed by retraining"}[kind]
        text = (f"J{j}: member {lab}, {s_name}_c = {t.strength_c:.4g} in [{t.strength_lo:.4g}, {t.strength_hi:.4g}] ({how})")
        for i, ax in enumerate(axes):
            ax.axvspan(t.strength_lo, t.strength_hi, color=color, alpha=0.25 if hatch is None else 0.12, hatch=hatch,
                       lw=0, gid=gid)
            ax.axvline(t.strength_c, color=color, lw=1.0, alpha=0.8, ls="-" if kind != "unconfirmed" else "--",
                       gid=gid, label=text if i == 0 else None)
        tags.append((axes[0], t.strength_c, f"J{j}", color))
    axes[0].set_ylabel("train error E")
    axes[1].set_ylabel("L = E + penalty")
    axes[2].set_ylabel("||w - w_ref||")
    if has_acc:
        axes[3].set_ylabel("test accuracy")
    _legend_outside(axes[0], title="members (dotted: epoch mean of E)\nJ1, J2, ...: jumps (line: centre, band: bracket)")
    if has_cls:
        s = rec[rec["member"] == 0].sort_values("index")
        cc = sorted([c for c in s.columns if c.startswith("class_acc_")], key=lambda c: int(c.split("_")[-1]))
        ca = s[cc].to_numpy()
        x = s["strength"].to_numpy()
        ax = axes[-1]
        if len(x) > 1:
            edges = np.concatenate([[x[0] - 0.5 * (x[1] - x[0])], 0.5 * (x[1:] + x[:-1]), [x[-1] + 0.5 * (x[-1] - x[-2])]])
        else:
            edges = np.array([x[0] - 0.5, x[0] + 0.5])
        im = ax.pcolormesh(edges, np.arange(len(cc) + 1) - 0.5, ca.T, vmin=0, vmax=1, cmap="viridis", shading="flat")
        ax.set_ylabel("class (member 0)")
        _class_rows(ax, len(cc), class_names)
        cax = ax.inset_axes([1.01, 0.0, 0.015, 1.0])
        fig.colorbar(im, cax=cax).set_label("per-class test\naccuracy (recall)", fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel(_probe_strength_label(res.convention))
    axes[0].set_title(title, pad=24)
    fig.tight_layout()
    _place_tags(fig, tags)
    return fig


def plot_probe(res: ProbeResult, path: str | Path, *, title: str = "L2 probe", class_names: Sequence[str] | None = None) -> Path:
    """``probe.png``: :func:`probe_figure` saved at ``path``. **Returns:** the PNG's path."""
    plt = _plt()
    path = Path(path)
    fig = probe_figure(res, title=title, class_names=class_names)
    save_figure(fig, path, dpi=110, bbox_inches="tight")
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


def basin_graph_figure(graph, *, title: str = "basin hierarchy"):
    """The basin graph drawn by hand: one level per basin height (best test accuracy, top first;
    basins of equal height side by side); arrows are the probe's jumps, labelled with the
    transition strength (named by the run's convention); a saddle refined between two basins is
    drawn as an ``x`` on its edge (gid ``"saddle"``) with its height E_s and index. The title
    says whether any saddle was refined. The legend sits outside the axes.

    **Arguments:**

    - `graph`: a :class:`phaseprobe.paths.basins.BasinGraph`.
    - `title`: the figure's title (the saddle note is appended).

    **Returns:** the matplotlib figure.
    """
    from matplotlib.patches import FancyArrowPatch

    from phaseprobe.paths.basins import _short

    plt = _plt()
    nodes = list(graph.nodes.values())
    fig, ax = plt.subplots(figsize=(11, max(5.0, 0.75 * len(graph.nodes) + 2)))
    if not nodes:
        ax.text(0.5, 0.5, "no basins", ha="center")
        ax.set_title(title)
        return fig
    s_name = "alpha" if graph.convention == "l2" else "beta"
    accs = np.array([n.accuracy if np.isfinite(n.accuracy) else -n.error for n in nodes])
    toy = not np.isfinite([n.accuracy for n in nodes]).any()
    accs = np.where(np.isfinite(accs), accs, -np.inf)  # a basin with nothing measured: the bottom level
    order = np.argsort(-accs, kind="stable")
    fin = accs[np.isfinite(accs)]
    span = (float(np.ptp(fin)) if fin.size else 0.0) or 1.0
    groups: list[list[int]] = []
    for i in order:
        if groups and (accs[groups[-1][0]] == accs[i] or abs(accs[groups[-1][0]] - accs[i]) < 0.01 * span):
            groups[-1].append(i)
        else:
            groups.append([i])
    pos = {}
    for lev, grp in enumerate(groups):
        m = len(grp)
        for j, i in enumerate(sorted(grp, key=lambda i: -nodes[i].n_classes)):
            pos[nodes[i].key] = ((j - (m - 1) / 2.0) * 1.6, -float(lev))
    xs = [p[0] for p in pos.values()]
    colors = {"saddle": "tab:red", "jump": "tab:orange", "drift": "tab:gray", "return": "tab:blue"}
    drift: dict = {}
    for e in graph.edges:
        if e.kind == "drift" and e.src in pos and e.dst in pos and e.src != e.dst:
            k = frozenset((e.src, e.dst))
            drift[k] = drift.get(k, 0) + 1
    for k, cnt in drift.items():
        a, b = tuple(k)
        (x0, y0), (x1, y1) = pos[a], pos[b]
        ax.plot([x0, x1], [y0, y1], "-", color="0.6", lw=0.6 + 0.6 * cnt, alpha=0.6, zorder=1)
    seen_pairs: dict = {}
    n_loops: dict = {}
    n_saddles = 0
    for e in graph.edges:
        if e.kind == "drift" or e.src not in pos or e.dst not in pos:
            continue
        p0, p1 = pos[e.src], pos[e.dst]
        pk = frozenset((e.src, e.dst))
        n_same = seen_pairs.get(pk, 0)
        seen_pairs[pk] = n_same + 1
        col = colors.get(e.kind, "k")
        if e.src == e.dst:
            j = n_loops.get(e.src, 0)
            n_loops[e.src] = j + 1
            # a loop on the node's right side (between two minima of the same class set)
            rad, half = 1.6 + 0.7 * j, 0.18
            ax.add_patch(FancyArrowPatch((p0[0] + 0.22, p0[1] + half), (p0[0] + 0.22, p0[1] - half),
                                         connectionstyle=f"arc3,rad={-rad}", arrowstyle="->", mutation_scale=12,
                                         color=col, lw=1.2))
            xs_, ys_ = p0[0] + 0.22 + half * rad, p0[1]  # the arc's midpoint: half the control point's offset
            xm, ym = xs_ + 0.35, p0[1] + 0.1 - 0.22 * j  # stacked downwards, clear of edges from above
        else:
            rad = 0.15 + 0.12 * n_same
            ax.add_patch(FancyArrowPatch(p0, p1, connectionstyle=f"arc3,rad={rad}", arrowstyle="-|>", mutation_scale=14,
                                         color=col, lw=1.4, shrinkA=18, shrinkB=18))
            xm, ym = 0.5 * (p0[0] + p1[0]) + 0.25 + 0.35 * n_same, 0.5 * (p0[1] + p1[1]) + 0.12 * n_same
            # the arc's midpoint (arc3: the control point is rad x the chord, turned 90 degrees)
            dx, dy = p1[0] - p0[0], p1[1] - p0[1]
            xs_, ys_ = 0.5 * (p0[0] + p1[0]) + 0.5 * rad * dy, 0.5 * (p0[1] + p1[1]) - 0.5 * rad * dx
        txt = f"{s_name}={e.strength_c:.3g}" if np.isfinite(e.strength_c) else e.kind
        if np.isfinite(e.saddle_error):
            ax.plot([xs_], [ys_], "x", color="tab:red", ms=11, mew=2.5, zorder=5, gid="saddle",
                    label=None if n_saddles else "x: saddle of E refined between the two basins")
            n_saddles += 1
            txt += f", E_s={e.saddle_error:.3g}, index {'>=' if e.index_lower_bound else ''}{e.index}"
        ax.text(xm, ym, txt, fontsize=8, color=col, ha="left", va="center")
    for n in nodes:
        x, y = pos[n.key]
        size = 1400 + 60 * max(n.n_classes, 0)
        ax.scatter([x], [y], s=size, color="white", edgecolor="k", zorder=3)
        sub = f"acc {n.accuracy:.2f}" if np.isfinite(n.accuracy) else f"E {fmt_num(n.error, missing='not measured')}"
        ax.text(x, y, f"{_short(n.key)}\n{sub}", fontsize=8, ha="center", va="center", zorder=4)
    ax.set_xlim(min(xs) - 1.5, max(xs) + 2.2)
    ax.set_ylim(-len(groups) + 0.4 - 0.22 * max(n_loops.values(), default=0), 0.7)
    ax.set_xticks([])
    ax.set_yticks([-float(lev) for lev in range(len(groups))])
    ax.set_yticklabels([fmt_num(nodes[g[0]].error if toy else nodes[g[0]].accuracy, missing="not measured")
                        for g in groups], fontsize=8)
    ax.set_ylabel("basins by height: lowest training error" if toy else "basins by height: best test accuracy in the basin")
    handles = [plt.Line2D([], [], color=c, label=k + (" (class set changed between two grid points)" if k == "drift" else ""))
               for k, c in colors.items() if any(e.kind == k for e in graph.edges)]
    handles += [h for h in ax.get_legend_handles_labels()[0]]
    if handles:
        _legend_outside(ax, handles=handles, title=f"edges ({s_name} = strength at the jump)")
    ax.set_title(title + ("; x = saddle refined between basins" if n_saddles else "; no saddle refined"))
    fig.tight_layout()
    return fig
