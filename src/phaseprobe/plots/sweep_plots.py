"""Figures of an alpha sweep: accuracy and ||w||^2 against alpha (both branches, the loop's
arrows, transitions and spinodals marked) and the per-class accuracy heat map."""

from __future__ import annotations

from phaseprobe.store.run_store import save_figure

import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from phaseprobe import conventions
from phaseprobe.sweep.analysis import branch_table, excluded

COLORS = {"cold": "#444444", "up": "#d62728", "down": "#1f77b4"}
LABELS = {"cold": "cold start", "up": "alpha up (warm start)", "down": "alpha down (warm start)"}


def _strength_axis(ax, df):
    conv = str(df["convention"].iloc[0]) if "convention" in df.columns else "l2"
    s = df["strength"].to_numpy(dtype=float) if "strength" in df.columns else np.zeros(0)
    pos = s[s > 0]
    if np.any(s == 0) and pos.size:  # strength 0 (no penalty) is a grid point: linear up to the first positive one
        ax.set_xscale("symlog", linthresh=float(pos.min()))
    else:
        ax.set_xscale("log")
    ax.set_xlabel(conventions.strength_label(conv))
    return conv


def _curves(df, col):
    """Per branch: strengths (ascending), mean, spread (std over seeds)."""
    out = {}
    for b in ("cold", "up", "down"):
        if b not in set(df["branch"]):
            continue
        a, v, _ = branch_table(df, b, col)
        # the user-facing strength of every alpha on the grid
        d = df[(df["branch"] == b) & df["final"]].groupby("alpha")["strength"].first().reindex(a).to_numpy()
        with warnings.catch_warnings():  # a strength where every seed diverged has no mean (a gap)
            warnings.simplefilter("ignore", RuntimeWarning)
            out[b] = (d, np.nanmean(v, axis=0), np.nanstd(v, axis=0), v)
    return out


def _mark(ax, transitions, conv, strength_of):
    for t in transitions:
        if t.get("observable") != "test_acc":
            continue
        ls = "-" if str(t["order"]).startswith("first") else "--"
        if t["branch"] in ("cold", "up"):
            ax.axvline(strength_of(t["alpha_c"]), color="k", ls=ls, lw=0.9, alpha=0.6)
            if np.isfinite(t.get("alpha_lo", np.nan)):
                ax.axvspan(strength_of(t["alpha_lo"]), strength_of(t["alpha_hi"]), color="k", alpha=0.07)
        if np.isfinite(t.get("maxwell", np.nan)) and t["branch"] == "up":
            ax.axvline(strength_of(t["maxwell"]), color="green", ls=":", lw=1.5)


def plot_sweep(df: pd.DataFrame, transitions: list[dict], out: str | Path, title: str = "") -> Path:
    """Accuracy (top) and ||w||^2 (bottom) against the strength, both branches, loop arrows."""
    d = df[df["final"]]
    conv = str(d["convention"].iloc[0])
    factor = conventions.from_alpha(1.0, conv)  # strength = factor * alpha

    def strength_of(alpha):
        return alpha * factor

    has_acc = "test_acc" in d.columns
    fig, axes = plt.subplots(2, 1, figsize=(8, 7.5), sharex=True)
    ax = axes[0]
    col = "test_acc" if has_acc else "train_error"
    for b, (x, m, s, v) in _curves(d, col).items():
        ax.plot(x, m, "o-", ms=3.5, color=COLORS[b], label=LABELS[b])
        ax.fill_between(x, m - s, m + s, color=COLORS[b], alpha=0.15, lw=0)
        # arrows showing the direction of travel
        idx = np.linspace(1, len(x) - 2, 4).astype(int) if len(x) > 4 else []
        for i in idx:
            j = i + 1 if b != "down" else i - 1
            ax.annotate("", xy=(x[j], m[j]), xytext=(x[i], m[i]),
                        arrowprops=dict(arrowstyle="->", color=COLORS[b], lw=1.6))
    if has_acc and "n_classes_learned" in d.columns:
        ax.set_ylabel("test accuracy")
        ax.set_ylim(-0.02, 1.02)
    else:
        ax.set_ylabel(col)
    _mark(ax, transitions, conv, strength_of)
    bad = d[excluded(d)]
    if len(bad):  # where trainings diverged (left out of the curves): how many, per strength
        n = bad.groupby("strength").size()
        ax.plot(n.index, np.zeros(len(n)), "x", color="#9467bd", ms=8, mew=2,
                label=f"diverged / not run ({int(n.sum())} trainings, left out)")
        for x, k in n.items():
            ax.annotate(str(int(k)), (x, 0.0), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=7,
                        color="#9467bd")
    ax.legend(loc="lower left", fontsize=9)
    ax.grid(alpha=0.3)
    ax.set_title(title or "accuracy phases against the L2 strength")
    ax = axes[1]
    for b, (x, m, s, v) in _curves(d, "w_sq").items():
        ax.plot(x, m, "o-", ms=3.5, color=COLORS[b], label=LABELS[b])
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_ylabel("||w||^2 (all parameters)")
    _mark(ax, transitions, conv, strength_of)
    ax.grid(alpha=0.3)
    _strength_axis(ax, d)
    fig.text(0.01, 0.005, "black solid: most seeds jump at one grid step, first (loop) or first (jump) (dashed: continuous, jump-no-loop,\n"
             "undetermined); grey band: grid cell of the jump widened by a bootstrap over seeds; green dotted: Maxwell point (equal\n"
             "regularised loss on both branches); shading: +-1 std over seeds; diverged trainings are left out of every curve", fontsize=7.5)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    out = Path(out)
    save_figure(fig, out, dpi=130)
    plt.close(fig)
    return out


def plot_class_heatmap(df: pd.DataFrame, out: str | Path, class_names: list | None = None, title: str = "") -> Path | None:
    """Per-class test accuracy as a class x strength heat map, one panel per branch."""
    d = df[df["final"]]
    cls_cols = sorted((c for c in d.columns if c.startswith("class_acc_")), key=lambda c: int(c.split("_")[-1]))
    if not cls_cols:
        return None
    branches = [b for b in ("cold", "up", "down") if b in set(d["branch"])]
    fig, axes = plt.subplots(1, len(branches), figsize=(5.5 * len(branches), 0.35 * len(cls_cols) + 2.2), squeeze=False)
    conv = str(d["convention"].iloc[0])
    for ax, b in zip(axes[0], branches):
        sub = d[d["branch"] == b]
        sub = sub[~excluded(sub)]  # diverged and not-run trainings are left out of the seed mean
        g = sub.groupby("strength")[cls_cols].mean().sort_index()
        x = g.index.to_numpy()
        im = ax.imshow(g.to_numpy().T, aspect="auto", origin="lower", vmin=0, vmax=1, cmap="viridis",
                       extent=(-0.5, len(x) - 0.5, -0.5, len(cls_cols) - 0.5), interpolation="nearest")
        ticks = np.linspace(0, len(x) - 1, min(6, len(x))).astype(int)
        ax.set_xticks(ticks)
        ax.set_xticklabels([f"{x[i]:.2g}" for i in ticks])
        ax.set_yticks(range(len(cls_cols)))
        names = class_names or [c.split("_")[-1] for c in cls_cols]
        ax.set_yticklabels([str(n) for n in names][: len(cls_cols)], fontsize=8)
        ax.set_xlabel(conventions.strength_label(conv).split("(")[0] + "(one column per grid point, ticks label the strength)")
        ax.set_ylabel("class")
        ax.set_title(f"{LABELS[b]}", fontsize=10)
    fig.colorbar(im, ax=axes[0].tolist(), label="per-class test accuracy (seed mean, diverged runs left out)")
    fig.suptitle(title or "which classes each phase has learned", fontsize=11)
    out = Path(out)
    save_figure(fig, out, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return out
