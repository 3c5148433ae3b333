"""``open_run(DIR)``: any run folder (sweep, probe, grokking, deep linear, grid) as one object.

::

    run = phaseprobe.open_run("runs/ci-default")
    run.kind                      # "sweep"
    run.records                   # every record, one pandas frame
    run.tables["transitions"]     # the analysis tables the run wrote (transitions, plateaus, ...)
    model = run.model(branch="up", alpha_index=3, seed=0)   # a stored model, an Equinox module
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import pandas as pd

from phaseprobe.errors import PhaseprobeError


class Run:
    """One run folder (see :func:`open_run`).

    **Arguments:**

    - `path`: the run folder.

    **Attributes:**

    - `path`: the folder.
    - `kind`: what made it (``sweep``, ``connect``, ``basins``, ``grok``, ``dln``, ``grid``).
    - `spec`: the spec as stored (a dict); `meta`: the whole ``spec.json``.
    """

    def __init__(self, path: str | Path):
        from phaseprobe.store import RunStore

        self.path = Path(path)
        self.store = RunStore(self.path)
        self.meta = self.store.meta()
        self.kind = str(self.meta.get("kind", "sweep"))
        self.spec = self.meta.get("spec", {})

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, kind={self.kind!r}, name={self.spec.get('name')!r})"

    @cached_property
    def records(self) -> pd.DataFrame:
        """Every record of the run (for a grid: every cell's, with a ``cell`` column)."""
        if self.kind == "grid":
            from phaseprobe.engine.grid import load_grid_records

            return load_grid_records(self.path)
        return self.store.load_records()

    @cached_property
    def tables(self) -> dict[str, pd.DataFrame]:
        """The analysis tables the run folder holds (``transitions``, ``plateaus``, ``paths``,
        ``delays``, ``cells``, ...), by file stem: every CSV at the top of the folder."""
        out = {}
        for p in sorted(self.path.glob("*.csv")):
            try:
                out[p.stem] = pd.read_csv(p)
            except (pd.errors.EmptyDataError, pd.errors.ParserError):
                out[p.stem] = pd.DataFrame()
        return out

    @property
    def curvature(self) -> pd.DataFrame | None:
        """The curvature records of ``phaseprobe curvature`` on this run, when present."""
        for name in ("curvature.parquet", "geometry.parquet"):
            p = self.path / name
            if p.exists():
                return pd.read_parquet(p)
        return None

    @property
    def cells(self) -> list["Run"]:
        """A grid's cells as runs (empty for other kinds)."""
        if self.kind != "grid":
            return []
        return [Run(self.path / "cells" / c["id"]) for c in self.spec.get("cells", [])]

    def model(self, **key):
        """Rebuild one stored model as an Equinox module.

        **Arguments:** the record's key columns, e.g. for a sweep ``branch``, ``alpha_index``
        (or ``alpha``) and ``seed``; each kind documents its keys in its ``load_model``.

        **Returns:** an Equinox module (one member, unstacked).
        """
        from phaseprobe.experiment import get_kind

        if self.kind == "grid":
            raise PhaseprobeError("model: a grid holds one run per cell; use run.cells[i].model(...)")
        kind = get_kind(self.kind)
        if kind.load_model is None:
            raise PhaseprobeError(f"model: runs of kind '{self.kind}' store no models to rebuild")
        return kind.load_model(self, **key)


def open_run(path: str | Path) -> Run:
    """Open any phaseprobe run folder.

    **Arguments:**

    - `path`: a folder made by ``phaseprobe sweep``, ``connect``, ``basins``, ``grok``, ``dln``
      (any of them with ``--grid``).

    **Returns:** a :class:`Run` with ``.kind``, ``.spec``, ``.records``, ``.tables``,
    ``.curvature`` and ``.model(**key)``.
    """
    return Run(path)
