"""``phaseprobe escape``: first-passage times out of a metastable phase, with the Arrhenius fit."""

from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

console = Console(stderr=True)


def register(app: typer.Typer) -> None:
    @app.command(context_settings={"allow_extra_args": True})
    def escape(
        cli: typer.Context,
        sets: List[str] = typer.Option([], "--set", help="Override a field: --set replicas=128 (repeatable)."),
        grid: bool = typer.Option(False, "--grid", help="Followed by field=v1,v2 ...: one escape run per cell and one report "
                                  "(as for `phaseprobe sweep`), e.g. --grid alpha=0.12,0.15"),
        alpha: Optional[float] = typer.Option(None, help="canonical L2 strength (L = E + alpha*||w||^2) at which the trap is held"),
        depth: Optional[int] = typer.Option(None, help="weight matrices L (>= 3)"),
        width: Optional[int] = typer.Option(None, help="hidden width"),
        replicas: Optional[int] = typer.Option(None, help="replicas per temperature"),
        temperatures: Optional[str] = typer.Option(None, help="Langevin temperatures, e.g. '0.003,0.004' (default: barrier/ratio)"),
        ratios: Optional[str] = typer.Option(None, "--barrier-ratios", help="temperatures as closed-form barrier / ratio, e.g. '3,4,5,6,7'"),
        steps: Optional[int] = typer.Option(None, help="time budget in Langevin steps (replicas still trapped are censored)"),
        lr: Optional[float] = typer.Option(None, help="Langevin step size"),
        system: str = typer.Option("dln", help="dln (deep linear network, closed-form barrier) or mlp (an MLP on "
                                   "digits / fashion-mnist, barrier measured at the refined saddle)"),
        noise: Optional[str] = typer.Option(None, help="mlp: langevin (temperatures) or sgd (learning rates x batch, no Langevin term)"),
        dataset: Optional[str] = typer.Option(None, help="mlp: digits (default) or fashion-mnist"),
        lrs: Optional[str] = typer.Option(None, help="mlp, --noise sgd: learning rates, e.g. '0.4,0.2,0.1'"),
        batch: Optional[int] = typer.Option(None, help="mlp, --noise sgd: minibatch size"),
        out: Path = typer.Option(Path("runs/escape"), help="run folder (rerun the same command to resume)"),
        engine: str = typer.Option("local", help="local (in-process) or ray"),
        address: Optional[str] = typer.Option(None, help="Ray address: auto, HOST:PORT, or local (a private Ray instance)"),
        no_figures: bool = typer.Option(False, "--no-figures", help="skip figures"),
    ):
        """Noise-driven escape from a metastable phase: a deep linear network (default) or, with
        --system mlp, an MLP on digits / Fashion-MNIST (Langevin or SGD noise).

        The trap is prepared noise-free above the upper spinodal, then held at ALPHA (below the
        equal-loss point, so rank 0 is metastable) under Langevin noise at every temperature,
        REPLICAS each, in one ensemble; each replica's first passage to the learned phase is
        recorded (censored at the budget), and ln tau = dF/T + c is fitted by censored maximum
        likelihood and compared with the closed-form barrier. With no flags: depth 3, width 1,
        s = 1, alpha = 0.15, six temperatures (T = dV/3 .. dV/8) x 96 replicas, 300k steps
        (a few minutes on two cores). --system mlp: the MLP's trivial phase, prepared on the
        down branch (above the spinodal) and held at ALPHA below the equal-loss point; escape is a
        training-accuracy crossing; see `phaseprobe.escape.mlp`.
        """
        from phaseprobe.commands.sweep import reporter
        from phaseprobe.engine import get_engine
        from phaseprobe.errors import SpecError
        from phaseprobe.escape.spec import EscapeSpec, make_escape_spec
        from phaseprobe.experiment import get_kind, run_experiment
        from phaseprobe.specs import apply_overrides

        if system not in ("dln", "mlp"):
            raise SpecError(f"system: unknown '{system}'; use dln or mlp")
        if system == "mlp":
            from phaseprobe.commands.escape_mlp import run_mlp_escape_command

            run_mlp_escape_command(cli, sets=sets, grid=grid, alpha=alpha, depth=depth, width=width, replicas=replicas,
                                   temperatures=temperatures, ratios=ratios, steps=steps, lr=lr, noise=noise,
                                   dataset=dataset, lrs=lrs, batch=batch, out=out, engine=engine, address=address,
                                   no_figures=no_figures)
            return
        if any(v is not None for v in (noise, dataset, lrs, batch)):
            raise SpecError("noise: --noise, --dataset, --lrs and --batch belong to --system mlp; add --system mlp")
        extra = list(cli.args)
        if extra and not grid:
            raise SpecError(f"escape: unexpected argument(s) '{' '.join(extra)}'; grid fields go after --grid, e.g. --grid alpha=0.12,0.15")
        data: dict = {}

        for k, v in (("alpha", alpha), ("depth", depth), ("width", width), ("replicas", replicas), ("steps", steps), ("lr", lr)):
            if v is not None:
                data[k] = v
        if temperatures is not None:
            data["temperatures"] = float_list(temperatures, "temperatures")
        if ratios is not None:
            data["barrier_ratios"] = float_list(ratios, "barrier_ratios")
        data = apply_overrides(data, sets)
        spec = make_escape_spec(data)
        eng = get_engine(engine, **({"address": address} if address else {}))
        t0 = time.perf_counter()
        if grid and extra:
            run_escape_grid(data, extra, EscapeSpec, "escape", out, eng, no_figures, t0)
            return
        b = spec.barrier()
        banner = (f"[bold]phaseprobe escape[/bold] depth {spec.depth} width {spec.width}, s = {spec.singular_value:g}, "
                  f"alpha = {spec.alpha:g}: barrier dV = {b.barrier:.5g}; {len(spec.temperature_grid())} temperatures x "
                  f"{spec.replicas} replicas, {spec.steps} steps, engine {eng.name} -> {out}")
        with reporter(out) as prog:
            run_experiment("escape", spec, out, engine=eng, progress=prog, banner=banner)
        res = get_kind("escape").analyse(out, figures=not no_figures)
        a = res["arrhenius"].iloc[0]
        console.print(f"done in {time.perf_counter() - t0:.1f} s")
        from phaseprobe.commands.show import print_frame

        con = Console()
        cols = ["temperature", "barrier_ratio", "escaped", "censored_frac", "tau_steps", "tau_lo", "tau_hi"]
        print_frame(con, res["escape_times"][cols], "escape_times", max_cols=len(cols))
        if not a["dF_fit"] == a["dF_fit"]:
            con.print(f"no Arrhenius fit: {int(a['escapes'])} escapes (it needs two or more); raise --steps or the temperatures")
        else:
            con.print(f"Arrhenius fit (censored ML): dF = {a['dF_fit']:.5g}  95% [{a['dF_lo']:.5g}, {a['dF_hi']:.5g}];  "
                      f"barrier: closed form {a['barrier_closed_form']:.5g}, on the loss path {a['barrier_measured']:.5g} "
                      f"(dF / closed form {a['dF_over_barrier']:.3f}); "
                      f"{int(a['escapes'])} escapes, {int(a['censored'])} censored")
        if not no_figures:
            con.print(f"figures: {out}/escape_survival.png, {out}/escape_arrhenius.png")


def float_list(text: str, field: str) -> list[float]:
    """A comma-separated list of numbers from a flag; one line naming ``field`` when it is not one."""
    from phaseprobe.errors import SpecError

    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SpecError(f"{field}: '{text}' is not a comma-separated list of numbers; e.g. '3,4,5'") from None


def run_escape_grid(data: dict, extra: list, spec_type, kind: str, out: Path, eng, no_figures: bool, t0: float) -> None:
    """``--grid`` for an escape kind: one sub-run per cell under ``out/cells`` and their summary."""
    from phaseprobe.commands.sweep import reporter
    from phaseprobe.engine.grid import parse_grid, run_grid, summarize_grid

    fields = parse_grid(extra, spec_type)
    label = "phaseprobe escape" + (" --system mlp" if kind == "escape-mlp" else "")
    with reporter(out) as prog:
        run_grid(data, fields, out, engine=eng, kind=kind, progress=prog, banner=f"[bold]{label}[/bold] grid -> {out}")
    summarize_grid(out, figures=not no_figures)
    console.print(f"done in {time.perf_counter() - t0:.1f} s; cells in {out}/cells, summary {out}/cells.csv")
