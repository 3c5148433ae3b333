"""``phaseprobe compare DIR DIR ... --out DIR``: sweeps side by side.

One figure overlays the runs' seed-mean curves of one observable (a panel per branch), one
table puts their transitions side by side (strength with its bracket, order, spinodals, Maxwell
point), and a report page holds both (with an interactive version of the figure). Runs whose
penalty conventions differ (alpha*||w||^2 vs beta/2*||w||^2) are refused unless ``--convert``
is given; then every strength is shown in one convention (``--convention``, default the first
run's) through :mod:`phaseprobe.conventions`.

From Python: :func:`compare_runs`.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import numpy as np
import pandas as pd
import typer

from phaseprobe import conventions
from phaseprobe.errors import PhaseprobeError

OBSERVABLES = ("test_acc", "train_acc", "w_sq", "train_error", "test_error", "loss")


def _run_convention(run) -> str:
    conv = run.spec.get("convention")
    if conv is None and len(run.records) and "convention" in run.records.columns:
        conv = str(run.records["convention"].iloc[0])
    return str(conv or "l2")


def _labels(dirs: list[Path]) -> list[str]:
    """Short, distinct labels: folder names, with their parent when two share a name."""
    names = [d.name for d in dirs]
    if len(set(names)) == len(names):
        return names
    return [f"{d.parent.name}/{d.name}" if names.count(d.name) > 1 else d.name for d in dirs]


def check_runs(dirs: list[Path], out: Path, convert: bool, observable: str, convention: str | None = None):
    """Open and check the runs before any work: sweep folders with records, one convention
    (unless ``convert``), the observable recorded.

    **Returns:** ``(runs, labels, convention)``: the opened runs, their labels and the convention
    every strength is shown in.
    """
    from phaseprobe.runs import open_run

    if len(dirs) < 2:
        raise PhaseprobeError("compare: give at least two run folders; e.g. phaseprobe compare runs/a runs/b --out runs/ab")
    if observable not in OBSERVABLES:
        raise PhaseprobeError(f"observable: unknown '{observable}'; use one of {', '.join(OBSERVABLES)}")
    if convention is not None and convention not in conventions.CONVENTIONS:
        raise PhaseprobeError(f"convention: unknown '{convention}'; use one of {', '.join(conventions.CONVENTIONS)}")
    runs = []
    for d in dirs:
        if not Path(d).is_dir():
            raise PhaseprobeError(f"compare: '{d}' is not a folder; give run folders made by phaseprobe sweep")
        if Path(d).resolve() == Path(out).resolve():
            raise PhaseprobeError(f"out: '{out}' is one of the compared runs; give a new folder for the comparison")
        run = open_run(d)
        if run.kind != "sweep":
            raise PhaseprobeError(f"compare: '{d}' is a {run.kind} run; compare takes sweep folders (phaseprobe sweep)")
        if run.records.empty:
            raise PhaseprobeError(f"compare: '{d}' has no finished records yet; rerun its sweep to finish it")
        if observable not in run.records.columns:
            raise PhaseprobeError(f"observable: '{d}' has no '{observable}' records; choose one it recorded, e.g. w_sq")
        runs.append(run)
    labels = _labels([Path(d) for d in dirs])
    convs = [_run_convention(r) for r in runs]
    if len(set(convs)) > 1 and not convert:
        which = ", ".join(f"{lab}: {c}" for lab, c in zip(labels, convs))
        raise PhaseprobeError(f"compare: the runs' penalty conventions differ ({which}); pass --convert to show "
                              "every strength in one convention")
    return runs, labels, convention or convs[0]


def _in_convention(df: pd.DataFrame, convention: str) -> pd.DataFrame:
    """Records with ``strength`` recomputed from the canonical alpha in ``convention``."""
    d = df.copy()
    d["strength"] = conventions.from_alpha(d["alpha"].to_numpy(dtype=float), convention)
    d["convention"] = convention
    return d


def _transitions(run) -> pd.DataFrame:
    """The run's transitions (its transitions.csv; analysed from the records when absent)."""
    p = run.path / "transitions.csv"
    if p.exists():
        try:
            return pd.read_csv(p)
        except pd.errors.EmptyDataError:
            return pd.DataFrame()
    from phaseprobe.sweep.analysis import analyze, transitions_frame

    return transitions_frame(analyze(run.records)["transitions"])


def side_by_side(frames: list[tuple[str, pd.DataFrame]], convention: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The runs' transitions side by side, every strength in ``convention``.

    **Arguments:**

    - `frames`: ``(label, transitions)`` pairs (canonical ``alpha_*`` columns).
    - `convention`: the convention the strengths are shown in.

    **Returns:** ``(long, table)``: one row per run and transition (numbers, for the CSV), and
    the side-by-side table (rows: transition (branch), quantity; a column per run; text cells).
    """
    from phaseprobe.plots.tables import fmt_bracket, fmt_num

    rows = []
    for label, tr in frames:
        for t in tr.to_dict(orient="records") if len(tr) else []:
            conv = {k: conventions.from_alpha(float(t[k]), convention) if k in t and pd.notna(t[k]) else np.nan
                    for k in ("alpha_c", "alpha_lo", "alpha_hi", "spinodal_up", "spinodal_down", "maxwell")}
            rows.append({"run": label, "observable": t.get("observable"), "branch": t.get("branch"),
                         "strength_c": conv["alpha_c"], "strength_lo": conv["alpha_lo"], "strength_hi": conv["alpha_hi"],
                         "order": t.get("order"), "spinodal_up": conv["spinodal_up"],
                         "spinodal_down": conv["spinodal_down"], "maxwell": conv["maxwell"], "convention": convention})
    long = pd.DataFrame(rows)
    s = "alpha" if convention == "l2" else "beta"
    labels = [lab for lab, _ in frames]
    table = []
    keys = long[["observable", "branch"]].drop_duplicates().itertuples(index=False) if len(long) else []
    for obs, br in keys:
        sub = {r["run"]: r for r in long[(long["observable"] == obs) & (long["branch"] == br)].to_dict(orient="records")}
        # several transitions of one run on one branch: each its own row (first, second, ...)
        quantities = [(f"{s}_c [bracket]", lambda r: fmt_bracket(r["strength_c"], r["strength_lo"], r["strength_hi"])),
                      ("order", lambda r: str(r["order"])),
                      ("spinodal up", lambda r: fmt_num(r["spinodal_up"], missing="not reached")),
                      ("spinodal down", lambda r: fmt_num(r["spinodal_down"], missing="not reached")),
                      ("Maxwell point", lambda r: fmt_num(r["maxwell"], missing="not found"))]
        name = "log10 ||w||^2" if obs == "w_sq" else str(obs).replace("_", " ")
        for q, f in quantities:
            row = {"transition": f"{name} ({br})", f"quantity ({s})": q}
            for lab in labels:
                row[lab] = f(sub[lab]) if lab in sub else "none found"
            table.append(row)
    return long, pd.DataFrame(table)


def plot_compare(runs: list[tuple[str, pd.DataFrame]], observable: str, convention: str, out: Path,
                 transitions: pd.DataFrame | None = None) -> Path:
    """The runs' seed-mean curves of ``observable`` overlaid, one panel per branch (matplotlib),
    with each run's transitions of that observable on that branch as dashed lines in its colour
    (value and order in the legend, which sits below the panels)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from phaseprobe.plots.interactive import OBSERVABLES as NAMES
    from phaseprobe.plots.interactive import _usable, grid_x, is_linear_grid, strength_name
    from phaseprobe.plots.sweep_plots import branch_label
    from phaseprobe.store.run_store import save_figure

    branches = [b for b in ("cold", "up", "down") if any(b in set(df["branch"]) for _, df in runs)]
    fig, axes = plt.subplots(1, len(branches), figsize=(5.2 * len(branches), 4.2), squeeze=False, sharey=True)
    colors = plt.get_cmap("tab10").colors
    xs = []
    for ax, b in zip(axes[0], branches):
        for i, (label, df) in enumerate(runs):
            g = _usable(df)
            g = g[g["branch"] == b]
            if g.empty:
                continue
            m = g.groupby("strength")[observable].agg(["mean", "std"]).sort_index()
            xs.extend(grid_x(g))
            ax.plot(m.index, m["mean"], "o-", ms=3.5, color=colors[i % 10], label=label)
            ax.fill_between(m.index, m["mean"] - m["std"].fillna(0), m["mean"] + m["std"].fillna(0),
                            color=colors[i % 10], alpha=0.15, lw=0)
        if transitions is not None and len(transitions):
            obs = observable if observable in set(transitions["observable"]) else "test_acc"
            for i, (label, _) in enumerate(runs):
                sel = transitions[(transitions["run"] == label) & (transitions["branch"] == b)
                                  & (transitions["observable"] == obs)]
                for t in sel.to_dict(orient="records"):
                    if np.isfinite(t["strength_c"]):
                        ax.axvline(t["strength_c"], color=colors[i % 10], ls="--", lw=1.2,
                                   label=f"{label}: {b} {strength_name(convention)}_c = {t['strength_c']:.3g} "
                                         f"({t['order']}, from {obs})")
        ax.set_title(branch_label(b, convention), fontsize=10)
        ax.set_xlabel(conventions.strength_label(convention))
        ax.grid(alpha=0.3)
    for ax in axes[0]:
        ax.set_xscale("linear" if is_linear_grid(xs or [1.0]) else "log")
        if observable == "w_sq":
            ax.set_yscale("log")
    axes[0][0].set_ylabel(NAMES.get(observable, observable) + " (seed mean, band: +-1 std)")
    handles, labels = [], []
    for ax in axes[0]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2 if len(labels) > 4 else len(labels) or 1,
               fontsize=8, title="run (curves: seed mean; dashed: the run's transitions)", title_fontsize=8)
    fig.suptitle(f"{NAMES.get(observable, observable)} of {len(runs)} sweeps", fontsize=11)
    fig.tight_layout()
    save_figure(fig, out, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return out


def compare_runs(dirs: list[str | Path], out: str | Path, convert: bool = False, observable: str = "test_acc",
                 convention: str | None = None) -> dict:
    """Compare sweeps: overlaid curves, transitions side by side, a report page in ``out``.

    **Arguments:**

    - `dirs`: two or more sweep folders.
    - `out`: the folder for ``compare.png``, ``compare_transitions.csv`` and ``report.html``.
    - `convert`: allow runs of different conventions (strengths then shown in one).
    - `observable`: the record column to overlay (``test_acc``, ``w_sq``, ...).
    - `convention`: the convention to show strengths in (default: the first run's).

    **Returns:** ``{"labels", "convention", "transitions" (long), "table" (side by side), "figure"}``.
    """
    from phaseprobe.plots.interactive import compare_figure
    from phaseprobe.plots.report import add_section
    from phaseprobe.store.run_store import save_frame_csv

    out = Path(out)
    dirs = [Path(d) for d in dirs]
    runs, labels, conv = check_runs(dirs, out, convert, observable, convention)
    out.mkdir(parents=True, exist_ok=True)
    recs = [(lab, _in_convention(r.records, conv)) for lab, r in zip(labels, runs)]
    long, table = side_by_side([(lab, _transitions(r)) for lab, r in zip(labels, runs)], conv)
    save_frame_csv(long, out / "compare_transitions.csv")
    fig = plot_compare(recs, observable, conv, out / "compare.png", long)
    native = [_run_convention(r) for r in runs]
    text = ("Runs: " + "; ".join(f"{lab} = {d} ({r.spec.get('dataset')} {r.spec.get('model')} depth "
                                 f"{r.spec.get('depth')} width {r.spec.get('width')}, {r.spec.get('mode')}, "
                                 f"convention {c})" for lab, d, r, c in zip(labels, dirs, runs, native))
            + f".\n\nStrengths shown in one convention: {conventions.DESCRIPTION.get(conv, conv)}"
            + (" (converted from each run's canonical alpha)." if len(set(native)) > 1 else ".")
            + "\n\nCurves: seed mean over trainings that did not diverge. Transitions: each run's own analysis "
            "(transitions.csv), with the interval of the jump in brackets.")
    add_section(out, "compare", f"Comparison of {len(runs)} sweeps", text, [fig],
                {"transitions side by side": table, "transitions (one row per run)": long}, order=5,
                plotly=[compare_figure(recs, observable, conv, title=f"{observable}: {', '.join(labels)}")])
    return {"labels": labels, "convention": conv, "transitions": long, "table": table, "figure": fig}


def print_comparison(con, res: dict) -> None:
    """The transitions side by side (a column per run) when that fits the console; otherwise run
    by run (a row per run under each transition, the quantities as columns)."""
    from phaseprobe.plots.tables import Col, fit_table, fmt_bracket, fmt_num, print_fitted, table_width

    t, long = res["table"], res["transitions"]
    if not len(t):
        con.print("transitions: none found in any run")
        return
    q = [c for c in t.columns if c.startswith("quantity")][0]
    cols = [Col("transition", "transition (branch)", justify="left"), Col(q, q, justify="left")]
    cols += [Col(lab, lab, fmt=(lambda k: lambda r: str(r[k]))(lab), justify="left") for lab in res["labels"]]
    f = fit_table(t, cols, con.width, title="transitions side by side")
    if table_width(f.table) <= con.width:
        con.print(f.table)
        return
    s = "alpha" if res["convention"] == "l2" else "beta"
    rows = long.assign(observable=long["observable"].map(lambda o: "log10 ||w||^2" if o == "w_sq" else str(o).replace("_", " ")))
    rows = rows.sort_values(["observable", "branch"], kind="stable")
    cols = [Col("observable", "observable", justify="left"), Col("branch", "branch", justify="left"),
            Col("run", "run", justify="left"),
            Col("strength_c", f"{s}_c [bracket]", fmt=lambda r: fmt_bracket(r["strength_c"], r["strength_lo"], r["strength_hi"])),
            Col("order", "order", justify="left", priority=1),
            Col("spinodal_up", f"spinodal up ({s})", missing="not reached", priority=2),
            Col("spinodal_down", f"spinodal down ({s})", missing="not reached", priority=2),
            Col("maxwell", f"Maxwell ({s})", fmt=lambda r: fmt_num(r["maxwell"], missing="not found"), priority=3)]
    print_fitted(con, rows, cols, title="transitions, run by run (too many runs for a column each at this width)")


def register(app: typer.Typer) -> None:
    @app.command()
    def compare(
        run_dirs: List[Path] = typer.Argument(..., help="two or more sweep folders"),
        out: Path = typer.Option(..., "--out", help="folder for compare.png, compare_transitions.csv, report.html"),
        convert: bool = typer.Option(False, "--convert", help="compare runs of different penalty conventions, "
                                     "every strength shown in one (--convention)"),
        convention: Optional[str] = typer.Option(None, help="show strengths as 'l2' (alpha) or 'wd' (beta); "
                                                 "default: the first run's"),
        observable: str = typer.Option("test_acc", help="the curve to overlay: test_acc, train_acc, w_sq, loss, ..."),
        wide: bool = typer.Option(False, "--wide", help="every table column (default: fit the terminal)"),
    ):
        """Put sweeps side by side: overlaid curves, their transitions in one table, a report page."""
        from phaseprobe.plots.tables import table_console

        res = compare_runs(run_dirs, out, convert=convert, observable=observable, convention=convention)
        con = table_console(wide)
        print_comparison(con, res)
        con.print(f"figure: {out}/compare.png; table: {out}/compare_transitions.csv; report: {out}/report.html")
