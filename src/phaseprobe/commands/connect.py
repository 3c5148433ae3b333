"""``phaseprobe connect``: paths between two minima -- the L2 probe against linear and Bezier paths."""

from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

console = Console(stderr=True)

# The embedded default (no flags): digits, a sigmoid MLP with two hidden layers of 32, two fresh
# seeds trained first, the probe on a 12-step grid, bisection to 1e-6, a 50-epoch Bezier curve.
DEFAULT_CONNECT: dict = {
    "name": "digits-connect",
    "dataset": "digits",
    "depth": 2,
    "width": 32,
    "activation": "sigmoid",
    "seeds": 2,
    "strengths": "auto",
    "n_strengths": 12,
    "bisect_tol": 1e-6,
    "saddle_steps": 10,
    "bezier_epochs": 50,
}


def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    prog = Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=False)
    tasks: dict = {}

    def cb(stage, done, total):
        if stage not in tasks:
            tasks[stage] = prog.add_task(stage, total=total)
        prog.update(tasks[stage], completed=done, total=total)

    return prog, cb


def build_spec(kind: str, default: dict, spec_file, sets, flags: dict):
    from phaseprobe.paths.workflow import load_spec_file, make_path_spec
    from phaseprobe.sweep.spec import apply_overrides

    data = dict(default) if spec_file is None else load_spec_file(spec_file, kind)
    data.update({k: v for k, v in flags.items() if v is not None})
    data = apply_overrides(data, sets)
    return make_path_spec(data, kind)


def print_table(df, title: str, cols=None) -> None:
    from rich.table import Table

    if df is None or len(df) == 0:
        Console().print(f"{title}: none")
        return
    cols = [c for c in (cols or list(df.columns)) if c in df.columns]
    t = Table(title=title)
    for c in cols:
        t.add_column(c, justify="right")
    for row in df[cols].itertuples(index=False):
        t.add_row(*[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row])
    Console(width=250).print(t)


def register(app: typer.Typer) -> None:
    @app.command()
    def connect(
        spec_file: Optional[Path] = typer.Option(None, "--spec", help="TOML spec (see examples/connect_*.toml); flags and --set override it."),
        sets: List[str] = typer.Option([], "--set", help="Override a spec field: --set n_strengths=20 (repeatable)."),
        run: List[str] = typer.Option([], "--run", help="sweep run folder to take the minima from (give twice for two runs); omit to train fresh seeds"),
        run_seeds: Optional[str] = typer.Option(None, help="which seeds of the run(s), e.g. '0,1'"),
        dataset: Optional[str] = typer.Option(None, help="digits, fashion-mnist, mnist, ... (fresh seeds)"),
        data_dir: Optional[str] = typer.Option(None, help="folder with the IDX files (mnist, fashion-mnist)"),
        n_train: Optional[int] = typer.Option(None, help="training-set size (subset)"),
        width: Optional[int] = typer.Option(None, help="hidden width"),
        depth: Optional[int] = typer.Option(None, help="hidden layers"),
        seeds: Optional[int] = typer.Option(None, help="number of fresh minima (seeds) to train"),
        strengths: Optional[str] = typer.Option(None, help="probe grid 'lin:0:0.01:21' or 'auto' (up to auto_scale/||a-b||^2)"),
        n_strengths: Optional[int] = typer.Option(None, help="grid size for 'auto'"),
        convention: Optional[str] = typer.Option(None, help="'l2' (beta*||w - w_ref||^2, the paper's) or 'wd' (beta/2*...)"),
        bezier_epochs: Optional[int] = typer.Option(None, help="epochs of Bezier curve training"),
        out: Path = typer.Option(Path("runs/connect"), help="run folder"),
        no_figures: bool = typer.Option(False, "--no-figures", help="skip figures and report"),
    ):
        """Connect minima with the L2 probe (w_ref = the other minimum) and compare with linear and Bezier paths.

        With no flags: digits, two fresh seeds of a 64-32-32-10 sigmoid MLP, a 12-step probe,
        bisection to 1e-6 (the paper bisects to about 1e-10: --set bisect_tol=1e-10), a
        50-epoch Bezier curve. Writes paths.png, probe.png, paths_summary.csv, transitions.csv
        and report.html into --out.
        """
        from phaseprobe.paths.workflow import connect as run_connect

        flags = dict(dataset=dataset, data_dir=data_dir, n_train=n_train, width=width, depth=depth, seeds=seeds,
                     strengths=strengths, n_strengths=n_strengths, convention=convention, bezier_epochs=bezier_epochs,
                     run=list(run) if run else None,
                     run_seeds=[int(s) for s in run_seeds.split(",")] if run_seeds else None)
        spec = build_spec("connect", DEFAULT_CONNECT, spec_file, sets, flags)
        console.print(f"[bold]phaseprobe connect[/bold] {spec.name}: "
                      f"{'minima from ' + ', '.join(spec.run) if spec.run else spec.dataset + ', fresh seeds ' + str(spec.seed_list())} -> {out}")
        t0 = time.perf_counter()
        prog, cb = _progress()
        with prog:
            res = run_connect(spec, out, progress=cb, figures=not no_figures)
        console.print(f"done in {time.perf_counter() - t0:.1f} s")
        print_table(res["summary"], "paths (barrier = max E along the path - mean of the ends)",
                    ["pair", "method", "barrier", "test_barrier", "max_error", "min_test_acc", "length", "grad_evals", "seconds"])
        print_table(res["transitions"], "probe transitions (bisected; saddle of E refined)",
                    ["label", "strength_lo", "strength_hi", "confirmed", "dE", "dL", "dr", "basin_lo", "basin_hi",
                     "saddle_error", "saddle_index", "saddle_grad_norm"])
        if not no_figures:
            console.print(f"figures: {out}/paths.png, {out}/probe.png; report: {out}/report.html")
