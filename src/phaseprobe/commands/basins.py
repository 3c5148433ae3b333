"""``phaseprobe basins``: the hierarchy of accuracy basins crossed by the L2 probe."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from phaseprobe.commands.connect import build_spec, console, print_table, run_path_command

# The embedded default (no flags): digits, a relu MLP (64-64-64-10), one fresh seed, the probe
# toward w_ref = 0 on a 31-step linear grid up to 0.09, bisection to 1e-6, saddles, excursions,
# nested probes. Each strength trains 40 epochs (no patience rule): with the published patience 5
# the probe stops after 6 epochs everywhere, lags behind its minima and every class loss reads as
# drift. Relaxed, the classes are still lost continuously (drift edges) down to a test accuracy
# near 0.2, and the final collapse to w = 0 at beta ~ 0.0694 is a bisection-confirmed fold
# (lambda_min(H_E) ~ -0.27 < -2 beta) with a refined saddle of index >= 7 (seeds 0 and 1 alike).
DEFAULT_BASINS: dict = {
    "name": "digits-basins",
    "dataset": "digits",
    "depth": 2,
    "width": 64,
    "activation": "relu",
    "seeds": 1,
    "strengths": "lin:0:0.09:31",
    "epochs": 40,
    "patience": None,
    "bisect_tol": 1e-6,
    "saddle_steps": 10,
    "excursion": True,
    "nest": True,
    "max_nest": 3,
    "n_strengths": 12,
    "auto_scale": 20.0,
}


def register(app: typer.Typer) -> None:
    @app.command(context_settings={"allow_extra_args": True})
    def basins(
        cli: typer.Context,
        spec_file: Optional[Path] = typer.Option(None, "--spec", help="TOML spec (see examples/probe_*.toml); flags and --set override it."),
        sets: List[str] = typer.Option([], "--set", help="Override a spec field: --set excursion=false (repeatable)."),
        run: List[str] = typer.Option([], "--run", help="sweep run folder to take the start minimum from; omit to train fresh seeds"),
        run_seeds: Optional[str] = typer.Option(None, help="which seeds of the run, e.g. '0'"),
        dataset: Optional[str] = typer.Option(None, help="digits, fashion-mnist, mnist, ..."),
        data_dir: Optional[str] = typer.Option(None, help="folder with the IDX files (mnist, fashion-mnist)"),
        model_file: Optional[str] = typer.Option(None, "--model-file", help="your own model: FILE.py:FUNCTION (fresh seeds; see `phaseprobe sweep --help`)"),
        data_file: Optional[str] = typer.Option(None, "--data", help="your own arrays: FILE.npz with x_train, y_train, x_test, y_test"),
        n_train: Optional[int] = typer.Option(None, help="training-set size (subset)"),
        seeds: Optional[int] = typer.Option(None, help="number of fresh start minima (one probe each, one ensemble)"),
        strengths: Optional[str] = typer.Option(None, help="probe grid toward w_ref = 0, e.g. 'lin:0:0.05:26'"),
        convention: Optional[str] = typer.Option(None, help="'l2' (beta*||w||^2, the paper's explicit penalty) or 'wd'"),
        out: Path = typer.Option(Path("runs/basins"), help="run folder (rerun with the same spec to resume)"),
        engine: str = typer.Option("local", help="local (in-process) or ray"),
        address: Optional[str] = typer.Option(None, help="Ray address: auto, HOST:PORT, or local (a private Ray instance)"),
        grid: List[str] = typer.Option([], "--grid", help="Spec grid, one run per cell: --grid n_train=200,400 seeds=1,2"),
        no_figures: bool = typer.Option(False, "--no-figures", help="skip figures and report"),
    ):
        """Build the basin hierarchy: probe toward w_ref = 0, bisect the jumps, refine the saddles,
        excursions, nested probes toward each transition model; draw the graph.

        With no flags: digits, one fresh seed of a 64-64-64-10 relu MLP, strengths
        lin:0:0.09:31 (l2 convention), 40 epochs per strength, bisection to 1e-6. Writes basins.png, probe.png,
        basin_nodes.csv, basin_edges.csv, transitions.csv and report.html into --out.
        """
        flags = dict(dataset=dataset, data_dir=data_dir, n_train=n_train, seeds=seeds, strengths=strengths,
                     convention=convention, run=list(run) if run else None,
                     run_seeds=[int(s) for s in run_seeds.split(",")] if run_seeds else None)
        data, spec = build_spec("basins", DEFAULT_BASINS, spec_file, sets, flags, model_file, data_file)
        banner = f"[bold]phaseprobe basins[/bold] {spec.name}: {spec.dataset} -> {out}"
        res = run_path_command("basins", data, spec, out, engine, address, grid, list(cli.args), no_figures, banner)
        if res is None:
            return
        print_table(res["nodes"], "basins (class sets)")
        print_table(res["edges"], "edges (saddles between basins)",
                    ["from", "to", "kind", "strength_c", "saddle_error", "barrier_from", "barrier_to", "saddle_index", "probe"])
        if not no_figures:
            console.print(f"figures: {out}/basins.png, {out}/probe.png; report: {out}/report.html")
