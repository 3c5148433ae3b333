"""``phaseprobe show DIR``: what a run folder of any kind holds (sweep, probe, grok, dln, grid)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console


def print_frame(con: Console, df, title: str, max_cols: int | None = None, max_rows: int = 30) -> None:
    """A frame as a table fitted to ``con.width`` (its first columns always; later ones left out
    from the right when too wide, named below it; ``show --wide`` shows every column). No ``nan``
    is printed (``—``) and integer columns print as counts.

    **Arguments:**

    - `con`: the console (its width decides the fit).
    - `df`: the frame; `title`: the table's title.
    - `max_cols`: at most this many columns even with ``--wide`` (None: all).
    - `max_rows`: at most this many rows (the rest counted below the table).
    """
    from phaseprobe.plots.tables import frame_columns, print_fitted

    if df is None or len(df) == 0:
        con.print(f"{title}: none")
        return
    if max_cols is not None and len(df.columns) > max_cols:
        title = f"{title} (first {max_cols} of {len(df.columns)} columns)"
        df = df[list(df.columns)[:max_cols]]
    print_fitted(con, df, frame_columns(df, priority_from=2), title=title, max_rows=max_rows)


def show_generic(run, con: Console) -> None:
    """Records per phase/branch and every analysis table of a run folder."""
    df = run.records
    if df.empty:
        con.print("no finished records yet (rerun the same command to resume)")
    else:
        group = next((c for c in ("branch", "phase", "setup", "stage") if c in df.columns), None)
        con.print(f"{len(df)} records" + (f"; by {group}: " + ", ".join(f"{k} {len(g)}" for k, g in df.groupby(group))
                                          if group else ""))
    for name, tab in run.tables.items():
        print_frame(con, tab, name)


def show_sweep(run, con: Console) -> None:
    from phaseprobe.commands.sweep import _print_tables
    from phaseprobe.plots.tables import Col, print_fitted
    from phaseprobe.sweep.summary import convergence_counts, summarize

    df = run.records
    if df.empty:
        con.print("no finished records yet (rerun the same command to resume)")
        return
    fin = df[df["final"]]
    tol = float(run.spec.get("converged_grad_tol", 1e-3))
    rows = []
    for b, g in fin.groupby("branch"):
        c = convergence_counts(g, tol)
        ok = g[~g["diverged"].astype(bool)]
        rows.append({"branch": b, "trainings": len(g), "seeds": g["seed"].nunique(), "strengths": g["alpha"].nunique(),
                     "converged": c["converged"], "diverged": c["diverged"],
                     "acc": float(ok["test_acc"].mean()) if "test_acc" in ok and len(ok) else None})
    cols = [Col("branch", "branch", justify="left"), Col("trainings", "trainings"), Col("seeds", "seeds"),
            Col("strengths", "strengths"), Col("converged", "converged", priority=2),
            Col("diverged", "diverged", priority=1), Col("acc", "mean test acc")]
    print_fitted(con, rows, cols, title="trainings (mean test acc over those that did not diverge)")
    _print_tables(summarize(run.path, figures=False), con)


def show_grid(run, con: Console) -> None:
    con.print(f"grid of {len(run.spec.get('cells', []))} cells of kind {run.spec.get('cell_kind', 'sweep')}: "
              + "; ".join(f"{k} in {v}" for k, v in run.spec.get("grid", {}).items()))
    from phaseprobe.plots.tables import Col, print_fitted

    rows = [{"cell": c.path.name, "records": len(c.records), "folder": str(c.path.relative_to(run.path))}
            for c in run.cells]
    print_fitted(con, rows, [Col("cell", "cell", justify="left"), Col("records", "records"),
                             Col("folder", "folder", justify="left", priority=1)], title="cells")
    for name, tab in run.tables.items():
        if name != "cells":
            print_frame(con, tab, name)


def register(app: typer.Typer) -> None:
    @app.command()
    def show(run_dir: Path = typer.Argument(..., help="a run folder made by any phaseprobe command (or a --grid folder)"),
             wide: bool = typer.Option(False, "--wide", help="every table column (default: fit the terminal, 80 columns)")):
        """Print what a run folder holds: its spec, its records and its analysis tables."""
        from phaseprobe.experiment import get_kind
        from phaseprobe.plots.tables import table_console
        from phaseprobe.runs import open_run

        run = open_run(run_dir)
        con = table_console(wide)
        meta = run.meta
        con.print(f"[bold]{run_dir}[/bold]: {run.kind} '{run.spec.get('name', run.spec.get('base', {}).get('name'))}', "
                  f"hash {meta.get('spec_hash')}, phaseprobe {meta.get('version')}")
        if run.kind == "grid":
            show_grid(run, con)
        elif run.kind == "sweep":
            show_sweep(run, con)
        else:
            try:
                kind = get_kind(run.kind)
            except Exception:  # noqa: BLE001 -- an unknown kind still shows its records
                kind = None
            if kind is not None and kind.show is not None:
                import inspect

                takes_wide = "wide" in inspect.signature(kind.show).parameters
                kind.show(run, con, wide=wide) if takes_wide else kind.show(run, con)
            else:
                show_generic(run, con)
