"""``run_sweep``: spec -> data + model -> engine runs the units -> store -> records."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pandas as pd

from phaseprobe.store import RunStore
from phaseprobe.sweep.run import SweepContext, plan_units
from phaseprobe.sweep.spec import SweepSpec


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

    spec.check()
    store = RunStore(out)
    ctx = SweepContext(spec, dataset=dataset)  # loads data, builds the model: errors before compute
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
    if on_plan:
        on_plan(total, already)
    engine = engine or get_engine("local")
    engine.run(ctx, units, store, on_runs=on_runs)
    return store.load_records()
