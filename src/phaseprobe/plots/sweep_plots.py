"""Figures of a sweep: accuracy and ||w||^2 against the strength (``sweep.png``) and which classes
each phase has learned (``classes.png``).

``sweep.png`` draws every branch (seed mean, +-1 std band, arrows in the direction of travel) and
everything the analysis found, each named in the legend (outside the axes, so it covers no data):

* each transition as a vertical line tagged ``T1``, ``T2``, ... above the panel, its legend entry
  giving the branch, the strength with its interval and the order;
* each transition's interval (the bisection bracket when the run refined it, else the grid cell
  widened by the seed bootstrap) as a capped horizontal bar at the top of the panel;
* the spinodals (where the up branch jumps, where the down branch comes back) and the Maxwell
  point (equal regularised loss on both branches);
* the chance level 1/C of the accuracy;
* trainings that diverged (left out of the curves), counted per strength.

The strength axis is named by the run's convention (alpha or beta); it is linear when the grid is
evenly spaced (the authors' protocol), logarithmic otherwise, and symlog (linear up to the first
positive strength) when a log-spaced grid holds strength 0. ||w||^2 is drawn on a log axis; exact
zeros are drawn two decades below the smallest positive value, marked and named.

``classes.png`` shows, per branch, the fraction of seeds that *learned* each class by the
project's rule (test recall >= threshold AND precision >= max(threshold, 1/C + 0.1), as
``n_classes_learned`` in :mod:`phaseprobe.sweep.run`: a constant predictor's recall of 1 on one
class does not count), against the real strengths (cells span the midpoints between grid points),
with the class names and a colour bar.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import matplotlib.transforms as mtransforms
import numpy as np
import pandas as pd

from phaseprobe import conventions
from phaseprobe.plots.interactive import strength_name
from phaseprobe.plots.intervals import _num, _strength, interval  # noqa: F401 (interval: public here too)
from phaseprobe.store.run_store import save_figure
from phaseprobe.sweep.analysis import excluded

COLORS = {"cold": "#444444", "up": "#d62728", "down": "#1f77b4"}
TRANSITION_COLORS = ["#000000", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#ff7f0e", "#9467bd"]
DIGIT_NAMES = tuple(str(i) for i in range(10))


def branch_label(branch: str, convention: str = "l2") -> str:
    """``alpha up (warm start)`` / ``beta down (warm start)`` / ``cold start``."""
    s = strength_name(convention)
    return {"cold": "cold start", "up": f"{s} up (warm start)", "down": f"{s} down (warm start)"}[branch]


def class_names_for(dataset: str | None, classes=None, n: int | None = None) -> list[str]:
    """The names of a run's classes: Fashion-MNIST's garment names, the digits' 0-9, else indices.

    **Arguments:**

    - `dataset`: the spec's dataset.
    - `classes`: the spec's class subset (a list of ids, or a count of first classes, or None).
    - `n`: how many classes the records hold.

    **Returns:** one name per class column, in the records' order.
    """
    from phaseprobe.data.images import FASHION_CLASS_NAMES

    full = FASHION_CLASS_NAMES if dataset == "fashion-mnist" else DIGIT_NAMES if dataset in ("digits", "mnist") else None
    if full is not None and classes is None and n is not None and n != len(full):
        full = None  # a subset the caller did not name: indices, never a guessed name
    if isinstance(classes, int):
        ids = list(range(classes))
    elif classes:
        ids = [int(c) for c in classes]
    else:
        ids = list(range(n if n is not None else (len(full) if full else 0)))
    names = [full[i] if full is not None and i < len(full) else f"class {i}" for i in ids]
    names += [f"class {i}" for i in range(len(names), n or 0)]
    return names[:n] if n is not None else names


def axis_scale(xs) -> str:
    """How to draw a grid's strengths: ``"linear"`` when evenly spaced (the authors' protocol),
    ``"symlog"`` when it holds strength 0 (no penalty) among log-spaced ones (linear up to the
    first positive strength, so the unregularised point is drawn, not dropped), else ``"log"``."""
    x = np.unique(np.asarray(xs, dtype=float))
    if len(x) >= 3:
        d = np.diff(x)
        if np.allclose(d, d[0], rtol=1e-3):
            return "linear"
    if (x <= 0).any():
        return "symlog" if (x > 0).any() and len(x) >= 3 else "linear"
    return "log"


def _set_scale(ax, scale: str, xs) -> None:
    if scale == "symlog":
        x = np.asarray(xs, dtype=float)
        ax.set_xscale("symlog", linthresh=float(x[x > 0].min()))
    else:
        ax.set_xscale(scale)


def _axis(ax, xs, convention: str) -> str:
    scale = axis_scale(xs)
    _set_scale(ax, scale, xs)
    ax.set_xlabel(conventions.strength_label(convention))
    return scale


def grid_strengths(d: pd.DataFrame) -> np.ndarray:
    """The strengths of the sweep's grid (bisection steps left out): they decide linear or log."""
    u = _usable(d)
    if "refined" in u.columns:
        u = u[~u["refined"].fillna(False).astype(bool)]
    x = u["strength"].to_numpy(float)
    return x if len(x) else np.array([1.0])


def _usable(d: pd.DataFrame) -> pd.DataFrame:
    return d[~excluded(d) & d["branch"].isin(list(COLORS))]


def _curves(d: pd.DataFrame, col: str) -> dict:
    """Per branch: strengths (ascending), seed mean, std over seeds, and whether a point is a
    refinement (bisection) step."""
    out = {}
    u = _usable(d)
    for b in ("cold", "up", "down"):
        g = u[u["branch"] == b]
        if g.empty or col not in g.columns:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            agg = g.groupby("strength")[col].agg(["mean", "std"]).sort_index()
        refined = (g.groupby("strength")["refined"].any().reindex(agg.index).to_numpy(bool)
                   if "refined" in g.columns else np.zeros(len(agg), bool))
        out[b] = (agg.index.to_numpy(float), agg["mean"].to_numpy(float), agg["std"].fillna(0).to_numpy(float), refined)
    return out


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def _draw_marks(ax, transitions: list[dict], observable: str, factor: float, s: str, first_tag: int,
                tag_row: list) -> tuple[int, list[str]]:
    """Transition lines (tagged above the panel), their intervals, spinodals and Maxwell points
    of one observable on one panel. **Returns:** (next tag number, what was drawn, for the caption)."""
    drawn = []
    top = mtransforms.blended_transform_factory(ax.transData, ax.transAxes)
    k = first_tag
    seen_sp: set = set()
    for t in transitions:
        if t.get("observable") != observable:
            continue
        c = _strength(t, "alpha_c", factor)
        if not np.isfinite(c):
            continue
        color = TRANSITION_COLORS[(k - 1) % len(TRANSITION_COLORS)]
        first = str(t.get("order", "")).startswith("first")
        lo, hi, bisected = interval(t, factor)
        label = (f"T{k}: {t.get('branch')} branch, {s}_c = {_fmt(c)}"
                 + (f" in [{_fmt(lo)}, {_fmt(hi)}]" if np.isfinite(lo) and np.isfinite(hi) else "")
                 + f", {t.get('order')}")
        ax.axvline(c, color=color, ls="-" if first else "--", lw=1.3, label=label)
        tag_row.append((ax, c, f"T{k}", color))
        if np.isfinite(lo) and np.isfinite(hi):
            y = 0.965 - 0.04 * ((k - first_tag) % 3)
            ax.plot([lo, hi], [y, y], color=color, lw=2.2, marker="|", ms=10, mew=2, transform=top,
                    label=f"T{k} interval: " + (f"bisection bracket ({bisected} steps)" if bisected
                                                else "grid cell + seed bootstrap"))
        drawn.append("transitions")
        for key, name, col, ls in (("spinodal_up", "upper spinodal (up branch jumps)", COLORS["up"], "-."),
                                   ("spinodal_down", "lower spinodal (down branch returns)", COLORS["down"], "-."),
                                   ("maxwell", "Maxwell point (equal regularised loss)", "#2ca02c", ":")):
            v = _strength(t, key, factor)
            if np.isfinite(v) and (key, round(v, 12)) not in seen_sp:
                seen_sp.add((key, round(v, 12)))
                ax.axvline(v, color=col, ls=ls, lw=1.8, label=f"{name}: {s} = {_fmt(v)}")
                drawn.append(key)
        k += 1
    return k, drawn


def _place_tags(fig, tags: list) -> None:
    """Tags T1, T2, ... just above their panel, stacked where they would touch."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    placed: list = []
    for ax, x, text, color in tags:
        trans = mtransforms.blended_transform_factory(ax.transData, ax.transAxes)
        for level in range(6):
            t = ax.text(x, 1.01 + 0.075 * level, text, transform=trans, ha="center", va="bottom", fontsize=8,
                        color=color, fontweight="bold", clip_on=False)
            bb = t.get_window_extent(renderer).expanded(1.1, 1.1)
            if not any(bb.overlaps(p) for p in placed):
                placed.append(bb)
                break
            t.remove()


def plot_sweep(df: pd.DataFrame, transitions: list[dict], out: str | Path, title: str = "") -> Path:
    """``sweep.png``: :func:`sweep_figure` saved at ``out``. **Returns:** the PNG's path."""
    fig = sweep_figure(df, transitions, title)
    out = Path(out)
    save_figure(fig, out, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return out


def sweep_figure(df: pd.DataFrame, transitions: list[dict], title: str = ""):
    """Accuracy (top) and ||w||^2 (bottom) against the strength, with everything the analysis found.

    **Arguments:**

    - `df`: the sweep's records.
    - `transitions`: the transitions table's rows (``summarize``'s, with strength columns).
    - `title`: the figure's title.

    **Returns:** the matplotlib figure.
    """
    d = df[df["final"]]
    conv = str(d["convention"].iloc[0])
    s = strength_name(conv)
    factor = conventions.from_alpha(1.0, conv)  # strength = factor * alpha
    has_acc = "test_acc" in d.columns
    fig, axes = plt.subplots(2, 1, figsize=(11, 8.2), sharex=True)
    tags: list = []
    drawn: set = set()
    panels = [("test_acc" if has_acc else "train_error", axes[0]), ("w_sq", axes[1])]
    k = 1
    xs_all = grid_strengths(d)
    wpos = _usable(d)["w_sq"].to_numpy(float) if "w_sq" in d.columns else np.array([])
    wpos = wpos[np.isfinite(wpos) & (wpos > 0)]
    floor = wpos.min() / 100 if len(wpos) else 1e-12  # where ||w||^2 = 0 is drawn: 2 decades below the rest
    for col, ax in panels:
        for b, (x, m, sd, refined) in _curves(d, col).items():
            if col == "w_sq" and (m <= 0).any():  # exact zeros: drawn at the floor, marked and named
                zero = m <= 0
                m = np.where(zero, floor, m)
                ax.plot(x[zero], m[zero], "v", ms=7, color=COLORS[b], mfc="white",
                        label=f"{b} branch: ||w||^2 = 0 (drawn at {floor:.1e})")
                drawn.add("zeros")
            ax.plot(x, m, "-", color=COLORS[b], lw=1.6, label=f"{branch_label(b, conv)}: seed mean" if col == panels[0][0] else None)
            ax.plot(x[~refined], m[~refined], "o", ms=4, color=COLORS[b])
            if refined.any():
                ax.plot(x[refined], m[refined], "o", ms=6, mfc="white", color=COLORS[b],
                        label=f"{b} branch: bisection steps" if col == panels[0][0] else None)
                drawn.add("bisection steps")
            lo_band = m - sd if col != "w_sq" else np.clip(m - sd, m * 0.05, None)
            ax.fill_between(x, lo_band, m + sd, color=COLORS[b], alpha=0.15, lw=0)
            if len(x) > 4 and col == panels[0][0]:  # arrows: the direction of travel
                for i in np.linspace(1, len(x) - 2, 3).astype(int):
                    j = i + 1 if b != "down" else i - 1
                    ax.annotate("", xy=(x[j], m[j]), xytext=(x[i], m[i]),
                                arrowprops=dict(arrowstyle="->", color=COLORS[b], lw=1.4))
        k, dr = _draw_marks(ax, transitions, "test_acc" if col != "w_sq" else "w_sq", factor, s, k, tags)
        drawn.update(dr)
        ax.grid(alpha=0.3)
    ax = axes[0]
    if has_acc:
        ax.set_ylabel("test accuracy")
        ax.set_ylim(-0.02, 1.08)
        n_cls = len([c for c in d.columns if c.startswith("class_acc_")])
        if n_cls:
            ax.axhline(1.0 / n_cls, color="#999999", ls=(0, (1, 3)), lw=1.5, label=f"chance level 1/C = {1.0 / n_cls:.3g}")
            drawn.add("chance")
    else:
        ax.set_ylabel("train error")
    bad = d[excluded(d)]
    if len(bad):  # where trainings diverged (left out of the curves): how many, per strength
        n = bad.groupby("strength").size()
        ax.plot(n.index, np.zeros(len(n)), "x", color="#9467bd", ms=8, mew=2,
                label=f"diverged / not run ({int(n.sum())} trainings, left out; count above)")
        for x, c in n.items():
            ax.annotate(str(int(c)), (x, 0.0), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=7,
                        color="#9467bd")
        drawn.add("diverged")
    ax.set_title(title or "accuracy phases against the L2 strength", pad=30)
    axes[1].set_yscale("log")
    if len(wpos):  # headroom above the curves for the interval bars, room below for the zeros
        axes[1].set_ylim(floor / 3 if "zeros" in drawn else wpos.min() / 2, wpos.max() * 12)
    axes[1].set_ylabel("||w||^2, all parameters (log axis)")
    _axis(axes[1], xs_all if len(xs_all) else [1.0], conv)
    axes[0].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8,
                   title="accuracy panel" if has_acc else "train error panel", title_fontsize=8,
                   borderaxespad=0)
    h, lab = axes[1].get_legend_handles_labels()
    if h:
        axes[1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, title="||w||^2 panel (log10 jumps)",
                       title_fontsize=8, borderaxespad=0)
    caption = ["curves: seed mean, band +-1 std over seeds, arrows: direction of travel; diverged trainings left out"]
    if "transitions" in drawn:
        caption.append("T1, T2, ...: transitions (solid: first order, dashed: other orders), bars at the top: their intervals")
    fig.text(0.01, 0.005, "; ".join(caption), fontsize=8)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    _place_tags(fig, tags)
    return fig


def _edges(x: np.ndarray, scale: str) -> np.ndarray:
    """Cell edges around the strengths: midpoints (geometric on a log axis), ends mirrored."""
    x = np.asarray(x, float)
    if len(x) == 1:
        return np.array([x[0] * 0.8, x[0] * 1.25]) if scale == "log" else np.array([x[0] - 0.5, x[0] + 0.5])
    if scale == "symlog" and x[0] <= 0 < x[1]:  # 0 then log-spaced: a linear first cell, geometric after
        if len(x) == 2:
            return np.array([x[0] - x[1] / 2, x[1] / 2, x[1] * 1.5])
        rest = _edges(x[1:], "log")
        return np.concatenate([[x[0] - x[1] / 2, x[1] / 2], rest[1:]])
    if scale == "log":
        lx = np.log10(x)
        mid = (lx[1:] + lx[:-1]) / 2
        return 10 ** np.concatenate([[lx[0] - (mid[0] - lx[0])], mid, [lx[-1] + (lx[-1] - mid[-1])]])
    mid = (x[1:] + x[:-1]) / 2
    return np.concatenate([[x[0] - (mid[0] - x[0])], mid, [x[-1] + (x[-1] - mid[-1])]])


def learned_matrix(d: pd.DataFrame, learned: float = 0.5) -> tuple[pd.DataFrame, bool]:
    """Per strength and class: the fraction of usable seeds that learned the class by the project's
    rule (recall >= ``learned`` and precision >= max(``learned``, 1/C + 0.1)).

    **Returns:** (frame indexed by strength, one column per class; whether precision was recorded
    -- without it, recall alone decides, and the figure says so).
    """
    acc = sorted((c for c in d.columns if c.startswith("class_acc_")), key=lambda c: int(c.split("_")[-1]))
    prec = [c.replace("class_acc_", "class_prec_") for c in acc]
    has_prec = all(p in d.columns for p in prec)
    ok = d[acc].to_numpy(float) >= learned
    if has_prec:
        p_min = max(learned, 1.0 / len(acc) + 0.1)
        ok &= d[prec].to_numpy(float) >= p_min
    m = pd.DataFrame(ok.astype(float), columns=acc, index=d.index)
    m["strength"] = d["strength"].to_numpy()
    return m.groupby("strength")[acc].mean().sort_index(), has_prec


def _spec_next_to(out: str | Path) -> dict:
    """The spec of the run folder a figure is written into (empty when there is none)."""
    import json

    p = Path(out).parent / "spec.json"
    try:
        return dict(json.loads(p.read_text()).get("spec", {})) if p.exists() else {}
    except (OSError, ValueError, AttributeError):
        return {}


def plot_class_heatmap(df: pd.DataFrame, out: str | Path, class_names: list | None = None, title: str = "",
                       learned: float | None = None) -> Path | None:
    """``classes.png``: :func:`class_figure` saved at ``out``.

    Class names default to the dataset and class subset of the run's ``spec.json`` next to
    ``out`` (else the records' dataset), the threshold to the spec's ``learned_class_acc``.

    **Returns:** the PNG's path, or None when the records hold no per-class accuracy.
    """
    spec = _spec_next_to(out)
    fig = class_figure(df, class_names or None, title,
                       float(spec.get("learned_class_acc", 0.5)) if learned is None else learned,
                       dataset=spec.get("dataset"), classes=spec.get("classes"))
    if fig is None:
        return None
    out = Path(out)
    save_figure(fig, out, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return out


def class_figure(df: pd.DataFrame, class_names: list | None = None, title: str = "", learned: float = 0.5,
                 dataset: str | None = None, classes=None):
    """Which classes each branch has learned, against the real strengths (one panel per branch).

    **Arguments:**

    - `df`: the sweep's records.
    - `class_names`: one name per class (default: :func:`class_names_for` of `dataset`, `classes`).
    - `title`: the figure's title.
    - `learned`: the recall threshold (the spec's ``learned_class_acc``).
    - `dataset`, `classes`: the spec's dataset (default: the records') and class subset.

    **Returns:** the matplotlib figure, or None when the records hold no per-class accuracy.
    """
    d = df[df["final"]]
    cls_cols = sorted((c for c in d.columns if c.startswith("class_acc_")), key=lambda c: int(c.split("_")[-1]))
    if not cls_cols:
        return None
    d = _usable(d)
    branches = [b for b in ("cold", "up", "down") if b in set(d["branch"])]
    if not branches:
        return None
    conv = str(d["convention"].iloc[0])
    if dataset is None and "dataset" in d.columns:
        dataset = str(d["dataset"].iloc[0])
    names = list(class_names) if class_names else class_names_for(dataset, classes, len(cls_cols))
    scale = axis_scale(grid_strengths(d))
    fig, axes = plt.subplots(1, len(branches), figsize=(5.2 * len(branches) + 1.6, 0.34 * len(cls_cols) + 2.6),
                             squeeze=False, sharey=True)
    im = None
    has_prec = True
    for ax, b in zip(axes[0], branches):
        g, has_prec = learned_matrix(d[d["branch"] == b], learned)
        x = g.index.to_numpy(float)
        xe = _edges(x, scale)
        ye = np.arange(len(cls_cols) + 1) - 0.5
        im = ax.pcolormesh(xe, ye, g.to_numpy().T, vmin=0, vmax=1, cmap="viridis", shading="flat")
        _set_scale(ax, scale, x)
        ax.set_xlim(max(xe[0], 0.0) if scale == "symlog" else xe[0], xe[-1])
        ax.set_yticks(range(len(cls_cols)))
        ax.set_yticklabels([str(n) for n in names][: len(cls_cols)], fontsize=8)
        ax.set_title(branch_label(b, conv), fontsize=10)
        ax.tick_params(axis="x", labelsize=8)
    axes[0][0].set_ylabel("class")
    fig.supxlabel(conventions.strength_label(conv) + ": each cell spans the midpoints between grid points", fontsize=9)
    rule = (f"recall >= {learned:g} and precision >= {max(learned, 1.0 / len(cls_cols) + 0.1):.2g}" if has_prec
            else f"recall >= {learned:g} (no precision recorded)")
    fig.colorbar(im, ax=axes[0].tolist(), label=f"fraction of seeds that learned the class\n({rule})", shrink=0.95)
    fig.suptitle(title or "which classes each phase has learned", fontsize=11)
    return fig
