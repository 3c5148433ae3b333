"""``phaseprobe curvature DIR``: scalar curvature, Hessian extremes and saddle index along a sweep."""

from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console


def register(app: typer.Typer) -> None:
    @app.command()
    def curvature(
        run_dir: Path = typer.Argument(..., help="a run folder made by `phaseprobe sweep`"),
        exact: Optional[bool] = typer.Option(None, "--exact/--stochastic", help="dense Hessian (small models) or HVP estimators; default: by size"),
        probes: int = typer.Option(32, help="Hutchinson probes (stochastic mode)"),
        k: int = typer.Option(2, help="Lanczos eigenvalues at each end of the spectrum"),
        branch: List[str] = typer.Option([], help="only these branches (repeatable): cold, up, down"),
        seed: List[int] = typer.Option([], help="only these seeds (repeatable)"),
        max_params: Optional[int] = typer.Option(None, help="largest model for the exact Hessian (default 5000)"),
        model_file: Optional[str] = typer.Option(None, "--model-file", help="where the run's own model file is now "
                                                 "(FILE.py:FUNCTION; its content must match the run's)"),
        data_file: Optional[str] = typer.Option(None, "--data", help="where the run's .npz data file is now "
                                                "(its content must match the run's)"),
    ):
        """Geometry of every stored minimum of a sweep: R(E), R(L_alpha), spectrum ends, saddle index;
        change points of R matched to the accuracy transitions; figure and report section."""
        from phaseprobe.geometry.run_curvature import curvature_of_run, curvature_report

        con = Console(stderr=True)
        t0 = time.perf_counter()
        from phaseprobe.progress import ProgressReporter

        with ProgressReporter(log_path=Path(run_dir) / "progress.log") as prog:
            state = {}

            def on_plan(n):
                state["task"] = prog.phase("minima analysed", n, unit="minima")

            geo = curvature_of_run(run_dir, exact=exact, n_probes=probes, lanczos_k=k, branches=branch or None,
                                   seeds=seed or None, max_params=max_params, model_file=model_file, data_file=data_file,
                                   on_plan=on_plan, on_point=lambda n: state["task"].advance(n))
            if "task" in state:
                state["task"].finish()
        from phaseprobe.store import save_frame_parquet

        save_frame_parquet(geo, Path(run_dir) / "curvature.parquet")
        res = curvature_report(run_dir, geo)
        out = Console() if Console().is_terminal else Console(width=160)
        from rich.table import Table

        from phaseprobe.geometry.run_curvature import saddle_table

        summ = geo.groupby(["branch", "strength"])[["R_E", "R_L", "lambda_min_E", "lambda_max_E"]].mean().reset_index()
        # a count is never averaged: each seed's saddle index, ">= n" where Lanczos gives only a lower bound
        summ["saddle index L per seed"] = saddle_table(geo)["saddle index L per seed"].to_numpy()
        tol = float(geo["saddle_rel_tol"].max())
        t = Table(title=f"geometry per stored minimum (seed mean; {geo['method'].iloc[0]}; E = mean over samples; "
                        f"saddle index = eigenvalues of H_L below -{tol:.2g} max|lambda|)")
        for c in summ.columns:
            t.add_column(c, justify="right")
        for row in summ.itertuples(index=False):
            t.add_row(*[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row])
        out.print(t)
        mt = res["matches"]
        if len(mt):
            t = Table(title="accuracy transitions vs nearest curvature change point")
            cols = [c for c in ("branch", "curvature", "transition_strength", "change_strength", "kind", "log10_distance", "matched") if c in mt.columns]
            for c in cols:
                t.add_column(c, justify="right")
            for row in mt[cols].itertuples(index=False):
                t.add_row(*[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row])
            out.print(t)
        con.print(f"done in {time.perf_counter() - t0:.1f} s: {run_dir}/curvature.parquet, curvature.png, report.html")
