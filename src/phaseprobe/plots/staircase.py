"""The staircase figure of an L2 sweep (``staircase.png``), as arXiv 2512.11866 draws it.

Top panel: the data error E and the regularised loss L against the strength (seed means of one
branch, a linear axis for a linear grid), with every test-accuracy transition of that branch
drawn as a labelled vertical line (its strength, bracket and order). Below: the per-class test
recall, one panel per group of classes, grouped by the transition at which the classes are lost
-- a class is *lost* at the first strength after which the project's rule (recall and precision
above threshold, :func:`phaseprobe.plots.sweep_plots.learned_matrix`) holds for fewer than half
of the seeds and never again for half of them; it belongs to the transition whose bracket (or
grid cell) holds that strength. Classes lost where no transition was detected, never learned, or
still learned at the end of the grid get panels of their own, named so.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from phaseprobe import conventions
from phaseprobe.plots.sweep_plots import (COLORS, TRANSITION_COLORS, _axis, _usable, class_names_for, grid_strengths,
                                          learned_matrix)
from phaseprobe.store.run_store import save_figure

BRANCH_ORDER = ("up", "cold", "down")


def _branch(df: pd.DataFrame) -> str | None:
    have = set(_usable(df)["branch"])
    return next((b for b in BRANCH_ORDER if b in have), None)


def class_loss_points(d: pd.DataFrame, learned: float = 0.5) -> dict[int, float | None]:
    """Where each class is lost along one branch.

    **Arguments:**

    - `d`: the final records of one branch (several seeds).
    - `learned`: the recall threshold of the learned rule.

    **Returns:** class index -> the first strength from which fewer than half of the seeds learn
    the class for the rest of the grid (``None`` when it is still learned at the last strength;
    ``nan`` when it is never learned by half of the seeds).
    """
    m, _ = learned_matrix(d, learned)
    out: dict[int, float | None] = {}
    xs = m.index.to_numpy(float)
    for c in m.columns:
        held = m[c].to_numpy(float) >= 0.5
        k = int(c.split("_")[-1])
        if not held.any():
            out[k] = float("nan")
        elif held[-1]:
            out[k] = None
        else:
            last = int(np.flatnonzero(held)[-1])
            out[k] = float(xs[last + 1])
    return out


def group_classes(loss: dict[int, float | None], transitions: list[dict], xs: np.ndarray) -> list[tuple[str, list[int]]]:
    """Classes grouped by the transition at which they are lost.

    **Arguments:**

    - `loss`: class -> loss strength (:func:`class_loss_points`).
    - `transitions`: the branch's transitions (dicts with ``strength_c``, ``strength_lo``,
      ``strength_hi``), in strength order; the i-th is named T(i+1).
    - `xs`: the branch's measured strengths (a loss point belongs to a transition when it is the
      first measured strength at or after the transition's lower end and at most its upper end).

    **Returns:** ``[(group title, [class, ...]), ...]`` in order of the strength of the loss.
    """
    groups: dict[str, list[int]] = {}
    keys: dict[str, float] = {}
    for k, x in sorted(loss.items()):
        if x is None:
            title, key = "still learned at the end of the grid", np.inf
        elif np.isnan(x):
            title, key = "never learned by half of the seeds", -np.inf
        else:
            title, key = "lost where no transition was detected", 1e300
            pos = int(np.searchsorted(xs, x - 1e-12 * max(1.0, abs(x))))  # x's index on the measured grid
            best = None
            for i, t in enumerate(transitions):
                lo, hi, c = float(t["strength_lo"]), float(t["strength_hi"]), float(t["strength_c"])
                after = xs[xs > c * (1 + 1e-9)]
                step_after = float(after[0]) if len(after) else np.inf  # the first strength past the jump
                if lo <= x <= max(hi, step_after):
                    dist = abs(pos - int(np.searchsorted(xs, c - 1e-12 * max(1.0, abs(c)))))
                    if best is None or dist < best[0]:
                        best = (dist, i, c)
            if best is not None:
                _, i, c = best
                title, key = f"lost at T{i + 1} ({_fmt(c)})", c
        groups.setdefault(title, []).append(k)
        keys[title] = key
    return [(t, groups[t]) for t in sorted(groups, key=lambda t: keys[t])]


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def staircase_figure(df: pd.DataFrame, transitions: list[dict], class_names: list | None = None, title: str = "",
                     learned: float = 0.5):
    """E and L against the strength with the transitions marked, and the per-class recall grouped
    by the transition at which each class is lost.

    **Arguments:**

    - `df`: the sweep's records (all branches; the figure draws the first of up, cold, down).
    - `transitions`: rows of ``transitions.csv`` (dicts; strengths in the run's convention).
    - `class_names`: one name per class (default from the dataset).
    - `title`: the figure's title.
    - `learned`: the recall threshold of the learned rule.

    **Returns:** the matplotlib figure, or ``None`` when the records hold no per-class accuracy.
    """
    d = _usable(df[df["final"]]) if "final" in df.columns else _usable(df)
    b = _branch(d)
    acc_cols = sorted((c for c in d.columns if c.startswith("class_acc_")), key=lambda c: int(c.split("_")[-1]))
    if b is None or len(acc_cols) < 2:
        return None
    d = d[d["branch"] == b]
    conv = str(d["convention"].iloc[0]) if "convention" in d.columns else "l2"
    trs = sorted((t for t in transitions if t.get("branch") == b and t.get("observable") == "test_acc"),
                 key=lambda t: float(t["strength_c"]))
    xs = np.sort(d["strength"].unique().astype(float))
    loss = class_loss_points(d, learned)
    groups = group_classes(loss, trs, xs)
    names = class_names or class_names_for(str(d["dataset"].iloc[0]) if "dataset" in d.columns else None,
                                           None, len(acc_cols))
    n_panels = len(groups)
    ncols = 2 if n_panels > 1 else 1
    nrows = 1 + int(np.ceil(n_panels / ncols))
    fig = plt.figure(figsize=(12, 3.6 + 2.7 * (nrows - 1)))
    gs = fig.add_gridspec(nrows, ncols, height_ratios=[1.4] + [1.0] * (nrows - 1), hspace=0.55, wspace=0.22)
    top = fig.add_subplot(gs[0, :])
    mean = d.groupby("strength")[["train_error", "loss"]].mean().sort_index()
    top.plot(mean.index, mean["train_error"], "o-", ms=3, color=COLORS[b], label="E (training error, seed mean)")
    top.plot(mean.index, mean["loss"], "s-", ms=3, color="#2ca02c",
             label=("L, the regularised loss (seed mean): " + conventions.DESCRIPTION[conv].split(",")[0]
                    if conv != "decoupled" else "L = E + alpha*||w||^2, alpha = beta/2 (seed mean)"))
    scale = _axis(top, grid_strengths(d), conv)
    top.set_ylabel("loss (mean cross-entropy)")
    lines = []
    for i, t in enumerate(trs):
        col = TRANSITION_COLORS[i % len(TRANSITION_COLORS)]
        c, lo, hi = float(t["strength_c"]), float(t["strength_lo"]), float(t["strength_hi"])
        order = str(t.get("order", ""))
        ls = "-" if order.startswith("first") else "--"
        top.axvline(c, color=col, ls=ls, lw=1.2)
        top.axvspan(lo, hi, color=col, alpha=0.08, lw=0)
        lines.append(f"T{i + 1}: {_fmt(c)} in [{_fmt(lo)}, {_fmt(hi)}], {order}")
        top.annotate(f"T{i + 1}", (c, 1.0), xycoords=("data", "axes fraction"), xytext=(0, 3),
                     textcoords="offset points", ha="center", va="bottom", fontsize=8, color=col, weight="bold")
    if trs:
        top.plot([], [], color="k", lw=1.2, label="test-accuracy transitions (solid: first order; band: bracket)")
    top.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, borderaxespad=0)
    top.grid(alpha=0.3)
    if lines:
        top.text(1.01, 0.0, "\n".join(lines), transform=top.transAxes, fontsize=7.5, va="bottom", ha="left")
    cmap = plt.get_cmap("tab10")
    for j, (gtitle, cls) in enumerate(groups):
        ax = fig.add_subplot(gs[1 + j // ncols, j % ncols], sharex=top)
        for k in cls:
            col = f"class_acc_{k}"
            m = d.groupby("strength")[col].mean().sort_index()
            ax.plot(m.index, m.to_numpy(), "-", lw=1.4, color=cmap(k % 10), label=str(names[k]) if k < len(names) else str(k))
        for i, t in enumerate(trs):
            ax.axvline(float(t["strength_c"]), color=TRANSITION_COLORS[i % len(TRANSITION_COLORS)],
                       ls="-" if str(t.get("order", "")).startswith("first") else "--", lw=0.9)
        ax.axhline(learned, color="grey", ls=":", lw=0.8)
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(gtitle, fontsize=9)
        ax.set_ylabel("test recall", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper right", ncol=1 if len(cls) <= 4 else 2, framealpha=0.8)
        ax.set_xlabel(conventions.strength_label(conv) if j // ncols == nrows - 2 else "", fontsize=8)
    fig.suptitle(title or "E, L and the classes lost at each transition", fontsize=11)
    fig.text(0.01, 0.005, f"{conventions.strength_label(conv)} on a {scale} axis; the {b} branch; recall = test "
             f"accuracy of the class (seed mean; a constant predictor has recall 1 on its class); dotted: the learned threshold {learned}; a class is lost where "
             "fewer than half of the seeds learn it for the rest of the grid.", fontsize=7.5, ha="left", va="bottom")
    return fig


def plot_staircase(df: pd.DataFrame, transitions: list[dict], out: str | Path, class_names: list | None = None,
                   title: str = "") -> Path | None:
    """``staircase.png``: :func:`staircase_figure` saved at ``out``.

    **Returns:** the PNG's path, or ``None`` when the records hold no per-class accuracy.
    """
    fig = staircase_figure(df, transitions, class_names, title)
    if fig is None:
        return None
    save_figure(fig, out, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return Path(out)
