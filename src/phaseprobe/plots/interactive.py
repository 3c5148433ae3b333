"""Interactive (Plotly) figures for the HTML report: zoom, hover values, and legend entries that
toggle each branch's seed mean and each seed's own curve.

The figures are plain :class:`plotly.graph_objects.Figure` objects; :mod:`phaseprobe.plots.report`
embeds them with plotly.js included once per page, so a report opens offline.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from phaseprobe import conventions

COLORS = {"cold": "#444444", "up": "#d62728", "down": "#1f77b4"}
BRANCH_NAMES = {"cold": "cold start", "up": "{s} up (warm start)", "down": "{s} down (warm start)"}
OBSERVABLES = {"test_acc": "test accuracy", "train_acc": "train accuracy", "w_sq": "||w||^2 (all parameters)",
               "train_error": "train error", "loss": "regularised loss L"}


def strength_name(convention: str) -> str:
    """``alpha`` for the l2 convention, ``beta`` for weight decay."""
    return "alpha" if convention == "l2" else "beta"


def is_linear_grid(x) -> bool:
    """True when the strengths are evenly spaced (or include 0): the axis is then linear."""
    x = np.unique(np.asarray(x, dtype=float))
    if len(x) < 3:
        return bool(len(x) and x.min() <= 0)
    if x.min() <= 0:
        return True
    d = np.diff(x)
    return bool(np.allclose(d, d[0], rtol=1e-3))


def grid_x(d: pd.DataFrame) -> np.ndarray:
    """The grid's strengths (bisection steps, ``refined`` records, left out): they decide the axis."""
    if "refined" in d.columns:
        d = d[~d["refined"].fillna(False).astype(bool)]
    x = d["strength"].to_numpy(float) if len(d) else np.array([])
    return x if len(x) else np.array([1.0])


def _usable(df: pd.DataFrame) -> pd.DataFrame:
    from phaseprobe.sweep.analysis import excluded

    d = df[df["final"]] if "final" in df.columns else df
    return d[~excluded(d)]


def sweep_plotly_figure(df: pd.DataFrame, transitions: pd.DataFrame | None = None, title: str = "",
                 observables: tuple[str, ...] = ("test_acc", "w_sq")):
    """Accuracy and ||w||^2 against the strength, per branch (seed mean, bold) and per seed (thin).

    **Arguments:**

    - `df`: a sweep's records.
    - `transitions`: its transitions table (``strength_c``, ``order``, ``branch``, ``observable``),
      drawn as dotted vertical lines with their value in the hover text.
    - `title`: the figure's title.
    - `observables`: the record columns to plot, one panel each (those present).

    **Returns:** a Plotly figure.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    d = _usable(df)
    conv = str(d["convention"].iloc[0]) if "convention" in d.columns and len(d) else "l2"
    s = strength_name(conv)
    obs = [o for o in observables if o in d.columns]
    fig = make_subplots(rows=len(obs), cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        subplot_titles=[OBSERVABLES.get(o, o) for o in obs])
    for row, o in enumerate(obs, start=1):
        for b in ("cold", "up", "down"):
            g = d[d["branch"] == b]
            if g.empty:
                continue
            name = BRANCH_NAMES[b].format(s=s)
            m = g.groupby("strength")[o].mean().sort_index()
            fig.add_trace(go.Scatter(
                x=m.index, y=m.values, mode="lines+markers", name=f"{name}: seed mean", legendgroup=f"{b}-mean",
                showlegend=row == 1, line=dict(color=COLORS[b], width=2.5), marker=dict(size=6),
                hovertemplate=f"{name}<br>{s}=%{{x:.4g}}<br>{o} (seed mean)=%{{y:.4g}}<extra></extra>"),
                row=row, col=1)
            for seed, gs in g.groupby("seed"):
                gs = gs.sort_values("strength")
                fig.add_trace(go.Scatter(
                    x=gs["strength"], y=gs[o], mode="lines+markers", name=f"{b} seed {seed}",
                    legendgroup=f"{b}-seed-{seed}", showlegend=row == 1,
                    line=dict(color=COLORS[b], width=1, dash="dot"), marker=dict(size=4), opacity=0.6,
                    hovertemplate=f"{b} seed {seed}<br>{s}=%{{x:.4g}}<br>{o}=%{{y:.4g}}<extra></extra>"),
                    row=row, col=1)
        if o == "w_sq":
            fig.update_yaxes(type="log", row=row, col=1, title_text="||w||^2 (log)")
        elif o.endswith("acc"):
            fig.update_yaxes(range=[-0.02, 1.02], row=row, col=1, title_text=OBSERVABLES.get(o, o))
    if transitions is not None and len(transitions):
        for t in transitions.to_dict(orient="records"):
            if t.get("observable") != "test_acc" or not np.isfinite(t.get("strength_c", np.nan)):
                continue
            fig.add_vline(x=float(t["strength_c"]), line=dict(color="black", dash="dash", width=1),
                          annotation_text=f"{s}_c={t['strength_c']:.3g} ({t['order']}, {t['branch']})",
                          annotation_position="top", annotation_font_size=10)
    xs = grid_x(d)
    fig.update_xaxes(type="linear" if is_linear_grid(xs) else "log", row=len(obs), col=1,
                     title_text=conventions.strength_label(conv))
    if len(obs) > 1:
        fig.update_xaxes(type="linear" if is_linear_grid(xs) else "log")
    fig.update_layout(title=title or None, height=320 * len(obs) + 80, hovermode="closest",
                      legend=dict(groupclick="toggleitem", title_text="click: show/hide; double-click: only this"),
                      margin=dict(l=60, r=20, t=70, b=50), template="plotly_white")
    return fig


def compare_figure(runs: list[tuple[str, pd.DataFrame]], observable: str, convention: str, title: str = ""):
    """One observable of several sweeps overlaid: a seed-mean curve per run and branch.

    **Arguments:**

    - `runs`: ``(label, records)`` pairs; each frame's ``strength`` must already be in `convention`.
    - `observable`: the record column to plot (e.g. ``test_acc``).
    - `convention`: the strengths' convention (names the axis).
    - `title`: the figure's title.

    **Returns:** a Plotly figure.
    """
    import plotly.graph_objects as go

    s = strength_name(convention)
    dashes = ["solid", "dash", "dot", "dashdot", "longdash", "longdashdot"]
    fig = go.Figure()
    xs = []
    for i, (label, df) in enumerate(runs):
        d = _usable(df)
        for b in ("cold", "up", "down"):
            g = d[d["branch"] == b]
            if g.empty or observable not in g.columns:
                continue
            m = g.groupby("strength")[observable].mean().sort_index()
            xs.extend(grid_x(g))
            fig.add_trace(go.Scatter(
                x=m.index, y=m.values, mode="lines+markers", name=f"{label}: {b}",
                line=dict(color=COLORS[b], dash=dashes[i % len(dashes)]),
                hovertemplate=f"{label} {b}<br>{s}=%{{x:.4g}}<br>{observable}=%{{y:.4g}}<extra></extra>"))
    fig.update_xaxes(type="linear" if is_linear_grid(xs or [1.0]) else "log",
                     title_text=conventions.strength_label(convention))
    fig.update_yaxes(title_text=OBSERVABLES.get(observable, observable), type="log" if observable == "w_sq" else None)
    fig.update_layout(title=title or None, template="plotly_white", height=480,
                      legend=dict(title_text="run: branch (click to toggle)"))
    return fig
