"""The in-process engine: runs the units one after another, each a vectorised ensemble,
writing every finished piece to the store at once (so an interrupted run loses at most the
piece in flight). It runs units of any experiment kind: the kind's ``run_unit`` comes with the
job (:mod:`phaseprobe.experiment`)."""

from __future__ import annotations

from typing import Callable, Sequence

from phaseprobe.errors import PhaseprobeError
from phaseprobe.experiment import resume_point


def emit_to_store(store, unit, on_work: Callable[[int], None] | None):
    """``emit(piece, records, arrays)`` that writes the piece and reports the unit's runs."""

    def emit(piece, records, arrays):
        store.write_piece(piece, records, arrays)
        if on_work:
            on_work(int(unit.runs_per_piece))

    return emit


class LocalEngine:
    name = "local"

    def run_units(self, work: Sequence, on_work: Callable[[int], None] | None = None) -> None:
        """Run ``work``, a list of ``(job, units)``: each job's context is built when its turn
        comes (and dropped after it when several jobs share the run, as the cells of a grid)."""
        for job, units in work:
            done = job.store.done_pieces(job.kind.needs_params)
            todo = [u for u in units if resume_point(u, done) < len(list(u.pieces))]
            if not todo:
                continue
            ctx = job.context()
            for unit in todo:
                job.kind.run_unit(ctx, unit, done, emit_to_store(job.store, unit, on_work), job.store.load_params)
            if len(work) > 1:
                job.release()


def get_engine(name: str = "local", **options):
    """An engine by name: ``local`` (default) or ``ray`` (``address=...``)."""
    if name == "local":
        return LocalEngine()
    if name == "ray":
        try:
            from phaseprobe.engine.ray_engine import RayEngine
        except ModuleNotFoundError as e:
            if e.name == "ray":
                raise PhaseprobeError("engine: Ray is not installed; pip install 'phaseprobe[ray]' (ray) or use --engine local") from None
            raise
        return RayEngine(**options)
    raise PhaseprobeError(f"engine: unknown '{name}'; use 'local' or 'ray'")
