"""``phaseprobe dln``: deep linear networks -- saddle-to-saddle dynamics and the gamma x width phase diagram.

Three experiment kinds (:mod:`phaseprobe.dynamics.kind`): one network (``dln``), the phase
diagram (``--phase-diagram``, kind ``dln-grid``) and escape times (``--escape``, kind
``dln-escape``). Every one runs through the experiment pipeline: resumable (rerun the same
command), ``--engine local|ray``, and ``--grid field=v1,v2`` for one run per cell of a spec grid.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

console = Console(stderr=True)


def _out_console() -> Console:
    c = Console()
    return c if c.is_terminal else Console(width=160)


def _index_cell(c: dict) -> str:
    """The certificate's Hessian count with its threshold (``tol`` = ``hess_rel_tol * sigma_1``)."""
    if not c:
        return "-"
    if c.get("index", -1) < 0:
        return "not computed"
    return f"{c['index']} (tol {c['hess_tol']:.2g})"


def register(app: typer.Typer) -> None:
    @app.command(context_settings={"allow_extra_args": True})
    def dln(
        cli: typer.Context,
        spec_file: Optional[Path] = typer.Option(None, "--spec", help="TOML spec (examples/dln*.toml); flags and --set override it."),
        sets: List[str] = typer.Option([], "--set", help="Override a field: --set integrate.t_max=500, --set grid.depth=3 (repeatable)."),
        phase_diagram: bool = typer.Option(False, "--phase-diagram", help="run the gamma x width phase diagram instead of one network"),
        grid: bool = typer.Option(False, "--grid", help="Followed by field=v1,v2 ...: a spec grid, one dln run per cell and one report, "
                                  "as for `phaseprobe sweep` (e.g. --grid width=8,16 gamma=2,4; dotted fields reach into sections: "
                                  "grid.depth=2,3). Alone: the phase diagram (the older spelling of --phase-diagram)."),
        escape: bool = typer.Option(False, "--escape", help="measure escape times against the init scale (depths 2 and 3)"),
        depth: Optional[int] = typer.Option(None, help="weight matrices L of the single run"),
        width: Optional[int] = typer.Option(None, help="hidden width of the single run"),
        gamma: Optional[float] = typer.Option(None, help="init variance sigma^2 = width^-gamma (single run)"),
        sigma: Optional[float] = typer.Option(None, help="init standard deviation (overrides gamma)"),
        singular_values: Optional[str] = typer.Option(None, "--singular-values", help="teacher singular values, e.g. '4,2,1,0.5'"),
        t_max: Optional[float] = typer.Option(None, "--t-max", help="integration time (lr x steps)"),
        step: Optional[str] = typer.Option(None, help="adaptive or fixed"),
        lr: Optional[float] = typer.Option(None, help="learning rate (fixed step) or its cap (adaptive)"),
        gammas: Optional[str] = typer.Option(None, help="phase diagram gammas, e.g. '0.25,0.5,1,2,3'"),
        widths: Optional[str] = typer.Option(None, help="phase diagram widths, e.g. '16,64,256'"),
        seeds: Optional[str] = typer.Option(None, help="phase diagram seeds, e.g. '0,1'"),
        grid_depth: Optional[int] = typer.Option(None, "--grid-depth", help="depth of the phase diagram's networks"),
        certify: Optional[bool] = typer.Option(None, "--certify/--no-certify", help="prove each plateau is a saddle (Hessian index + escape test)"),
        out: Path = typer.Option(Path("runs/dln"), help="run folder (rerun the same command to resume)"),
        engine: str = typer.Option("local", help="local (in-process) or ray"),
        address: Optional[str] = typer.Option(None, help="Ray address: auto, HOST:PORT, or local (a private Ray instance)"),
        no_figures: bool = typer.Option(False, "--no-figures", help="skip figures and the report"),
    ):
        """Deep linear networks: plateaus and saddles of one run, the gamma x width phase diagram
        (--phase-diagram) or escape times against the init scale (--escape).

        With no flags it runs the embedded default: a depth-3 network of width 16 from a small init
        (sigma^2 = 16^-4) on a whitened rank-4 teacher -- four plateaus at 1/2 sum_(i>k) s_i^2, each
        certified a higher-order saddle -- in about a minute. ``--phase-diagram`` runs the default
        phase diagram (depth 3, gamma 0.25..3 x width 16..256, two seeds; minutes on two CPU cores);
        ``--escape`` the escape times against sigma at depths 2 and 3. ``--grid field=v1,v2`` runs
        any of them once per cell of a spec grid.
        """
        from phaseprobe.dynamics.spec import load_dln_file, make_dln_spec
        from phaseprobe.engine import get_engine
        from phaseprobe.engine.grid import parse_grid
        from phaseprobe.errors import SpecError
        from phaseprobe.specs import apply_overrides

        extra = list(cli.args)
        if extra and not grid:
            raise SpecError(f"dln: unexpected argument(s) '{' '.join(extra)}'; grid fields go after --grid, e.g. --grid width=8,16 gamma=2,4")
        spec_grid = grid and bool(extra)
        phase = phase_diagram or (grid and not extra)
        data = {} if spec_file is None else load_dln_file(spec_file)
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
            put("grid" if phase else "integrate", "t_max", t_max)
        put("grid", "gammas", gammas)
        put("grid", "widths", widths)
        put("grid", "seeds", seeds)
        put("grid", "depth", grid_depth)
        put("plateaus", "certify", certify)
        data = apply_overrides(data, sets)
        if phase and escape:
            raise SpecError("--phase-diagram/--escape: pick one experiment per call; run them one after the other")
        spec = make_dln_spec(data, grid=phase, escape=escape)
        kind = "dln-grid" if phase else "dln-escape" if escape else "dln"
        grid_fields = parse_grid(extra, type(spec)) if spec_grid else None
        eng = get_engine(engine, **({"address": address} if address else {}))
        if grid_fields is not None:
            _run_spec_grid(kind, data, grid_fields, out, eng, no_figures)
        elif phase:
            _run_phase_diagram(spec, out, eng, no_figures)
        elif escape:
            _run_escape(spec, out, eng, no_figures)
        else:
            _run_one(spec, out, eng, no_figures)


def _reporter(out: Path):
    from phaseprobe.commands.sweep import reporter

    return reporter(out)


def _run_one(spec, out: Path, eng, no_figures: bool) -> None:
    from rich.table import Table

    from phaseprobe.dynamics.analysis import analyse_dln_run
    from phaseprobe.dynamics.kind import DLN
    from phaseprobe.experiment import run_experiment

    te = spec.teacher
    banner = (f"[bold]phaseprobe dln[/bold] {spec.name}: depth {spec.depth}, width {spec.width}, sigma {spec.sigma:.3g}"
              + (f" (gamma {spec.gamma:g})" if spec.gamma is not None else "")
              + f"; teacher {te['out_dim']}x{te['in_dim']} with singular values {te['singular_values']}; "
              f"{spec.integrate.step} step up to t = {spec.integrate.t_max:g}, engine {eng.name} -> {out}")
    t0 = time.perf_counter()
    with _reporter(out) as prog:
        run_experiment(DLN, spec, out, engine=eng, progress=prog, banner=banner)
        res = analyse_dln_run(out, figures=not no_figures, progress=prog)
    console.print(f"done in {time.perf_counter() - t0:.1f} s")
    t = Table(title=f"plateaus (|d log E / d log t| < {spec.plateaus['slope_tol']}) and their saddles")
    for c in ("#", "t start", "t end", "loss", "oracle 1/2 sum s_i^2", "rank", "learned singular values", "escape t", "kind",
              "Hessian eigs < -tol", "lambda_min", "escape order"):
        t.add_column(c, justify="right")
    short = {"higher_order_saddle": "higher-order", "strict_saddle": "strict", "not_critical": "not critical"}
    for p in res["plateaus"]:
        c = p.certificate or {}
        t.add_row(str(p.index), f"{p.t_start:.4g}", f"{p.t_end:.4g}", f"{p.level:.5g}", f"{p.oracle_level:.5g}", str(p.rank),
                  ", ".join(f"{x:.4g}" for x in p.learned_sv), f"{p.t_escape:.4g}", short.get(c.get("kind"), c.get("kind", "-")),
                  _index_cell(c), f"{c['min_eig']:.3g}" if c else "-", f"{c['escape_order']:.2f}" if c else "-")
    _out_console().print(t)
    _out_console().print("oracle escape times (loss halfway between rank k-1 and rank k levels): "
                         + ", ".join(f"t_{k} = {v:.4g}" for k, v in enumerate(res["escape_times"], start=1)))
    if not no_figures:
        console.print(f"figures: {', '.join(str(f) for f in res['figures'])}; report: {out}/report.html")


def _run_phase_diagram(spec, out: Path, eng, no_figures: bool) -> None:
    from rich.table import Table

    from phaseprobe.dynamics.analysis import analyse_dln_phase_grid, seed_means
    from phaseprobe.dynamics.kind import DLN_PHASE_GRID
    from phaseprobe.experiment import run_experiment

    g = spec.grid
    n = len(g.gammas) * len(g.seeds)
    banner = (f"[bold]phaseprobe dln --phase-diagram[/bold] {spec.name}: depth {g.depth}, gammas {list(g.gammas)} x widths "
              f"{list(g.widths)} x seeds {list(g.seeds)} ({n} members per width ensemble), t up to {g.integrate.t_max:g}, "
              f"engine {eng.name} -> {out}")
    t0 = time.perf_counter()
    with _reporter(out) as prog:
        run_experiment(DLN_PHASE_GRID, spec, out, engine=eng, progress=prog, banner=banner)
    res = analyse_dln_phase_grid(out, figures=not no_figures)
    console.print(f"done in {time.perf_counter() - t0:.1f} s")
    s = seed_means(res["summary"])
    t = Table(title="order parameters (seed means)")
    for c in ("gamma", "width", "||theta_end - theta_0||", "relative", "plateaus", "first escape t"):
        t.add_column(c, justify="right")
    for r in s.itertuples(index=False):
        t.add_row(f"{r.gamma:g}", str(r.width), f"{r.disp_abs:.4g}", f"{r.disp_rel:.4g}", f"{r.n_plateaus:.1f}", f"{r.t_escape_1:.4g}")
    _out_console().print(t)
    for col, tr in res["located"].items():
        pairs = ", ".join(f"{a}-{b}: {gc:.3f}" for a, b, gc in zip(tr["pairs"]["w_lo"], tr["pairs"]["w_hi"], tr["pairs"]["gamma_c"]))
        _out_console().print(f"transition from the width exponent of {col}: gamma_c = {tr['gamma_c']:.3f}  (per width pair: {pairs})")
    if not no_figures:
        console.print(f"figures: {', '.join(str(f) for f in res['figures'])}; report: {out}/report.html")


def _run_escape(spec, out: Path, eng, no_figures: bool) -> None:
    from rich.table import Table

    from phaseprobe.dynamics.analysis import analyse_dln_escape
    from phaseprobe.dynamics.kind import DLN_ESCAPE
    from phaseprobe.experiment import run_experiment

    es = spec.escape
    banner = (f"[bold]phaseprobe dln --escape[/bold] {spec.name}: depths {es['depths']}, width {es['width']}, "
              f"teacher singular values {spec.teacher['singular_values']}, engine {eng.name} -> {out}")
    t0 = time.perf_counter()
    with _reporter(out) as prog:
        run_experiment(DLN_ESCAPE, spec, out, engine=eng, progress=prog, banner=banner)
    res = analyse_dln_escape(out, figures=not no_figures)
    console.print(f"done in {time.perf_counter() - t0:.1f} s")
    t = Table(title="escape times: measured scaling vs theory")
    for c in ("depth", "escape k", "measure", "measured", "theory"):
        t.add_column(c, justify="right")
    for r in res["fits"].itertuples(index=False):
        t.add_row(str(r.depth), str(r.k), r.measure, f"{r.measured:.4f}", f"{r.theory:.4f}")
    _out_console().print(t)
    if not no_figures:
        console.print(f"figures: {', '.join(str(f) for f in res['figures'])}; report: {out}/report.html")


def _run_spec_grid(kind: str, data: dict, grid_fields: dict, out: Path, eng, no_figures: bool) -> None:
    """``--grid field=v1,v2``: one run of ``kind`` per cell under OUT/cells/, one report with a facet per cell."""
    from phaseprobe.engine.grid import expand, run_grid, summarize_grid

    n_cells = len(expand(grid_fields))
    banner = (f"[bold]phaseprobe dln[/bold] spec grid of {n_cells} {kind} runs ("
              + ", ".join(f"{k}={','.join(map(str, v))}" for k, v in grid_fields.items()) + f"), engine {eng.name} -> {out}")
    t0 = time.perf_counter()
    with _reporter(out) as prog:
        df = run_grid(data, grid_fields, out, engine=eng, kind=kind, progress=prog, banner=banner)
    console.print(f"done in {time.perf_counter() - t0:.1f} s; {len(df)} records in {out}/cells/*/records")
    res = summarize_grid(out, figures=not no_figures)
    from phaseprobe.commands.sweep import print_cells

    print_cells(_out_console(), res["cells"])
    if not no_figures:
        console.print(f"report: {out}/report.html (one section per cell); cells: {out}/cells.csv")
