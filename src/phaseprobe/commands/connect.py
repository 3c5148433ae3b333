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


def confirmed_verdict(transitions) -> str | None:
    """The one line a connect run prints (and adds to its report) when its probe confirmed no
    transition; None when at least one jump was confirmed by bisection.

    **Arguments:**

    - `transitions`: the run's transitions frame (``transitions.csv``; column ``confirmed``).

    **Returns:** the line, or None.
    """
    if len(transitions) and "confirmed" in transitions and transitions["confirmed"].fillna(False).astype(bool).any():
        return None
    n = len(transitions)
    why = (f"{n} candidate jump{'s' if n != 1 else ''} on the probe grid, none kept its gap under bisection and retraining"
           if n else "the probe grid showed no jump")
    return f"no confirmed transition found: {why} (transitions.csv lists every candidate)"


def build_spec(kind: str, default: dict, spec_file, sets, flags: dict, model_file=None, data_file=None):
    """``(spec dict, checked spec)`` of a connect/basins command: the default or the spec file,
    then the flags, then ``--set``."""
    from phaseprobe.paths.workflow import load_path_spec_file, make_path_spec
    from phaseprobe.specs import apply_overrides

    data = dict(default) if spec_file is None else load_path_spec_file(spec_file, kind)
    data.update({k: v for k, v in flags.items() if v is not None})
    if model_file is not None or data_file is not None:
        from phaseprobe.commands.sweep import own_model_and_data

        data = own_model_and_data(data, model_file, data_file)
    data = apply_overrides(data, sets)
    return data, make_path_spec(data, kind)


def run_path_command(kind: str, data: dict, spec, out: Path, engine: str, address, grid: list, extra: list,
                     no_figures: bool, banner: str) -> dict | None:
    """Run (or resume) a connect/basins command on the pipeline: one run, or one per grid cell.

    **Returns:** the analysis of a single run, or None for a grid (its cells table is printed).
    """
    from phaseprobe.commands.sweep import reporter
    from phaseprobe.engine import get_engine
    from phaseprobe.engine.grid import expand, parse_grid, run_grid, summarize_grid
    from phaseprobe.errors import SpecError
    from phaseprobe.experiment import get_kind, run_experiment

    k = get_kind(kind)
    if extra and not grid:
        raise SpecError(f"{kind}: unexpected argument(s) '{' '.join(extra)}'; grid fields go after --grid, e.g. --grid n_strengths=8,12")
    grid_fields = parse_grid(list(grid) + list(extra), k.spec_type) if grid else None
    eng = get_engine(engine, **({"address": address} if address else {}))
    t0 = time.perf_counter()
    if grid_fields is not None:
        n_cells = len(expand(grid_fields))
        gb = (f"[bold]phaseprobe {kind}[/bold] grid of {n_cells} cells ("
              + ", ".join(f"{f}={','.join(map(str, v))}" for f, v in grid_fields.items()) + f"), engine {eng.name} -> {out}")
        with reporter(out) as prog:
            run_grid(data, grid_fields, out, engine=eng, kind=kind, progress=prog, banner=gb)
            prog.message("analysing every cell")
            res = summarize_grid(out, figures=not no_figures)
        console.print(f"done in {time.perf_counter() - t0:.1f} s")
        print_table(res["cells"], "cells")
        if not no_figures:
            console.print(f"report: {out}/report.html (one section per cell); cells: {out}/cells.csv")
        return None
    with reporter(out) as prog:
        run_experiment(k, spec, out, engine=eng, progress=prog, banner=banner)
        prog.message("analysing: dense path evaluation, tables" + ("" if no_figures else ", figures, report"))
        res = k.analyse(out, figures=not no_figures)
    console.print(f"done in {time.perf_counter() - t0:.1f} s")
    return res


def print_table(df, title: str, cols=None) -> None:
    """A result table fitted to the terminal (80 columns by default; no ``nan`` shown)."""
    from phaseprobe.commands.show import print_frame
    from phaseprobe.plots.tables import table_console

    if df is not None and len(df):
        df = df[[c for c in (cols or list(df.columns)) if c in df.columns]]
    print_frame(table_console(), df, title, max_cols=None)


def register(app: typer.Typer) -> None:
    @app.command(context_settings={"allow_extra_args": True})
    def connect(
        cli: typer.Context,
        spec_file: Optional[Path] = typer.Option(None, "--spec", help="TOML spec (see examples/connect_*.toml); flags and --set override it."),
        sets: List[str] = typer.Option([], "--set", help="Override a spec field: --set n_strengths=20 (repeatable)."),
        run: List[str] = typer.Option([], "--run", help="sweep run folder to take the minima from (give twice for two runs); omit to train fresh seeds"),
        run_seeds: Optional[str] = typer.Option(None, help="which seeds of the run(s), e.g. '0,1'"),
        dataset: Optional[str] = typer.Option(None, help="digits, fashion-mnist, mnist, ... (fresh seeds)"),
        data_dir: Optional[str] = typer.Option(None, help="folder with the IDX files (mnist, fashion-mnist)"),
        model_file: Optional[str] = typer.Option(None, "--model-file", help="your own model: FILE.py:FUNCTION (fresh seeds; see `phaseprobe sweep --help`)"),
        data_file: Optional[str] = typer.Option(None, "--data", help="your own arrays: FILE.npz with x_train, y_train, x_test, y_test"),
        n_train: Optional[int] = typer.Option(None, help="training-set size (subset)"),
        width: Optional[int] = typer.Option(None, help="hidden width"),
        depth: Optional[int] = typer.Option(None, help="hidden layers"),
        seeds: Optional[int] = typer.Option(None, help="number of fresh minima (seeds) to train"),
        strengths: Optional[str] = typer.Option(None, help="probe grid 'lin:0:0.01:21' or 'auto' (up to auto_scale/||a-b||^2)"),
        n_strengths: Optional[int] = typer.Option(None, help="grid size for 'auto'"),
        convention: Optional[str] = typer.Option(None, help="'l2' (beta*||w - w_ref||^2, the paper's) or 'wd' (beta/2*...)"),
        bezier_epochs: Optional[int] = typer.Option(None, help="epochs of Bezier curve training"),
        out: Path = typer.Option(Path("runs/connect"), help="run folder (rerun with the same spec to resume)"),
        engine: str = typer.Option("local", help="local (in-process) or ray"),
        address: Optional[str] = typer.Option(None, help="Ray address: auto, HOST:PORT, or local (a private Ray instance)"),
        grid: List[str] = typer.Option([], "--grid", help="Spec grid, one run per cell: --grid n_strengths=8,12 depth=1,2"),
        no_figures: bool = typer.Option(False, "--no-figures", help="skip figures and report"),
    ):
        """Connect minima with the L2 probe (w_ref = the other minimum) and compare with linear and Bezier paths.

        With no flags: digits, two fresh seeds of a 64-32-32-10 sigmoid MLP, a 12-step probe,
        bisection to 1e-6 (the paper bisects to about 1e-10: --set bisect_tol=1e-10), a
        50-epoch Bezier curve. Writes paths.png, probe.png, paths_summary.csv, transitions.csv
        and report.html into --out.
        """
        flags = dict(dataset=dataset, data_dir=data_dir, n_train=n_train, width=width, depth=depth, seeds=seeds,
                     strengths=strengths, n_strengths=n_strengths, convention=convention, bezier_epochs=bezier_epochs,
                     run=list(run) if run else None,
                     run_seeds=[int(s) for s in run_seeds.split(",")] if run_seeds else None)
        data, spec = build_spec("connect", DEFAULT_CONNECT, spec_file, sets, flags, model_file, data_file)
        banner = (f"[bold]phaseprobe connect[/bold] {spec.name}: "
                  f"{'minima from ' + ', '.join(spec.run) if spec.run else spec.dataset + ', fresh seeds ' + str(spec.seed_list())} -> {out}")
        res = run_path_command("connect", data, spec, out, engine, address, grid, list(cli.args), no_figures, banner)
        if res is None:
            return
        print_table(res["summary"], "paths (barrier = max E along the path - mean of the ends)",
                    ["pair", "method", "barrier", "test_barrier", "max_error", "min_test_acc", "length", "grad_evals", "seconds"])
        print_table(res["transitions"], "probe transitions (bisected; saddle of E refined)",
                    ["label", "strength_lo", "strength_hi", "confirmed", "dE", "dL", "dr", "basin_lo", "basin_hi",
                     "saddle_error", "saddle_index", "saddle_grad_norm"])
        verdict = confirmed_verdict(res["transitions"])
        if verdict is not None:
            console.print(verdict)
        if not no_figures:
            if verdict is not None:
                from phaseprobe.plots.report import add_section

                add_section(out, "connect_verdict", "Probe transitions: verdict", verdict, order=61)
            console.print(f"figures: {out}/paths.png, {out}/probe.png; report: {out}/report.html")
