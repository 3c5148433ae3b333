"""End-to-end path experiments behind ``phaseprobe connect`` and ``phaseprobe basins``.

* :func:`connect` -- runs the ``connect`` experiment kind (:mod:`phaseprobe.paths.kind`) and
  :func:`analyse_connect`: minima (from a sweep run folder, or fresh seeds trained first), the L2
  probe between every requested pair (ONE ensemble, member k starts at ``a_k`` with
  ``w_ref = b_k``), linear interpolation and trained Bezier curves on the same pairs (one
  ensemble), dense evaluation of every path, barriers, lengths and gradient evaluations, saddles
  at the probe's jumps; tables, figures and a report section in the run folder.
* :func:`basins` -- runs the ``basins`` kind and :func:`analyse_basins`: the basin hierarchy: probes with ``w_ref = 0`` from trained minima (one
  ensemble over seeds), bisected transitions, saddles, excursions, then *nested* probes from
  the start model toward every transition model (``w_ref = T_k``); the graph of basins
  (class sets) and saddles, drawn and tabulated.

A :class:`PathSpec` holds the settings: the data and model fields of a sweep spec
(:class:`phaseprobe.sweep.spec.SweepSpec`) plus the probe's. Everything is validated before
any compute.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

import jax
import numpy as np
import pandas as pd
from pydantic import ValidationError

from phaseprobe import conventions
from phaseprobe.errors import SpecError
from phaseprobe.paths.landscape import PathError
from phaseprobe.specs import check_seeds, read_toml_spec, validation_message
from phaseprobe.sweep.spec import DATA_MODEL_FIELDS, DataModelSpec

if TYPE_CHECKING:
    from phaseprobe.paths.probe_types import ProbeConfig


class PathSpec(DataModelSpec):
    """Settings of a connect or basins experiment (strengths in ``convention``)."""

    name: str = "paths"
    # data and model: as in a sweep spec (DataModelSpec), with the published probe's defaults
    width: int = 32
    activation: str = "sigmoid"
    # minima
    run: list[str] = []  # sweep run folders to take minima from (one or two); empty: train fresh seeds
    run_seeds: Optional[list[int]] = None  # which seeds of the run(s); default: the first ones
    seeds: Union[int, list[int]] = 2  # fresh minima: number of seeds or the list
    start_epochs: int = 150
    start_patience: Optional[int] = 10
    pairs: Optional[list[list[int]]] = None  # index pairs into the minima; default (0,1), (1,2), ...
    # the probe (published settings)
    strengths: str = "auto"  # grid 'lin:0:0.05:26' / list, or 'auto' (connect: up to auto_scale/||a-b||^2)
    n_strengths: int = 16
    auto_scale: float = 20.0
    convention: str = "l2"
    lr: float = 1.5e-3
    batch_size: Optional[int] = 64
    epochs: int = 50
    patience: Optional[int] = 5
    min_jump: float = 0.02
    k_sigma: float = 3.0
    bisect: bool = True
    bisect_tol: float = 1e-10
    bisect_max_steps: int = 40
    saddles: bool = True
    saddle_method: str = "gad"
    saddle_steps: int = 20
    saddle_subset: Optional[int] = 2000
    excursion: bool = False
    excursion_up: int = 2
    hessian_k: int = 0
    hessian_every: int = 1
    hessian_subset: Optional[int] = 2000
    nest: bool = True
    max_nest: int = 4
    learned: float = 0.5
    # baselines and evaluation
    bezier: bool = True
    bezier_epochs: int = 50
    bezier_patience: Optional[int] = None
    bezier_chunk: Optional[int] = None
    n_points: int = 41

    def hash(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(), sort_keys=True, default=str).encode()).hexdigest()[:16]

    def sweep_part(self) -> dict:
        d = {k: getattr(self, k) for k in DATA_MODEL_FIELDS}
        d.update(alphas="0", mode="cold", seeds=[0], optimizer="adam", lr=self.lr, batch_size=self.batch_size, epochs=self.epochs,
                 patience=self.patience, name=self.name)
        return d

    def check(self, kind: str) -> "PathSpec":
        from phaseprobe.sweep.spec import make_spec, parse_strength_grid

        make_spec(self.sweep_part())
        conventions.check_convention(self.convention)
        if self.convention == "decoupled":
            raise SpecError("convention: the probe's penalty is in the gradient; use 'l2' or 'wd'")
        if str(self.strengths).strip() != "auto":
            g = parse_strength_grid(self.strengths, field="strengths")
            if g.size < 2 or np.any(np.diff(g) <= 0):
                raise SpecError("strengths: the probe only raises beta; give a strictly increasing grid of >= 2 values, e.g. 'lin:0:0.05:26'")
        elif kind == "basins":
            raise SpecError("strengths: 'auto' only works for connect; give the basins grid, e.g. strengths = 'lin:0:0.05:26'")
        for name in ("n_strengths", "epochs", "start_epochs", "bezier_epochs", "n_points"):
            if getattr(self, name) < 2 if name in ("n_strengths", "n_points") else getattr(self, name) < 1:
                raise SpecError(f"{name}: must be a positive integer (n_strengths, n_points >= 2), got {getattr(self, name)}")
        if not (self.auto_scale > 0):
            raise SpecError(f"auto_scale: must be > 0, got {self.auto_scale}")
        if not (self.lr > 0):
            raise SpecError(f"lr: must be a positive number, got {self.lr}")
        if self.saddle_method not in ("gad", "gradnorm"):
            raise SpecError(f"saddle_method: unknown '{self.saddle_method}'; use 'gad' or 'gradnorm'")
        if len(self.run) > 2:
            raise SpecError(f"run: give one or two sweep run folders, got {len(self.run)}")
        for r in self.run:
            if not Path(r).exists():
                raise SpecError(f"run: folder '{r}' does not exist; give a `phaseprobe sweep --out` folder")
        if self.run:
            if self.run_seeds is not None:
                check_seeds(self.run_seeds, "run_seeds", example="[0, 1]")
            # the minima the run folders must hold (reads spec.json and the final records only)
            n = _n_minima(self) if kind == "connect" else (len(self.run_seeds) if self.run_seeds else 1)
            load_minima(self.run, seeds=self.run_seeds, n=n)
        if self.pairs is not None:
            for p in self.pairs:
                if len(p) != 2 or p[0] == p[1] or min(p) < 0:
                    raise SpecError(f"pairs: each pair is two different minimum indices, got {p}")
        if not self.run:
            seeds = self.seed_list()
            if len(seeds) < (2 if kind == "connect" else 1):
                raise SpecError(f"seeds: connect needs at least 2 minima, got {len(seeds)} seeds")
        return self

    def seed_list(self) -> list[int]:
        """The fresh minima's seeds: distinct non-negative Python ints."""
        return check_seeds(self.seeds, example="[0, 1]")


class ConnectSpec(PathSpec):
    """The spec of a ``connect`` run (a :class:`PathSpec` checked for connect)."""

    def check(self, kind: str = "connect") -> "ConnectSpec":
        return super().check(kind)


class BasinsSpec(PathSpec):
    """The spec of a ``basins`` run (a :class:`PathSpec` checked for basins)."""

    def check(self, kind: str = "basins") -> "BasinsSpec":
        return super().check(kind)


def make_path_spec(data: dict, kind: str) -> PathSpec:
    """A checked spec of ``kind`` (``connect`` or ``basins``) from a dict; one-line errors.

    **Arguments:**

    - `data`: the spec's fields.
    - `kind`: ``"connect"`` or ``"basins"``.

    **Returns:** a :class:`ConnectSpec` or :class:`BasinsSpec`.
    """
    cls = ConnectSpec if kind == "connect" else BasinsSpec
    try:
        return cls(**data).check(kind)
    except ValidationError as e:
        raise SpecError(validation_message(e, kind)) from None


def load_path_spec_file(path: str | Path, kind: str) -> dict:
    """The ``[kind]`` table of a TOML spec file as a dict (``kind``: connect or basins)."""
    return read_toml_spec(path, kind)


# ---------------------------------------------------------------------------------------------
# minima
# ---------------------------------------------------------------------------------------------
def landscape_for(spec: PathSpec, *, sweep_spec=None, dataset=None):
    """(SweepContext, NetworkLandscape) for the spec's data and model (or a run's sweep spec);
    ``dataset`` reuses a loaded dataset."""
    from phaseprobe.paths.landscape import NetworkLandscape
    from phaseprobe.sweep.run import SweepContext
    from phaseprobe.sweep.spec import make_spec
    from phaseprobe.train import TrainConfig

    sp = make_spec(spec.sweep_part()) if sweep_spec is None else sweep_spec
    ctx = SweepContext(sp, dataset=dataset)
    cfg = TrainConfig(loss=sp.loss, optimizer="adam", lr=spec.lr, batch_size=spec.batch_size, epochs=spec.epochs,
                      patience=spec.patience, penalty_on="all")
    one = ctx.make_one(jax.random.PRNGKey(0))
    return ctx, NetworkLandscape(one, ctx.dataset, cfg, learned=spec.learned)


def _arch(spec_dict: dict) -> dict:
    keys = ("dataset", "classes", "n_train", "model", "depth", "width", "activation", "bias", "model_options", "loss")
    return {k: spec_dict.get(k) for k in keys}


def check_minima_runs(run_dirs) -> list[dict]:
    """The sweep specs of the run folders, or a :class:`PathError` (not a sweep, no parameters,
    architectures that differ); reads only ``spec.json`` and the parameter file names."""
    from phaseprobe.store import RunStore

    specs = []
    for r in [Path(x) for x in run_dirs]:
        st = RunStore(r)
        meta = st.meta()
        if meta.get("kind") != "sweep":
            raise PathError(f"run: '{r}' was made by `phaseprobe {meta.get('kind')}`, not a sweep; give a `phaseprobe sweep --out` folder")
        if not st.has_params():
            raise PathError(f"run: '{r}' has no saved parameters (params/*.npz); rerun `phaseprobe sweep --out {r}` to completion first")
        specs.append(meta["spec"])
    if len(specs) == 2 and _arch(specs[0]) != _arch(specs[1]):
        diff = [k for k in _arch(specs[0]) if _arch(specs[0])[k] != _arch(specs[1])[k]]
        k0 = diff[0]
        raise PathError(f"run: the two runs' minima differ in architecture or data ({k0}: {specs[0].get(k0)} vs {specs[1].get(k0)}); "
                        "connect minima of one architecture on one dataset")
    return specs


def load_minima(run_dirs, *, seeds=None, n: int = 2):
    """Minima saved by sweep runs: ``(sweep_spec, [(run, piece, member, seed, alpha)], stacked arrays per piece)``.

    Takes the final models at the smallest strength of each run (cold or up branch), distinct
    seeds (``seeds`` picks them; default the first ``n`` in all). Raises :class:`PathError` when a
    folder is not a sweep run, has no parameters, or the runs' architectures differ.
    """
    from phaseprobe.sweep.spec import make_spec

    run_dirs = [Path(r) for r in ([run_dirs] if isinstance(run_dirs, (str, Path)) else run_dirs)]
    if not run_dirs:
        raise PathError("run: give at least one sweep run folder")
    specs = check_minima_runs(run_dirs)
    found = []
    for r in run_dirs:
        pieces = sorted(p.stem for p in (r / "params").glob("*.npz") if not p.name.startswith(".tmp-"))
        for piece in pieces:
            rp = r / "records" / f"{piece}.parquet"
            if not rp.exists():
                continue
            df = pd.read_parquet(rp)
            fin = df[df["final"]] if "final" in df.columns else df
            for m, row in enumerate(fin.itertuples(index=False)):
                if getattr(row, "branch", "cold") not in ("cold", "up"):
                    continue
                found.append({"run": str(r), "piece": piece, "member": m, "seed": int(row.seed), "alpha": float(row.alpha),
                              "alpha_index": int(row.alpha_index), "branch": row.branch, "test_acc": float(getattr(row, "test_acc", np.nan))})
    if not found:
        raise PathError(f"run: no final models on a cold or up branch in {', '.join(map(str, run_dirs))}; run a cold or loop sweep first")
    fr = pd.DataFrame(found)
    a_min = fr["alpha"].min()
    fr = fr[fr["alpha"] == a_min]
    chosen = []
    if seeds is not None:
        for s in seeds:
            hit = fr[fr["seed"] == int(s)]
            if hit.empty:
                raise PathError(f"run_seeds: seed {s} has no model at the smallest strength in the run(s); available: {sorted(int(x) for x in fr['seed'].unique())}")
            chosen.append(hit.iloc[0].to_dict())
    else:
        seen = set()
        for row in fr.itertuples(index=False):
            key = (row.run, row.seed)
            if key in seen:
                continue
            seen.add(key)
            chosen.append(row._asdict())
            if len(chosen) >= n:
                break
    if len(chosen) < n:
        raise PathError(f"run: found {len(chosen)} minima at the smallest strength, need {n}; run the sweep with more seeds")
    return make_spec(specs[0]), chosen


def minima_from_runs(spec: PathSpec, land, ctx, chosen) -> np.ndarray:
    from phaseprobe.store import RunStore

    out = []
    for c in chosen:
        st = RunStore(c["run"])
        arrays = st.load_params(c["piece"])
        k = int(np.asarray(arrays["p000"]).shape[0])
        model = ctx.arrays_to_model(arrays, k)
        x = land.flatten_model(model)
        out.append(x[int(c["member"])])
    return np.stack(out)


def train_minima(land, ctx, seeds, spec: PathSpec) -> tuple[np.ndarray, dict]:
    """Fresh minima: every seed trained at strength 0 (one ensemble) with the probe's optimiser."""
    from dataclasses import replace

    from phaseprobe.train import Trainer

    cfg = replace(land.config, epochs=spec.start_epochs, patience=spec.start_patience)
    tr = Trainer(ctx.members([seeds[0]]), ctx.dataset, cfg)
    keys = jax.numpy.stack([jax.random.fold_in(jax.random.PRNGKey(s), 3) for s in seeds])
    res = tr.train(ctx.members(seeds), jax.numpy.zeros(len(seeds)), key=keys)
    x = land.flatten_model(res.model)
    rec = res.records[-1]
    info = {"epochs": np.asarray(res.state.epochs).tolist(), "train_error": np.asarray(rec["train_error"]).tolist(),
            "test_acc": np.asarray(rec.get("test_acc", [np.nan] * len(seeds))).tolist(),
            "grad_evals": (np.asarray(res.state.epochs) * land.n_samples).tolist()}
    return x, info


def get_minima(spec: PathSpec, n: int, progress=None):
    """``(ctx, land, minima (M, P), labels, info)`` from the spec's run folder(s) or fresh seeds."""
    if spec.run:
        sweep_spec, chosen = load_minima(spec.run, seeds=spec.run_seeds, n=n)
        ctx, land = landscape_for(spec, sweep_spec=sweep_spec)
        x = minima_from_runs(spec, land, ctx, chosen)
        labels = [f"seed{c['seed']}" + (f"@{Path(c['run']).name}" if len(spec.run) > 1 else "") for c in chosen]
        return ctx, land, x, labels, {"source": "run", "chosen": chosen}
    ctx, land = landscape_for(spec)
    seeds = spec.seed_list()
    if progress:
        progress("training minima", 0, 1)
    x, info = train_minima(land, ctx, seeds, spec)
    return ctx, land, x, [f"seed{s}" for s in seeds], {"source": "fresh", **info}


def _n_minima(spec: PathSpec) -> int:
    if spec.pairs:
        return max(max(p) for p in spec.pairs) + 1
    if spec.run:
        return len(spec.run_seeds) if spec.run_seeds else 2
    return len(spec.seed_list())


def _pairs(spec: PathSpec, m: int) -> list[tuple[int, int]]:
    pairs = [tuple(p) for p in spec.pairs] if spec.pairs else [(i, i + 1) for i in range(m - 1)]
    for a, b in pairs:
        if max(a, b) >= m:
            raise PathError(f"pairs: index {max(a, b)} out of range; there are {m} minima (0..{m - 1})")
    return pairs


def probe_config(spec: PathSpec, strengths, *, excursion=None) -> "ProbeConfig":
    from phaseprobe.paths.probe import ProbeConfig

    return ProbeConfig(strengths=strengths, convention=spec.convention, min_jump=spec.min_jump, k_sigma=spec.k_sigma,
                       bisect=spec.bisect, bisect_tol=spec.bisect_tol, bisect_max_steps=spec.bisect_max_steps,
                       saddles=spec.saddles, saddle_method=spec.saddle_method, saddle_steps=spec.saddle_steps,
                       saddle_subset=spec.saddle_subset, excursion=spec.excursion if excursion is None else excursion,
                       excursion_up=spec.excursion_up, hessian_k=spec.hessian_k, hessian_every=spec.hessian_every,
                       hessian_subset=spec.hessian_subset)


def auto_strengths(spec: PathSpec, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connect grid: ``n_strengths`` linear steps up to ``auto_scale / min_k ||a_k - b_k||^2`` (canonical
    alpha), expressed in the spec's convention. The grid starts one step above 0: the end
    points are trained minima already, so the paper's first point (strength 0) is skipped."""
    d2 = float(np.min(np.sum(np.square(a.astype(np.float64) - b.astype(np.float64)), axis=1)))
    if not d2 > 0:
        raise PathError("pairs: two of the minima are identical; connect different minima")
    amax = spec.auto_scale / d2
    alphas = np.linspace(amax / spec.n_strengths, amax, spec.n_strengths)
    return np.asarray(conventions.from_alpha(alphas, spec.convention), np.float64).reshape(-1)


def _grid(spec: PathSpec) -> np.ndarray:
    from phaseprobe.sweep.spec import parse_strength_grid

    return np.asarray(parse_strength_grid(spec.strengths, field="strengths"), np.float64)


# ---------------------------------------------------------------------------------------------
# the runs (the experiment pipeline) and their analysis
# ---------------------------------------------------------------------------------------------
def connect(spec: PathSpec, out: str | Path, *, progress=None, figures: bool = True, engine=None) -> dict:
    """Run (or resume) ``connect`` into ``out`` and analyse it: probe, linear and Bezier paths
    between pairs of minima.

    **Arguments:**

    - `spec`: a checked spec (:func:`make_path_spec` with ``"connect"``).
    - `out`: the run folder (rerun with the same spec to resume).
    - `progress`: a :class:`phaseprobe.progress.ProgressReporter` (default: silent).
    - `figures`: write the figures and the report section.
    - `engine`: where the units run (``phaseprobe.engine.get_engine``; default this process).

    **Returns:** :func:`analyse_connect`'s dict.
    """
    from phaseprobe.experiment import run_experiment
    from phaseprobe.paths.kind import CONNECT

    run_experiment(CONNECT, spec if isinstance(spec, ConnectSpec) else ConnectSpec(**spec.model_dump()), out,
                   engine=engine, progress=progress)
    return analyse_connect(out, figures=figures)


def basins(spec: PathSpec, out: str | Path, *, progress=None, figures: bool = True, engine=None) -> dict:
    """Run (or resume) ``basins`` into ``out`` and analyse it (see :func:`connect` for the
    arguments); **Returns:** :func:`analyse_basins`'s dict."""
    from phaseprobe.experiment import run_experiment
    from phaseprobe.paths.kind import BASINS

    run_experiment(BASINS, spec if isinstance(spec, BasinsSpec) else BasinsSpec(**spec.model_dump()), out,
                   engine=engine, progress=progress)
    return analyse_basins(out, figures=figures)


def _stored_run(run_dir, kind: str):
    from phaseprobe.paths.kind import PathContext, make_path_spec_loose
    from phaseprobe.store import RunStore

    store = RunStore(run_dir)
    meta = store.meta()
    if meta.get("kind") != kind:
        raise PathError(f"run: '{run_dir}' holds a {meta.get('kind')} run, not {kind}; give a `phaseprobe {kind} --out` folder")
    spec = make_path_spec_loose(meta["spec"], kind)
    return store, spec, PathContext(spec)


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    from phaseprobe.store.run_store import _atomic_write_bytes

    _atomic_write_bytes(path, lambda tmp: df.to_parquet(tmp, index=False))


def analyse_connect(run_dir: str | Path, figures: bool = True) -> dict:
    """Dense evaluation of every path of a stored connect run, tables, figures and report.

    **Arguments:**

    - `run_dir`: a finished ``connect`` run folder.
    - `figures`: write ``paths.png``, ``probe.png`` and the report section.

    **Returns:** a dict with ``summary``, ``transitions`` (frames), ``probe`` (the
    :class:`~phaseprobe.paths.probe.ProbeResult`), ``evals``, ``bezier``, ``labels``, ``pairs``,
    ``strengths``, ``info``, ``land``, ``seconds`` and ``figures``.
    """
    from phaseprobe.paths import pieces as P
    from phaseprobe.paths.baselines import BezierResult
    from phaseprobe.paths.kind import minima_info, probe_inputs, read_minima
    from phaseprobe.paths.metrics import evaluate_bezier, evaluate_linear, evaluate_polyline
    from phaseprobe.store import save_frame_csv

    out = Path(run_dir)
    store, spec, pctx = _stored_run(out, "connect")
    land = pctx.land
    _, labels, mins = read_minima(store)
    inp = probe_inputs(spec, "connect", store, "")
    pairs, names = inp.extra["pairs"], inp.extra["names"]
    a, b = inp.start, inp.ref
    res = P.probe_result(store, P.read_probe(store, inp))
    t_probe = res.seconds
    evals = []
    for k, name in enumerate(names):
        v, marks = res.path_vertices(k, saddles=True, to_ref=True)
        v0, _ = res.path_vertices(k, saddles=False, to_ref=True)
        evals.append(evaluate_polyline(land, v0, "probe", n_points=spec.n_points, grad_evals=res.total_grad_evals(k, saddles=False),
                                       seconds=t_probe / len(names), pair=name))
        if any(t.saddle is not None for t in res.member_transitions(k)):
            evals.append(evaluate_polyline(land, v, "probe+saddle", n_points=spec.n_points, grad_evals=res.total_grad_evals(k),
                                           seconds=t_probe / len(names), marks=marks, pair=name))
        evals.append(evaluate_linear(land, a[k], b[k], n_points=spec.n_points, pair=name))
    bez = None
    if spec.bezier:
        arr = store.load_params(P.BEZIER_PIECE)
        hist = pd.read_parquet(store.records_dir / f"{P.BEZIER_PIECE}.parquet")
        t_bez = float(hist["seconds"].iloc[0]) if len(hist) else float("nan")
        bez = BezierResult(control=arr["control"], grad_evals=arr["grad_evals"], epochs=arr["epochs"], seconds=t_bez,
                           history=hist.drop(columns=["seconds", "piece"], errors="ignore").to_dict("records"))
        for k, name in enumerate(names):
            evals.append(evaluate_bezier(land, a[k], bez.control[k], b[k], n_points=spec.n_points, grad_evals=float(bez.grad_evals[k]),
                                         seconds=t_bez / len(names), pair=name))
    summary = pd.DataFrame([e.summary() for e in evals])
    summary.insert(2, "grad_evals_probe_steps", [res.total_grad_evals(names.index(e.pair), bisect=False, saddles=False)
                                                 if e.method.startswith("probe") else np.nan for e in evals])
    dense = pd.concat([e.frame() for e in evals], ignore_index=True)
    trans = res.transitions_frame()
    _write_parquet(dense, out / "paths.parquet")
    save_frame_csv(summary, out / "paths_summary.csv")
    save_frame_csv(trans, out / "transitions.csv")
    _save_transition_models(out, res, names)
    seconds = sum(float(g["seconds"].iloc[0]) for _, g in store.load_records().groupby("piece"))
    result = {"summary": summary, "transitions": trans, "probe": res, "evals": evals, "bezier": bez, "labels": labels,
              "pairs": pairs, "strengths": inp.strengths, "info": minima_info(mins), "land": land, "seconds": seconds,
              "records": store.load_records()}
    if figures:
        result["figures"] = _connect_figures(out, spec, result, pctx.sweep_ctx)
    return result


def _save_transition_models(out: Path, res, names) -> None:
    from phaseprobe.store.run_store import _atomic_write_bytes

    d = out / "transition_models"
    d.mkdir(exist_ok=True)
    for t in res.transitions:
        arrays = {"x_lo": t.x_lo, "x_hi": t.x_hi, "strength_lo": np.float64(t.strength_lo), "strength_hi": np.float64(t.strength_hi)}
        if t.saddle is not None:
            arrays["saddle"] = t.saddle.x
        _atomic_write_bytes(d / f"m{t.member:02d}-i{t.index:04d}.npz", lambda tmp, a=arrays: np.savez_compressed(tmp, **a))


def _connect_figures(out: Path, spec: PathSpec, result: dict, ctx) -> list[Path]:
    from phaseprobe.paths.plots import plot_paths, plot_probe
    from phaseprobe.plots.report import add_section

    names = ctx.dataset.meta.get("class_names")
    f1 = plot_paths(result["evals"], out / "paths.png", title=f"{ctx.dataset.name}: error along the paths", class_names=names)
    f2 = plot_probe(result["probe"], out / "probe.png", title=f"{ctx.dataset.name}: L2 probe between minima (w_ref = the other minimum)",
                    class_names=names)
    s = result["summary"]
    text = ("Paths between pairs of minima: the L2 probe (the published protocol: E + beta*||w - w_ref||^2 with w_ref the "
            "other minimum, beta raised on a linear grid, warm-started, fresh Adam per beta), linear interpolation and a "
            "quadratic Bezier curve (Garipov et al.). Barrier = max training error along the path minus the mean of the two "
            "ends; grad_evals = per-sample gradient evaluations spent to build the path (probe: its strengths plus the "
            "bisection; probe+saddle adds the saddle search). The bisection, saddles and barriers are phaseprobe's additions.")
    add_section(out, "connect", "Paths between minima (L2 probe vs baselines)", text, [f1, f2],
                {"paths": s.round(5), "transitions": result["transitions"].round(6) if len(result["transitions"]) else result["transitions"]},
                order=60)
    return [f1, f2]


def analyse_basins(run_dir: str | Path, figures: bool = True) -> dict:
    """The basin graph of a stored basins run (probe toward 0, nested probes), tables, figures, report.

    **Arguments:**

    - `run_dir`: a finished ``basins`` run folder.
    - `figures`: write ``basins.png``, ``probe.png`` (``probe_nested.png``) and the report section.

    **Returns:** a dict with ``graph``, ``nodes``, ``edges``, ``transitions``, ``probe``,
    ``nested``, ``labels``, ``info``, ``land``, ``seconds`` and ``figures``.
    """
    from phaseprobe.paths import pieces as P
    from phaseprobe.paths.basins import build_basin_graph
    from phaseprobe.paths.kind import minima_info, probe_inputs, read_minima
    from phaseprobe.store import save_frame_csv

    out = Path(run_dir)
    store, spec, pctx = _stored_run(out, "basins")
    _, labels, mins = read_minima(store)
    res0 = P.probe_result(store, P.read_probe(store, probe_inputs(spec, "basins", store, "")))
    results, names = [res0], ["ref0"]
    nested = None
    ninp = probe_inputs(spec, "basins", store, "nest-")
    if ninp is not None:
        nested = P.probe_result(store, P.read_probe(store, ninp))
        results.append(nested)
        names.append("nest")
    graph = build_basin_graph(results, names)
    nodes, edges = graph.nodes_frame(), graph.edges_frame()
    trans = pd.concat([r.transitions_frame().assign(probe=n) for r, n in zip(results, names)], ignore_index=True)
    save_frame_csv(nodes, out / "basin_nodes.csv")
    save_frame_csv(edges, out / "basin_edges.csv")
    save_frame_csv(trans, out / "transitions.csv")
    _save_transition_models(out, res0, labels)
    recs = store.load_records()
    seconds = sum(float(g["seconds"].iloc[0]) for _, g in recs.groupby("piece"))
    result = {"graph": graph, "nodes": nodes, "edges": edges, "transitions": trans, "probe": res0, "nested": nested,
              "labels": labels, "info": minima_info(mins), "land": pctx.land, "seconds": seconds, "records": recs}
    if figures:
        result["figures"] = _basins_figures(out, spec, result, pctx.sweep_ctx)
    return result


def _basins_figures(out: Path, spec: PathSpec, result: dict, ctx) -> list[Path]:
    from phaseprobe.paths.basins import draw_basin_graph
    from phaseprobe.paths.plots import plot_probe
    from phaseprobe.plots.report import add_section

    names = ctx.dataset.meta.get("class_names")
    f1 = draw_basin_graph(result["graph"], out / "basins.png", title=f"{ctx.dataset.name}: accuracy basins and the jumps between them")
    f2 = plot_probe(result["probe"], out / "probe.png", title=f"{ctx.dataset.name}: L2 probe toward w_ref = 0", class_names=names)
    figs = [f1, f2]
    if result["nested"] is not None:
        figs.append(plot_probe(result["nested"], out / "probe_nested.png",
                               title=f"{ctx.dataset.name}: nested probes toward the transition models", class_names=names))
    text = ("Basins = the set of classes a model encodes (test recall and precision >= the spec's threshold), with the best "
            "test accuracy seen in it; edges = jumps of the L2 probe (w_ref = 0, then nested probes toward each transition "
            "model), with the saddle of the unregularised error refined between the two transition models: its height E_s, "
            "index and negative eigenvalues. Bisection, saddles, excursions and the graph are phaseprobe's additions to "
            "the published protocol.")
    tables = {"basins": result["nodes"].round(4), "edges": result["edges"].round(5) if len(result["edges"]) else result["edges"]}
    add_section(out, "basins", "Basin hierarchy (L2 probe)", text, figs, tables, order=61)
    return figs
