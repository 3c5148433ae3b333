"""The ``dln`` experiment: spec (validated before any compute), one run, the phase-diagram grid, outputs.

A spec is a plain dict (TOML file, the embedded default, ``--set`` overrides)::

    name = "dln"
    depth = 3                     # weight matrices L
    width = 16
    gamma = 4.0                   # init variance sigma^2 = width^-gamma (or give sigma = ...)
    seed = 1                      # init draws
    [teacher]                     # whitened low-rank linear teacher y = T x
    singular_values = [4, 2, 1, 0.5]
    in_dim = 6
    out_dim = 6
    seed = 0
    [integrate]                   # see phaseprobe.dynamics.run
    t_max = 2000.0
    step = "adaptive"
    [plateaus]
    slope_tol = 0.1
    min_decades = 0.05
    certify = true
    [grid]                        # used with --grid
    gammas = [0.25, 0.5, ...]
    widths = [16, 32, ...]
    seeds = [0, 1]

Outputs (folder ``out``): ``records.parquet`` / ``plateaus.parquet`` (one run) or
``grid_summary.parquet`` / ``grid_records.parquet`` / ``transition.json`` (grid), figures
(``dln_saddle_to_saddle.png``, ``dln_phase_diagram.png``), ``spec.json`` and ``report.html``.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np
import pandas as pd

from phaseprobe.dynamics.observe import linear_stats
from phaseprobe.dynamics.phase import GridSpec, escape_fits, escape_scaling, locate_transition, run_grid, sigma_of
from phaseprobe.dynamics.plateaus import analyze_member, oracle_escape_times
from phaseprobe.dynamics.run import IntegrateConfig, dln_ensemble, integrate
from phaseprobe.dynamics.teacher import DynamicsError, check_singular_values, make_teacher

DEFAULT_SPEC: dict = {
    "name": "dln",
    "depth": 3,
    "width": 16,
    "gamma": 4.0,
    "sigma": None,
    "seed": 1,
    "teacher": {"singular_values": [4.0, 2.0, 1.0, 0.5], "in_dim": 6, "out_dim": 6, "seed": 0, "basis": "random"},
    "integrate": {"t_max": 2000.0, "step": "adaptive", "lr": None, "c": 0.5, "delta": 0.01, "chunk": 16, "loss_tol": 1e-6},
    "plateaus": {"slope_tol": 0.1, "min_decades": 0.05, "certify": True, "hess_rel_tol": 0.1},
    "grid": {
        "gammas": [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0],
        "widths": [16, 32, 64, 128, 256],
        "seeds": [0, 1],
        "depth": 3,
        "t_max": 3000.0,
        "loss_tol": 1e-4,
    },
    "escape": {"depths": [2, 3], "width": 16, "seed": 0, "sigmas_depth2": None, "sigmas_depth3": None},
}

_TOP = {"name", "depth", "width", "gamma", "sigma", "seed", "teacher", "integrate", "plateaus", "grid", "escape"}
_ESCAPE = {"depths", "width", "seed", "sigmas_depth2", "sigmas_depth3"}
_TEACHER = {"singular_values", "in_dim", "out_dim", "seed", "basis", "n_train"}
_INTEGRATE = {"t_max", "step", "lr", "c", "delta", "chunk", "loss_tol", "grow", "n_records", "rank_tol", "max_steps"}
_PLATEAUS = {"slope_tol", "min_decades", "certify", "hess_rel_tol"}
_GRID = {"gammas", "widths", "seeds", "depth", "t_max", "loss_tol"}


def _err(msg: str):
    raise DynamicsError(msg)


def _check_keys(d: dict, allowed: set, where: str):
    if not isinstance(d, dict):
        _err(f"{where}: must be a table of settings, got {type(d).__name__}")
    bad = sorted(set(d) - allowed)
    if bad:
        _err(f"{where}{'.' if where else ''}{bad[0]}: unknown setting; use one of {', '.join(sorted(allowed))}")


def _int(v, field: str, lo: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) and not (isinstance(v, float) and float(v).is_integer()):
        _err(f"{field}: must be an integer, got {v!r}")
    v = int(v)
    if v < lo:
        _err(f"{field}: must be an integer >= {lo}, got {v}")
    return v


def _num(v, field: str, positive: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        _err(f"{field}: must be a number, got {v!r}")
    v = float(v)
    if not math.isfinite(v):
        _err(f"{field}: must be finite, got {v}")
    if positive and v <= 0:
        _err(f"{field}: must be > 0, got {v}")
    return v


def _list(v, field: str, conv) -> list:
    if isinstance(v, str):
        try:
            v = [x for x in v.split(",") if x.strip()]
            v = [conv(x) for x in v]
        except ValueError:
            _err(f"{field}: cannot read '{v}'; give a list like [1, 2, 3] or '1,2,3'")
    if not isinstance(v, (list, tuple)) or len(v) == 0:
        _err(f"{field}: must be a non-empty list, got {v!r}")
    return list(v)


@dataclass
class DLNSpec:
    """A validated ``dln`` spec (see the module doc)."""

    raw: dict
    name: str
    depth: int
    width: int
    sigma: float
    gamma: float | None
    seed: int
    teacher: dict
    integrate: IntegrateConfig
    plateaus: dict
    grid: GridSpec
    escape: dict = field(default_factory=dict)

    def spec_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.raw, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def data(self):
        t = self.teacher
        return make_teacher(t["singular_values"], t["in_dim"], t["out_dim"], t.get("n_train"), seed=t["seed"], basis=t["basis"])


def make_spec(data: dict, *, grid: bool = False) -> DLNSpec:
    """Validate a spec dict (defaults filled in) into a :class:`DLNSpec`; one-line errors, no compute."""
    d = json.loads(json.dumps(DEFAULT_SPEC))
    _check_keys(data, _TOP, "")
    for k, v in data.items():
        if isinstance(v, dict) and isinstance(d.get(k), dict):
            d[k].update(v)
        else:
            d[k] = v
    _check_keys(d["teacher"], _TEACHER, "teacher")
    _check_keys(d["integrate"], _INTEGRATE, "integrate")
    _check_keys(d["plateaus"], _PLATEAUS, "plateaus")
    _check_keys(d["grid"], _GRID, "grid")
    _check_keys(d["escape"], _ESCAPE, "escape")
    te = d["teacher"]
    te["in_dim"] = _int(te["in_dim"], "teacher.in_dim")
    te["out_dim"] = _int(te["out_dim"], "teacher.out_dim")
    te["seed"] = _int(te["seed"], "teacher.seed", 0)
    if te.get("n_train") is not None:
        te["n_train"] = _int(te["n_train"], "teacher.n_train")
    sv = [_num(x, "teacher.singular_values") for x in _list(te["singular_values"], "teacher.singular_values", float)]
    try:
        check_singular_values(sv, te["in_dim"], te["out_dim"])
    except DynamicsError as e:
        _err(f"teacher.{e}")
    te["singular_values"] = sv
    rank = len(sv)
    depth = _int(d["depth"], "depth")
    width = _int(d["width"], "width")
    seed = _int(d["seed"], "seed", 0)
    gamma = None if d.get("gamma") is None else _num(d["gamma"], "gamma")
    sigma = None if d.get("sigma") is None else _num(d["sigma"], "sigma", positive=True)
    if not grid:
        if depth > 1 and width < rank:
            _err(f"width: {width} is below the teacher's rank {rank}; use width >= {rank} (or fewer singular values)")
        if sigma is None and gamma is None:
            _err("gamma: give gamma (sigma^2 = width^-gamma) or sigma")
        if sigma is None:
            sigma = sigma_of(gamma, width)
    it = d["integrate"]
    try:
        icfg = IntegrateConfig(
            t_max=_num(it["t_max"], "integrate.t_max", positive=True), step=str(it["step"]),
            lr=None if it.get("lr") is None else _num(it["lr"], "integrate.lr", positive=True),
            c=_num(it["c"], "integrate.c", positive=True), delta=_num(it["delta"], "integrate.delta", positive=True),
            chunk=_int(it["chunk"], "integrate.chunk"), loss_tol=_num(it["loss_tol"], "integrate.loss_tol", positive=True),
            keep_params=True,
            **{k: it[k] for k in ("grow", "n_records", "rank_tol", "max_steps") if k in it},
        ).validate()
    except DynamicsError as e:
        msg = str(e)
        _err(msg if msg.startswith("integrate.") else f"integrate.{msg}")
    pl = d["plateaus"]
    pl["slope_tol"] = _num(pl["slope_tol"], "plateaus.slope_tol", positive=True)
    pl["min_decades"] = _num(pl["min_decades"], "plateaus.min_decades", positive=True)
    pl["hess_rel_tol"] = _num(pl["hess_rel_tol"], "plateaus.hess_rel_tol", positive=True)
    if not isinstance(pl["certify"], bool):
        _err(f"plateaus.certify: must be true or false, got {pl['certify']!r}")
    g = d["grid"]
    gammas = [_num(x, "grid.gammas") for x in _list(g["gammas"], "grid.gammas", float)]
    widths = [_int(x, "grid.widths") for x in _list(g["widths"], "grid.widths", int)]
    seeds = [_int(x, "grid.seeds", 0) for x in _list(g["seeds"], "grid.seeds", int)]
    dup = sorted({x for x in seeds if seeds.count(x) > 1})
    if dup:
        _err(f"grid.seeds: seed {dup[0]} is given {seeds.count(dup[0])} times (the same training twice); give each seed once, e.g. {sorted(set(seeds))}")
    gdepth = _int(g["depth"], "grid.depth", 2)
    if grid:
        small = [w for w in widths if w < rank]
        if small:
            _err(f"grid.widths: width {small[0]} is below the teacher's rank {rank}; use widths >= {rank}")
    from dataclasses import replace

    gspec = GridSpec(
        gammas=tuple(gammas), widths=tuple(widths), seeds=tuple(seeds), depth=gdepth,
        integrate=replace(icfg, t_max=_num(g["t_max"], "grid.t_max", positive=True),
                          loss_tol=_num(g["loss_tol"], "grid.loss_tol", positive=True), keep_params=False),
        slope_tol=pl["slope_tol"], min_decades=pl["min_decades"],
    )
    es = d["escape"]
    edepths = [_int(x, "escape.depths", 2) for x in _list(es["depths"], "escape.depths", int)]
    ewidth = _int(es["width"], "escape.width")
    if ewidth < rank:
        _err(f"escape.width: {ewidth} is below the teacher's rank {rank}; use escape.width >= {rank}")
    esig = {}
    for L in (2, 3):
        v = es.get(f"sigmas_depth{L}")
        if v is not None:
            esig[L] = [_num(x, f"escape.sigmas_depth{L}", positive=True) for x in _list(v, f"escape.sigmas_depth{L}", float)]
    escape = {"depths": edepths, "width": ewidth, "seed": _int(es["seed"], "escape.seed", 0), "sigmas": esig}
    return DLNSpec(raw=d, name=str(d.get("name", "dln")), depth=depth, width=width, sigma=float(sigma) if sigma else float("nan"),
                   gamma=gamma, seed=seed, teacher=te, integrate=icfg, plateaus=pl, grid=gspec, escape=escape)


def load_spec_file(path) -> dict:
    from phaseprobe.errors import SpecError
    from phaseprobe.specs import read_toml_spec

    try:
        return read_toml_spec(path, "dln", "examples/dln*.toml")
    except SpecError as e:
        _err(str(e))


def _write_meta(out: Path, spec: DLNSpec, kind: str):
    from phaseprobe import __version__

    out.mkdir(parents=True, exist_ok=True)
    meta = {"kind": kind, "spec_hash": spec.spec_hash(), "version": __version__, "spec": spec.raw}
    (out / "spec.json").write_text(json.dumps(meta, indent=2, default=str))


# ---- one run ------------------------------------------------------------------------------------

@dataclass
class RunResult:
    run: Any
    plateaus: list
    plateau_table: pd.DataFrame
    escape_times: np.ndarray  # oracle escape times k = 1..r
    figures: list = field(default_factory=list)
    seconds: float = 0.0


def run_single(spec: DLNSpec, out=None, *, progress: Callable | None = None, figures: bool = True) -> RunResult:
    """One network: integrate, find the plateaus, certify their saddles, write the outputs to ``out``."""
    t0 = time.time()
    data = spec.data()
    stats = linear_stats(data)
    key = np.asarray(jax.random.PRNGKey(spec.seed))[None]
    model = dln_ensemble(stats.in_dim, stats.out_dim, spec.depth, spec.width, [spec.sigma], key)
    run = integrate(model, data, spec.integrate, progress=progress, stats=stats)
    pl = spec.plateaus
    plats = analyze_member(run, 0, slope_tol=pl["slope_tol"], min_decades=pl["min_decades"], certify=pl["certify"],
                           hess_rel_tol=pl["hess_rel_tol"])
    rows = []
    for p in plats:
        r = p.as_row()
        rows.append(r)
    table = pd.DataFrame(rows)
    df = run.member(0)
    esc = oracle_escape_times(df["t"].to_numpy(), np.maximum(df["excess_loss"].to_numpy(), 0), stats.levels() - stats.e_min)
    res = RunResult(run=run, plateaus=plats, plateau_table=table, escape_times=esc)
    if out is not None:
        out = Path(out)
        _write_meta(out, spec, "dln")
        rec = run.records.copy()
        rec["depth"], rec["width"], rec["sigma"], rec["gamma"] = spec.depth, spec.width, spec.sigma, spec.gamma
        rec.to_parquet(out / "records.parquet", index=False)
        tab = table.copy()
        if "learned_sv" in tab:
            tab["learned_sv"] = tab["learned_sv"].apply(lambda v: json.dumps([float(x) for x in v]))
        tab.to_parquet(out / "plateaus.parquet", index=False)
        summary = {
            "depth": spec.depth, "width": spec.width, "sigma": spec.sigma, "gamma": spec.gamma,
            "singular_values": spec.teacher["singular_values"], "oracle_levels": [float(x) for x in stats.levels()],
            "escape_times": [float(x) for x in esc], "t_end": float(df["t"].iloc[-1]), "steps": int(df["step"].iloc[-1]),
            "final_loss": float(df["loss"].iloc[-1]), "disp_abs": float(df["disp_abs"].iloc[-1]),
            "disp_rel": float(df["disp_rel"].iloc[-1]), "n_plateaus": len(plats),
        }
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        if figures:
            from phaseprobe.dynamics.figures import plot_run
            from phaseprobe.plots.report import add_section

            title = (f"deep linear net, depth {spec.depth}, width {spec.width}, sigma = {spec.sigma:.3g}"
                     + (f" (gamma = {spec.gamma:g})" if spec.gamma is not None else "") + ": saddle-to-saddle")
            f = plot_run(run, plats, out / "dln_saddle_to_saddle.png", title=title)
            res.figures.append(f)
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
    res.seconds = time.time() - t0
    return res


# ---- the grid ---------------------------------------------------------------------------------------

@dataclass
class GridOutcome:
    result: Any
    transitions: dict
    figures: list = field(default_factory=list)
    seconds: float = 0.0


def run_phase_grid(spec: DLNSpec, out=None, *, progress: Callable | None = None, figures: bool = True) -> GridOutcome:
    """The gamma x width phase diagram; outputs to ``out`` (see the module doc)."""
    t0 = time.time()
    data = spec.data()
    res = run_grid(spec.grid, data, progress=progress)
    trans = {c: locate_transition(res.summary, c) for c in ("disp_abs", "t_escape_1")}
    outcome = GridOutcome(result=res, transitions=trans)
    if out is not None:
        out = Path(out)
        _write_meta(out, spec, "dln-grid")
        s = res.summary.copy()
        for c in ("plateau_ranks", "plateau_levels"):
            if c in s:
                s[c] = s[c].apply(lambda v: json.dumps([float(x) for x in v]))
        s.to_parquet(out / "grid_summary.parquet", index=False)
        res.records.to_parquet(out / "grid_records.parquet", index=False)
        tj = {c: {"gamma_c": tr["gamma_c"], "slopes": tr["slopes"].to_dict(orient="list"),
                  "pairs": tr["pairs"].to_dict(orient="list")} for c, tr in trans.items()}
        (out / "transition.json").write_text(json.dumps(tj, indent=2, default=float))
        if figures:
            from phaseprobe.dynamics.figures import plot_phase
            from phaseprobe.plots.report import add_section

            f = plot_phase(res.summary, trans, out / "dln_phase_diagram.png", depth=spec.grid.depth)
            outcome.figures.append(f)
            tabs = {f"width exponent of {c} (transition at gamma_c = {tr['gamma_c']:.3f})": tr["slopes"] for c, tr in trans.items()}
            tabs.update({f"gamma_c per width pair ({c})": tr["pairs"] for c, tr in trans.items()})
            agg = res.summary.groupby(["gamma", "width"], as_index=False)[["disp_abs", "disp_rel", "n_plateaus", "t_escape_1"]].mean()
            tabs["order parameters (seed means)"] = agg
            text = (f"Grid gamma x width at depth {spec.grid.depth} ({len(spec.grid.seeds)} seeds), init variance sigma^2 = width^-gamma on "
                    f"every layer, teacher singular values {spec.teacher['singular_values']}. The transition is located where the width "
                    f"exponent of the absolute displacement ||theta_end - theta_0|| (negative in the lazy phase) and of the first escape time "
                    f"cross zero.")
            add_section(out, "dln_grid", "Deep linear networks: the gamma x width phase diagram", text, figures=[f.name], tables=tabs,
                        order=20)
    outcome.seconds = time.time() - t0
    return outcome


# ---- escape times against the init scale ----------------------------------------------------------------

@dataclass
class EscapeOutcome:
    table: pd.DataFrame
    fits: pd.DataFrame
    figures: list = field(default_factory=list)
    seconds: float = 0.0


def run_escape(spec: DLNSpec, out=None, *, progress: Callable | None = None, figures: bool = True) -> EscapeOutcome:
    """Escape times vs the init scale at the spec's escape depths (log law at depth 2, power law at 3)."""
    t0 = time.time()
    data = spec.data()
    es = spec.escape
    tab = escape_scaling(data, depths=es["depths"], width=es["width"], sigmas=es["sigmas"] or None, seed=es["seed"],
                         progress=progress)
    fits = escape_fits(tab)
    res = EscapeOutcome(table=tab, fits=fits)
    if out is not None:
        out = Path(out)
        _write_meta(out, spec, "dln-escape")
        tab.to_parquet(out / "escape_times.parquet", index=False)
        fits.to_parquet(out / "escape_fits.parquet", index=False)
        if figures:
            from phaseprobe.dynamics.figures import plot_escape_scaling
            from phaseprobe.plots.report import add_section

            f = plot_escape_scaling(tab, out / "dln_escape_times.png", singular_values=spec.teacher["singular_values"])
            res.figures.append(f)
            text = (f"Escape time k: the loss first halfway between the rank-(k-1) and rank-k saddle levels; width {es['width']}, one "
                    f"seed, so theta_0 = sigma x theta_bar. Two layers: t_k = ln(1/sigma)/s_k + const; three or more: "
                    f"t_k ~ sigma^-(L-2).")
            add_section(out, "dln_escape", "Deep linear networks: escape times vs the init scale", text, figures=[f.name],
                        tables={"fits": fits}, order=30)
    res.seconds = time.time() - t0
    return res
