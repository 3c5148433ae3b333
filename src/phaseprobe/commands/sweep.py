"""``phaseprobe sweep``: accuracy phases against the L2 strength, with hysteresis."""

from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from phaseprobe.engine.grid import parse_grid
from phaseprobe.errors import SpecError
from phaseprobe.sweep.spec import DEFAULT_SPEC, apply_overrides, load_spec_file, make_spec

console = Console(stderr=True)


def _parse_classes(text: Optional[str]):
    """``--classes``: a class subset ``'0,1,2'`` or the first ``k`` classes ``'k'``."""
    if text is None:
        return None
    t = text.strip()
    try:
        if "," in t:
            return [int(x) for x in t.split(",") if x.strip()]
        return int(t)
    except ValueError:
        raise SpecError(f"classes: cannot read '{text}'; give class ids '0,1,2' or a count of first classes '3'") from None


def register(app: typer.Typer) -> None:
    @app.command(context_settings={"allow_extra_args": True})
    def sweep(
        cli: typer.Context,
        spec_file: Optional[Path] = typer.Option(None, "--spec", help="TOML spec (see examples/); flags and --set override it."),
        sets: List[str] = typer.Option([], "--set", help="Override a spec field: --set width=128 (repeatable)."),
        dataset: Optional[str] = typer.Option(None, help="digits, fashion-mnist, mnist, gaussian-mixture, teacher, lowrank-linear, modular"),
        classes: Optional[str] = typer.Option(None, help="class subset '0,1,2' or the first k classes 'k'"),
        data_dir: Optional[str] = typer.Option(None, help="folder with the IDX files (mnist, fashion-mnist)"),
        n_train: Optional[int] = typer.Option(None, help="training-set size (subset)"),
        model: Optional[str] = typer.Option(None, help="mlp, linear (deep linear), conv"),
        depth: Optional[int] = typer.Option(None, help="hidden layers (mlp) or weight matrices (linear)"),
        width: Optional[int] = typer.Option(None, help="hidden width"),
        activation: Optional[str] = typer.Option(None, help="relu, tanh, gelu, sigmoid, identity"),
        alphas: Optional[str] = typer.Option(None, help="grid: '1e-5:1e-1:41' (log), 'lin:0:0.1:51', or '0.001,0.01'"),
        convention: Optional[str] = typer.Option(None, help="'l2' (alpha*||w||^2) or 'wd' (beta/2*||w||^2)"),
        seeds: Optional[int] = typer.Option(None, help="number of seeds"),
        mode: Optional[str] = typer.Option(None, help="cold, up, down, loop"),
        optimizer: Optional[str] = typer.Option(None, help="adam, adamw, sgd, momentum, gd"),
        lr: Optional[float] = typer.Option(None, help="learning rate"),
        epochs: Optional[int] = typer.Option(None, "--epochs", "--steps", help="max epochs per strength (full batch: steps)"),
        batch: Optional[int] = typer.Option(None, help="minibatch size (omit: full batch)"),
        patience: Optional[int] = typer.Option(None, help="early stopping patience in epochs"),
        out: Path = typer.Option(Path("runs/sweep"), help="run folder (rerun with the same spec to resume)"),
        engine: str = typer.Option("local", help="local (in-process) or ray"),
        address: Optional[str] = typer.Option(None, help="Ray address: auto, HOST:PORT, or local (a private Ray instance)"),
        grid: List[str] = typer.Option([], "--grid", help="Spec grid, one sweep per cell: --grid width=64,256 depth=1,2,3 "
                                       "(space-separated or repeated; list values in brackets: classes=[0,1],[0,1,2])."),
        no_figures: bool = typer.Option(False, "--no-figures", help="skip figures and report"),
    ):
        """Map accuracy phases against the L2 strength (cold, up, down or loop sweeps).

        With no flags it runs the embedded default: digits, MLP with two hidden layers, a loop
        sweep showing the first-order onset-of-learning transition and its hysteresis loop.
        """
        from phaseprobe.engine import get_engine
        from phaseprobe.sweep.driver import run_sweep
        from phaseprobe.sweep.summary import summarize

        data = dict(DEFAULT_SPEC) if spec_file is None else load_spec_file(spec_file)
        flags = dict(dataset=dataset, classes=_parse_classes(classes), data_dir=data_dir, n_train=n_train, model=model,
                     depth=depth, width=width, activation=activation, alphas=alphas, convention=convention,
                     seeds=seeds, mode=mode, optimizer=optimizer, lr=lr, epochs=epochs, batch_size=batch,
                     patience=patience)
        data.update({k: v for k, v in flags.items() if v is not None})
        data = apply_overrides(data, sets)
        spec = make_spec(data)
        if cli.args and not grid:
            raise SpecError(f"sweep: unexpected argument(s) '{' '.join(cli.args)}'; grid fields go after --grid, e.g. --grid width=64,256 depth=1,2")
        grid_fields = parse_grid(list(grid) + list(cli.args)) if grid else None
        eng = get_engine(engine, **({"address": address} if address else {}))
        if grid_fields is not None:
            _run_grid_command(data, grid_fields, out, eng, no_figures)
            return
        banner = (f"[bold]phaseprobe sweep[/bold] {spec.name}: {spec.dataset}, {spec.model} depth {spec.depth} "
                  f"width {spec.width}, mode {spec.mode}, {len(spec.alpha_grid())} strengths x {len(spec.seed_list())} seeds -> {out}")
        t0 = time.perf_counter()
        with reporter(out) as prog:
            df = run_sweep(spec, out, engine=eng, progress=prog, banner=banner)
        console.print(f"done in {time.perf_counter() - t0:.1f} s; {int(df['final'].sum()) if not df.empty else 0} final records in {out}/records")
        res = summarize(out, figures=not no_figures)
        _print_tables(res)
        if not no_figures:
            console.print(f"figures: {out}/sweep.png, {out}/classes.png; report: {out}/report.html")


def reporter(out: Path):
    """The progress reporter of a command writing into ``out`` (bars in a terminal, log lines
    every 10 s otherwise; every line also in ``out/progress.log``)."""
    from phaseprobe.progress import ProgressReporter

    return ProgressReporter(log_path=Path(out) / "progress.log")


def _run_grid_command(data: dict, grid_fields: dict, out: Path, eng, no_figures: bool) -> None:
    """``--grid``: one sweep per cell under OUT/cells/, one report with a facet per cell."""
    from rich.table import Table

    from phaseprobe.engine.grid import expand, run_grid, summarize_grid

    n_cells = len(expand(grid_fields))
    banner = (f"[bold]phaseprobe sweep[/bold] grid of {n_cells} cells ("
              + ", ".join(f"{k}={','.join(map(str, v))}" for k, v in grid_fields.items()) + f"), engine {eng.name} -> {out}")
    t0 = time.perf_counter()
    with reporter(out) as prog:
        df = run_grid(data, grid_fields, out, engine=eng, progress=prog, banner=banner)
    console.print(f"done in {time.perf_counter() - t0:.1f} s; {int(df['final'].sum()) if not df.empty else 0} final records "
                  f"in {out}/cells/*/records")
    res = summarize_grid(out, figures=not no_figures)
    cells = res["cells"]
    t = Table(title="cells")
    for c in cells.columns:
        t.add_column(str(c), justify="right")
    for row in cells.itertuples(index=False):
        t.add_row(*[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row])
    _out_console().print(t)
    if not no_figures:
        console.print(f"report: {out}/report.html (one section per cell); cells: {out}/cells.csv")


def _out_console() -> Console:
    c = Console()
    return c if c.is_terminal else Console(width=160)


def _print_tables(res) -> None:
    """The run's convergence counts and notes, then its transitions and plateaus (integers stay integers)."""
    from rich.table import Table

    from phaseprobe.sweep.summary import convergence_line

    con = _out_console()
    if res.get("counts"):
        con.print(convergence_line(res["counts"]))
    for n in res.get("notes", []):
        con.print(f"note: {n}")
    tr = res["transitions"]
    if len(tr) and "seeds_agree" in tr.columns and "n_seeds" in tr.columns:
        tr = tr.assign(seeds_agree=[f"{a} of {n}" for a, n in zip(tr["seeds_agree"], tr["n_seeds"])])
    t = Table(title="transitions (order judged per seed; seeds agree = jumps within one grid step of each other)")
    cols = [c for c in ("observable", "branch", "strength_c", "strength_lo", "strength_hi", "detect_fraction", "order",
                        "order_seeds", "seeds_agree", "jump", "spinodal_up_strength", "spinodal_down_strength",
                        "maxwell_strength", "hysteresis_area", "diverged") if c in tr.columns]
    names = {"detect_fraction": "detected", "order_seeds": "per seed", "seeds_agree": "seeds agree"}
    for c in cols:
        t.add_column(names.get(c, c.replace("_strength", "").replace("strength_", "")), justify="right")
    for row in tr[cols].itertuples(index=False) if len(tr) else []:
        t.add_row(*[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row])
    con.print(t)
    pl = res["plateaus"]
    if len(pl):
        t = Table(title="accuracy plateaus (classes learned: range over records, never a mean)")
        pcols = [c for c in ("branch", "strength_from", "strength_to", "level", "classes", "n_classes_learned", "diverged")
                 if c in pl.columns]
        for c in pcols:
            t.add_column(c, justify="right")
        for row in pl[pcols].itertuples(index=False):
            t.add_row(*[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row])
        con.print(t)
