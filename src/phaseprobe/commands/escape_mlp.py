"""``phaseprobe escape --system mlp``: an MLP's escape from its trapped trivial phase (Langevin or SGD noise)."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

console = Console(stderr=True)


def run_mlp_escape_command(cli, *, sets, grid, alpha, depth, width, replicas, temperatures, ratios, steps, lr, noise,
                           dataset, lrs, batch, out: Path, engine, address, no_figures) -> None:
    """Build the :class:`~phaseprobe.escape.mlp.MLPEscapeSpec` from the flags, run it (or its grid) and print the fit."""
    from phaseprobe.commands.show import print_frame
    from phaseprobe.commands.sweep import reporter
    from phaseprobe.engine import get_engine
    from phaseprobe.commands.escape import float_list, run_escape_grid
    from phaseprobe.errors import SpecError
    from phaseprobe.escape.mlp import MLPEscapeSpec, make_mlp_escape_spec, summarize_mlp_escape
    from phaseprobe.experiment import run_experiment
    from phaseprobe.specs import apply_overrides

    extra = list(cli.args)
    if extra and not grid:
        raise SpecError(f"escape: unexpected argument(s) '{' '.join(extra)}'; grid fields go after --grid, e.g. --grid alpha=0.015,0.02")

    data: dict = {}
    for k, v in (("alpha", alpha), ("depth", depth), ("width", width), ("replicas", replicas), ("steps", steps),
                 ("lr", lr), ("noise", noise), ("dataset", dataset), ("batch_size", batch)):
        if v is not None:
            data[k] = v
    if temperatures is not None:
        data["temperatures"] = float_list(temperatures, "temperatures")
    if ratios is not None:
        data["barrier_ratios"] = float_list(ratios, "barrier_ratios")
    if lrs is not None:
        data["lrs"] = float_list(lrs, "lrs")
    data = apply_overrides(data, sets)
    spec = make_mlp_escape_spec(data)
    eng = get_engine(engine, **({"address": address} if address else {}))
    t0 = time.perf_counter()
    if grid and extra:
        run_escape_grid(data, extra, MLPEscapeSpec, "escape-mlp", out, eng, no_figures, t0)
        return
    levels = (f"learning rates {spec.lrs} x batch {spec.batch_size}" if spec.noise == "sgd" else
              (f"temperatures {spec.temperatures}" if spec.temperatures is not None
               else f"temperatures barrier / {spec.barrier_ratios}"))
    banner = (f"[bold]phaseprobe escape --system mlp[/bold] {spec.dataset}, MLP {spec.depth}x{spec.width} {spec.activation}, "
              f"alpha = {spec.alpha:g}, {spec.noise} noise: {levels}, {spec.replicas} replicas, {spec.steps} epochs, "
              f"engine {eng.name} -> {out}")
    with reporter(out) as prog:
        run_experiment("escape-mlp", spec, out, engine=eng, progress=prog, banner=banner)
    res = summarize_mlp_escape(out, figures=not no_figures)
    console.print(f"done in {time.perf_counter() - t0:.1f} s")
    con = Console()
    cols = ["temperature", "lr", "escaped", "censored_frac", "tau_steps", "tau_time", "tau_lo_time", "tau_hi_time"]
    print_frame(con, res["escape_times"][cols], "escape_times", max_cols=len(cols))
    a = res["arrhenius"].iloc[0]
    if not a["dF_fit"] == a["dF_fit"]:
        con.print(f"no Arrhenius fit: {int(a['escapes'])} escapes (it needs two or more); raise --steps or the noise")
    else:
        con.print(f"Arrhenius fit (censored ML, tau in lr x steps): slope dF = {a['dF_fit']:.4g}  95% [{a['dF_lo']:.4g}, "
                  f"{a['dF_hi']:.4g}]; measured barrier {a['barrier']:.4g} ({a['barrier_source']}; path maximum "
                  f"{a['barrier_path_max']:.4g}); {int(a['escapes'])} escapes, {int(a['censored'])} censored; "
                  f"noise-free control: {int(a['control_escaped'])}/{int(a['control_replicas'])} escaped")
    if not no_figures:
        con.print(f"figures: {out}/escape_survival.png, {out}/escape_arrhenius.png")
