"""``phaseprobe dln``: deep linear networks -- saddle-to-saddle dynamics and the gamma x width phase diagram."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

console = Console(stderr=True)


def _out_console() -> Console:
    c = Console()
    return c if c.is_terminal else Console(width=160)


def _progress_bar():
    return Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                    TextColumn("t = {task.fields[t]:.4g} / {task.fields[tmax]:.4g}"), TextColumn("{task.fields[active]} active"),
                    TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), console=console, transient=False)


def _index_cell(c: dict) -> str:
    """The certificate's Hessian count with its threshold (``tol`` = ``hess_rel_tol * sigma_1``)."""
    if not c:
        return "-"
    if c.get("index", -1) < 0:
        return "not computed"
    return f"{c['index']} (tol {c['hess_tol']:.2g})"


def register(app: typer.Typer) -> None:
    @app.command()
    def dln(
        spec_file: Optional[Path] = typer.Option(None, "--spec", help="TOML spec (examples/dln*.toml); flags and --set override it."),
        sets: List[str] = typer.Option([], "--set", help="Override a field: --set integrate.t_max=500, --set grid.depth=3 (repeatable)."),
        grid: bool = typer.Option(False, "--grid", help="run the gamma x width phase diagram instead of one network"),
        escape: bool = typer.Option(False, "--escape", help="measure escape times against the init scale (depths 2 and 3)"),
        depth: Optional[int] = typer.Option(None, help="weight matrices L of the single run"),
        width: Optional[int] = typer.Option(None, help="hidden width of the single run"),
        gamma: Optional[float] = typer.Option(None, help="init variance sigma^2 = width^-gamma (single run)"),
        sigma: Optional[float] = typer.Option(None, help="init standard deviation (overrides gamma)"),
        singular_values: Optional[str] = typer.Option(None, "--singular-values", help="teacher singular values, e.g. '4,2,1,0.5'"),
        t_max: Optional[float] = typer.Option(None, "--t-max", help="integration time (lr x steps)"),
        step: Optional[str] = typer.Option(None, help="adaptive or fixed"),
        lr: Optional[float] = typer.Option(None, help="learning rate (fixed step) or its cap (adaptive)"),
        gammas: Optional[str] = typer.Option(None, help="grid gammas, e.g. '0.25,0.5,1,2,3'"),
        widths: Optional[str] = typer.Option(None, help="grid widths, e.g. '16,64,256'"),
        seeds: Optional[str] = typer.Option(None, help="grid seeds, e.g. '0,1'"),
        grid_depth: Optional[int] = typer.Option(None, "--grid-depth", help="depth of the grid's networks"),
        certify: Optional[bool] = typer.Option(None, "--certify/--no-certify", help="prove each plateau is a saddle (Hessian index + escape test)"),
        out: Path = typer.Option(Path("runs/dln"), help="output folder (figures, Parquet tables, report.html)"),
        no_figures: bool = typer.Option(False, "--no-figures", help="skip figures and the report"),
    ):
        """Deep linear networks: plateaus and saddles of one run, or the gamma x width phase diagram (--grid).

        With no flags it runs the embedded default: a depth-3 network of width 16 from a small init
        (sigma^2 = 16^-4) on a whitened rank-4 teacher -- four plateaus at 1/2 sum_(i>k) s_i^2, each
        certified a higher-order saddle -- in about a minute. ``--grid`` runs the default phase
        diagram (depth 3, gamma 0.25..3 x width 16..256, two seeds; minutes on two CPU cores);
        ``--escape`` the escape times against sigma at depths 2 and 3.
        """
        from phaseprobe.dynamics.experiment import DEFAULT_SPEC, load_spec_file, make_spec
        from phaseprobe.sweep.spec import apply_overrides

        data = {} if spec_file is None else load_spec_file(spec_file)
        data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}

        def put(section, key, value):
            if value is None:
                return
            if section is None:
                data[key] = value
            else:
                data.setdefault(section, {})[key] = value

        put(None, "depth", depth)
        put(None, "width", width)
        if sigma is not None:
            put(None, "sigma", sigma)
        if gamma is not None:
            put(None, "gamma", gamma)
            if sigma is None:
                data["sigma"] = None
        put("teacher", "singular_values", singular_values)
        put("integrate", "step", step)
        put("integrate", "lr", lr)
        if t_max is not None:
            put("grid" if grid else "integrate", "t_max", t_max)
        put("grid", "gammas", gammas)
        put("grid", "widths", widths)
        put("grid", "seeds", seeds)
        put("grid", "depth", grid_depth)
        put("plateaus", "certify", certify)
        data = apply_overrides(data, sets)
        if grid and escape:
            from phaseprobe.errors import SpecError

            raise SpecError("--grid/--escape: pick one experiment per call; run them one after the other")
        spec = make_spec(data, grid=grid)
        if grid:
            _run_grid(spec, out, no_figures)
        elif escape:
            _run_escape(spec, out, no_figures)
        else:
            _run_one(spec, out, no_figures)


def _run_one(spec, out: Path, no_figures: bool) -> None:
    from rich.table import Table

    from phaseprobe.dynamics.experiment import run_single

    te = spec.teacher
    console.print(f"[bold]phaseprobe dln[/bold] {spec.name}: depth {spec.depth}, width {spec.width}, sigma {spec.sigma:.3g}"
                  + (f" (gamma {spec.gamma:g})" if spec.gamma is not None else "")
                  + f"; teacher {te['out_dim']}x{te['in_dim']} with singular values {te['singular_values']}; "
                  f"{spec.integrate.step} step up to t = {spec.integrate.t_max:g} -> {out}")
    t0 = time.perf_counter()
    with _progress_bar() as prog:
        task = prog.add_task("integrating", total=1.0, t=0.0, tmax=spec.integrate.t_max, active=1, rate="")
        lo = [None]

        def progress(t_done, t_max, n_active):
            if t_done > 0 and lo[0] is None:
                lo[0] = t_done
            frac = 0.0 if lo[0] is None or t_done <= 0 else math.log(t_done / lo[0]) / max(math.log(t_max / lo[0]), 1e-12)
            prog.update(task, completed=min(max(frac, 0.0), 1.0) if n_active else 1.0, t=t_done, tmax=t_max, active=n_active,
                        rate=f"{time.perf_counter() - t0:.0f} s")

        res = run_single(spec, out, progress=progress, figures=not no_figures)
    console.print(f"done in {res.seconds:.1f} s")
    t = Table(title=f"plateaus (|d log E / d log t| < {spec.plateaus['slope_tol']}) and their saddles")
    for c in ("#", "t start", "t end", "loss", "oracle 1/2 sum s_i^2", "rank", "learned singular values", "escape t", "kind",
              "Hessian eigs < -tol", "lambda_min", "escape order"):
        t.add_column(c, justify="right")
    short = {"higher_order_saddle": "higher-order", "strict_saddle": "strict", "not_critical": "not critical"}
    for p in res.plateaus:
        c = p.certificate or {}
        t.add_row(str(p.index), f"{p.t_start:.4g}", f"{p.t_end:.4g}", f"{p.level:.5g}", f"{p.oracle_level:.5g}", str(p.rank),
                  ", ".join(f"{x:.4g}" for x in p.learned_sv), f"{p.t_escape:.4g}", short.get(c.get("kind"), c.get("kind", "-")),
                  _index_cell(c), f"{c['min_eig']:.3g}" if c else "-", f"{c['escape_order']:.2f}" if c else "-")
    _out_console().print(t)
    _out_console().print("oracle escape times (loss halfway between rank k-1 and rank k levels): "
                         + ", ".join(f"t_{k} = {v:.4g}" for k, v in enumerate(res.escape_times, start=1)))
    if not no_figures:
        console.print(f"figures: {', '.join(str(f) for f in res.figures)}; report: {out}/report.html")


def _run_grid(spec, out: Path, no_figures: bool) -> None:
    from rich.table import Table

    from phaseprobe.dynamics.experiment import run_phase_grid

    g = spec.grid
    n = len(g.gammas) * len(g.seeds)
    console.print(f"[bold]phaseprobe dln --grid[/bold] {spec.name}: depth {g.depth}, gammas {list(g.gammas)} x widths {list(g.widths)} "
                  f"x seeds {list(g.seeds)} ({n} members per width ensemble), t up to {g.integrate.t_max:g} -> {out}")
    t0 = time.perf_counter()
    with _progress_bar() as prog:
        tasks: dict = {}
        lo: dict = {}

        def progress(label, t_done, t_max, n_active):
            if label not in tasks:
                tasks[label] = prog.add_task(label, total=1.0, t=0.0, tmax=t_max, active=n, rate="")
            if t_done > 0 and label not in lo:
                lo[label] = t_done
            l0 = lo.get(label)
            frac = 0.0 if l0 is None or t_done <= 0 else math.log(t_done / l0) / max(math.log(t_max / l0), 1e-12)
            prog.update(tasks[label], completed=min(max(frac, 0.0), 1.0) if n_active else 1.0, t=t_done, tmax=t_max,
                        active=n_active, rate=f"{time.perf_counter() - t0:.0f} s")

        res = run_phase_grid(spec, out, progress=progress, figures=not no_figures)
    console.print(f"done in {res.seconds:.1f} s")
    s = res.result.summary.groupby(["gamma", "width"], as_index=False)[["disp_abs", "disp_rel", "n_plateaus", "t_escape_1"]].mean()
    t = Table(title="order parameters (seed means)")
    for c in ("gamma", "width", "||theta_end - theta_0||", "relative", "plateaus", "first escape t"):
        t.add_column(c, justify="right")
    for r in s.itertuples(index=False):
        t.add_row(f"{r.gamma:g}", str(r.width), f"{r.disp_abs:.4g}", f"{r.disp_rel:.4g}", f"{r.n_plateaus:.1f}", f"{r.t_escape_1:.4g}")
    _out_console().print(t)
    for col, tr in res.transitions.items():
        pairs = ", ".join(f"{a}-{b}: {gc:.3f}" for a, b, gc in zip(tr["pairs"]["w_lo"], tr["pairs"]["w_hi"], tr["pairs"]["gamma_c"]))
        _out_console().print(f"transition from the width exponent of {col}: gamma_c = {tr['gamma_c']:.3f}  (per width pair: {pairs})")
    if not no_figures:
        console.print(f"figures: {', '.join(str(f) for f in res.figures)}; report: {out}/report.html")


def _run_escape(spec, out: Path, no_figures: bool) -> None:
    from rich.table import Table

    from phaseprobe.dynamics.experiment import run_escape

    es = spec.escape
    console.print(f"[bold]phaseprobe dln --escape[/bold] {spec.name}: depths {es['depths']}, width {es['width']}, "
                  f"teacher singular values {spec.teacher['singular_values']} -> {out}")
    t0 = time.perf_counter()
    with _progress_bar() as prog:
        tasks: dict = {}
        lo: dict = {}

        def progress(label, t_done, t_max, n_active):
            if label not in tasks:
                tasks[label] = prog.add_task(label, total=1.0, t=0.0, tmax=t_max, active=n_active, rate="")
            if t_done > 0 and label not in lo:
                lo[label] = t_done
            l0 = lo.get(label)
            frac = 0.0 if l0 is None or t_done <= 0 else math.log(t_done / l0) / max(math.log(t_max / l0), 1e-12)
            prog.update(tasks[label], completed=min(max(frac, 0.0), 1.0) if n_active else 1.0, t=t_done, tmax=t_max,
                        active=n_active, rate=f"{time.perf_counter() - t0:.0f} s")

        res = run_escape(spec, out, progress=progress, figures=not no_figures)
    console.print(f"done in {res.seconds:.1f} s")
    t = Table(title="escape times: measured scaling vs theory")
    for c in ("depth", "escape k", "measure", "measured", "theory"):
        t.add_column(c, justify="right")
    for r in res.fits.itertuples(index=False):
        t.add_row(str(r.depth), str(r.k), r.measure, f"{r.measured:.4f}", f"{r.theory:.4f}")
    _out_console().print(t)
    if not no_figures:
        console.print(f"figures: {', '.join(str(f) for f in res.figures)}; report: {out}/report.html")
