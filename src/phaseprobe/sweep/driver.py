"""``run_sweep``: spec -> data + model -> engine runs the units -> store -> records.

:func:`prepare_sweep` does everything before compute (checks, data, model, run folder, the
plan of units, what is already done) and returns a :class:`SweepJob`; :func:`run_sweep` hands
the job to an engine. A spec grid (:mod:`phaseprobe.engine.grid`) prepares one job per cell and
hands them all to the engine at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from phaseprobe.store import RunStore
from phaseprobe.sweep.run import SweepContext, plan_units
from phaseprobe.sweep.spec import SweepSpec


@dataclass
class SweepJob:
    """One sweep ready to run: spec, dataset, units, run store; ``ctx`` built on demand."""

    spec: SweepSpec
    store: RunStore
    units: list
    dataset: object = None
    ctx: SweepContext | None = None
    total: int = 0
    already: int = 0

    def context(self) -> SweepContext:
        if self.ctx is None:
            self.ctx = SweepContext(self.spec, dataset=self.dataset)
            self.dataset = self.ctx.dataset
        return self.ctx

    def release(self) -> None:
        """Drop the context (device copy of the data, compiled programs); the dataset stays."""
        self.ctx = None


def prepare_sweep(spec: SweepSpec, out: str | Path, dataset=None, ctx: SweepContext | None = None) -> SweepJob:
    """Check ``spec``, load its data, build the model, open the run folder, plan the units.

    Everything that can fail on bad input fails here, before the first training step.
    """
    spec.check()
    store = RunStore(out)
    ctx = ctx or SweepContext(spec, dataset=dataset)  # loads data, builds the model: errors before compute
    store.init(spec.model_dump(), spec.hash(), kind="sweep")
    units = plan_units(spec)
    done = store.done_pieces()
    total = sum(u.n_runs for u in units)
    already = 0
    for u in units:
        if u.kind == "cold":
            already += u.n_runs if u.uid in done else 0
        else:  # a chain resumes after its longest finished prefix; later pieces are redone
            prefix = 0
            while prefix < len(u.steps) and u.steps[prefix][2] in done:
                prefix += 1
            already += len(u.seeds) * prefix
    return SweepJob(spec=spec, store=store, units=units, dataset=ctx.dataset, ctx=ctx, total=total, already=already)


def run_sweep(
    spec: SweepSpec,
    out: str | Path,
    engine=None,
    on_runs: Callable[[int], None] | None = None,
    on_plan: Callable[[int, int], None] | None = None,
    dataset=None,
) -> pd.DataFrame:
    """Run (or resume) ``spec`` into the run folder ``out`` and return all its records.

    ``on_plan(total_runs, runs_already_done)`` is called once before compute; ``on_runs(n)``
    after every finished piece. Everything that can be checked (spec, data, model, folder) is
    checked before the first training step.
    """
    from phaseprobe.engine import get_engine

    job = prepare_sweep(spec, out, dataset=dataset)
    if on_plan:
        on_plan(job.total, job.already)
    engine = engine or get_engine("local")
    engine.run(job.ctx, job.units, job.store, on_runs=on_runs)
    return job.store.load_records()
