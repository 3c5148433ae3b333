"""The experiment protocol: every kind of run (sweep, L2 probe, grokking, deep linear) is one pipeline.

::

    spec --plan--> phases of units --engine--> run_unit(ctx, unit, ...) --> pieces --> RunStore
                                                                                          |
                                          report <-- sections <-- analysis(records) <-----+

* A **kind** (:class:`ExperimentKind`) is a spec type (pydantic, with ``hash()`` and ``check()``),
  ``make_context(spec, dataset)`` (data on the device, model skeleton, compiled trainer: built
  once per process), ``plan(spec)`` (the work as ordered :class:`Phase` objects of units) and
  ``run_unit(ctx, unit, done, emit, load_params, on_work)``.
* A **unit** is one vectorised ensemble job. Any object with ``uid`` (str), ``pieces`` (the
  names of what it writes, in order), ``chain`` (bool: each piece starts from the previous
  piece's parameters) and ``runs_per_piece`` (int, for progress) is a unit; ``needs`` (optional)
  names pieces of earlier phases whose parameters it reads.
* A **piece** is what the store writes atomically: a records frame and, optionally, arrays.
  ``run_unit`` hands every finished piece to ``emit(piece, records, arrays)`` and skips the
  pieces in ``done``; a chain resumes from ``load_params(<last finished piece>)``. Numbers
  depend only on the spec, so a resumed run equals an uninterrupted one.
* An **engine** (``phaseprobe.engine``) runs the units of any kind: it is handed the kind, never
  imports one.

A new experiment kind plugs in by writing these four functions in its own package and adding
one line to :data:`KINDS` (``name -> "module:attribute"``); its command calls
:func:`run_experiment`, and ``phaseprobe show`` / :func:`phaseprobe.runs.open_run` find it by the
``kind`` recorded in ``spec.json``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from phaseprobe.errors import PhaseprobeError

KINDS: dict[str, str] = {
    "sweep": "phaseprobe.sweep.kind:SWEEP",
    "grok": "phaseprobe.grokking.kind:GROK",
    "dln": "phaseprobe.dynamics.kind:DLN",
    "dln-grid": "phaseprobe.dynamics.kind:DLN_PHASE_GRID",
    "dln-escape": "phaseprobe.dynamics.kind:DLN_ESCAPE",
    "connect": "phaseprobe.paths.kind:CONNECT",
    "basins": "phaseprobe.paths.kind:BASINS",
    "escape": "phaseprobe.escape.kind:ESCAPE",
    "escape-mlp": "phaseprobe.escape.mlp:ESCAPE_MLP",
}
"""Every experiment kind by name, imported only when used (so no engine imports a kind)."""


class WorkUnit(Protocol):
    """What an engine needs to know of a unit (see the module doc)."""

    uid: str
    pieces: Sequence[str]
    chain: bool
    runs_per_piece: int


class OnePieceUnit:
    """Mixin for a unit that writes exactly one piece, named by its ``uid`` (not a chain); the
    class using it defines ``uid`` and ``runs_per_piece``."""

    chain = False

    @property
    def pieces(self) -> list[str]:
        return [self.uid]


@dataclass(frozen=True)
class PlainUnit:
    """A unit that is nothing but the protocol's fields (see :class:`WorkUnit`)."""

    uid: str
    pieces: tuple[str, ...]
    chain: bool = False
    runs_per_piece: int = 1
    needs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Phase:
    """An ordered stage of a run: its name (shown in progress) and its units.

    ``units`` is a list, or a function ``units(store) -> list`` evaluated when the phase starts
    (after every earlier phase is in the store), for plans that depend on earlier results.
    """

    name: str
    units: Sequence[Any] | Callable[[Any], Sequence[Any]]

    def resolve(self, store) -> list:
        return list(self.units(store) if callable(self.units) else self.units)


@dataclass(frozen=True)
class ExperimentKind:
    """One kind of experiment (see the module doc for the protocol)."""

    name: str
    spec_type: type
    make_context: Callable[..., Any]
    plan: Callable[[Any], Sequence[Phase]]
    run_unit: Callable[..., None]
    analyse: Callable[..., dict] | None = None
    """``analyse(run_dir, figures=True) -> dict`` of tables (frames) and figure paths."""
    needs_params: bool = True
    """Whether every piece writes arrays (a piece without them is then redone)."""
    load_model: Callable[..., Any] | None = None
    """``load_model(run, **key) -> eqx.Module``: one stored model of a run (see
    :meth:`phaseprobe.runs.Run.model`)."""
    show: Callable[..., None] | None = None
    """``show(run, console, wide=False)``: the kind's tables for ``phaseprobe show``."""
    make_spec: Callable[[dict], Any] | None = None
    """``make_spec(dict) -> spec`` with the kind's one-line validation errors (default: the
    spec type's own validation)."""

    def build_spec(self, data: dict):
        """A validated spec of this kind from a plain dict (a grid cell, a stored ``spec.json``)."""
        if self.make_spec is not None:
            return self.make_spec(dict(data))
        return self.spec_type.model_validate(dict(data))


def get_kind(name: str) -> ExperimentKind:
    """The experiment kind called ``name`` (``sweep``, ``grok``, ``dln``, ``connect``, ``basins``).

    **Arguments:**

    - `name`: a key of :data:`KINDS`.

    **Returns:** the :class:`ExperimentKind`.
    """
    target = KINDS.get(name)
    if target is None:
        raise PhaseprobeError(f"kind: unknown experiment kind '{name}'; known: {', '.join(sorted(KINDS))}")
    mod, attr = target.split(":")
    return getattr(importlib.import_module(mod), attr)


def resume_point(unit, done: set[str]) -> int:
    """Index of the first piece of ``unit`` still to run (a chain resumes after its longest
    finished prefix; an independent unit is done only when all its pieces are)."""
    pieces = list(unit.pieces)
    if getattr(unit, "chain", False):
        i = 0
        while i < len(pieces) and pieces[i] in done:
            i += 1
        return i
    return len(pieces) if all(p in done for p in pieces) else 0


def work_done(unit, done: set[str]) -> int:
    """How many trainings (runs) of ``unit`` are already in the store."""
    return resume_point(unit, done) * int(unit.runs_per_piece)


def work_total(unit) -> int:
    return len(list(unit.pieces)) * int(unit.runs_per_piece)


@dataclass
class Job:
    """One run ready to go: its kind, spec, store and plan; the context is built on demand."""

    kind: ExperimentKind
    spec: Any
    store: Any
    phases: list[Phase]
    dataset: Any = None
    ctx: Any = None
    units_by_phase: dict[str, list] = field(default_factory=dict)

    def context(self):
        if self.ctx is None:
            self.ctx = self.kind.make_context(self.spec, dataset=self.dataset)
            self.dataset = getattr(self.ctx, "dataset", self.dataset)
        return self.ctx

    def release(self) -> None:
        """Drop the context (device data, compiled programs); the dataset stays."""
        self.ctx = None

    def units(self, phase: Phase) -> list:
        if phase.name not in self.units_by_phase:
            self.units_by_phase[phase.name] = phase.resolve(self.store)
        return self.units_by_phase[phase.name]

    def counts(self, phase: Phase) -> tuple[int, int]:
        """(total, already done) runs of ``phase``; a phase planned from later results counts 0/0
        until it starts."""
        if callable(phase.units) and phase.name not in self.units_by_phase:
            return 0, 0
        units = self.units(phase)
        done = self.store.done_pieces(self.kind.needs_params)
        return sum(work_total(u) for u in units), sum(work_done(u, done) for u in units)


def prepare(kind: ExperimentKind | str, spec, out: str | Path, dataset=None, ctx=None, lock: bool = True) -> Job:
    """Check ``spec``, build its context (data, model), open and lock the run folder, plan.

    Everything that can fail on bad input fails here, before the first training step.

    **Arguments:**

    - `kind`: an :class:`ExperimentKind` or its name.
    - `spec`: a validated spec of that kind.
    - `out`: the run folder (created, or resumed when it holds the same spec).
    - `dataset`: an already-loaded dataset to reuse (grid cells share one).
    - `ctx`: an already-built context to reuse.
    - `lock`: take the folder's writer lock (a second writer fails with one line).

    **Returns:** a :class:`Job`.
    """
    from phaseprobe.store import RunStore

    kind = get_kind(kind) if isinstance(kind, str) else kind
    check = getattr(spec, "check", None)
    if callable(check):
        check()
    store = RunStore(out)
    store.check_writable()
    ctx = ctx or kind.make_context(spec, dataset=dataset)  # loads data, builds the model: errors before compute
    store.init(spec.model_dump(), spec.hash(), kind=kind.name)
    if lock:
        store.lock()
    phases = list(kind.plan(spec))
    return Job(kind=kind, spec=spec, store=store, phases=phases, dataset=getattr(ctx, "dataset", dataset), ctx=ctx)


def run_jobs(jobs: Sequence[Job], engine=None, progress=None) -> None:
    """Run every phase of ``jobs`` (one run, or the cells of a grid) on ``engine``.

    Phase by phase: the engine gets all jobs' units of a phase at once (a Ray cluster streams
    them together); every finished piece is written to its job's store at once.

    **Arguments:**

    - `jobs`: prepared :class:`Job` objects.
    - `engine`: ``phaseprobe.engine.get_engine(...)``; default the in-process engine.
    - `progress`: a :class:`phaseprobe.progress.ProgressReporter` (or None for silence).
    """
    from phaseprobe.engine import get_engine

    engine = engine or get_engine("local")
    n_phases = max((len(j.phases) for j in jobs), default=0)
    for i in range(n_phases):
        stage = [(j, j.phases[i]) for j in jobs if i < len(j.phases)]
        name = stage[0][1].name
        for j, ph in stage:
            j.units(ph)
        total = sum(j.counts(ph)[0] for j, ph in stage)
        already = sum(j.counts(ph)[1] for j, ph in stage)
        task = progress.phase(name, total, already) if progress is not None else None
        work = [(j, j.units(ph)) for j, ph in stage]
        engine.run_units(work, on_work=(task.advance if task is not None else None))
        if task is not None:
            task.finish()


def run_experiment(kind: ExperimentKind | str, spec, out: str | Path, *, engine=None, progress=None, dataset=None,
                   banner: str | None = None):
    """Run (or resume) one experiment of ``kind`` into ``out``; return its store.

    **Arguments:**

    - `kind`: an :class:`ExperimentKind` or its name.
    - `spec`: the validated spec.
    - `out`: the run folder.
    - `engine`: where the units run (default: this process).
    - `progress`: a progress reporter (default: none).
    - `dataset`: a loaded dataset to reuse.
    - `banner`: a line for ``progress`` once every check has passed (before compute).

    **Returns:** the run's :class:`phaseprobe.store.RunStore` (records via ``load_records()``).
    """
    job = prepare(kind, spec, out, dataset=dataset)
    try:
        if progress is not None:
            if banner:
                progress.message(banner)
            progress.message(job.store.resume_summary(job))
        run_jobs([job], engine=engine, progress=progress)
    finally:
        job.store.unlock()
    return job.store
