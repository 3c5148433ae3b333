"""``phaseprobe show DIR``: the runs and transitions of a run folder."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table


def register(app: typer.Typer) -> None:
    @app.command()
    def show(run_dir: Path = typer.Argument(..., help="a run folder made by `phaseprobe sweep`")):
        """Print a run folder's spec, its trainings per branch and its transitions."""
        from phaseprobe.commands.sweep import _print_tables
        from phaseprobe.store import RunStore
        from phaseprobe.sweep.summary import summarize

        store = RunStore(run_dir)
        meta = store.meta()
        spec = meta["spec"]
        con = Console()
        con.print(f"[bold]{run_dir}[/bold]: {meta.get('kind')} '{spec.get('name')}', hash {meta.get('spec_hash')}, phaseprobe {meta.get('version')}")
        df = store.load_records()
        if df.empty:
            con.print("no finished records yet (rerun the same command to resume)")
            return
        fin = df[df["final"]]
        t = Table(title="trainings")
        for c in ("branch", "runs", "seeds", "strengths", "converged", "diverged", "mean test acc"):
            t.add_column(c, justify="right")
        for b, g in fin.groupby("branch"):
            t.add_row(b, str(len(g)), str(g["seed"].nunique()), str(g["alpha"].nunique()), str(int(g["converged"].sum())),
                      str(int(g["diverged"].sum())), f"{g['test_acc'].mean():.3f}" if "test_acc" in g else "-")
        con.print(t)
        _print_tables(summarize(run_dir, figures=False))
