"""``phaseprobe grok``: grokking on modular arithmetic as a metastable phase."""

from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

console = Console(stderr=True)


def _floats(text: Optional[str], field: str):
    if text is None:
        return None
    from phaseprobe.errors import SpecError

    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SpecError(f"{field}: cannot read '{text}'; give comma-separated numbers, e.g. 0,0.3,1") from None


def _out_console(wide: bool = False) -> Console:
    """The console the tables print to: the terminal's width (80 columns when it says nothing),
    or as wide as every table needs with ``--wide``."""
    from phaseprobe.plots.tables import table_console

    return table_console(wide)


def _reporter(out: Path):
    """Bars in a terminal, a log line at least every 10 s otherwise; every line also in OUT/progress.log."""
    from phaseprobe.progress import ProgressReporter

    return ProgressReporter(log_path=Path(out) / "progress.log")


def register(app: typer.Typer) -> None:
    @app.command(context_settings={"allow_extra_args": True})
    def grok(
        cli: typer.Context,
        spec_file: Optional[Path] = typer.Option(None, "--spec", help="TOML spec (examples/grok*.toml); flags and --set override it."),
        sets: List[str] = typer.Option([], "--set", help="Override a field: --set steps=20000, --set hysteresis.enabled=false (repeatable)."),
        setup: Optional[str] = typer.Option(None, help="named setup the spec follows: omnigrok, nanda, power, quick"),
        p: Optional[int] = typer.Option(None, "--p", help="modulus p (97 is the standard task)"),
        op: Optional[str] = typer.Option(None, help="operation: + - * / (or add, sub, mul, div)"),
        train_frac: Optional[float] = typer.Option(None, help="fraction of the pairs used for training, in (0, 1)"),
        model: Optional[str] = typer.Option(None, help="embed-mlp or transformer"),
        wd: Optional[str] = typer.Option(None, "--wd", help="AdamW weight decays of the grid, e.g. '0,0.3,1,3'"),
        init_scales: Optional[str] = typer.Option(None, help="init scales of the grid, e.g. '0.5,1,2'"),
        seeds: Optional[int] = typer.Option(None, help="number of seeds"),
        steps: Optional[int] = typer.Option(None, help="training steps of every grid member"),
        lr: Optional[float] = typer.Option(None, help="AdamW learning rate"),
        hysteresis: Optional[bool] = typer.Option(None, "--hysteresis/--no-hysteresis", help="run the warm-started weight-decay loop"),
        geometry: Optional[bool] = typer.Option(None, "--geometry/--no-geometry", help="compare plateau and solution geometry"),
        out: Path = typer.Option(Path("runs/grok"), help="run folder (rerun with the same spec to resume)"),
        engine: str = typer.Option("local", help="local (in-process) or ray"),
        address: Optional[str] = typer.Option(None, help="Ray address: auto, HOST:PORT, or local (a private Ray instance)"),
        grid: List[str] = typer.Option([], "--grid", help="Spec grid, one grok run per cell: --grid p=23,47 lr=0.001,0.003 "
                                       "(space-separated or repeated; list values in brackets: init_scales=[1],[1,2])."),
        no_figures: bool = typer.Option(False, "--no-figures", help="skip figures and the report"),
        wide: bool = typer.Option(False, "--wide", help="print every table column (default: fit the terminal, 80 columns)"),
    ):
        """Grokking on (a op b) mod p: delay vs weight decay and init scale, hysteresis, geometry.

        With no flags it runs the embedded default (Omnigrok-style embedding MLP on (a + b) mod 47,
        a 5 x 3 grid of weight decay x init scale in one ensemble, two warm-started weight-decay
        loops and the plateau-vs-solution geometry): a few minutes on two CPU cores.
        """
        from phaseprobe.engine import get_engine
        from phaseprobe.engine.grid import parse_grid
        from phaseprobe.errors import SpecError
        from phaseprobe.grokking.spec import DEFAULT_GROK_SPEC, GrokSpec, load_grok_file, make_grok_spec
        from phaseprobe.specs import apply_overrides

        data = dict(DEFAULT_GROK_SPEC) if spec_file is None else load_grok_file(spec_file)
        flags = dict(setup=setup, p=p, op=op, train_frac=train_frac, model=model, weight_decays=_floats(wd, "wd"),
                     init_scales=_floats(init_scales, "init_scales"), seeds=seeds, steps=steps, lr=lr)
        data.update({k: v for k, v in flags.items() if v is not None})
        if hysteresis is not None:
            data["hysteresis"] = {**dict(data.get("hysteresis", {})), "enabled": hysteresis}
        if geometry is not None:
            data["geometry"] = {**dict(data.get("geometry", {})), "enabled": geometry}
        data = apply_overrides(data, sets)
        spec = make_grok_spec(data)
        if cli.args and not grid:
            raise SpecError(f"grok: unexpected argument(s) '{' '.join(cli.args)}'; grid fields go after --grid, e.g. --grid p=23,47")
        grid_fields = parse_grid(list(grid) + list(cli.args), GrokSpec) if grid else None
        eng = get_engine(engine, **({"address": address} if address else {}))
        if grid_fields is not None:
            _run_grid_command(data, grid_fields, out, eng, no_figures, wide)
            return
        from phaseprobe.experiment import run_experiment
        from phaseprobe.grokking.kind import GROK
        from phaseprobe.grokking.run import analyse_grok, print_grok_tables

        n = len(spec.weight_decays) * len(spec.init_scales) * len(spec.seed_list())
        banner = (f"[bold]phaseprobe grok[/bold] {spec.name}: setup {spec.setup}, (a {spec.op} b) mod {spec.p}, "
                  f"{spec.train_frac:.0%} train, {spec.model}; grid {len(spec.weight_decays)} weight decays x "
                  f"{len(spec.init_scales)} init scales x {len(spec.seed_list())} seeds = {n} members, {spec.steps} steps, "
                  f"engine {eng.name} -> {out}")
        dev = spec.deviations()
        if dev:
            banner += "\ndeviations from the setup: " + "; ".join(f"{k} {a} -> {b}" for k, (a, b) in dev.items())
        t0 = time.perf_counter()
        with _reporter(out) as prog:
            run_experiment(GROK, spec, out, engine=eng, progress=prog, banner=banner)
        t1 = time.perf_counter()
        got = analyse_grok(out, figures=not no_figures)
        res = got["result"]
        console.print(f"done in {t1 - t0:.1f} s ({', '.join(f'{k} {v:.0f} s' for k, v in res.seconds.items())} of "
                      f"training in the store); analysis {time.perf_counter() - t1:.1f} s")
        print_grok_tables(res, spec, _out_console(wide))
        if not no_figures:
            console.print(f"figures: {', '.join(str(f) for f in res.figures)}; report: {out}/report.html")


def _run_grid_command(data: dict, grid_fields: dict, out: Path, eng, no_figures: bool, wide: bool = False) -> None:
    """``--grid``: one grok run per cell under OUT/cells/, one report with a facet per cell."""
    from phaseprobe.engine.grid import expand, run_grid, summarize_grid

    n_cells = len(expand(grid_fields))
    banner = (f"[bold]phaseprobe grok[/bold] grid of {n_cells} cells ("
              + ", ".join(f"{k}={','.join(map(str, v))}" for k, v in grid_fields.items()) + f"), engine {eng.name} -> {out}")
    t0 = time.perf_counter()
    with _reporter(out) as prog:
        df = run_grid(data, grid_fields, out, engine=eng, kind="grok", progress=prog, banner=banner)
    n_final = int((df["final"] == True).sum()) if not df.empty else 0  # noqa: E712 -- geometry rows are not records of a training
    console.print(f"done in {time.perf_counter() - t0:.1f} s; {n_final} final records in {out}/cells/*/records")
    res = summarize_grid(out, figures=not no_figures)
    from phaseprobe.commands.sweep import print_cells

    print_cells(_out_console(wide), res["cells"])
    if not no_figures:
        console.print(f"report: {out}/report.html (one section per cell); cells: {out}/cells.csv")
