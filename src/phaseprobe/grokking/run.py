"""``run_grok``: spec -> the phase grid -> (hysteresis sweep) -> (geometry) -> Parquet, figures, report.

Layout of the output folder::

    OUT/
      spec.json, records/grid-*.parquet, params/grid-*.npz   the grid (run store; resumable)
      grok_spec.json                  the full spec, its setup, the deviations from the setup
      grok_records.parquet            every record of every member (log-spaced steps)
      grok_summary.parquet            per member: t_train, t_test, delay, final phase
      grok_delays.parquet             delay by (init scale, weight decay), mean over seeds
      hysteresis/                     the warm-started weight-decay sweep (a sweep run folder)
      grok_hysteresis.parquet         its records with phases
      grok_geometry.parquet           plateau vs solution: saddle index, eigenvalues, curvature
      grok_*.png, report.html
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from phaseprobe.grokking.phase import GrokContext, delay_table, grid_members, grokking_summary, run_grid
from phaseprobe.grokking.spec import GrokSpec

Progress = Callable[[str, float, float], None]  # (stage, done, total)


@dataclass
class GrokResult:
    """Everything a grokking run produced (tables as DataFrames, paths of the files)."""

    out: Path
    records: pd.DataFrame
    summary: pd.DataFrame
    delays: pd.DataFrame
    hysteresis: pd.DataFrame | None = None
    hysteresis_curves: pd.DataFrame | None = None
    hysteresis_summary: dict = field(default_factory=dict)
    geometry: pd.DataFrame | None = None
    figures: list[Path] = field(default_factory=list)
    seconds: dict = field(default_factory=dict)


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(".tmp-" + path.name)
    df.to_parquet(tmp, index=False)
    tmp.replace(path)


def run_grok(spec: GrokSpec, out: str | Path, *, progress: Progress | None = None, figures: bool = True,
             dataset=None) -> GrokResult:
    """Run every enabled stage of ``spec`` into ``out`` (rerunning the same spec resumes the grid)."""
    from phaseprobe.store import RunStore

    spec.check()
    out = Path(out)
    store = RunStore(out)
    ctx = GrokContext(spec, dataset=dataset)  # data + model + trainer: errors before compute
    store.init(spec.model_dump(exclude={"hysteresis", "geometry", "name"}), spec.grid_hash(), kind="grok")
    (out / "grok_spec.json").write_text(json.dumps({
        "spec": spec.model_dump(), "setup": spec.setup, "setup_cite": spec.setup_cite(),
        "deviations": {k: {"setup": a, "spec": b} for k, (a, b) in spec.deviations().items()},
        "convention": "decoupled (AdamW): weight_decay = beta, alpha = beta/2",
        "dataset": ctx.dataset.summary(),
    }, indent=2, default=str))
    seconds = {}
    members = grid_members(spec)

    t0 = time.perf_counter()
    df, params = run_grid(ctx, store, on_progress=(lambda d, t: progress("grid", d, t)) if progress else None)
    seconds["grid"] = time.perf_counter() - t0
    summary = grokking_summary(df, spec)
    delays = delay_table(summary)
    _write_parquet(df, out / "grok_records.parquet")
    _write_parquet(summary, out / "grok_summary.parquet")
    _write_parquet(delays, out / "grok_delays.parquet")
    res = GrokResult(out=out, records=df, summary=summary, delays=delays, seconds=seconds)

    if spec.hysteresis.enabled:
        from phaseprobe.grokking.metastable import hysteresis_curves, hysteresis_summaries, run_hysteresis

        t0 = time.perf_counter()
        state = {"total": 1.0, "done": 0.0}

        def on_plan(total, already):
            state.update(total=float(total), done=float(already))
            if progress:
                progress("hysteresis", state["done"], state["total"])

        def on_runs(n):
            state["done"] += n
            if progress:
                progress("hysteresis", state["done"], state["total"])

        h = run_hysteresis(spec, out / "hysteresis", ctx, on_runs=on_runs, on_plan=on_plan)
        seconds["hysteresis"] = time.perf_counter() - t0
        res.hysteresis = h
        res.hysteresis_curves = hysteresis_curves(h, spec)
        res.hysteresis_summary = hysteresis_summaries(res.hysteresis_curves)
        _write_parquet(h, out / "grok_hysteresis.parquet")

    if spec.geometry.enabled:
        from phaseprobe.grokking.metastable import compare_geometry

        if progress:
            progress("geometry", 0, 1)
        t0 = time.perf_counter()
        res.geometry = compare_geometry(ctx, summary, params, members)
        seconds["geometry"] = time.perf_counter() - t0
        _write_parquet(res.geometry, out / "grok_geometry.parquet")
        if progress:
            progress("geometry", 1, 1)

    if figures:
        res.figures = write_figures(res, spec)
        write_grok_report(res, spec)
    return res


def write_figures(res: GrokResult, spec: GrokSpec) -> list[Path]:
    from phaseprobe.grokking import plots

    out = res.out
    task = f"(a {spec.op} b) mod {spec.p}, {spec.train_frac:.0%} train, {spec.model}, AdamW lr {spec.lr:g}"
    figs = [
        plots.plot_curves(res.records, res.summary, out / "grok_curves.png", title=f"grokking: {task}"),
        plots.plot_delay(res.delays, out / "grok_delay.png", spec.steps, title=f"grokking delay: {task}"),
        plots.plot_phase_map(res.summary, out / "grok_phase.png", spec.steps,
                             title=f"phase after {spec.steps} steps: {task}"),
    ]
    if res.hysteresis_curves is not None and len(res.hysteresis_curves):
        s = spec.hysteresis
        cold = res.summary[np.isclose(res.summary["init_scale"], s.init_scale)]
        cold = cold.groupby("weight_decay", as_index=False)["final_test_acc"].mean()
        figs.append(plots.plot_hysteresis(res.hysteresis_curves, out / "grok_hysteresis.png", s.steps_per_point,
                                          cold=cold, cold_steps=spec.steps,
                                          title=f"hysteresis in the grokking task: {task}, init x{s.init_scale:g}"))
    if res.geometry is not None and len(res.geometry):
        figs.append(plots.plot_geometry(res.geometry, out / "grok_geometry.png",
                                        title=f"memorising plateau vs generalised solution: {task}"))
    return figs


def fmt_summary(d: dict) -> str:
    """One line per loop: ``loop: key = value, ...``."""
    def one(x):
        return ", ".join(f"{k} = {v:.4g}" if isinstance(v, float) else f"{k} = {v}" for k, v in x.items())
    if d and all(isinstance(v, dict) for v in d.values()):
        return "; ".join(f"loop {k}: {one(v)}" for k, v in d.items())
    return one(d)


def write_grok_report(res: GrokResult, spec: GrokSpec) -> Path:
    from phaseprobe.plots.report import add_section

    out = res.out
    dev = spec.deviations()
    dev_txt = "; ".join(f"{k}: {a} -> {b}" for k, (a, b) in dev.items()) or "none"
    text = (f"Setup: {spec.setup} -- {spec.setup_cite()}. Deviations from the setup: {dev_txt}.\n\n"
            f"Task (a {spec.op} b) mod {spec.p}, {spec.train_frac:.0%} of the pairs for training; model {spec.model} "
            f"(embed {spec.embed_dim}, width {spec.width}); AdamW lr {spec.lr:g}, betas ({spec.b1}, {spec.b2}), "
            f"{'full batch' if spec.batch_size is None else f'batch {spec.batch_size}'}, {spec.steps} steps, "
            f"weight decay = AdamW's decoupled beta (alpha = beta/2 in the records).\n\n"
            f"Delay = t_test - t_train: the steps where test accuracy reaches {spec.test_threshold} and train accuracy "
            f"{spec.train_threshold} (log-interpolated between log-spaced records). Phases: memorising = train fitted, "
            f"test < {spec.memorise_below}; generalising = test >= {spec.test_threshold}; underfit = train not fitted.\n\n"
            f"Seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in res.seconds.items()))
    cols = ["weight_decay", "init_scale", "seed", "t_train", "t_test", "delay", "final_train_acc", "final_test_acc",
            "final_w_sq", "final_phase"]
    add_section(out, "grok_phase", "Grokking: the phase view", text,
                figures=[f for f in ("grok_curves.png", "grok_delay.png", "grok_phase.png") if (out / f).exists()],
                tables={"per member": res.summary[cols]}, order=10)
    if res.hysteresis_curves is not None:
        h = spec.hysteresis
        add_section(out, "grok_hysteresis", "Metastability: warm-started weight-decay sweep",
                    f"Sweep machinery continuation, mode {h.mode}, {h.steps_per_point} steps per point, init scale "
                    f"x{h.init_scale:g}, optimizer state {'fresh' if h.fresh_opt else 'carried'} between points "
                    f"(Adam betas of the sweep: 0.9, 0.999). Summary: {fmt_summary(res.hysteresis_summary)}.",
                    figures=["grok_hysteresis.png"] if (out / "grok_hysteresis.png").exists() else [],
                    tables={"branches": res.hysteresis_curves}, order=20)
    if res.geometry is not None:
        g = res.geometry
        keep = ["point", "weight_decay", "step", "train_acc", "test_acc", "w_sq", "E", "L", "grad_norm_L",
                "saddle_index_L_label", "tol", "saddle_rel_tol", "neg_eigs_E_label", "neg_eigs_E_tol", "lambda_min_L", "lambda_max_L", "lambda_min_E",
                "lambda_max_E", "R_E", "R_E_se", "R_L", "R_L_se", "tr_H_E", "method", "precision"]
        add_section(out, "grok_geometry", "Metastability: geometry of the plateau and the solution",
                    "Hessians of E and of L = E + alpha ||w||^2 (alpha = beta/2 of the run) at the memorising plateau "
                    "(the same member re-trained to the geometric mean of its train-fit and test-fit steps), at its "
                    "generalised end point, and at the weight-decay-0 memoriser of the same init. Trained AdamW points "
                    "are not critical points of L (see |grad L|). R: scalar curvature of the graph, E a mean over samples.",
                    figures=["grok_geometry.png"] if (out / "grok_geometry.png").exists() else [],
                    tables={"points": g[[c for c in keep if c in g.columns]]}, order=30)
    return out / "report.html"


def load_grok(out: str | Path) -> tuple[GrokResult, GrokSpec]:
    """Read a finished grokking folder back (tables from its Parquet files, the spec from
    ``grok_spec.json``), e.g. to redraw its figures with :func:`write_figures`."""
    from phaseprobe.grokking.metastable import hysteresis_curves, hysteresis_summaries
    from phaseprobe.grokking.spec import GrokSpec
    from phaseprobe.store import StoreError

    out = Path(out)
    meta = out / "grok_spec.json"
    if not meta.exists():
        raise StoreError(f"out: '{out}' is not a grokking run folder (no grok_spec.json); run `phaseprobe grok --out {out}` first")
    spec = GrokSpec(**json.loads(meta.read_text())["spec"])

    def read(name):
        p = out / name
        return pd.read_parquet(p) if p.exists() else None

    res = GrokResult(out=out, records=read("grok_records.parquet"), summary=read("grok_summary.parquet"),
                     delays=read("grok_delays.parquet"), hysteresis=read("grok_hysteresis.parquet"),
                     geometry=read("grok_geometry.parquet"))
    if res.hysteresis is not None:
        res.hysteresis_curves = hysteresis_curves(res.hysteresis, spec)
        res.hysteresis_summary = hysteresis_summaries(res.hysteresis_curves)
    return res, spec
