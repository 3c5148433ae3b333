"""``phaseprobe grok``: grokking on modular arithmetic as a metastable phase."""

from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)


def _floats(text: Optional[str], field: str):
    if text is None:
        return None
    from phaseprobe.errors import SpecError

    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SpecError(f"{field}: cannot read '{text}'; give comma-separated numbers, e.g. 0,0.3,1") from None


def _out_console() -> Console:
    c = Console()
    return c if c.is_terminal else Console(width=160)


def register(app: typer.Typer) -> None:
    @app.command()
    def grok(
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
        out: Path = typer.Option(Path("runs/grok"), help="output folder (rerun with the same spec to resume the grid)"),
        no_figures: bool = typer.Option(False, "--no-figures", help="skip figures and the report"),
    ):
        """Grokking on (a op b) mod p: delay vs weight decay and init scale, hysteresis, geometry.

        With no flags it runs the embedded default (Omnigrok-style embedding MLP on (a + b) mod 47,
        a 5 x 3 grid of weight decay x init scale in one ensemble, two warm-started weight-decay
        loops and the plateau-vs-solution geometry): a few minutes on two CPU cores.
        """
        from phaseprobe.grokking import DEFAULT_SPEC, load_grok_file, make_grok_spec, run_grok
        from phaseprobe.sweep.spec import apply_overrides

        data = dict(DEFAULT_SPEC) if spec_file is None else load_grok_file(spec_file)
        flags = dict(setup=setup, p=p, op=op, train_frac=train_frac, model=model, weight_decays=_floats(wd, "wd"),
                     init_scales=_floats(init_scales, "init_scales"), seeds=seeds, steps=steps, lr=lr)
        data.update({k: v for k, v in flags.items() if v is not None})
        if hysteresis is not None:
            data["hysteresis"] = {**dict(data.get("hysteresis", {})), "enabled": hysteresis}
        if geometry is not None:
            data["geometry"] = {**dict(data.get("geometry", {})), "enabled": geometry}
        data = apply_overrides(data, sets)
        spec = make_grok_spec(data)
        n = len(spec.weight_decays) * len(spec.init_scales) * len(spec.seed_list())
        console.print(f"[bold]phaseprobe grok[/bold] {spec.name}: setup {spec.setup}, (a {spec.op} b) mod {spec.p}, "
                      f"{spec.train_frac:.0%} train, {spec.model}; grid {len(spec.weight_decays)} weight decays x "
                      f"{len(spec.init_scales)} init scales x {len(spec.seed_list())} seeds = {n} members, {spec.steps} steps -> {out}")
        dev = spec.deviations()
        if dev:
            console.print("deviations from the setup: " + "; ".join(f"{k} {a} -> {b}" for k, (a, b) in dev.items()))
        t0 = time.perf_counter()
        with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), TaskProgressColumn(),
                      TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                      console=console, transient=False) as prog:
            tasks: dict = {}
            labels = {"grid": "grid (member-steps)", "hysteresis": "hysteresis (trainings)", "geometry": "geometry"}
            starts: dict = {}

            def progress(stage, done, total):
                if stage not in tasks:
                    tasks[stage] = prog.add_task(labels.get(stage, stage), total=total, rate="")
                    starts[stage] = (time.perf_counter(), done)
                t_s, d0 = starts[stage]
                rate = (done - d0) / max(time.perf_counter() - t_s, 1e-9)
                unit = "steps/s" if stage == "grid" else "/s"
                prog.update(tasks[stage], completed=done, total=total, rate=f"{rate:,.1f} {unit}" if done > d0 else "")

            res = run_grok(spec, out, progress=progress, figures=not no_figures)
        console.print(f"done in {time.perf_counter() - t0:.1f} s ({', '.join(f'{k} {v:.0f} s' for k, v in res.seconds.items())})")
        _print(res, spec)
        if not no_figures:
            console.print(f"figures: {', '.join(str(f) for f in res.figures)}; report: {out}/report.html")


def _print(res, spec) -> None:
    from rich.table import Table

    t = Table(title=f"grokking delay (steps; test >= {spec.test_threshold}, train >= {spec.train_threshold})")
    for c in ("init scale", "weight decay", "t_train", "t_test", "delay", "final test acc", "final phase"):
        t.add_column(c, justify="right")
    s0 = res.summary.groupby(["init_scale", "weight_decay"], as_index=False).agg(
        phase=("final_phase", lambda v: "/".join(sorted(set(v)))))
    d = res.delays.merge(s0, on=["init_scale", "weight_decay"])
    for r in d.itertuples(index=False):
        f = lambda v: "-" if not (v == v) else f"{v:.0f}"  # noqa: E731  (NaN -> "-")
        t.add_row(f"{r.init_scale:g}", f"{r.weight_decay:g}", f(r.t_train), f(r.t_test), f(r.delay),
                  f"{r.final_test_acc:.3f}", r.phase)
    _out_console().print(t)
    if res.hysteresis_curves is not None:
        t = Table(title="warm-started weight-decay sweep (final accuracy at each point)")
        for c in ("loop", "branch", "weight decay", "train acc", "test acc", "||w||^2", "phase"):
            t.add_column(c, justify="right")
        for r in res.hysteresis_curves.itertuples(index=False):
            t.add_row(r.loop, r.branch, f"{r.weight_decay:.4g}", f"{r.train_acc:.3f}", f"{r.test_acc:.3f}", f"{r.w_sq:.4g}", r.phase)
        _out_console().print(t)
        from phaseprobe.grokking.run import fmt_summary

        _out_console().print("hysteresis: " + fmt_summary(res.hysteresis_summary))
    if res.geometry is not None:
        g = res.geometry
        t = Table(title="geometry: memorising plateau vs generalised solution (L = E + alpha ||w||^2)")
        tol = float(g["saddle_rel_tol"].max())
        t.caption = f"saddle index: eigenvalues of H_L below -{tol:.2g} max|lambda| ('>= n': a Lanczos lower bound)"
        for c in ("point", "wd", "step", "test acc", "saddle index", "lambda_min(H_L)", "lambda_max(H_L)", "R_L", "R_E",
                  "|grad L|", "method"):
            t.add_column(c, justify="right")
        for r in g.itertuples(index=False):
            t.add_row(r.point, f"{r.weight_decay:g}", str(r.step), f"{r.test_acc:.3f}", r.saddle_index_L_label,
                      f"{r.lambda_min_L:.3g}", f"{r.lambda_max_L:.3g}", f"{r.R_L:.3g}", f"{r.R_E:.3g}",
                      f"{r.grad_norm_L:.3g}", r.method)
        _out_console().print(t)
