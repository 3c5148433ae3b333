"""``connect`` and ``basins`` as experiment kinds (:mod:`phaseprobe.experiment`).

Both are multi-phase runs; every phase after the first is planned from what the earlier ones
stored (``Phase(name, units=callable)``), so a rerun after a kill resumes where it stopped:

=============  ====================================================================================
phase          units (pieces)
=============  ====================================================================================
minima         the end-point minima, trained (fresh seeds) or read from ``--run`` sweep folders
probe          ONE chain: a piece per grid strength (warm-started from the previous piece's ``x``;
               the probe re-creates its optimiser at every strength, so none is carried)
bisect         ONE chain over every jump found: a piece per bisection step, then ``bisect-end``
               (noise floor, verdict)
saddles        one unit per confirmed jump: fold check and saddle refinement
excursion      ONE chain over the confirmed jumps (when ``excursion``): a piece per step
spectra        one unit per member (when ``hessian_k > 0``)
bezier         (connect) the Bezier curves of every pair, one ensemble
nest-*         (basins) the same stages for the nested probes toward the transition models
=============  ====================================================================================

The analysis (dense path evaluation, tables, figures, report) reads the store only
(:func:`phaseprobe.paths.workflow.analyse_connect`, :func:`~phaseprobe.paths.workflow.analyse_basins`).
Keys derive from seeds and indices only: a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from phaseprobe import conventions
from phaseprobe.experiment import ExperimentKind, Phase, resume_point
from phaseprobe.paths import pieces as P
from phaseprobe.paths.workflow import (
    BasinsSpec,
    ConnectSpec,
    PathSpec,
    _grid,
    _n_minima,
    _pairs,
    auto_strengths,
    check_minima_runs,
    landscape_for,
    load_minima,
    make_path_spec,
    minima_from_runs,
    probe_config,
    train_minima,
)


@dataclass(frozen=True)
class PathUnit:
    """A unit of a connect/basins run: ``stage`` says what it computes, ``payload`` its inputs."""

    uid: str
    stage: str
    pieces: tuple
    chain: bool = False
    runs_per_piece: int = 1
    payload: dict = field(default_factory=dict, compare=False, hash=False, repr=False)


class PathContext:
    """Data, model and landscape of a path spec (built once per process).

    **Arguments:**

    - `spec`: a :class:`~phaseprobe.paths.workflow.PathSpec`.
    - `dataset`: an already-loaded dataset (a Ray worker's, a grid's).
    """

    def __init__(self, spec: PathSpec, dataset=None):
        from phaseprobe.sweep.spec import make_spec

        sweep_spec = make_spec(check_minima_runs(spec.run)[0]) if spec.run else None
        self.spec = spec
        self.sweep_ctx, self.land = landscape_for(spec, sweep_spec=sweep_spec, dataset=dataset)
        self.dataset = self.sweep_ctx.dataset


def make_path_context(spec: PathSpec, dataset=None) -> PathContext:
    return PathContext(spec, dataset=dataset)


# ---------------------------------------------------------------------------------------------
# reading the store for planning and analysis
# ---------------------------------------------------------------------------------------------
def read_minima(store) -> tuple[np.ndarray, list[str], pd.DataFrame]:
    """``(minima (M, P), labels, records)`` of the ``minima`` piece."""
    x = store.load_params(P.MINIMA_PIECE)["x"]
    df = pd.read_parquet(store.records_dir / f"{P.MINIMA_PIECE}.parquet").sort_values("minimum")
    return x, [str(v) for v in df["label"]], df


def minima_info(df: pd.DataFrame) -> dict:
    """The minima's provenance as the Python API reports it (``source``, ``chosen`` or training info)."""
    if str(df["source"].iloc[0]) == "run":
        cols = ["run", "run_piece", "member", "seed", "alpha", "alpha_index", "branch", "test_acc"]
        chosen = []
        for row in df[cols].to_dict("records"):
            row["piece"] = row.pop("run_piece")
            row.update(member=int(row["member"]), seed=int(row["seed"]), alpha_index=int(row["alpha_index"]))
            chosen.append(row)
        return {"source": "run", "chosen": chosen}
    return {"source": "fresh", "epochs": df["epochs"].astype(int).tolist(), "train_error": df["train_error"].tolist(),
            "test_acc": df["test_acc"].tolist(), "grad_evals": df["grad_evals"].tolist()}


def n_minima(spec: PathSpec, kind: str) -> int:
    if kind == "connect":
        return _n_minima(spec)
    return len(spec.run_seeds) if (spec.run and spec.run_seeds) else (len(spec.seed_list()) if not spec.run else 1)


def probe_inputs(spec: PathSpec, kind: str, store, prefix: str = "") -> P.ProbeInputs | None:
    """The inputs of the probe stored under ``prefix`` (None when that probe has nothing to do)."""
    minima, labels, _ = read_minima(store)
    if kind == "connect":
        pairs = _pairs(spec, len(minima))
        a = minima[[p[0] for p in pairs]]
        b = minima[[p[1] for p in pairs]]
        names = [f"{labels[i]}->{labels[j]}" for i, j in pairs]
        strengths = auto_strengths(spec, a, b) if str(spec.strengths).strip() == "auto" else _grid(spec)
        return P.ProbeInputs("", a, b, probe_config(spec, strengths), list(range(len(pairs))), names,
                             extra={"pairs": pairs, "names": names})
    if prefix == "":
        return P.ProbeInputs("", minima, np.zeros_like(minima), probe_config(spec, _grid(spec)), list(range(len(minima))),
                             [f"{lab} -> 0" for lab in labels])
    first = probe_inputs(spec, kind, store, "")
    st0 = P.read_probe(store, first, history=False)
    live = st0.live
    if not (spec.nest and live):
        return None
    targets = sorted(live, key=lambda t: (t.member, t.index))[: spec.max_nest]
    starts = np.stack([minima[t.member] for t in targets])
    refs = np.stack([t.x_hi for t in targets])
    d2 = np.sum(np.square(starts.astype(np.float64) - refs.astype(np.float64)), axis=1)
    amax = spec.auto_scale / float(np.min(d2))
    grid = np.asarray(conventions.from_alpha(np.linspace(0.0, amax, spec.n_strengths + 1), spec.convention), np.float64).reshape(-1)
    return P.ProbeInputs(prefix, starts, refs, probe_config(spec, grid, excursion=False), [100 + i for i in range(len(targets))],
                         [f"{labels[t.member]} -> T@{t.strength_c:.4g}" for t in targets])


# ---------------------------------------------------------------------------------------------
# the plan
# ---------------------------------------------------------------------------------------------
def _probe_phases(spec: PathSpec, kind: str, prefix: str) -> list[Phase]:
    """The stages of one probe (``prefix`` "" or "nest-"), each planned from the stored earlier ones."""
    name = (lambda s: f"{prefix}{s}")

    def inputs(store):
        return probe_inputs(spec, kind, store, prefix)

    def probe_units(store):
        inp = inputs(store)
        if inp is None:
            return []
        return [PathUnit(name("probe"), "probe", tuple(P.probe_piece(prefix, i) for i in range(inp.n)), chain=True,
                         runs_per_piece=inp.k, payload={"inputs": inp})]

    def stages(store, history=False):
        inp = inputs(store)
        return None if inp is None else P.read_probe(store, inp, history=history)

    def bisect_units(store):
        st = stages(store)
        if st is None or not st.transitions or not st.inputs.config.bisect:
            return []
        from phaseprobe.paths.probe import bisect_start

        n_steps = bisect_start(P.copy_transitions(st.transitions), st.inputs.ref, st.inputs.seeds, st.inputs.config).n_steps
        pieces = tuple(P.bisect_piece(prefix, s) for s in range(n_steps)) + (P.bisect_end_piece(prefix),)
        return [PathUnit(name("bisect"), "bisect", pieces, chain=True, runs_per_piece=len(st.transitions),
                         payload={"inputs": st.inputs, "transitions": st.transitions})]

    def saddle_units(store):
        st = stages(store)
        cfg = st.inputs.config if st is not None else None
        if st is None or not st.live or not (cfg.fold_check or cfg.saddles):
            return []
        return [PathUnit(f"{prefix}saddle-m{t.member:03d}-i{t.index:04d}", "saddle", (P.saddle_piece(prefix, t),),
                         payload={"transition": t, "config": cfg}) for t in st.live]

    def excursion_units(store):
        st = stages(store)
        if st is None or not st.live or not st.inputs.config.excursion:
            return []
        from phaseprobe.paths.probe import excursion_schedule

        sched, _ = excursion_schedule(st.live, st.inputs.config, st.inputs.config.alphas)
        if sched.shape[0] == 0:
            return []
        return [PathUnit(name("excursion"), "excursion", tuple(P.excursion_piece(prefix, s) for s in range(sched.shape[0])),
                         chain=True, runs_per_piece=len(st.live), payload={"inputs": st.inputs, "live": st.live})]

    def spectra_units(store):
        inp = inputs(store)
        if inp is None or inp.config.hessian_k <= 0:
            return []
        st = P.read_probe(store, inp, history=False)
        return [PathUnit(P.spectra_piece(prefix, k), "spectra", (P.spectra_piece(prefix, k),),
                         payload={"cps": st.cps[:, k], "member": k, "inputs": inp}) for k in range(inp.k)]

    return [Phase(name("probe"), probe_units), Phase(name("bisect"), bisect_units), Phase(name("saddles"), saddle_units),
            Phase(name("excursion"), excursion_units), Phase(name("spectra"), spectra_units)]


def _plan(spec: PathSpec, kind: str) -> list[Phase]:
    m = n_minima(spec, kind)
    phases = [Phase("minima", [PathUnit("minima", "minima", (P.MINIMA_PIECE,), runs_per_piece=m, payload={"n": m, "kind": kind})])]
    phases += _probe_phases(spec, kind, "")
    if kind == "connect":
        def bezier_units(store):
            if not spec.bezier:
                return []
            inp = probe_inputs(spec, kind, store, "")
            return [PathUnit("bezier", "bezier", (P.BEZIER_PIECE,), runs_per_piece=inp.k,
                             payload={"a": inp.start, "b": inp.ref, "names": inp.extra["names"]})]

        phases.append(Phase("bezier", bezier_units))
    else:
        phases += _probe_phases(spec, kind, "nest-")
    return phases


def plan_connect(spec: PathSpec) -> list[Phase]:
    """minima, probe, bisect, saddles, excursion, spectra, bezier (see the module doc)."""
    return _plan(spec, "connect")


def plan_basins(spec: PathSpec) -> list[Phase]:
    """minima, then probe..spectra toward w_ref = 0, then the same for the nested probes."""
    return _plan(spec, "basins")


# ---------------------------------------------------------------------------------------------
# running a unit
# ---------------------------------------------------------------------------------------------
def _frame(df: pd.DataFrame, piece: str, seconds: float) -> pd.DataFrame:
    df = df.copy()
    df["piece"] = piece
    df["seconds"] = float(seconds)
    return df


def run_path_unit(ctx: PathContext, unit: PathUnit, done, emit, load_params) -> None:
    """Run the pieces of ``unit`` not in ``done``, handing each to ``emit(piece, records, arrays)``."""
    start = resume_point(unit, set(done))
    if start >= len(unit.pieces):
        return
    {"minima": _run_minima, "probe": _run_probe, "bisect": _run_bisect, "saddle": _run_saddle,
     "excursion": _run_excursion, "spectra": _run_spectra, "bezier": _run_bezier}[unit.stage](ctx, unit, start, emit, load_params)


def _run_minima(ctx: PathContext, unit: PathUnit, start: int, emit, load_params) -> None:
    from pathlib import Path

    spec, land = ctx.spec, ctx.land
    t0 = time.perf_counter()
    n = unit.payload["n"]
    if spec.run:
        _, chosen = load_minima(spec.run, seeds=spec.run_seeds, n=n)
        x = minima_from_runs(spec, land, ctx.sweep_ctx, chosen)
        rows = [{"phase": "minima", "minimum": i, "label": f"seed{c['seed']}" + (f"@{Path(c['run']).name}" if len(spec.run) > 1 else ""),
                 "source": "run", "run": str(c["run"]), "run_piece": str(c["piece"]), "member": int(c["member"]),
                 "seed": int(c["seed"]), "alpha": float(c["alpha"]), "alpha_index": int(c["alpha_index"]),
                 "branch": str(c["branch"]), "test_acc": float(c["test_acc"])} for i, c in enumerate(chosen)]
        df = pd.DataFrame(rows)
    else:
        seeds = spec.seed_list()
        x, info = train_minima(land, ctx.sweep_ctx, seeds, spec)
        df = pd.DataFrame({"phase": "minima", "minimum": range(len(seeds)), "label": [f"seed{s}" for s in seeds],
                           "source": "fresh", "seed": seeds, "epochs": info["epochs"], "train_error": info["train_error"],
                           "test_acc": info["test_acc"], "grad_evals": info["grad_evals"]})
    emit(P.MINIMA_PIECE, _frame(df, P.MINIMA_PIECE, time.perf_counter() - t0), {"x": np.asarray(x)})


def _run_probe(ctx: PathContext, unit: PathUnit, start: int, emit, load_params) -> None:
    from phaseprobe.paths.probe import _Recorder

    land = ctx.land
    inp: P.ProbeInputs = unit.payload["inputs"]
    cfg, k = inp.config.validate(), inp.k
    strengths, alphas = inp.strengths, cfg.alphas
    ref = inp.ref
    x = inp.start.astype(land.np_dtype) if start == 0 else load_params(unit.pieces[start - 1])["x"]
    rec = _Recorder(land, cfg, list(inp.labels), list(inp.seeds), None)
    for i in range(start, inp.n):
        t0 = time.perf_counter()
        res = land.minimise(x, np.full(k, alphas[i]), ref, step=i, seeds=inp.seeds)
        x = res.x
        b = land.basins(x, res.metrics)
        res.metrics["dist"] = np.linalg.norm(x.astype(np.float64) - ref.astype(np.float64), axis=1)
        df = rec.rows("probe", i, [i] * k, np.full(k, strengths[i]), np.full(k, alphas[i]), list(range(k)), res, x, ref, b)
        piece = unit.pieces[i]
        emit(piece, _frame(df, piece, time.perf_counter() - t0), {"x": x, **P.metrics_to_arrays(res.metrics)})


def _run_bisect(ctx: PathContext, unit: PathUnit, start: int, emit, load_params) -> None:
    from phaseprobe.paths.probe import _Recorder, bisect_finish, bisect_start, bisect_step

    land = ctx.land
    inp: P.ProbeInputs = unit.payload["inputs"]
    cfg = inp.config
    work = bisect_start(P.copy_transitions(unit.payload["transitions"]), inp.ref, inp.seeds, cfg)
    if start > 0:
        a = load_params(unit.pieces[start - 1])
        P.apply_transition_arrays(work.jobs, a)
        work.active = np.asarray(a["active"], bool).copy()
    rec = _Recorder(land, cfg, list(inp.labels), list(inp.seeds), None)
    for s in range(start, work.n_steps):
        t0 = time.perf_counter()
        rec.frames.clear()
        ran = bisect_step(land, work, s, cfg, rec)
        df = rec.frames[0] if rec.frames else pd.DataFrame()
        arrays = {**P.transitions_to_arrays(work.jobs), "active": work.active.copy(), "updated": work.updated.copy(),
                  "jumped": work.jumped.copy(), "skipped": np.bool_(not ran)}
        piece = unit.pieces[s]
        emit(piece, _frame(df, piece, time.perf_counter() - t0) if len(df) else df, arrays)
    t0 = time.perf_counter()
    bisect_finish(land, work, cfg)
    rows = pd.DataFrame([{"phase": "bisect-end", "member": t.member, "label": inp.labels[t.member], "index": t.index,
                          "strength_lo": t.strength_lo, "strength_hi": t.strength_hi, "bisect_steps": t.bisect_steps,
                          "confirmed": bool(t.confirmed), "noise_error": t.noise_error, "noise_dist": t.noise_dist,
                          "grad_evals": t.grad_evals} for t in work.jobs])
    piece = unit.pieces[-1]
    emit(piece, _frame(rows, piece, time.perf_counter() - t0), P.transitions_to_arrays(work.jobs))


def _run_saddle(ctx: PathContext, unit: PathUnit, start: int, emit, load_params) -> None:
    from phaseprobe.paths.probe import _saddle_at, fold_check

    import copy

    t = copy.deepcopy(unit.payload["transition"])
    cfg = unit.payload["config"]
    t0 = time.perf_counter()
    arrays: dict[str, Any] = {}
    row = {"phase": "saddle", "member": t.member, "index": t.index, "strength_c": t.strength_c}
    if cfg.fold_check:
        fold_check(ctx.land, t, cfg)
        arrays["fold_min_eig"] = np.float64(t.fold_min_eig)
        row["fold_min_eig_E"] = t.fold_min_eig
    if cfg.saddles:
        _saddle_at(ctx.land, t, cfg)
        arrays.update(P.saddle_to_arrays(t.saddle))
        row.update(t.saddle.row())
    piece = unit.pieces[0]
    emit(piece, _frame(pd.DataFrame([row]), piece, time.perf_counter() - t0), arrays)


def _run_excursion(ctx: PathContext, unit: PathUnit, start: int, emit, load_params) -> None:
    from phaseprobe.paths.probe import _Recorder, excursion_schedule, excursion_step

    land = ctx.land
    inp: P.ProbeInputs = unit.payload["inputs"]
    live = unit.payload["live"]
    cfg = inp.config
    sched, lengths = excursion_schedule(live, cfg, cfg.alphas)
    if start == 0:
        x, ge = np.stack([t.x_hi for t in live]), np.zeros(len(live))
    else:
        a = load_params(unit.pieces[start - 1])
        x, ge = a["x"], np.asarray(a["ge"], np.float64).copy()
    rec = _Recorder(land, cfg, list(inp.labels), list(inp.seeds), None)
    for s in range(start, sched.shape[0]):
        t0 = time.perf_counter()
        rec.frames.clear()
        x, e, b, g = excursion_step(land, x, s, sched, lengths, live, inp.ref, inp.seeds, cfg, rec)
        ge = ge + g
        piece = unit.pieces[s]
        emit(piece, _frame(rec.frames[0], piece, time.perf_counter() - t0),
             {"x": x, "ge": ge, "err": np.asarray(e, np.float64), "basin": np.array([P.basin_str(v) for v in b])})


def _run_spectra(ctx: PathContext, unit: PathUnit, start: int, emit, load_params) -> None:
    from phaseprobe.paths.probe import member_spectra

    inp: P.ProbeInputs = unit.payload["inputs"]
    t0 = time.perf_counter()
    sp = member_spectra(ctx.land, unit.payload["cps"], unit.payload["member"], inp.strengths, inp.config)
    sp.insert(0, "phase", "spectra")
    piece = unit.pieces[0]
    emit(piece, _frame(sp, piece, time.perf_counter() - t0), {"index": sp["index"].to_numpy()})


def _run_bezier(ctx: PathContext, unit: PathUnit, start: int, emit, load_params) -> None:
    from phaseprobe.paths.baselines import fit_bezier
    from phaseprobe.paths.metrics import evaluate_bezier

    spec, land = ctx.spec, ctx.land
    a, b, names = unit.payload["a"], unit.payload["b"], unit.payload["names"]
    bcfg = replace(land.config, epochs=spec.bezier_epochs, patience=spec.bezier_patience)
    t0 = time.perf_counter()

    def on_chunk(c):
        return {"barrier": [evaluate_bezier(land, a[k], c[k], b[k], n_points=spec.n_points).barrier for k in range(len(names))]}

    bez = fit_bezier(land, a, b, epochs=spec.bezier_epochs, config=bcfg, seeds=list(range(len(names))),
                     chunk_epochs=spec.bezier_chunk, on_chunk=on_chunk if spec.bezier_chunk else None)
    rows = []
    for h in bez.history:
        for k, name in enumerate(names):
            rows.append({"phase": "bezier", "pair": name, "member": k, "epochs_done": int(h["epochs"]),
                         "grad_evals": float(np.asarray(h["grad_evals"])[k]), "stopped": bool(h.get("stopped", False)),
                         "barrier": float(h["barrier"][k]) if "barrier" in h else np.nan})
    piece = unit.pieces[0]
    emit(piece, _frame(pd.DataFrame(rows), piece, time.perf_counter() - t0),
         {"control": np.asarray(bez.control), "grad_evals": np.asarray(bez.grad_evals, np.float64), "epochs": np.asarray(bez.epochs)})


# ---------------------------------------------------------------------------------------------
# models, show
# ---------------------------------------------------------------------------------------------
def load_path_model(run, *, minimum: int | None = None, member: int | None = None, index: int | None = None,
                    point: str = "probe", nested: bool = False):
    """One stored model of a connect/basins run as an Equinox module.

    **Arguments:**

    - `run`: a :class:`phaseprobe.runs.Run` of kind ``connect`` or ``basins``.
    - `minimum`: the i-th end-point minimum; or
    - `member` and `index`: member ``k`` of the probe (``nested=True``: of the nested probes) at
      grid index ``i``; with `point` ``"lo"``, ``"hi"`` or ``"saddle"``: the bisected transition
      models (or the refined saddle) of the jump after grid index ``i``.

    **Returns:** the model (one member, unstacked).
    """
    from phaseprobe.errors import PhaseprobeError

    kind = run.kind
    spec = make_path_spec_loose(run.spec, kind)
    ctx = PathContext(spec)
    store = run.store
    done = store.done_pieces()
    if minimum is not None:
        if P.MINIMA_PIECE not in done:
            raise PhaseprobeError("model: the minima are not in the store yet; rerun the command to finish them")
        x = store.load_params(P.MINIMA_PIECE)["x"]
        if not 0 <= int(minimum) < len(x):
            raise PhaseprobeError(f"model: minimum {minimum} is out of range (0..{len(x) - 1})")
        return ctx.land.single_model(x[int(minimum)])
    if member is None or index is None:
        raise PhaseprobeError("model: give minimum=i, or member=k and index=i (and point='lo'|'hi'|'saddle' for a transition)")
    prefix = "nest-" if nested else ""
    if point == "probe":
        piece = P.probe_piece(prefix, int(index))
        if piece not in done:
            raise PhaseprobeError(f"model: piece {piece} is not in the store; check index (0..n_strengths-1) or rerun to finish")
        x = store.load_params(piece)["x"]
        if not 0 <= int(member) < len(x):
            raise PhaseprobeError(f"model: member {member} is out of range (0..{len(x) - 1})")
        return ctx.land.single_model(x[int(member)])
    if point not in ("lo", "hi", "saddle"):
        raise PhaseprobeError(f"model: point '{point}' is unknown; use 'probe', 'lo', 'hi' or 'saddle'")
    inp = probe_inputs(spec, kind, store, prefix)
    st = P.read_probe(store, inp, history=False) if inp is not None else None
    t = next((t for t in (st.transitions if st else []) if t.member == int(member) and t.index == int(index)), None)
    if t is None:
        raise PhaseprobeError(f"model: no transition of member {member} after grid index {index}; see transitions.csv")
    if point == "saddle":
        if t.saddle is None:
            raise PhaseprobeError("model: this transition has no refined saddle (saddles off, unconfirmed, or not run yet)")
        return ctx.land.single_model(t.saddle.x)
    return ctx.land.single_model(t.x_lo if point == "lo" else t.x_hi)


def make_path_spec_loose(data: dict, kind: str) -> PathSpec:
    """A stored spec of kind ``connect``/``basins`` without re-checking its run folders."""
    return (ConnectSpec if kind == "connect" else BasinsSpec)(**dict(data))


def show_paths(run, con, wide: bool = False) -> None:
    """Records by phase, the minima, and the analysis tables of a connect/basins run (fitted to
    ``con.width`` with units and meanings in the headers; ``wide``: every column)."""
    from phaseprobe.commands.show import print_frame
    from phaseprobe.plots.tables import print_fitted

    df = run.records
    if df.empty:
        con.print("no finished records yet (rerun the same command to resume)")
        return
    con.print(f"{len(df)} records; by phase: " + ", ".join(f"{k} {len(g)}" for k, g in df.groupby("phase")))
    mins = df[df["phase"] == "minima"]
    if len(mins):
        print_frame(con, mins[[c for c in ("minimum", "label", "source", "seed", "train_error", "test_acc", "run")
                               if c in mins.columns]], "minima")
    pr = df[df["phase"] == "probe"]
    if len(pr):
        con.print(f"probe: {pr['index'].nunique()} strengths x {pr['member'].nunique()} members "
                  f"(strength {pr['strength'].min():.4g}..{pr['strength'].max():.4g}, {pr['convention'].iloc[0]})")
    tables = run.tables
    if not tables:
        con.print("no analysis tables yet (rerun the same command to finish and analyse the run)")
    if wide:  # every column of every table
        for name, tab in tables.items():
            print_frame(con, tab, name)
        return
    s = "alpha" if str(pr["convention"].iloc[0] if len(pr) else "l2") == "l2" else "beta"
    for name, tab in tables.items():
        cols = _show_columns(name, tab, s)
        if cols is None:
            print_frame(con, tab, name, max_cols=8)
        else:
            print_fitted(con, tab, cols, title=_SHOW_TITLES.get(name, name), max_rows=30)


_SHOW_TITLES = {"paths_summary": "paths_summary (barrier = max train E along the path - mean of the two ends)",
                "transitions": "transitions: the probe's jumps (bracket: bisected or grid cell; "
                               "E jump = train error after - before)",
                "basin_nodes": "basin_nodes (the class sets a model encodes)",
                "basin_edges": "basin_edges (E_s: height of the saddle of E between the basins)"}


def _show_columns(name: str, tab, s: str):
    """The columns ``show`` prints of a connect/basins table, with units and meanings in the
    headers (None: the table's own columns)."""
    from phaseprobe.plots.tables import Col, fmt_bracket, fmt_count, fmt_num

    def has(*c):
        return all(k in tab.columns for k in c)

    def idx(r):
        v = r.get("saddle_index")
        if v is None or fmt_num(v) == "—" or float(v) < 0:
            return "—"
        return (">= " if r.get("index_lower_bound") is True else "") + fmt_count(v)

    if name == "transitions" and has("strength_lo", "strength_hi"):
        return [Col("label", "member", justify="left", priority=3),
                Col("strength_c", f"{s}_c [bracket]", fmt=lambda r: fmt_bracket(r.get("strength_c"), r.get("strength_lo"),
                                                                               r.get("strength_hi"), 4)),
                Col("bisect_steps", "bisect steps", fmt=lambda r: fmt_count(r.get("bisect_steps")), priority=2),
                Col("confirmed", "confirmed", justify="left",
                    fmt=lambda r: {True: "yes", False: "no"}.get(r.get("confirmed"), "not tested")),
                Col("dE", "E jump", priority=1),
                Col("basin_hi", "classes after", justify="left", priority=4),
                Col("saddle_error", "saddle E_s", priority=5, missing="not refined"),
                Col("saddle_index", "index", fmt=idx, priority=5)]
    if name == "basin_edges" and has("from", "to", "kind"):
        return [Col("from", "from", justify="left"), Col("to", "to", justify="left"), Col("kind", "kind", justify="left"),
                Col("strength_c", f"{s}_c"), Col("saddle_error", "saddle E_s", priority=2, missing="not refined"),
                Col("saddle_index", "index", fmt=idx, priority=2), Col("probe", "probe", justify="left", priority=3)]
    if name == "basin_nodes" and has("basin"):
        return [Col("basin", "classes", justify="left"), Col("n_classes", "n classes", fmt=lambda r: fmt_count(r.get("n_classes"))),
                Col("best_test_acc", "best test acc"), Col("lowest_error", "lowest train E", priority=1),
                Col("checkpoints", "checkpoints", fmt=lambda r: fmt_count(r.get("checkpoints")), priority=2)]
    if name == "paths_summary" and has("method", "barrier"):
        return [Col("pair", "pair", justify="left", priority=3), Col("method", "method", justify="left"),
                Col("barrier", "barrier (train E)"), Col("test_barrier", "test barrier", priority=2),
                Col("max_error", "max train E", priority=2), Col("length", "length", priority=1),
                Col("grad_evals", "grad evals", fmt=lambda r: fmt_count(r.get("grad_evals")), priority=1)]
    return None


def _analyse_connect(run_dir, figures: bool = True) -> dict:
    from phaseprobe.paths.workflow import analyse_connect

    return analyse_connect(run_dir, figures=figures)


def _analyse_basins(run_dir, figures: bool = True) -> dict:
    from phaseprobe.paths.workflow import analyse_basins

    return analyse_basins(run_dir, figures=figures)


CONNECT = ExperimentKind(
    name="connect", spec_type=ConnectSpec, make_context=make_path_context, plan=plan_connect, run_unit=run_path_unit,
    analyse=_analyse_connect, load_model=load_path_model, show=show_paths,
    make_spec=lambda d: make_path_spec(d, "connect"),
)
BASINS = ExperimentKind(
    name="basins", spec_type=BasinsSpec, make_context=make_path_context, plan=plan_basins, run_unit=run_path_unit,
    analyse=_analyse_basins, load_model=load_path_model, show=show_paths,
    make_spec=lambda d: make_path_spec(d, "basins"),
)
