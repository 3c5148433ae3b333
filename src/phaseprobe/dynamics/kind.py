"""Deep linear networks as experiment kinds (:mod:`phaseprobe.experiment`): one run, the phase
diagram, escape times.

Three kinds share one spec (:mod:`phaseprobe.dynamics.spec`); each integrates ensembles of deep
linear networks with :func:`~phaseprobe.dynamics.run.integrate` and stores every ensemble as ONE
piece (its records, its final weights, its per-member divergence flags and final learning
rates), so a kill loses at most the ensemble in flight and a resumed run is bit-identical: every
number depends only on the spec.

* ``dln`` -- one network (piece ``run``). The piece also keeps the initial weights and the
  weights at the saddle point of every plateau; the analysis (:func:`analyse_dln_run`) certifies
  those saddles (Hessian index, escape order) from the store, one plateau at a time.
* ``dln-grid`` -- the gamma x width phase diagram: one piece per width (``width-00016``), the
  ``gamma x seed`` members of that width integrated together
  (:func:`~phaseprobe.dynamics.phase.integrate_width`).
* ``dln-escape`` -- escape times against the init scale: one piece per depth (``depth-02``),
  every sigma of that depth integrated together
  (:func:`~phaseprobe.dynamics.phase.integrate_escape_depth`).

Stored arrays of a piece: ``p000``, ``p001``, ... the final ``W_1 .. W_L`` stacked over the
members; ``diverged`` and ``lr_final`` per member; for ``dln`` also ``i000``, ... (the initial
weights) and ``snap_index``, ``snap_t``, ``snap_w000``, ... (the saddle points, stacked).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from phaseprobe.dynamics.observe import linear_stats
from phaseprobe.dynamics.phase import (escape_fits, escape_rows, integrate_escape_depth, integrate_width, locate_transition,
                                       width_members, width_order_parameters, width_records)
from phaseprobe.dynamics.plateaus import analyze_member, certify_saddle, oracle_escape_times
from phaseprobe.dynamics.run import DLNRun, dln_ensemble, integrate
from phaseprobe.dynamics.spec import DLNEscapeSpec, DLNPhaseGridSpec, DLNSpec
from phaseprobe.errors import PhaseprobeError
from phaseprobe.experiment import ExperimentKind, Phase

RUN_PIECE = "run"
TRANSITION_COLUMNS = ("disp_abs", "t_escape_1")


# ---- units and context -----------------------------------------------------------------------------

@dataclass(frozen=True)
class DLNUnit:
    """One ensemble of deep linear networks integrated together: the single run (``what = "run"``),
    one width of the phase diagram (``"width"``) or one depth of the escape times (``"depth"``)."""

    uid: str
    what: str
    value: int
    n_members: int

    @property
    def pieces(self) -> list[str]:
        return [self.uid]

    @property
    def chain(self) -> bool:
        return False

    @property
    def runs_per_piece(self) -> int:
        return self.n_members


def width_piece(width: int) -> str:
    return f"width-{int(width):05d}"


def depth_piece(depth: int) -> str:
    return f"depth-{int(depth):02d}"


class DLNContext:
    """The teacher data and its statistics for one spec (built once per process)."""

    def __init__(self, spec: DLNSpec, dataset=None):
        self.spec = spec
        self.dataset = spec.data() if dataset is None else dataset
        self.stats = linear_stats(self.dataset)
        if isinstance(spec, DLNPhaseGridSpec):
            spec.grid.validate(rank=self.stats.rank)


def make_dln_context(spec: DLNSpec, dataset=None) -> DLNContext:
    """The context of a ``dln`` spec of any of the three kinds."""
    return DLNContext(spec, dataset=dataset)


def plan_dln_run(spec: DLNSpec) -> list[Phase]:
    """One phase, ``integration``: the single network."""
    return [Phase("integration", [DLNUnit(RUN_PIECE, "run", 0, 1)])]


def plan_dln_phase_grid(spec: DLNSpec) -> list[Phase]:
    """One phase, ``width ensembles``: one unit per width (its ``gamma x seed`` members)."""
    g = spec.grid
    n = len(g.gammas) * len(g.seeds)
    return [Phase("width ensembles", [DLNUnit(width_piece(w), "width", int(w), n) for w in g.widths])]


def plan_dln_escape(spec: DLNSpec) -> list[Phase]:
    """One phase, ``escape ensembles``: one unit per depth (its init scales)."""
    return [Phase("escape ensembles", [DLNUnit(depth_piece(L), "depth", int(L), len(spec.escape_sigmas(L)))
                                       for L in spec.escape["depths"]])]


def _weights_arrays(weights, prefix: str) -> dict[str, np.ndarray]:
    return {f"{prefix}{i:03d}": np.asarray(w) for i, w in enumerate(weights)}


def _arrays_weights(arrays: dict, prefix: str) -> tuple:
    out, i = [], 0
    while f"{prefix}{i:03d}" in arrays:
        out.append(arrays[f"{prefix}{i:03d}"])
        i += 1
    return tuple(out)


def _ensemble_arrays(run: DLNRun) -> dict[str, np.ndarray]:
    arrays = _weights_arrays(run.final_weights, "p")
    arrays["diverged"] = np.asarray(run.diverged, bool)
    arrays["lr_final"] = np.asarray(run.lr_final, np.float64)
    return arrays


def _single_piece(ctx: DLNContext) -> tuple[pd.DataFrame, dict]:
    import jax

    spec = ctx.spec
    stats = ctx.stats
    key = np.asarray(jax.random.PRNGKey(spec.seed))[None]
    model = dln_ensemble(stats.in_dim, stats.out_dim, spec.depth, spec.width, [spec.sigma], key)
    run = integrate(model, ctx.dataset, spec.integrate, stats=stats)
    rec = run.records.copy()
    rec["depth"], rec["width"], rec["sigma"], rec["gamma"] = spec.depth, spec.width, spec.sigma, spec.gamma
    arrays = _ensemble_arrays(run)
    arrays.update(_weights_arrays(run.initial_weights, "i"))
    pl = spec.plateaus
    plats = analyze_member(run, 0, slope_tol=pl["slope_tol"], min_decades=pl["min_decades"])
    idx = sorted({p.i_saddle for p in plats})
    arrays["snap_index"] = np.asarray(idx, np.int64)
    arrays["snap_t"] = np.asarray([float(run.member(0)["t"].iloc[i]) for i in idx], np.float64)
    if idx:
        snaps = [run.weights_at(0, i)[1] for i in idx]
        for l in range(len(snaps[0])):
            arrays[f"snap_w{l:03d}"] = np.stack([np.asarray(s[l]) for s in snaps])
    return rec, arrays


def run_dln_unit(ctx: DLNContext, unit: DLNUnit, done, emit, load_params=None) -> None:
    """Integrate one ensemble (unless its piece is in ``done``) and emit it as one piece."""
    if unit.uid in done:
        return
    spec = ctx.spec
    t0 = time.perf_counter()
    if unit.what == "run":
        rec, arrays = _single_piece(ctx)
    elif unit.what == "width":
        run = integrate_width(spec.grid, ctx.dataset, unit.value, stats=ctx.stats)
        rec, arrays = width_records(spec.grid, run, unit.value), _ensemble_arrays(run)
    elif unit.what == "depth":
        es = spec.escape
        sig = spec.escape_sigmas(unit.value)
        run = integrate_escape_depth(ctx.dataset, unit.value, width=es["width"], sigmas=sig, seed=es["seed"], stats=ctx.stats)
        rec = run.records.copy()
        rec["depth"], rec["width"] = unit.value, es["width"]
        rec["sigma"] = [sig[i] for i in rec["member"]]
        arrays = _ensemble_arrays(run)
    else:  # pragma: no cover -- units come from the plans above
        raise ValueError(f"unknown dln unit {unit.what!r}")
    rec["seconds"] = float(time.perf_counter() - t0)
    emit(unit.uid, rec, arrays)


# ---- reading the store back --------------------------------------------------------------------------

def _spec_of(run_dir, spec_type):
    from phaseprobe.store import RunStore

    store = RunStore(run_dir)
    return store, spec_type(**store.meta()["spec"])


def stored_ensemble(store, piece: str, records: pd.DataFrame, stats, depth: int, width: int) -> DLNRun:
    """A :class:`~phaseprobe.dynamics.run.DLNRun` rebuilt from one stored piece (records, final
    weights, divergence flags; for the single run also its initial weights and saddle points)."""
    arrays = store.load_params(piece)
    snaps: dict = {}
    if "snap_index" in arrays and len(arrays["snap_index"]):
        ws = _arrays_weights(arrays, "snap_w")
        snaps[0] = {int(i): (float(t), tuple(w[j] for w in ws))
                    for j, (i, t) in enumerate(zip(arrays["snap_index"], arrays["snap_t"]))}
    return DLNRun(records=records.reset_index(drop=True), stats=stats, depth=depth, width=width,
                  final_weights=_arrays_weights(arrays, "p"), initial_weights=_arrays_weights(arrays, "i"),
                  lr_final=np.asarray(arrays["lr_final"]), diverged=np.asarray(arrays["diverged"], bool), snapshots=snaps)


def _save_parquet(df: pd.DataFrame, path: Path) -> Path:
    """``df.to_parquet`` to a temporary name, then rename (atomic)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".parquet", dir=path.parent)
    os.close(fd)
    try:
        df.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _missing(store, pieces) -> list[str]:
    done = store.done_pieces()
    return [p for p in pieces if p not in done]


# ---- analysis: one run ----------------------------------------------------------------------------------

def analyse_dln_run(run_dir, figures: bool = True, progress=None) -> dict:
    """Plateaus, saddle certificates and escape times of a stored ``dln`` run.

    Writes ``records.parquet`` (the trajectory), ``plateaus.parquet`` and ``plateaus.csv``,
    ``summary.json`` and, with ``figures``, ``dln_saddle_to_saddle.png`` and its report section.

    **Arguments:**

    - `run_dir`: the run folder.
    - `figures`: also draw the figure and the report section.
    - `progress`: a :class:`phaseprobe.progress.ProgressReporter` (phase ``saddle certificates``).

    **Returns:** a dict with ``records``, ``plateaus`` (the :class:`~phaseprobe.dynamics.plateaus.LossPlateau`
    objects), ``plateau_table``, ``escape_times``, ``summary`` and ``figures``.
    """
    from phaseprobe.store import atomic_write_text, save_frame_csv

    out = Path(run_dir)
    store, spec = _spec_of(out, DLNSpec)
    if _missing(store, [RUN_PIECE]):
        return {"records": store.load_records(), "plateaus": [], "plateau_table": pd.DataFrame(), "figures": []}
    rec = store.load_records()
    stats = linear_stats(spec.data())
    run = stored_ensemble(store, RUN_PIECE, rec, stats, spec.depth, spec.width)
    pl = spec.plateaus
    plats = analyze_member(run, 0, slope_tol=pl["slope_tol"], min_decades=pl["min_decades"])
    if pl["certify"]:
        task = progress.phase("saddle certificates", len(plats), unit="plateaus") if progress is not None else None
        for p in plats:
            _, w = run.weights_at(0, p.i_saddle)
            p.certificate = certify_saddle(w, stats, hess_rel_tol=pl["hess_rel_tol"])
            if task is not None:
                task.advance(1)
        if task is not None:
            task.finish()
    table = pd.DataFrame([p.as_row() for p in plats])
    df = run.member(0)
    esc = oracle_escape_times(df["t"].to_numpy(), np.maximum(df["excess_loss"].to_numpy(), 0), stats.levels() - stats.e_min)
    _save_parquet(rec, out / "records.parquet")
    tab = table.copy()
    if "learned_sv" in tab:
        tab["learned_sv"] = tab["learned_sv"].apply(lambda v: json.dumps([float(x) for x in v]))
    _save_parquet(tab, out / "plateaus.parquet")
    save_frame_csv(tab, out / "plateaus.csv")
    summary = {
        "depth": spec.depth, "width": spec.width, "sigma": spec.sigma, "gamma": spec.gamma,
        "singular_values": spec.teacher["singular_values"], "oracle_levels": [float(x) for x in stats.levels()],
        "escape_times": [float(x) for x in esc], "t_end": float(df["t"].iloc[-1]), "steps": int(df["step"].iloc[-1]),
        "final_loss": float(df["loss"].iloc[-1]), "disp_abs": float(df["disp_abs"].iloc[-1]),
        "disp_rel": float(df["disp_rel"].iloc[-1]), "n_plateaus": len(plats),
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    figs = []
    if figures:
        from phaseprobe.dynamics.figures import plot_run
        from phaseprobe.plots.report import add_section

        title = (f"deep linear net, depth {spec.depth}, width {spec.width}, sigma = {spec.sigma:.3g}"
                 + (f" (gamma = {spec.gamma:g})" if spec.gamma is not None else "") + ": saddle-to-saddle")
        f = plot_run(run, plats, out / "dln_saddle_to_saddle.png", title=title)
        figs.append(f)
        cols = [c for c in ["index", "t_start", "t_end", "level", "oracle_level", "rank", "learned_sv", "t_escape",
                            "cert_kind", "cert_index", "cert_min_eig", "cert_escape_order", "cert_escape_coef",
                            "cert_predicted_coef", "grad_norm"] if c in table.columns]
        text = (f"Whitened low-rank teacher with singular values {spec.teacher['singular_values']}; loss E = mean 1/2||f(x)-y||^2 "
                f"= 1/2||A - W_L...W_1||_F^2; time t = lr x steps ({spec.integrate.step} step). Plateaus: |d log E / d log t| < "
                f"{pl['slope_tol']} for at least {pl['min_decades']} decades. Oracle: plateau k at 1/2 sum_(i>k) s_i^2, singular values "
                f"learned largest first. Saddle certificate: Hessian index (eigenvalues below -{pl['hess_rel_tol']} sigma_1(grad)) and the "
                f"escape order of E(theta + eps V) - E(theta) along the rank-one escape direction (2: strict saddle; L: higher-order).")
        tables = {"plateaus": table[cols]} if len(table) else {}
        add_section(out, "dln_run", "Deep linear network: one run", text, figures=[f.name], tables=tables, order=10)
    return {"records": rec, "run": run, "plateaus": plats, "plateau_table": table, "escape_times": esc,
            "summary": summary, "figures": figs}


# ---- analysis: the phase diagram ------------------------------------------------------------------------

def analyse_dln_phase_grid(run_dir, figures: bool = True, progress=None) -> dict:
    """Order parameters per member and the located transition of a stored ``dln-grid`` run.

    Writes ``grid_summary.parquet`` / ``.csv`` (one row per gamma x width x seed),
    ``grid_records.parquet``, ``transition.json``, ``transitions.csv`` (gamma_c per order
    parameter), ``transition_pairs.csv`` and ``width_exponents.csv``; with ``figures``
    ``dln_phase_diagram.png`` and its report section. Widths not yet in the store are left out.

    **Returns:** a dict with ``summary``, ``records``, ``transitions`` (a frame), ``located``
    (per order parameter: gamma_c, slopes, pairs) and ``figures``.
    """
    from phaseprobe.store import atomic_write_text, save_frame_csv

    out = Path(run_dir)
    store, spec = _spec_of(out, DLNPhaseGridSpec)
    g = spec.grid
    stats = linear_stats(spec.data())
    done = store.done_pieces()
    allrec = store.load_records()
    rows, recs = [], []
    for w in g.widths:
        if width_piece(w) not in done:
            continue
        sub = allrec[allrec["width"] == int(w)].reset_index(drop=True)
        run = stored_ensemble(store, width_piece(w), sub, stats, g.depth, int(w))
        rows.extend(width_order_parameters(g, run, int(w)))
        recs.append(sub)
    summary = pd.DataFrame(rows)
    records = pd.concat(recs, ignore_index=True) if recs else pd.DataFrame()
    if summary.empty:
        return {"summary": summary, "records": records, "transitions": pd.DataFrame(), "located": {}, "figures": []}
    located = {c: locate_transition(summary, c) for c in TRANSITION_COLUMNS}
    s = summary.copy()
    for c in ("plateau_ranks", "plateau_levels"):
        if c in s:
            s[c] = s[c].apply(lambda v: json.dumps([float(x) for x in v]))
    _save_parquet(s, out / "grid_summary.parquet")
    save_frame_csv(s, out / "grid_summary.csv")
    _save_parquet(records, out / "grid_records.parquet")
    tj = {c: {"gamma_c": tr["gamma_c"], "slopes": tr["slopes"].to_dict(orient="list"),
              "pairs": tr["pairs"].to_dict(orient="list")} for c, tr in located.items()}
    atomic_write_text(out / "transition.json", json.dumps(tj, indent=2, default=float))
    trans = pd.DataFrame([{"observable": c, "gamma_c": tr["gamma_c"], "depth": g.depth,
                           "widths": ",".join(str(int(w)) for w in sorted(summary["width"].unique()))}
                          for c, tr in located.items()])
    save_frame_csv(trans, out / "transitions.csv")
    save_frame_csv(pd.concat([tr["pairs"].assign(observable=c) for c, tr in located.items()], ignore_index=True),
                   out / "transition_pairs.csv")
    save_frame_csv(pd.concat([tr["slopes"].assign(observable=c) for c, tr in located.items()], ignore_index=True),
                   out / "width_exponents.csv")
    figs = []
    if figures:
        from phaseprobe.dynamics.figures import plot_phase
        from phaseprobe.plots.report import add_section

        f = plot_phase(summary, located, out / "dln_phase_diagram.png", depth=g.depth)
        figs.append(f)
        tabs = {f"width exponent of {c} (transition at gamma_c = {tr['gamma_c']:.3f})": tr["slopes"] for c, tr in located.items()}
        tabs.update({f"gamma_c per width pair ({c})": tr["pairs"] for c, tr in located.items()})
        tabs["order parameters (seed means)"] = seed_means(summary)
        text = (f"Grid gamma x width at depth {g.depth} ({len(g.seeds)} seeds), init variance sigma^2 = width^-gamma on "
                f"every layer, teacher singular values {spec.teacher['singular_values']}. The transition is located where the width "
                f"exponent of the absolute displacement ||theta_end - theta_0|| (negative in the lazy phase) and of the first escape time "
                f"cross zero.")
        add_section(out, "dln_grid", "Deep linear networks: the gamma x width phase diagram", text, figures=[f.name], tables=tabs,
                    order=20)
    return {"summary": summary, "records": records, "transitions": trans, "located": located, "figures": figs}


def seed_means(summary: pd.DataFrame) -> pd.DataFrame:
    """The phase diagram's order parameters averaged over seeds, one row per (gamma, width)."""
    return summary.groupby(["gamma", "width"], as_index=False)[["disp_abs", "disp_rel", "n_plateaus", "t_escape_1"]].mean()


# ---- analysis: escape times ------------------------------------------------------------------------------

def analyse_dln_escape(run_dir, figures: bool = True, progress=None) -> dict:
    """Escape times per (depth, sigma, k) and their scaling fits of a stored ``dln-escape`` run.

    Writes ``escape_times.parquet`` / ``.csv``, ``escape_fits.parquet`` / ``.csv`` and, with
    ``figures``, ``dln_escape_times.png`` and its report section.

    **Returns:** a dict with ``table``, ``fits``, ``records`` and ``figures``.
    """
    from phaseprobe.store import save_frame_csv

    out = Path(run_dir)
    store, spec = _spec_of(out, DLNEscapeSpec)
    es = spec.escape
    stats = linear_stats(spec.data())
    done = store.done_pieces()
    allrec = store.load_records()
    rows = []
    for L in es["depths"]:
        if depth_piece(L) not in done:
            continue
        sub = allrec[allrec["depth"] == int(L)].reset_index(drop=True)
        run = stored_ensemble(store, depth_piece(L), sub, stats, int(L), es["width"])
        rows.extend(escape_rows(run, int(L), es["width"], spec.escape_sigmas(L)))
    tab = pd.DataFrame(rows)
    if tab.empty:
        return {"table": tab, "fits": pd.DataFrame(), "records": allrec, "figures": []}
    fits = escape_fits(tab)
    _save_parquet(tab, out / "escape_times.parquet")
    _save_parquet(fits, out / "escape_fits.parquet")
    save_frame_csv(tab, out / "escape_times.csv")
    save_frame_csv(fits, out / "escape_fits.csv")
    figs = []
    if figures:
        from phaseprobe.dynamics.figures import plot_escape_scaling
        from phaseprobe.plots.report import add_section

        f = plot_escape_scaling(tab, out / "dln_escape_times.png", singular_values=spec.teacher["singular_values"])
        figs.append(f)
        text = (f"Escape time k: the loss first halfway between the rank-(k-1) and rank-k saddle levels; width {es['width']}, one "
                f"seed, so theta_0 = sigma x theta_bar. Two layers: t_k = ln(1/sigma)/s_k + const; three or more: "
                f"t_k ~ sigma^-(L-2).")
        add_section(out, "dln_escape", "Deep linear networks: escape times vs the init scale", text, figures=[f.name],
                    tables={"fits": fits}, order=30)
    return {"table": tab, "fits": fits, "records": allrec, "figures": figs}


# ---- stored models -----------------------------------------------------------------------------------------

def _module(weights, stats):
    import jax
    import jax.numpy as jnp

    from phaseprobe.dynamics.run import with_weights
    from phaseprobe.models import DeepLinear

    L = len(weights)
    width = int(weights[0].shape[0]) if L > 1 else 1
    skel = DeepLinear(stats.in_dim, stats.out_dim, depth=L, width=width, sigma=1.0, key=jax.random.PRNGKey(0))
    return with_weights(skel, tuple(jnp.asarray(w) for w in weights))


def _piece_arrays(run, piece: str) -> dict:
    if piece not in run.store.done_pieces():
        raise PhaseprobeError(f"model: piece {piece} is not in the store yet; rerun the same dln command to finish it")
    return run.store.load_params(piece)


def load_dln_run_model(run, *, at: str = "final", plateau: int | None = None):
    """The network of a ``dln`` run as an Equinox :class:`~phaseprobe.models.DeepLinear`.

    **Arguments:**

    - `run`: a :class:`phaseprobe.runs.Run` of kind ``dln``.
    - `at`: ``final`` (end of the integration) or ``initial``.
    - `plateau`: instead, the saddle point of plateau ``k`` (its record of smallest gradient norm).

    **Returns:** the model (one network, unstacked).
    """
    spec = DLNSpec(**run.spec)
    stats = linear_stats(spec.data())
    arrays = _piece_arrays(run, RUN_PIECE)
    if plateau is not None:
        table = run.tables.get("plateaus")
        if table is None:
            raise PhaseprobeError("model: no plateaus.csv in this run folder; rerun the same dln command to analyse it")
        hit = table[table["index"] == int(plateau)]
        if hit.empty:
            raise PhaseprobeError(f"model: no plateau {plateau}; the run has plateaus {list(table['index'])}")
        where = np.flatnonzero(arrays["snap_index"] == int(hit["i_saddle"].iloc[0]))
        return _module(tuple(w[where[0]] for w in _arrays_weights(arrays, "snap_w")), stats)
    if at not in ("final", "initial"):
        raise PhaseprobeError(f"model: at='{at}' is not stored; use at='final', at='initial' or plateau=k")
    return _module(tuple(w[0] for w in _arrays_weights(arrays, "p" if at == "final" else "i")), stats)


def load_dln_grid_model(run, *, width: int, gamma: float, seed: int):
    """The final network of one member of a ``dln-grid`` run (``width``, ``gamma``, ``seed``)."""
    spec = DLNPhaseGridSpec(**run.spec)
    if int(width) not in [int(w) for w in spec.grid.widths]:
        raise PhaseprobeError(f"model: width {width} is not in the grid; use one of {list(spec.grid.widths)}")
    members = width_members(spec.grid, int(width))
    m = next((i for i, (g, s, _) in enumerate(members) if abs(g - float(gamma)) < 1e-12 and s == int(seed)), None)
    if m is None:
        raise PhaseprobeError(f"model: no member gamma={gamma}, seed={seed}; gammas {list(spec.grid.gammas)}, seeds {list(spec.grid.seeds)}")
    arrays = _piece_arrays(run, width_piece(width))
    return _module(tuple(w[m] for w in _arrays_weights(arrays, "p")), linear_stats(spec.data()))


def load_dln_escape_model(run, *, depth: int, sigma: float):
    """The final network of one init scale of a ``dln-escape`` run (``depth``, ``sigma``)."""
    spec = DLNEscapeSpec(**run.spec)
    if int(depth) not in spec.escape["depths"]:
        raise PhaseprobeError(f"model: depth {depth} is not in the run; use one of {spec.escape['depths']}")
    sig = spec.escape_sigmas(int(depth))
    m = int(np.argmin(np.abs(np.log(sig) - np.log(float(sigma)))))
    arrays = _piece_arrays(run, depth_piece(depth))
    return _module(tuple(w[m] for w in _arrays_weights(arrays, "p")), linear_stats(spec.data()))


# ---- show ----------------------------------------------------------------------------------------------------

_TABLES = {
    "dln": {"plateaus": ("index", "t_start", "t_end", "level", "oracle_level", "rank", "t_escape", "cert_kind", "cert_index",
                         "cert_min_eig", "cert_escape_order")},
    "dln-grid": {"transitions": ("observable", "gamma_c", "depth", "widths"),
                 "grid_summary": ("gamma", "width", "seed", "sigma", "disp_abs", "disp_rel", "n_plateaus", "t_escape_1",
                                  "final_excess_loss", "diverged")},
    "dln-escape": {"escape_fits": ("depth", "k", "measure", "measured", "theory"),
                   "escape_times": ("depth", "width", "sigma", "k", "t_escape", "s_k")},
}


def show_dln(run, con, wide: bool = False) -> None:
    """``phaseprobe show`` for the three dln kinds: what is stored, then the analysis tables
    (computed from the store, without figures, when the folder does not hold them yet)."""
    from phaseprobe.commands.show import print_frame
    from phaseprobe.experiment import get_kind

    kind = get_kind(run.kind)
    phases = kind.plan(kind.spec_type(**run.spec))
    pieces = [p for ph in phases for u in ph.units for p in u.pieces]
    done = run.store.done_pieces()
    con.print(f"{sum(p in done for p in pieces)}/{len(pieces)} ensembles in the store ({', '.join(pieces)}); "
              f"{len(run.records)} records")
    wanted = _TABLES[run.kind]
    tables = dict(run.tables)
    if done and not all(n in tables for n in wanted):
        kind.analyse(run.path, figures=False)
        from phaseprobe.runs import open_run

        tables = dict(open_run(run.path).tables)
    for name, cols in wanted.items():
        if name in tables:
            tab = tables[name]
            if not wide:
                tab = tab[[c for c in cols if c in tab.columns]]
            print_frame(con, tab, name, max_cols=len(tab.columns))
    if run.kind == "dln" and (run.path / "summary.json").exists():
        s = json.loads((run.path / "summary.json").read_text())
        con.print("oracle escape times: " + ", ".join(f"t_{k} = {v:.4g}" for k, v in enumerate(s["escape_times"], start=1))
                  + f"; final loss {s['final_loss']:.4g} at t = {s['t_end']:.4g}")


DLN = ExperimentKind(
    name="dln", spec_type=DLNSpec, make_context=make_dln_context, plan=plan_dln_run, run_unit=run_dln_unit,
    analyse=analyse_dln_run, load_model=load_dln_run_model, show=show_dln,
)
"""One deep linear network: plateaus and their saddles."""

DLN_PHASE_GRID = ExperimentKind(
    name="dln-grid", spec_type=DLNPhaseGridSpec, make_context=make_dln_context, plan=plan_dln_phase_grid,
    run_unit=run_dln_unit, analyse=analyse_dln_phase_grid, load_model=load_dln_grid_model, show=show_dln,
)
"""The gamma x width phase diagram of deep linear networks."""

DLN_ESCAPE = ExperimentKind(
    name="dln-escape", spec_type=DLNEscapeSpec, make_context=make_dln_context, plan=plan_dln_escape,
    run_unit=run_dln_unit, analyse=analyse_dln_escape, load_model=load_dln_escape_model, show=show_dln,
)
"""Escape times of deep linear networks against the init scale."""
