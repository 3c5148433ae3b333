"""The analysis of a grokking run: the stored pieces -> delays, hysteresis branches, geometry,
figures, report.

``phaseprobe grok`` runs the :data:`~phaseprobe.grokking.kind.GROK` kind into a run folder
(:func:`phaseprobe.experiment.run_experiment`); :func:`analyse_grok` then writes::

    OUT/
      spec.json, records/*.parquet, params/*.npz   the run store: grid stretches (grid-c*-s*),
                                      hysteresis chains (hyst-l<loop index>-*), the geometry (geometry)
      grok_spec.json                  the full spec, its setup, the deviations from the setup
      grok_records.parquet            every grid record of every member (log-spaced steps)
      grok_summary.parquet, members.csv    per member: t_train, t_test, delay, final phase
      grok_delays.parquet, delays.csv      delay by (init scale, weight decay), mean over seeds
      grok_hysteresis.parquet         the hysteresis records with phases; hysteresis.csv its branches
      grok_geometry.parquet, geometry.csv  plateau vs solution: saddle index, eigenvalues, curvature
      grok_*.png, report.html
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from phaseprobe.grokking.phase import delay_table, grokking_summary
from phaseprobe.grokking.spec import GrokSpec
from phaseprobe.store import save_frame_parquet


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
    notes: list[str] = field(default_factory=list)


def _stage_records(store, prefix: str) -> pd.DataFrame:
    """The records of the stored pieces whose names start with ``prefix``, in piece order."""
    files = sorted(p for p in store.records_dir.glob(f"{prefix}*.parquet") if not p.name.startswith(".tmp-")) \
        if store.records_dir.exists() else []
    frames = [pd.read_parquet(f) for f in files]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _seconds(df: pd.DataFrame) -> float:
    """Wall time of a stage: every piece's ``seconds`` once."""
    if df is None or df.empty or "seconds" not in df.columns:
        return 0.0
    return float(df.groupby("piece")["seconds"].first().sum())


def grok_result(run_dir: str | Path) -> tuple[GrokResult, GrokSpec]:
    """A grokking run folder's tables computed from its store (nothing is written).

    **Arguments:**

    - `run_dir`: a folder made by ``phaseprobe grok``.

    **Returns:** ``(GrokResult, GrokSpec)``; the result's tables are empty for a run with no
    finished grid records yet.
    """
    from phaseprobe.grokking.metastable import hysteresis_curves, hysteresis_summaries, pick_member
    from phaseprobe.grokking.spec import make_grok_spec
    from phaseprobe.store import RunStore, StoreError

    store = RunStore(run_dir)
    meta = store.meta()
    if meta.get("kind") != "grok":
        raise StoreError(f"run: '{run_dir}' holds a {meta.get('kind')} run, not a grok run; give a folder made by phaseprobe grok")
    spec = make_grok_spec(dict(meta["spec"]))
    out = Path(run_dir)
    grid = _stage_records(store, "grid-")
    if grid.empty:
        return GrokResult(out=out, records=grid, summary=pd.DataFrame(), delays=pd.DataFrame()), spec
    summary = grokking_summary(grid, spec)
    res = GrokResult(out=out, records=grid, summary=summary, delays=delay_table(summary))
    res.seconds["grid"] = _seconds(grid)
    if spec.hysteresis.enabled:
        h = _stage_records(store, "hyst-")
        if not h.empty:
            res.hysteresis = h
            res.hysteresis_curves = hysteresis_curves(h, spec)
            res.hysteresis_summary = hysteresis_summaries(res.hysteresis_curves)
            res.seconds["hysteresis"] = _seconds(h)
    if spec.geometry.enabled:
        g = _stage_records(store, "geometry")
        if not g.empty:
            for c in ("top_E", "bottom_E", "top_L", "bottom_L"):
                g[c] = g[c].apply(lambda a: [float(v) for v in np.asarray(a).ravel()])
            res.geometry = g
            res.seconds["geometry"] = _seconds(g)
        else:
            try:
                pick_member(summary, spec)
            except Exception as e:  # noqa: BLE001 -- the reason the stage was skipped, for the report
                res.notes.append(f"geometry skipped: {e}")
    return res, spec


def analyse_grok(run_dir: str | Path, figures: bool = True) -> dict:
    """Write a grokking run's tables (Parquet and CSV), ``grok_spec.json``, figures and report.

    **Arguments:**

    - `run_dir`: a folder made by ``phaseprobe grok``.
    - `figures`: also draw the figures and write ``report.html``.

    **Returns:** a dict: ``records`` (the grid's), ``members``, ``delays``, ``hysteresis``,
    ``geometry`` (frames or None), ``figures`` (paths), ``result`` (the :class:`GrokResult`).
    """
    from phaseprobe.data.modular import load_modular
    from phaseprobe.store import atomic_write_text, save_frame_csv

    res, spec = grok_result(run_dir)
    out = res.out
    ds = load_modular(p=spec.p, op=spec.op, train_frac=spec.train_frac, seed=spec.data_seed)
    atomic_write_text(out / "grok_spec.json", json.dumps({
        "spec": spec.model_dump(), "setup": spec.setup, "setup_cite": spec.setup_cite(),
        "deviations": {k: {"setup": a, "spec": b} for k, (a, b) in spec.deviations().items()},
        "convention": "decoupled (AdamW): weight_decay = beta, alpha = beta/2",
        "dataset": ds.summary(),
    }, indent=2, default=str))
    if not res.records.empty:
        save_frame_parquet(res.records, out / "grok_records.parquet")
        save_frame_parquet(res.summary, out / "grok_summary.parquet")
        save_frame_parquet(res.delays, out / "grok_delays.parquet")
        save_frame_csv(res.summary, out / "members.csv")
        save_frame_csv(res.delays, out / "delays.csv")
    if res.hysteresis is not None:
        save_frame_parquet(res.hysteresis, out / "grok_hysteresis.parquet")
        save_frame_csv(res.hysteresis_curves, out / "hysteresis.csv")
    if res.geometry is not None:
        save_frame_parquet(res.geometry, out / "grok_geometry.parquet")
        save_frame_csv(res.geometry, out / "geometry.csv")
    if figures and not res.records.empty:
        res.figures = write_figures(res, spec)
        write_grok_report(res, spec)
    return {"records": res.records, "members": res.summary, "delays": res.delays, "hysteresis": res.hysteresis_curves,
            "geometry": res.geometry, "figures": res.figures, "result": res}


def run_grok(spec: GrokSpec, out: str | Path, *, engine=None, progress=None, figures: bool = True,
             dataset=None) -> GrokResult:
    """Run (or resume) a grokking experiment into ``out`` and analyse it: ``phaseprobe grok`` from Python.

    **Arguments:**

    - `spec`: a validated spec (:func:`~phaseprobe.grokking.spec.make_grok_spec`).
    - `out`: the run folder (rerun with the same spec to resume).
    - `engine`: where the units run (``phaseprobe.engine.get_engine``; default this process).
    - `progress`: a :class:`phaseprobe.progress.ProgressReporter` (default: silent).
    - `figures`: draw the figures and write the report.
    - `dataset`: the task's dataset, already loaded.

    **Returns:** the :class:`GrokResult`.
    """
    from phaseprobe.experiment import run_experiment
    from phaseprobe.grokking.kind import GROK

    run_experiment(GROK, spec, out, engine=engine, progress=progress, dataset=dataset)
    return analyse_grok(out, figures=figures)["result"]


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
    """The hysteresis summary for a reader, one part per loop: ``loop L: key = value, ...``; a
    value never reached reads ``not reached`` (never ``nan``), flags read yes/no.

    **Arguments:**

    - `d`: :func:`~phaseprobe.grokking.metastable.hysteresis_summaries` (loop -> dict) or one loop's dict.

    **Returns:** the text.
    """
    from phaseprobe.plots.tables import fmt_num

    def one(x):  # a weight decay never reached reads "not reached"; an area with no overlap of the branches "—"
        return ", ".join(f"{k} = {fmt_num(v, 4, '—' if k.startswith('area') else 'not reached')}" for k, v in x.items())

    if d and all(isinstance(v, dict) for v in d.values()):
        return "; ".join(f"loop {k}: {one(v)}" for k, v in d.items())
    return one(d or {})


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
            f"Seconds of compute by stage (sum over its stored pieces): " + ", ".join(f"{k} {v:.0f}" for k, v in res.seconds.items())
            + "".join(f"\n\n{n}" for n in res.notes))
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


def print_grok_tables(res: GrokResult, spec: GrokSpec, console) -> None:
    """The delays, the hysteresis loop and the geometry of a grokking run as tables fitted to
    ``console.width``: units in the headers, ``not reached`` for a time a member never reached
    (never ``nan``), the least important columns left out first and named below their table; a
    console as wide as the tables need (``--wide``) shows every column. ``phaseprobe grok`` prints
    them at the end of a run and ``phaseprobe show`` for a grokking folder.

    **Arguments:**

    - `res`, `spec`: from :func:`grok_result` (or :func:`analyse_grok`'s ``result``).
    - `console`: a ``rich.console.Console`` (:func:`phaseprobe.plots.tables.table_console`).
    """
    from phaseprobe.plots.tables import Col, fmt_num, print_fitted

    if res.records is None or res.records.empty:
        console.print("no finished grid records yet (rerun the same command to resume)")
        return
    s0 = res.summary.groupby(["init_scale", "weight_decay"], as_index=False).agg(
        phase=("final_phase", lambda v: "/".join(sorted(set(v)))))
    d = res.delays.merge(s0, on=["init_scale", "weight_decay"])
    steps = lambda k: (lambda r: fmt_num(r.get(k), 4, "not reached"))  # noqa: E731
    print_fitted(console, d, [
        Col("init_scale", "init scale"), Col("weight_decay", "beta (weight decay)"),
        Col("t_train", "t_train (steps)", fmt=steps("t_train"), priority=2),
        Col("t_test", "t_test (steps)", fmt=steps("t_test"), priority=2),
        Col("delay", "delay (steps)", fmt=steps("delay")), Col("final_test_acc", "final test acc", priority=1),
        Col("phase", "final phase", justify="left")],
        title=f"grokking delay (test acc >= {spec.test_threshold}, train acc >= {spec.train_threshold})")
    if res.hysteresis_curves is not None:
        print_fitted(console, res.hysteresis_curves, [
            Col("loop", "loop", justify="left", priority=3), Col("branch", "branch", justify="left"),
            Col("weight_decay", "beta", digits=4), Col("train_acc", "train acc", priority=1), Col("test_acc", "test acc"),
            Col("w_sq", "||w||^2", digits=4, priority=2), Col("phase", "phase", justify="left")],
            title="warm-started weight-decay sweep (accuracy at the end of each point)", max_rows=40)
        console.print("hysteresis: " + fmt_summary(res.hysteresis_summary))
    if res.geometry is not None:
        g = res.geometry
        tol = float(g["saddle_rel_tol"].max())
        print_fitted(console, g, [
            Col("point", "point", justify="left"), Col("weight_decay", "beta", priority=2), Col("step", "step", priority=3),
            Col("test_acc", "test acc", priority=1), Col("saddle_index_L_label", "saddle index"),
            Col("lambda_min_L", "lambda_min(H_L)"), Col("lambda_max_L", "lambda_max(H_L)", priority=2),
            Col("R_L", "R_L", priority=1), Col("R_E", "R_E", priority=2), Col("grad_norm_L", "|grad L|", priority=3),
            Col("method", "method", justify="left", priority=4)],
            title="geometry: memorising plateau vs generalised solution (L = E + alpha ||w||^2)")
        console.print(f"saddle index: eigenvalues of H_L below -{tol:.2g} max|lambda| ('>= n': a Lanczos lower bound)")
    for note in res.notes:
        console.print(note)
