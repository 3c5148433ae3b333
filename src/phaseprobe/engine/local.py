"""The in-process engine: runs the units one after another, each a vectorised ensemble,
writing every finished piece to the store at once (so an interrupted run loses at most the
piece in flight)."""

from __future__ import annotations

from typing import Callable, Sequence

from phaseprobe.errors import PhaseprobeError


class LocalEngine:
    name = "local"

    def run(self, ctx, units: Sequence, store, on_runs: Callable[[int], None] | None = None) -> None:
        from phaseprobe.sweep.run import execute_unit

        done = store.done_pieces()
        for unit in units:
            execute_unit(ctx, unit, done, store.write_piece, store.load_params, on_runs)

    def run_cells(self, jobs: Sequence, on_runs: Callable[[int], None] | None = None) -> None:
        """Run several prepared sweeps (the cells of a spec grid) one after another; each
        job's context (device data, compiled trainer) is built when its turn comes and dropped
        after."""
        for job in jobs:
            self.run(job.context(), job.units, job.store, on_runs)
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
