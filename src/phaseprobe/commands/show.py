"""``phaseprobe show DIR``: what a run folder of any kind holds (sweep, probe, grok, dln, grid)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table


def _fmt(v) -> str:
    if isinstance(v, float):
        return "—" if v != v else f"{v:.4g}"
    return "—" if v is None else str(v)


def print_frame(con: Console, df, title: str, max_cols: int = 8, max_rows: int = 30) -> None:
    """A frame as a rich table (its first ``max_cols`` columns and ``max_rows`` rows)."""
    if df is None or len(df) == 0:
        con.print(f"{title}: none")
        return
    cols = list(df.columns)[:max_cols]
    t = Table(title=title + (f" (first {max_cols} of {len(df.columns)} columns)" if len(df.columns) > max_cols else ""))
    for c in cols:
        t.add_column(str(c), justify="right", overflow="fold")
    for row in df[cols].head(max_rows).itertuples(index=False):
        t.add_row(*[_fmt(v) for v in row])
    con.print(t)
    if len(df) > max_rows:
        con.print(f"... {len(df) - max_rows} more rows")


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
    from phaseprobe.sweep.summary import convergence_counts, convergence_line, summarize

    df = run.records
    if df.empty:
        con.print("no finished records yet (rerun the same command to resume)")
        return
    fin = df[df["final"]]
    tol = float(run.spec.get("converged_grad_tol", 1e-3))
    t = Table(title="trainings (mean test acc over trainings that did not diverge)")
    for c in ("branch", "runs", "seeds", "strengths", "converged", "diverged", "mean test acc"):
        t.add_column(c, justify="right")
    for b, g in fin.groupby("branch"):
        c = convergence_counts(g, tol)
        ok = g[~g["diverged"].astype(bool)]
        acc = f"{ok['test_acc'].mean():.3f}" if "test_acc" in ok and len(ok) else "—"
        t.add_row(b, str(len(g)), str(g["seed"].nunique()), str(g["alpha"].nunique()), str(c["converged"]),
                  str(c["diverged"]), acc)
    con.print(t)
    con.print(convergence_line(convergence_counts(fin, tol)))
    _print_tables(summarize(run.path, figures=False))


def show_grid(run, con: Console) -> None:
    con.print(f"grid of {len(run.spec.get('cells', []))} cells of kind {run.spec.get('cell_kind', 'sweep')}: "
              + "; ".join(f"{k} in {v}" for k, v in run.spec.get("grid", {}).items()))
    t = Table(title="cells")
    for c in ("cell", "records", "folder"):
        t.add_column(c, justify="right")
    for cell in run.cells:
        n = len(cell.records)
        t.add_row(cell.path.name, str(n), str(cell.path))
    con.print(t)
    for name, tab in run.tables.items():
        if name != "cells":
            print_frame(con, tab, name)


def register(app: typer.Typer) -> None:
    @app.command()
    def show(run_dir: Path = typer.Argument(..., help="a run folder made by any phaseprobe command (or a --grid folder)")):
        """Print what a run folder holds: its spec, its records and its analysis tables."""
        from phaseprobe.experiment import get_kind
        from phaseprobe.runs import open_run

        run = open_run(run_dir)
        con = Console()
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
            (kind.show if kind is not None and kind.show is not None else show_generic)(run, con)
