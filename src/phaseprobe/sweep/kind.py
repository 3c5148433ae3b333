"""The sweep as an experiment kind (:mod:`phaseprobe.experiment`): alpha sweeps, cold or chained."""

from __future__ import annotations

from functools import partial

from phaseprobe.experiment import ExperimentKind, Phase
from phaseprobe.sweep.refine import RefineUnit, execute_refine, plan_refinement, refine_passes
from phaseprobe.sweep.run import SweepContext, execute_unit, plan_units
from phaseprobe.sweep.spec import SweepSpec, make_spec


def make_sweep_context(spec: SweepSpec, dataset=None) -> SweepContext:
    """Data on the device, model skeleton and compiled trainer of a sweep spec."""
    return SweepContext(spec, dataset=dataset)


def plan_sweep(spec: SweepSpec) -> list[Phase]:
    """Phase ``trainings``: the grid's units (:func:`phaseprobe.sweep.run.plan_units`); with
    ``refine`` on, phases ``refinement`` (then ``refinement 2``, ... one per seed, at most three):
    the bisection of every transition and Maxwell point, each pass planned from the store
    (:func:`phaseprobe.sweep.refine.plan_refinement`)."""
    phases = [Phase("trainings", plan_units(spec))]
    if spec.refine:
        for p in range(1, refine_passes(spec) + 1):
            phases.append(Phase("refinement" if p == 1 else f"refinement {p}", partial(plan_refinement, spec, pass_no=p)))
    return phases


def run_sweep_unit(ctx: SweepContext, unit, done, emit, load_params) -> None:
    """Run one sweep unit (a cold chunk, a continuation chain or a bisection), emitting every piece."""
    if isinstance(unit, RefineUnit):
        execute_refine(ctx, unit, done, emit, load_params)
    else:
        execute_unit(ctx, unit, done, emit, load_params)


def analyse_sweep(run_dir, figures: bool = True, n_boot: int = 200) -> dict:
    from phaseprobe.sweep.summary import summarize

    return summarize(run_dir, figures=figures, n_boot=n_boot)


def load_sweep_model(run, *, seed: int, branch: str | None = None, alpha_index: int | None = None,
                     alpha: float | None = None):
    """One stored minimum of a sweep as an Equinox module.

    **Arguments:**

    - `run`: a :class:`phaseprobe.runs.Run` of kind ``sweep``.
    - `seed`: the member's seed.
    - `branch`: ``cold``, ``up`` or ``down`` (default: the run's only branch, or ``up``).
    - `alpha_index` or `alpha`: the grid point (canonical alpha; the nearest grid value).

    **Returns:** the model at the end of that training (one member, unstacked).
    """
    import equinox as eqx
    import jax
    import numpy as np

    from phaseprobe.errors import PhaseprobeError

    spec = make_spec(dict(run.spec))
    alphas = spec.alpha_grid()
    if alpha_index is None:
        if alpha is None:
            raise PhaseprobeError("model: give alpha_index=... or alpha=... (and seed=...)")
        alpha_index = int(np.argmin(np.abs(np.log(alphas + 1e-300) - np.log(float(alpha) + 1e-300))))
    ai = int(alpha_index)
    if not 0 <= ai < len(alphas):
        raise PhaseprobeError(f"model: alpha_index {ai} is outside the grid (0..{len(alphas) - 1})")
    if branch is None:
        branch = "cold" if spec.mode == "cold" else ("down" if spec.mode == "down" else "up")
    where = None
    for u in plan_units(spec):
        if u.kind == "cold" and branch == "cold":
            for m, (a_i, s_) in enumerate(zip(u.alpha_idx, u.seeds)):
                if a_i == ai and s_ == seed:
                    where = (u.uid, m, len(u.seeds))
        elif u.kind == "chain" and seed in u.seeds:
            for b, a_i, piece in u.steps:
                if b == branch and a_i == ai:
                    where = (piece, list(u.seeds).index(seed), len(u.seeds))
    if where is None:
        raise PhaseprobeError(f"model: no training (branch {branch}, alpha_index {ai}, seed {seed}) in this sweep's plan")
    piece, m, k = where
    if piece not in run.store.done_pieces():
        raise PhaseprobeError(f"model: piece {piece} is not in the store yet; rerun the sweep to finish it")
    ctx = SweepContext(spec)
    stacked = ctx.arrays_to_model(run.store.load_params(piece), k)
    params, static = eqx.partition(stacked, eqx.is_inexact_array)
    return eqx.combine(jax.tree_util.tree_map(lambda x: x[m], params), static)


SWEEP = ExperimentKind(
    name="sweep", spec_type=SweepSpec, make_context=make_sweep_context, plan=plan_sweep,
    run_unit=run_sweep_unit, analyse=analyse_sweep, make_spec=make_spec,
    load_model=load_sweep_model,
)
