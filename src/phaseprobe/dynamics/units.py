"""The work of the deep linear kinds: units (one ensemble each), the context, running a unit,
and reading a stored piece back as a :class:`~phaseprobe.dynamics.run.DLNRun`.

Every ensemble is ONE piece: its records, ``p000``, ``p001``, ... (the final ``W_1 .. W_L``
stacked over the members), ``diverged`` and ``lr_final`` per member; the single run also keeps
``i000``, ... (the initial weights) and ``snap_index``, ``snap_t``, ``snap_w000``, ... (the
weights at the saddle point of every plateau, for the certificates and for
:func:`phaseprobe.runs.Run.model`). Numbers depend only on the spec.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from phaseprobe.dynamics.observe import linear_stats
from phaseprobe.dynamics.phase import integrate_escape_depth, integrate_width, width_records
from phaseprobe.dynamics.plateaus import analyze_member
from phaseprobe.dynamics.run import DLNRun, dln_ensemble, integrate
from phaseprobe.dynamics.spec import DLNPhaseGridSpec, DLNSpec
from phaseprobe.experiment import OnePieceUnit, Phase


RUN_PIECE = "run"


# ---- units and context -----------------------------------------------------------------------------

@dataclass(frozen=True)
class DLNUnit(OnePieceUnit):
    """One ensemble of deep linear networks integrated together: the single run (``what = "run"``),
    one width of the phase diagram (``"width"``) or one depth of the escape times (``"depth"``)."""

    uid: str
    what: str
    value: int
    n_members: int

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


def arrays_weights(arrays: dict, prefix: str) -> tuple:
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


def stored_ensemble(store, piece: str, records: pd.DataFrame, stats, depth: int, width: int) -> DLNRun:
    """A :class:`~phaseprobe.dynamics.run.DLNRun` rebuilt from one stored piece (records, final
    weights, divergence flags; for the single run also its initial weights and saddle points)."""
    arrays = store.load_params(piece)
    snaps: dict = {}
    if "snap_index" in arrays and len(arrays["snap_index"]):
        ws = arrays_weights(arrays, "snap_w")
        snaps[0] = {int(i): (float(t), tuple(w[j] for w in ws))
                    for j, (i, t) in enumerate(zip(arrays["snap_index"], arrays["snap_t"]))}
    return DLNRun(records=records.reset_index(drop=True), stats=stats, depth=depth, width=width,
                  final_weights=arrays_weights(arrays, "p"), initial_weights=arrays_weights(arrays, "i"),
                  lr_final=np.asarray(arrays["lr_final"]), diverged=np.asarray(arrays["diverged"], bool), snapshots=snaps)
