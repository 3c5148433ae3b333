"""What the L2 probe's stages store, and the probe rebuilt from a run store.

Every stage of ``connect`` / ``basins`` (:mod:`phaseprobe.paths.kind`) writes *pieces* through
:class:`phaseprobe.store.RunStore`: a records frame and flat arrays. This module is the one
place that knows their names and contents, both ways:

* ``minima``: ``x`` ``(M, P)`` (the end-point minima); one record per minimum;
* ``<prefix>probe-s<i>``: one grid strength of the probe, ``x`` ``(K, P)`` (the checkpoint)
  and ``m.<metric>`` (every member's metrics, as the landscape returned them);
* ``<prefix>bisect-s<s>``: the bisection after step ``s`` (every bracket's state,
  :func:`transitions_to_arrays`, plus which brackets moved and to which side);
  ``<prefix>bisect-end``: after the noise floor and the verdict;
* ``<prefix>saddle-m<k>-i<i>``: the fold check and the refined saddle of one transition;
* ``<prefix>excursion-s<s>``: step ``s`` of the excursions (``x``, the cumulative gradient
  evaluations ``ge``, the step's ``err`` and ``basin``);
* ``<prefix>spectra-m<k>``: the Hessian spectra along member ``k``'s checkpoints (records only);
* ``bezier``: the trained control points.

``prefix`` is ``""`` for the first probe and ``"nest-"`` for the nested probes of ``basins``.
:func:`load_probe_result` rebuilds the :class:`~phaseprobe.paths.probe.ProbeResult` that
:func:`~phaseprobe.paths.probe.run_probe` returns for the same inputs, from the pieces alone.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from phaseprobe.paths.probe import (
    ProbeConfig,
    ProbeResult,
    ProbeTransition,
    basin_str,
    detect_transitions,
    excursion_finish,
    excursion_schedule,
    merge_spectra,
)
from phaseprobe.paths.saddles import SaddleResult

MINIMA_PIECE = "minima"
BEZIER_PIECE = "bezier"


def probe_piece(prefix: str, i: int) -> str:
    return f"{prefix}probe-s{i:06d}"


def bisect_piece(prefix: str, s: int) -> str:
    return f"{prefix}bisect-s{s:06d}"


def bisect_end_piece(prefix: str) -> str:
    return f"{prefix}bisect-end"


def saddle_piece(prefix: str, t: ProbeTransition) -> str:
    return f"{prefix}saddle-m{t.member:03d}-i{t.index:04d}"


def excursion_piece(prefix: str, s: int) -> str:
    return f"{prefix}excursion-s{s:06d}"


def spectra_piece(prefix: str, member: int) -> str:
    return f"{prefix}spectra-m{member:03d}"


def parse_basin(text: str):
    """The basin of :func:`~phaseprobe.paths.probe.basin_str` read back: ``"{0,3}"`` -> ``(0, 3)``,
    ``"(1, 0.5)"`` -> ``(1.0, 0.5)``, ``""`` -> None."""
    t = str(text).strip()
    if not t:
        return None
    body = t[1:-1].strip()
    if not body:
        return ()
    if t.startswith("{"):
        return tuple(int(v) for v in body.split(","))
    return tuple(float(v) for v in body.split(","))


# ---------------------------------------------------------------------------------------------
# metrics and transitions <-> arrays
# ---------------------------------------------------------------------------------------------
def metrics_to_arrays(metrics: dict, prefix: str = "m.") -> dict[str, np.ndarray]:
    return {f"{prefix}{k}": np.asarray(v) for k, v in metrics.items()}


def arrays_to_metrics(arrays: dict, prefix: str = "m.") -> dict[str, np.ndarray]:
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def _point_of(stacked: dict, j: int) -> dict:
    return {k: (float(v[j]) if v.ndim == 1 else v[j].copy()) for k, v in stacked.items()}


_T_FLOATS = ("strength_lo", "strength_hi", "alpha_lo", "alpha_hi", "grad_evals", "fold_min_eig", "noise_error", "noise_dist")


def transitions_to_arrays(jobs: list[ProbeTransition]) -> dict[str, np.ndarray]:
    """The state of bracketed transitions as flat arrays (models, bracket, sides' metrics, verdict)."""
    out = {"x_lo": np.stack([t.x_lo for t in jobs]), "x_hi": np.stack([t.x_hi for t in jobs]),
           "bisect_steps": np.array([t.bisect_steps for t in jobs], np.int64),
           "confirmed": np.array([-1 if t.confirmed is None else int(bool(t.confirmed)) for t in jobs], np.int8),
           "basin_lo": np.array([basin_str(t.basin_lo) for t in jobs]), "basin_hi": np.array([basin_str(t.basin_hi) for t in jobs])}
    for name in _T_FLOATS:
        out[name] = np.array([getattr(t, name) for t in jobs], np.float64)
    for side in ("lo", "hi"):
        for key in getattr(jobs[0], side):
            out[f"{side}.{key}"] = np.stack([np.asarray(getattr(t, side)[key]) for t in jobs])
    return out


def apply_transition_arrays(jobs: list[ProbeTransition], arrays: dict) -> None:
    """Set every transition's state from :func:`transitions_to_arrays`'s arrays (in place)."""
    sides = {side: {k[len(side) + 1:]: v for k, v in arrays.items() if k.startswith(side + ".")} for side in ("lo", "hi")}
    for j, t in enumerate(jobs):
        t.x_lo = arrays["x_lo"][j].copy()
        t.x_hi = arrays["x_hi"][j].copy()
        t.bisect_steps = int(arrays["bisect_steps"][j])
        c = int(arrays["confirmed"][j])
        t.confirmed = None if c < 0 else bool(c)
        t.basin_lo = parse_basin(arrays["basin_lo"][j])
        t.basin_hi = parse_basin(arrays["basin_hi"][j])
        for name in _T_FLOATS:
            setattr(t, name, float(arrays[name][j]))
        t.lo = _point_of(sides["lo"], j)
        t.hi = _point_of(sides["hi"], j)


def saddle_to_arrays(s: SaddleResult) -> dict[str, np.ndarray]:
    return {"saddle.x": np.asarray(s.x), "saddle.error": np.float64(s.error), "saddle.grad_norm": np.float64(s.grad_norm),
            "saddle.start_error": np.float64(s.start_error), "saddle.start_grad_norm": np.float64(s.start_grad_norm),
            "saddle.index": np.int64(s.index), "saddle.index_lower_bound": np.bool_(s.index_lower_bound),
            "saddle.negative_eigs": np.asarray(s.negative_eigs), "saddle.bottom_eigs": np.asarray(s.bottom_eigs),
            "saddle.top_eig": np.float64(s.top_eig), "saddle.steps": np.int64(s.steps), "saddle.newton_steps": np.int64(s.newton_steps),
            "saddle.grad_evals": np.float64(s.grad_evals), "saddle.method": np.array(s.method), "saddle.tol": np.float64(s.tol),
            "saddle.history": np.asarray(s.history, np.float64)}


def arrays_to_saddle(a: dict) -> SaddleResult | None:
    if "saddle.x" not in a:
        return None
    return SaddleResult(x=a["saddle.x"], error=float(a["saddle.error"]), grad_norm=float(a["saddle.grad_norm"]),
                        start_error=float(a["saddle.start_error"]), start_grad_norm=float(a["saddle.start_grad_norm"]),
                        index=int(a["saddle.index"]), index_lower_bound=bool(a["saddle.index_lower_bound"]),
                        negative_eigs=a["saddle.negative_eigs"], bottom_eigs=a["saddle.bottom_eigs"], top_eig=float(a["saddle.top_eig"]),
                        steps=int(a["saddle.steps"]), newton_steps=int(a["saddle.newton_steps"]), grad_evals=float(a["saddle.grad_evals"]),
                        method=str(a["saddle.method"]), tol=float(a["saddle.tol"]), history=[float(v) for v in a["saddle.history"]])


# ---------------------------------------------------------------------------------------------
# a probe's inputs and its stored stages
# ---------------------------------------------------------------------------------------------
@dataclass
class ProbeInputs:
    """Everything that defines one probe ensemble (a prefix of pieces in the store)."""

    prefix: str
    start: np.ndarray
    ref: np.ndarray
    config: ProbeConfig
    seeds: list
    labels: list
    extra: dict = field(default_factory=dict)

    @property
    def strengths(self) -> np.ndarray:
        return np.asarray(self.config.strengths, np.float64).reshape(-1)

    @property
    def n(self) -> int:
        return len(self.strengths)

    @property
    def k(self) -> int:
        return int(self.start.shape[0])


@dataclass
class ProbeStages:
    """The stored stages of one probe, read back (see :func:`read_probe`)."""

    inputs: ProbeInputs
    cps: np.ndarray
    mets: list
    basins: list
    frames: list
    transitions: list
    bisected: bool = False
    excursions: bool = False

    @property
    def live(self) -> list[ProbeTransition]:
        return [t for t in self.transitions if t.confirmed is not False]


def _records(store, piece: str) -> pd.DataFrame:
    return pd.read_parquet(store.records_dir / f"{piece}.parquet")


def read_probe(store, inp: ProbeInputs, *, history: bool = True) -> ProbeStages:
    """The probe's grid checkpoints, its transitions and what later stages stored about them.

    **Arguments:**

    - `store`: the run's :class:`~phaseprobe.store.RunStore`.
    - `inp`: the probe's inputs.
    - `history`: rebuild every transition's bisection models (``lo_models`` / ``hi_models``).

    **Returns:** a :class:`ProbeStages`; stages not in the store yet are left out.
    """
    pre, cfg = inp.prefix, inp.config
    done = store.done_pieces()
    cps, mets, basins, frames = [], [], [], []
    for i in range(inp.n):
        a = store.load_params(probe_piece(pre, i))
        df = _records(store, probe_piece(pre, i))
        cps.append(a["x"])
        mets.append(arrays_to_metrics(a))
        d = df.sort_values("member")
        basins.append([parse_basin(b) for b in d["basin"]])
        frames.append(df)
    cps = np.stack(cps)
    transitions = detect_transitions(inp.strengths, cfg.alphas, cps, mets, basins, cfg)
    st = ProbeStages(inputs=inp, cps=cps, mets=mets, basins=basins, frames=frames, transitions=transitions)
    if not transitions:
        return st
    if cfg.bisect and bisect_end_piece(pre) in done:
        s = 0
        while bisect_piece(pre, s) in done:
            a = store.load_params(bisect_piece(pre, s))
            df = _records(store, bisect_piece(pre, s))
            if len(df):
                frames.append(df)
            if history and not bool(a.get("skipped", False)):
                for j, t in enumerate(transitions):
                    if a["updated"][j]:
                        if a["jumped"][j]:
                            t.hi_models.append((t.alpha_hi, t.x_hi))
                        else:
                            t.lo_models.append((t.alpha_lo, t.x_lo))
                apply_transition_arrays(transitions, a)
            s += 1
        apply_transition_arrays(transitions, store.load_params(bisect_end_piece(pre)))
        st.bisected = True
    for t in st.live:
        p = saddle_piece(pre, t)
        if p in done:
            a = store.load_params(p)
            if "fold_min_eig" in a:
                t.fold_min_eig = float(a["fold_min_eig"])
            t.saddle = arrays_to_saddle(a)
    live = st.live
    if cfg.excursion and live:
        sched, lengths = excursion_schedule(live, cfg, cfg.alphas)
        L = sched.shape[0]
        if L and all(excursion_piece(pre, s) in done for s in range(L)):
            errs = np.zeros((L, len(live)))
            labs, ge = [], None
            for s in range(L):
                a = store.load_params(excursion_piece(pre, s))
                frames.append(_records(store, excursion_piece(pre, s)))
                errs[s] = a["err"]
                labs.append([parse_basin(b) for b in a["basin"]])
                ge = a["ge"]
            excursion_finish(live, sched, lengths, errs, labs, ge, basins[0], cfg)
            st.excursions = True
    return st


def probe_result(store, st: ProbeStages) -> ProbeResult:
    """The :class:`ProbeResult` of stored probe stages (as :func:`run_probe` returns it)."""
    inp = st.inputs
    pre = inp.prefix
    done = store.done_pieces()
    records = pd.concat([f.drop(columns=["seconds", "piece"], errors="ignore") for f in st.frames], ignore_index=True)
    spectra = None
    if inp.config.hessian_k > 0:
        parts = [_records(store, spectra_piece(pre, k)) for k in range(inp.k) if spectra_piece(pre, k) in done]
        if parts:
            spectra = pd.concat(parts, ignore_index=True).drop(columns=["seconds", "piece", "phase"], errors="ignore")
    records = merge_spectra(records, spectra)
    gevals = np.zeros(inp.k)
    for m in range(st.cps.shape[0]):
        fr = st.frames[m].sort_values("member")
        gevals += fr["grad_evals"].to_numpy(np.float64)
    return ProbeResult(records=records, checkpoints=st.cps, strengths=inp.strengths, alphas=inp.config.alphas,
                       convention=inp.config.convention, start=inp.start, ref=inp.ref, transitions=st.transitions,
                       basins=st.basins, grad_evals=gevals, seconds=stage_seconds(store, pre), labels=list(inp.labels),
                       spectra=spectra)


def stage_seconds(store, prefix: str = "", stages=("probe", "bisect", "saddle", "excursion", "spectra")) -> float:
    """Wall time the stored pieces of a probe took (sum over pieces of their ``seconds``)."""
    total = 0.0
    if not store.records_dir.exists():
        return total
    for p in store.records_dir.glob(f"{prefix}*.parquet"):
        name = p.stem
        rest = name[len(prefix):]
        if not any(rest.startswith(s + "-") for s in stages):
            continue
        if prefix == "" and name.startswith("nest-"):
            continue
        df = pd.read_parquet(p, columns=None)
        if "seconds" in df.columns and len(df):
            total += float(df["seconds"].iloc[0])
    return total


def copy_transitions(ts: list[ProbeTransition]) -> list[ProbeTransition]:
    """Independent copies (a stage refines its transitions in place)."""
    return [copy.deepcopy(t) for t in ts]
