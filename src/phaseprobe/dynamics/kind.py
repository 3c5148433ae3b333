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

The units and what a piece stores: :mod:`phaseprobe.dynamics.units`; the analyses:
:mod:`phaseprobe.dynamics.analysis`; here the kinds, their stored models and ``show``.
"""

from __future__ import annotations

import json

import numpy as np

from phaseprobe.dynamics.analysis import analyse_dln_escape, analyse_dln_phase_grid, analyse_dln_run
from phaseprobe.dynamics.observe import linear_stats
from phaseprobe.dynamics.phase import width_members
from phaseprobe.dynamics.spec import DLNEscapeSpec, DLNPhaseGridSpec, DLNSpec
from phaseprobe.dynamics.units import (RUN_PIECE, DLNContext, DLNUnit, arrays_weights, depth_piece, make_dln_context,
                                       plan_dln_escape, plan_dln_phase_grid, plan_dln_run, run_dln_unit, width_piece)
from phaseprobe.errors import PhaseprobeError
from phaseprobe.experiment import ExperimentKind

__all__ = ["DLN", "DLN_ESCAPE", "DLN_PHASE_GRID", "DLNContext", "DLNUnit", "load_dln_escape_model", "load_dln_grid_model",
           "load_dln_run_model", "show_dln"]


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
        return _module(tuple(w[where[0]] for w in arrays_weights(arrays, "snap_w")), stats)
    if at not in ("final", "initial"):
        raise PhaseprobeError(f"model: at='{at}' is not stored; use at='final', at='initial' or plateau=k")
    return _module(tuple(w[0] for w in arrays_weights(arrays, "p" if at == "final" else "i")), stats)


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
    return _module(tuple(w[m] for w in arrays_weights(arrays, "p")), linear_stats(spec.data()))


def load_dln_escape_model(run, *, depth: int, sigma: float):
    """The final network of one init scale of a ``dln-escape`` run (``depth``, ``sigma``)."""
    spec = DLNEscapeSpec(**run.spec)
    if int(depth) not in spec.escape["depths"]:
        raise PhaseprobeError(f"model: depth {depth} is not in the run; use one of {spec.escape['depths']}")
    sig = spec.escape_sigmas(int(depth))
    m = int(np.argmin(np.abs(np.log(sig) - np.log(float(sigma)))))
    arrays = _piece_arrays(run, depth_piece(depth))
    return _module(tuple(w[m] for w in arrays_weights(arrays, "p")), linear_stats(spec.data()))


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
