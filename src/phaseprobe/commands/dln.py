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


def _out_console(wide: bool = False) -> Console:
    """The console the tables print to: the terminal's width (80 columns when it says nothing),
    or as wide as every table needs with ``--wide``."""
    from phaseprobe.plots.tables import table_console

    return table_console(wide)


def _index_cell(c: dict) -> str:
    """The certificate's Hessian count with its threshold (``tol`` = ``hess_rel_tol * sigma_1``)."""
    from phaseprobe.plots.tables import DASH, fmt_num

    if not c:
        return DASH
    if c.get("index", -1) < 0:
        return "not computed"
    return f"{int(c['index'])} (tol {fmt_num(c['hess_tol'], 2)})"


_SADDLE_KIND = {"higher_order_saddle": "higher-order", "strict_saddle": "strict", "not_critical": "not critical"}


def plateau_rows(plateaus) -> list[dict]:
    """One row per plateau of a single dln run, for :func:`print_plateaus` (the certificate's
    fields flattened; a plateau without a certificate reads ``not certified``).

    **Arguments:**

    - `plateaus`: the :class:`~phaseprobe.dynamics.plateaus.LossPlateau` list of ``analyse_dln_run``.

    **Returns:** a list of dicts.
    """
    from phaseprobe.plots.tables import fmt_num

    rows = []
    for p in plateaus:
        c = p.certificate or {}
        rows.append({"index": int(p.index), "t_start": p.t_start, "t_end": p.t_end, "level": p.level,
                     "oracle_level": p.oracle_level, "rank": int(p.rank),
                     "learned_sv": ", ".join(fmt_num(float(x), 4) for x in p.learned_sv) or "none",
                     "t_escape": p.t_escape,
                     "kind": _SADDLE_KIND.get(c.get("kind"), c.get("kind")) if c else "not certified",
                     "hess_index": _index_cell(c), "min_eig": c.get("min_eig"), "escape_order": c.get("escape_order")})
    return rows


def print_plateaus(con: Console, plateaus, slope_tol: float) -> list[str]:
    """The plateaus of a single dln run and their saddles, fitted to ``con.width`` (the least
    important columns left out first and named; a ``--wide`` console shows them all).

    **Arguments:**

    - `con`: the console (:func:`phaseprobe.plots.tables.table_console`).
    - `plateaus`: the run's :class:`~phaseprobe.dynamics.plateaus.LossPlateau` list.
    - `slope_tol`: the plateau threshold on ``|d log E / d log t|`` (for the title).

    **Returns:** the headers left out.
    """
    from phaseprobe.plots.tables import Col, fmt_count, print_fitted

    cols = [Col("index", "plateau", fmt=lambda r: fmt_count(r["index"])),
            Col("t_start", "t start", digits=4, priority=2), Col("t_end", "t end", digits=4, priority=2),
            Col("level", "loss E", digits=5), Col("oracle_level", "oracle 1/2 sum s_i^2", digits=5, priority=3),
            Col("rank", "rank", fmt=lambda r: fmt_count(r["rank"])),
            Col("learned_sv", "learned singular values", justify="left", priority=5),
            Col("t_escape", "escape t", digits=4, missing="not reached", priority=1),
            Col("kind", "saddle", justify="left", priority=1),
            Col("hess_index", "Hessian eigs < -tol", fmt=lambda r: r["hess_index"], priority=4),
            Col("min_eig", "lambda_min(H)", priority=4), Col("escape_order", "escape order", digits=3, priority=3)]
    dropped = print_fitted(con, plateau_rows(plateaus), cols,
                           title=f"plateaus (|d log E / d log t| < {slope_tol}) and their saddles")
    con.print("t: integration time, lr x steps; oracle: 1/2 sum of the teacher's s_i^2 beyond the rank"
              + ("" if any(p.certificate for p in plateaus) or not plateaus else "; saddles not certified (--certify)"))
    return dropped


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
        wide: bool = typer.Option(False, "--wide", help="print every table column (default: fit the terminal, 80 columns)"),
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
            _run_spec_grid(kind, data, grid_fields, out, eng, no_figures, wide)
        elif phase:
            _run_phase_diagram(spec, out, eng, no_figures, wide)
        elif escape:
            _run_escape(spec, out, eng, no_figures, wide)
        else:
            _run_one(spec, out, eng, no_figures, wide)


def _reporter(out: Path):
    from phaseprobe.commands.sweep import reporter

    return reporter(out)


def _run_one(spec, out: Path, eng, no_figures: bool, wide: bool = False) -> None:
    from phaseprobe.dynamics.analysis import analyse_dln_run
    from phaseprobe.dynamics.kind import DLN
    from phaseprobe.experiment import run_experiment
    from phaseprobe.plots.tables import fmt_num

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
    con = _out_console(wide)
    print_plateaus(con, res["plateaus"], spec.plateaus["slope_tol"])
    con.print("oracle escape times (loss halfway between rank k-1 and rank k levels): "
              + ", ".join(f"t_{k} = {fmt_num(v, 4, 'never')}" for k, v in enumerate(res["escape_times"], start=1)))
    if not no_figures:
        console.print(f"figures: {', '.join(str(f) for f in res['figures'])}; report: {out}/report.html")


def _run_phase_diagram(spec, out: Path, eng, no_figures: bool, wide: bool = False) -> None:
    from phaseprobe.dynamics.analysis import analyse_dln_phase_grid, seed_means
    from phaseprobe.dynamics.kind import DLN_PHASE_GRID
    from phaseprobe.experiment import run_experiment
    from phaseprobe.plots.tables import Col, fmt_count, fmt_num, print_fitted

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
    con = _out_console(wide)
    print_fitted(con, seed_means(res["summary"]), [
        Col("gamma", "gamma"), Col("width", "width", fmt=lambda r: fmt_count(r["width"])),
        Col("disp_abs", "||theta_end - theta_0||", digits=4, priority=1),
        Col("disp_rel", "relative", digits=4),
        Col("n_plateaus", "plateaus", digits=2, priority=2),
        Col("t_escape_1", "first escape t", digits=4, missing="not reached")],
        title=f"order parameters (means over {len(g.seeds)} seed{'s' if len(g.seeds) != 1 else ''}; "
              "relative = ||theta_end - theta_0|| / ||theta_0||; t = lr x steps)")
    for col, tr in res["located"].items():
        pairs = ", ".join(f"{a}-{b}: {fmt_num(gc, 4, 'no crossing')}"
                          for a, b, gc in zip(tr["pairs"]["w_lo"], tr["pairs"]["w_hi"], tr["pairs"]["gamma_c"]))
        con.print(f"transition from the width exponent of {col}: gamma_c = "
                  f"{fmt_num(tr['gamma_c'], 4, 'not found (the exponent does not cross 0 over these gammas)')}"
                  f"  (per width pair: {pairs or 'none'})")
    if not no_figures:
        console.print(f"figures: {', '.join(str(f) for f in res['figures'])}; report: {out}/report.html")


def _run_escape(spec, out: Path, eng, no_figures: bool, wide: bool = False) -> None:
    from phaseprobe.dynamics.analysis import analyse_dln_escape
    from phaseprobe.dynamics.kind import DLN_ESCAPE
    from phaseprobe.experiment import run_experiment
    from phaseprobe.plots.tables import Col, fmt_count, print_fitted

    es = spec.escape
    banner = (f"[bold]phaseprobe dln --escape[/bold] {spec.name}: depths {es['depths']}, width {es['width']}, "
              f"teacher singular values {spec.teacher['singular_values']}, engine {eng.name} -> {out}")
    t0 = time.perf_counter()
    with _reporter(out) as prog:
        run_experiment(DLN_ESCAPE, spec, out, engine=eng, progress=prog, banner=banner)
    res = analyse_dln_escape(out, figures=not no_figures)
    console.print(f"done in {time.perf_counter() - t0:.1f} s")
    con = _out_console(wide)
    fits = res["fits"]
    if fits is None or len(fits) == 0:
        con.print("escape times: no fit (each fit needs escapes at two init scales or more)")
    else:
        print_fitted(con, fits, [
            Col("depth", "depth", fmt=lambda r: fmt_count(r["depth"])),
            Col("k", "escape k", fmt=lambda r: fmt_count(r["k"])),
            Col("measure", "measure", justify="left"),
            Col("measured", "measured", digits=4), Col("theory", "theory", digits=4)],
            title="escape times: measured scaling vs theory (t = lr x steps)")
    if not no_figures:
        console.print(f"figures: {', '.join(str(f) for f in res['figures'])}; report: {out}/report.html")


def _run_spec_grid(kind: str, data: dict, grid_fields: dict, out: Path, eng, no_figures: bool, wide: bool = False) -> None:
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

    print_cells(_out_console(wide), res["cells"])
    if not no_figures:
        console.print(f"report: {out}/report.html (one section per cell); cells: {out}/cells.csv")
