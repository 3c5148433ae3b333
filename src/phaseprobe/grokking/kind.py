"""Grokking as an experiment kind (:mod:`phaseprobe.experiment`).

Three phases, each counting its own work:

* ``grid`` -- the (weight decay x init scale x seed) grid, chunks of members each trained as
  one ensemble and stored in stretches of steps (:class:`~phaseprobe.grokking.phase.GridUnit`);
* ``hysteresis`` -- the warm-started weight-decay loops, the sweep's continuation chains
  (:class:`~phaseprobe.grokking.metastable.HysteresisUnit`), when enabled;
* ``geometry`` -- plateau vs solution of one member, planned from the stored grid
  (:class:`~phaseprobe.grokking.metastable.GeometryUnit`), when enabled.

Every record carries its ``stage`` (``grid``, ``hysteresis``, ``geometry``).
"""

from __future__ import annotations

from functools import partial

import numpy as np

from phaseprobe.errors import PhaseprobeError
from phaseprobe.experiment import ExperimentKind, Phase
from phaseprobe.grokking.metastable import (
    GeometryUnit,
    HysteresisUnit,
    plan_geometry_units,
    plan_hysteresis_units,
    run_geometry_unit,
    run_hysteresis_unit,
)
from phaseprobe.grokking.phase import GridUnit, GrokContext, member_of, plan_grid_units, run_grid_unit
from phaseprobe.grokking.run import analyse_grok, grok_result, print_grok_tables
from phaseprobe.grokking.spec import GrokSpec, make_grok_spec


def make_grok_context(spec: GrokSpec, dataset=None) -> GrokContext:
    """Data, model builder, compiled trainer (and the hysteresis loops' sweep contexts)."""
    return GrokContext(spec, dataset=dataset)


def plan_grok(spec: GrokSpec) -> list[Phase]:
    """The phases of a grokking run: ``grid``, then ``hysteresis`` and ``geometry`` when enabled."""
    phases = [Phase("grid", plan_grid_units(spec))]
    if spec.hysteresis.enabled:
        phases.append(Phase("hysteresis", plan_hysteresis_units(spec)))
    if spec.geometry.enabled:
        phases.append(Phase("geometry", partial(plan_geometry_units, spec)))
    return phases


def run_grok_unit(ctx: GrokContext, unit, done, emit, load_params) -> None:
    """Run one unit of a grokking run (a grid chunk, a hysteresis chain or the geometry)."""
    if isinstance(unit, GridUnit):
        run_grid_unit(ctx, unit, done, emit, load_params)
    elif isinstance(unit, HysteresisUnit):
        run_hysteresis_unit(ctx, unit, done, emit, load_params)
    elif isinstance(unit, GeometryUnit):
        run_geometry_unit(ctx, unit, done, emit, load_params)
    else:
        raise TypeError(f"not a unit of a grok run: {unit!r}")


def show_grok(run, console, wide: bool = False) -> None:
    """``phaseprobe show`` of a grokking run: records per stage, delays, hysteresis, geometry."""
    res, spec = grok_result(run.path)
    df = run.records
    if not df.empty and "stage" in df.columns:
        console.print(f"{len(df)} records; by stage: " + ", ".join(f"{k} {len(g)}" for k, g in df.groupby("stage", sort=False)))
    print_grok_tables(res, spec, console)


def _pick(values, want, field: str) -> float:
    vals = sorted(set(float(v) for v in values))
    if want is None:
        if len(vals) == 1:
            return vals[0]
        raise PhaseprobeError(f"model: give {field}=... (one of {', '.join(f'{v:g}' for v in vals)})")
    hit = [v for v in vals if np.isclose(v, float(want))]
    if not hit:
        raise PhaseprobeError(f"model: {field} {want} is not in this run (one of {', '.join(f'{v:g}' for v in vals)})")
    return hit[0]


def load_grok_model(run, *, weight_decay: float | None = None, init_scale: float | None = None,
                    seed: int | None = None, step: int | None = None, loop: str | None = None,
                    branch: str | None = None, point: str | None = None):
    """One stored model of a grokking run as an Equinox module (one member, unstacked).

    **Arguments:**

    - `weight_decay`, `init_scale`, `seed`: a grid member (a field may be left out when the
      grid has one value of it); `step`: the end of a stored stretch of its training (default:
      the end of training).
    - `loop`, `branch` (``up``/``down``), `weight_decay`, `seed`: a point of a hysteresis loop
      instead (given `loop` or `branch`; `loop` is the label in the records, e.g. ``"top 6"``).
    - `point="memorising plateau"`: the re-trained plateau point of the geometry stage.

    **Returns:** the model.
    """
    from phaseprobe.store.arrays import arrays_to_model

    spec = make_grok_spec(dict(run.spec))
    ctx = GrokContext(spec)
    done = run.store.done_pieces()

    def arrays(piece):
        if piece not in done:
            raise PhaseprobeError(f"model: piece {piece} is not in the store yet; rerun the same command to finish it")
        return run.store.load_params(piece)

    if point is not None:
        if point not in ("memorising plateau", "plateau"):
            raise PhaseprobeError(f"model: point '{point}' is not stored; the geometry stage stores 'memorising plateau' "
                                  "(the other points are grid members: weight_decay=..., seed=...)")
        return ctx.stored_model(arrays("geometry"), 0)
    if loop is not None or branch is not None:
        units = plan_hysteresis_units(spec)
        if not units:
            raise PhaseprobeError("model: this run has no hysteresis stage; give a grid member (weight_decay=..., seed=...)")
        labels = list(dict.fromkeys(u.loop for u in units))
        if loop is None:
            if len(labels) > 1:
                raise PhaseprobeError(f"model: give loop=... (one of {', '.join(repr(lb) for lb in labels)})")
            loop = labels[0]
        if loop not in labels:
            raise PhaseprobeError(f"model: loop {loop!r} is not in this run (one of {', '.join(repr(lb) for lb in labels)})")
        branch = branch or "up"
        sctx = ctx.hysteresis[loop]
        wd = _pick(sctx.strengths, weight_decay, "weight_decay")  # the loop's weight decays (AdamW's beta)
        ai = int(np.argmin(np.abs(np.asarray(sctx.strengths, float) - wd)))
        seeds = sctx.spec.seed_list()
        seed = seeds[0] if seed is None and len(seeds) == 1 else seed
        for u in units:
            if u.loop == loop and seed in u.inner.seeds:
                for b, a_i, piece in u.inner.steps:
                    if b == branch and a_i == ai:
                        k = len(u.inner.seeds)
                        stacked = arrays_to_model(arrays(u.prefix + piece), sctx.members(list(range(k))))
                        return member_of(stacked, list(u.inner.seeds).index(seed))
        raise PhaseprobeError(f"model: no point (loop {loop!r}, branch {branch}, weight decay {wd:g}, seed {seed}) "
                              f"in this run's hysteresis; seeds are {seeds}, branches up/down")
    mem = ctx.members_table
    wd = _pick(mem["weight_decay"], weight_decay, "weight_decay")
    sc = _pick(mem["init_scale"], init_scale, "init_scale")
    sd = int(_pick(mem["seed"], seed, "seed"))
    m = int(mem[np.isclose(mem["weight_decay"], wd) & np.isclose(mem["init_scale"], sc) & (mem["seed"] == sd)]["member"].iloc[0])
    unit = next(u for u in plan_grid_units(spec) if m in u.members)
    spe = ctx.trainer.steps_per_epoch
    ends = [b * spe for _, b in ctx.segments]
    if step is None:
        j = len(ends) - 1
    elif int(step) in ends:
        j = ends.index(int(step))
    else:
        raise PhaseprobeError(f"model: step {step} is not a stored step; stored: {', '.join(map(str, ends))}")
    return ctx.stored_model(arrays(unit.pieces[j]), unit.members.index(m))


GROK = ExperimentKind(
    name="grok", spec_type=GrokSpec, make_context=make_grok_context, plan=plan_grok, run_unit=run_grok_unit,
    analyse=analyse_grok, load_model=load_grok_model, show=show_grok, make_spec=make_grok_spec,
)
"""Grokking on modular arithmetic: the grid, the hysteresis loops and the geometry as one run."""
