"""Spec grids: one command runs a sweep for every combination of some spec fields.

``--grid width=64,256 depth=1,2,3 classes=2,5,10`` expands the base spec into 18 *cells*, each
an ordinary sweep. Layout of the run folder (one store)::

    OUT/
      spec.json                  kind "grid": the base spec, the grid, the cells (with spec hashes)
      cells/<cell-id>/           one ordinary sweep run folder per cell (spec.json, records/,
                                 params/, transitions.csv, sweep.png, its own report.html)
      cells.csv                  one row per cell: its field values, runs, transitions found
      transitions.csv            every cell's transitions with the cell's field values as columns
      report.html                one facet (section) per cell, with its figure and tables

A cell id names its values, e.g. ``width-64_depth-1_classes-2``. Each cell resumes on its own
(its folder is keyed by its spec hash), so rerunning the same command computes only what is
missing; a different grid in the same folder is refused. :func:`load_grid_records` returns
every cell's records in one frame with a ``cell`` column and one column per grid field.

Every cell is checked (spec, data, model) before the first training step, and the engine
gets all cells' units at once: the Ray engine streams them through the cluster together.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd

from phaseprobe.errors import PhaseprobeError
from phaseprobe.specs import coerce_value


class GridError(PhaseprobeError):
    """A bad spec grid (``--grid``)."""


@dataclass(frozen=True)
class Cell:
    """One combination of grid values: ``values`` maps field -> value; ``cid`` names it."""

    cid: str
    values: dict


def _split_values(text: str) -> list[str]:
    """Split on commas that are not inside brackets: ``[0,1],[0,1,2]`` -> two values."""
    out, depth, cur = [], 0, []
    for ch in text:
        if ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        if ch == "," and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return [v.strip() for v in out]



def _known_field(name: str, spec_type=None) -> bool:
    if spec_type is None:
        from phaseprobe.sweep.spec import SweepSpec as spec_type

    fields = getattr(spec_type, "model_fields", None)
    head, _, rest = name.partition(".")
    if fields is not None and head not in fields:
        return False
    if rest and head not in getattr(spec_type, "nested_fields", ("data_options", "model_options")):
        return False
    return True


def parse_grid(items: Sequence[str] | str, spec_type=None) -> dict[str, list]:
    """``["width=64,256", "depth=1,2"]`` (or one space-separated string) -> ``{field: values}``.

    Values are read as JSON when they can be (``64`` -> int, ``[0,1]`` -> list, ``true``),
    else kept as text (``relu``, ``1e-4:1:25``). A list value goes in brackets:
    ``classes=[0,1],[0,1,2]``. Dotted fields reach into ``data_options`` / ``model_options``.
    """
    if isinstance(items, str):
        items = [items]
    tokens = [t for item in items for t in str(item).split()]
    grid: dict[str, list] = {}
    for tok in tokens:
        if "=" not in tok:
            raise GridError(f"grid: '{tok}' is not field=v1,v2; write e.g. --grid width=64,256 depth=1,2")
        name, _, vals = tok.partition("=")
        name = name.strip()
        if not _known_field(name, spec_type):
            known = ", ".join(list(getattr(spec_type, "model_fields", {}) or {})[:8]) if spec_type is not None else \
                "width, depth, classes, lr, optimizer"
            raise GridError(f"grid: unknown spec field '{name}'; use a field of the spec such as {known}")
        if name in grid:
            raise GridError(f"grid: field '{name}' given twice; list all its values once, e.g. {name}=a,b")
        if name in ("name",):
            raise GridError("grid: 'name' is a label, not a parameter; cells are named after their values")
        parts = _split_values(vals)
        if not vals.strip() or any(p == "" for p in parts):
            raise GridError(f"grid: '{name}' has an empty value in '{tok}'; write {name}=v1,v2 with no empty entries")
        values = [coerce_value(p) for p in parts]
        seen = set()
        for v in values:
            k = json.dumps(v, sort_keys=True, default=str)
            if k in seen:
                raise GridError(f"grid: '{name}' lists {v!r} twice; give each value once")
            seen.add(k)
        grid[name] = values
    if not grid:
        raise GridError("grid: no fields given; write e.g. --grid width=64,256 depth=1,2")
    return grid


def _token(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return ".".join(_token(x) for x in v)
    if isinstance(v, float):
        t = repr(v)
    else:
        t = str(v)
    return re.sub(r"[^A-Za-z0-9.+-]", "_", t)


def expand(grid: dict[str, list]) -> list[Cell]:
    """Every combination, in the order the fields and values were given."""
    names = list(grid)
    cells, used = [], set()
    for combo in itertools.product(*(grid[n] for n in names)):
        values = dict(zip(names, combo))
        cid = "_".join(f"{n.replace('.', '-')}-{_token(v)}" for n, v in values.items())
        base, i = cid, 2
        while cid in used:
            cid = f"{base}~{i}"
            i += 1
        used.add(cid)
        cells.append(Cell(cid, values))
    return cells


def _set_field(data: dict, name: str, value: Any) -> dict:
    out = json.loads(json.dumps(data, default=str))
    node = out
    parts = name.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


def cell_spec(base: dict, cell: Cell, kind=None):
    """The validated spec of one cell (base with the cell's values; ``name`` gets the cell id)."""
    kind = _kind(kind)
    data = dict(base)
    for n, v in cell.values.items():
        data = _set_field(data, n, v)
    data["name"] = f"{base.get('name', kind.name)}[{cell.cid}]"
    try:
        return kind.build_spec(data)
    except PhaseprobeError as e:
        raise type(e)(f"{e} (grid cell {cell.cid})") from None


def _kind(kind):
    from phaseprobe.experiment import get_kind

    if kind is None:
        return get_kind("sweep")
    return get_kind(kind) if isinstance(kind, str) else kind


_DATA_FIELDS = ("dataset", "classes", "n_train", "n_test", "normalize", "data_dir", "data_seed", "data_options")


def _data_key(spec) -> str:
    d = spec.model_dump()
    keys = [k for k in _DATA_FIELDS if k in d]
    if not keys:  # a kind whose data is not described by these fields: no sharing
        return json.dumps(d, sort_keys=True, default=str)
    return json.dumps({k: d[k] for k in keys}, sort_keys=True, default=str)


def grid_hash(base_hash: str, grid: dict[str, list]) -> str:
    blob = json.dumps({"base": base_hash, "grid": grid}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def prepare_grid(base: dict, grid: dict[str, list], out: str | Path, kind=None):
    """Check every cell (spec, data, model) and open the run folders; return the cells and
    their :class:`~phaseprobe.experiment.Job` objects (contexts released, datasets shared)."""
    from phaseprobe.experiment import prepare
    from phaseprobe.store import RunStore

    kind = _kind(kind)
    out = Path(out)
    RunStore(out).check_writable()
    base_spec = kind.build_spec(dict(base))
    cells = expand(grid)
    specs, datasets = [], {}
    for c in cells:  # every check before any folder is written or any compute starts
        s = cell_spec(base, c, kind)
        key = _data_key(s)
        try:
            ctx = kind.make_context(s, dataset=datasets.get(key))
        except PhaseprobeError as e:
            raise type(e)(f"{e} (grid cell {c.cid})") from None
        datasets[key] = getattr(ctx, "dataset", None)
        del ctx
        specs.append(s)
    top = RunStore(out)
    meta = {"base": base_spec.model_dump(), "grid": grid, "cell_kind": kind.name,
            "cells": [{"id": c.cid, "values": c.values, "spec_hash": s.hash()} for c, s in zip(cells, specs)]}
    top.init(meta, grid_hash(base_spec.hash(), grid), kind="grid")
    top.lock()
    jobs = []
    for c, s in zip(cells, specs):
        ds = datasets[_data_key(s)]
        job = prepare(kind, s, out / "cells" / c.cid, dataset=ds, ctx=None if ds is not None else None)
        job.release()
        jobs.append(job)
    return cells, jobs


def run_grid(
    base: dict,
    grid: dict[str, list],
    out: str | Path,
    engine=None,
    on_runs: Callable[[int], None] | None = None,
    on_plan: Callable[[int, int], None] | None = None,
    kind=None,
    progress=None,
    banner: str | None = None,
) -> pd.DataFrame:
    """Run (or resume) every cell of ``grid`` over the spec dict ``base`` into ``out``.

    **Arguments:**

    - `base`: the base spec as a dict.
    - `grid`: ``{field: [values]}`` (:func:`parse_grid`).
    - `out`: the grid's run folder (one sub-run per cell under ``cells/``).
    - `engine`: where the units run (default this process); all cells' units of a phase go to
      it at once.
    - `on_plan`, `on_runs`: progress callbacks (``on_plan(total, done)`` per phase, ``on_runs(n)``).
    - `kind`: the experiment kind of the cells (default ``sweep``).
    - `progress`: a :class:`phaseprobe.progress.ProgressReporter` instead of the callbacks.
    - `banner`: a line for ``progress`` once every cell has been checked (before compute).

    **Returns:** :func:`load_grid_records`.
    """
    from phaseprobe.experiment import run_jobs
    from phaseprobe.store import RunStore
    from phaseprobe.sweep.driver import _Callbacks

    cells, jobs = prepare_grid(base, grid, out, kind)
    if progress is not None and banner:
        progress.message(banner)
    try:
        run_jobs(jobs, engine=engine, progress=progress if progress is not None else _Callbacks(on_runs, on_plan))
    finally:
        for j in jobs:
            j.store.unlock()
        RunStore(out).unlock()
    return load_grid_records(out)


def grid_meta(out: str | Path) -> dict:
    from phaseprobe.store import RunStore

    meta = RunStore(out).meta()
    if meta.get("kind") != "grid":
        raise GridError(f"run: '{out}' is not a grid run folder (kind {meta.get('kind')!r}); run a command with --grid ... --out {out}")
    return meta


def load_grid_records(out: str | Path) -> pd.DataFrame:
    """All cells' records: a ``cell`` column plus one column per grid field (``grid_<field>``
    when the name is already a records column)."""
    from phaseprobe.store import RunStore

    out = Path(out)
    meta = grid_meta(out)
    frames = []
    for c in meta["spec"]["cells"]:
        df = RunStore(out / "cells" / c["id"]).load_records()
        if df.empty:
            continue
        df.insert(0, "cell", c["id"])
        for n, v in c["values"].items():
            col = n if n not in df.columns else f"grid_{n}"
            df[col] = [v] * len(df) if isinstance(v, list) else v
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def summarize_grid(out: str | Path, figures: bool = True, n_boot: int = 200) -> dict:
    """Analyse every cell with its kind's analysis, write ``cells.csv`` (and ``transitions.csv``
    when the kind finds transitions) at the top and a report with one section per cell."""
    from phaseprobe.plots.report import add_section
    from phaseprobe.store import RunStore, save_frame_csv

    out = Path(out)
    meta = grid_meta(out)
    kind = _kind(meta["spec"].get("cell_kind", "sweep"))
    rows, trs, per_cell = [], [], {}
    for i, c in enumerate(meta["spec"]["cells"]):
        cdir = out / "cells" / c["id"]
        kw = {"n_boot": n_boot} if kind.name == "sweep" else {}
        res = kind.analyse(cdir, figures=figures, **kw) if kind.analyse else {}
        per_cell[c["id"]] = res
        df = res.get("records") if isinstance(res.get("records"), pd.DataFrame) else RunStore(cdir).load_records()
        tr = res.get("transitions") if isinstance(res.get("transitions"), pd.DataFrame) else pd.DataFrame()
        fin = df[df["final"]] if (not df.empty and "final" in df.columns) else df
        row = {"cell": c["id"], **{k: json.dumps(v) if isinstance(v, list) else v for k, v in c["values"].items()},
               "records": int(len(fin))}
        if kind.name == "sweep":
            row["transitions"] = int(len(tr))
        if not tr.empty and "strength_c" in tr.columns:
            row["first_strength_c"] = float(tr["strength_c"].min())
            if "order" in tr.columns:
                row["orders"] = ",".join(sorted(set(map(str, tr["order"]))))
        rows.append(row)
        if not tr.empty:
            t = tr.copy()
            t.insert(0, "cell", c["id"])
            for k, v in c["values"].items():
                t[k if k not in t.columns else f"grid_{k}"] = json.dumps(v) if isinstance(v, list) else v
            trs.append(t)
        if figures:
            figs = []
            for src in sorted(cdir.glob("*.png")):
                dst = out / f"cell-{c['id']}-{src.name}"
                shutil.copyfile(src, dst)
                figs.append(str(dst))
            show = tr[[k for k in ("observable", "branch", "strength_c", "order", "jump", "spinodal_up_strength",
                                   "spinodal_down_strength", "maxwell_strength", "hysteresis_area") if k in tr.columns]] if not tr.empty else tr
            vals = ", ".join(f"{k} = {v}" for k, v in c["values"].items())
            tables = {"transitions": show} if not show.empty else {}
            add_section(out, f"cell-{i:04d}", f"Cell {vals}",
                        f"{len(fin)} records; cell folder cells/{c['id']} (its own report.html has the full analysis).",
                        figs, tables, order=20 + i)
    cells_df = pd.DataFrame(rows)
    save_frame_csv(cells_df, out / "cells.csv")
    tr_all = pd.concat(trs, ignore_index=True) if trs else pd.DataFrame()
    if kind.name == "sweep" or not tr_all.empty:
        save_frame_csv(tr_all, out / "transitions.csv")
    if figures:
        grid_txt = "; ".join(f"{k} in {v}" for k, v in meta["spec"]["grid"].items())
        add_section(out, "grid", f"Spec grid: one {kind.name} run per cell",
                    f"{len(rows)} cells ({grid_txt}). One facet per cell below; every cell is an ordinary {kind.name} "
                    "run folder under cells/.", [], {"cells": cells_df}, order=10)
    return {"cells": cells_df, "transitions": tr_all, "per_cell": per_cell, "kind": kind.name}
