"""``run_sweep``: spec -> data + model -> engine runs the units -> store -> records.

A thin layer over the experiment pipeline (:mod:`phaseprobe.experiment`), kept for its Python
signature: :func:`prepare_sweep` does everything before compute (checks, data, model, run folder,
the plan, what is already done); :func:`run_sweep` runs the job on an engine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pandas as pd

from phaseprobe.experiment import Job, prepare, run_experiment
from phaseprobe.sweep.kind import SWEEP
from phaseprobe.sweep.spec import SweepSpec


class _Callbacks:
    """The progress interface of :func:`phaseprobe.experiment.run_jobs` over two callbacks."""

    def __init__(self, on_runs=None, on_plan=None):
        self.on_runs, self.on_plan = on_runs, on_plan

    def phase(self, name, total, done=0, unit="runs"):
        if self.on_plan:
            self.on_plan(total, done)
        return self

    def advance(self, n=1):
        if self.on_runs:
            self.on_runs(n)

    def finish(self):
        pass

    def message(self, text):
        pass


def prepare_sweep(spec: SweepSpec, out: str | Path, dataset=None, ctx=None, lock: bool = True) -> Job:
    """Check ``spec``, load its data, build the model, open the run folder, plan the units.

    Everything that can fail on bad input fails here, before the first training step.

    **Arguments:**

    - `spec`: a validated :class:`~phaseprobe.sweep.spec.SweepSpec`.
    - `out`: the run folder.
    - `dataset`, `ctx`: an already-loaded dataset / built context to reuse.
    - `lock`: take the folder's writer lock.

    **Returns:** a :class:`phaseprobe.experiment.Job`.
    """
    return prepare(SWEEP, spec, out, dataset=dataset, ctx=ctx, lock=lock)


def run_sweep(
    spec: SweepSpec,
    out: str | Path,
    engine=None,
    on_runs: Callable[[int], None] | None = None,
    on_plan: Callable[[int, int], None] | None = None,
    dataset=None,
    progress=None,
    banner: str | None = None,
) -> pd.DataFrame:
    """Run (or resume) ``spec`` into the run folder ``out`` and return all its records.

    **Arguments:**

    - `spec`: the sweep spec.
    - `out`: the run folder (rerun with the same spec to resume).
    - `engine`: where the units run (``phaseprobe.engine.get_engine``; default this process).
    - `on_plan`: ``on_plan(total_runs, runs_already_done)``, once before compute.
    - `on_runs`: ``on_runs(n)`` after every finished piece.
    - `dataset`: a loaded dataset to reuse.
    - `progress`: a :class:`phaseprobe.progress.ProgressReporter` (instead of the callbacks).
    - `banner`: a line for ``progress`` once every check has passed (before compute).

    **Returns:** every record of the run folder (one pandas frame).
    """
    prog = progress if progress is not None else _Callbacks(on_runs, on_plan)
    store = run_experiment(SWEEP, spec, out, engine=engine, progress=prog, dataset=dataset, banner=banner)
    return store.load_records()
