"""Helpers every experiment spec shares (sweep, grok, dln, connect/basins, grids).

One place for: reading a TOML spec file, turning a pydantic validation error into the project's
one-line ``field: problem; fix`` message, and ``--set key=value`` overrides.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, Optional

import numpy as np
from pydantic import BaseModel, ValidationError

from phaseprobe.errors import SpecError


def read_toml_spec(path: str | Path, table: str, examples: str = "examples/") -> dict:
    """The ``[table]`` of a TOML spec file (or its top level); one-line errors for bad files.

    **Arguments:**

    - ``path``: the spec file.
    - ``table``: the table that holds the spec (``sweep``, ``grok``, ...); a file without it is
      read from its top level.
    - ``examples``: where example specs live (named in the fix of every message).

    **Returns:** the spec as a dict. A missing file, a folder, a file that is not UTF-8 or not
    TOML, and a ``table`` key that is not a table raise :class:`SpecError`.
    """
    p = Path(path)
    if not p.exists():
        raise SpecError(f"spec: file '{p}' does not exist; give the path of a TOML spec (see {examples})")
    if p.is_dir():
        raise SpecError(f"spec: '{p}' is a folder, not a file; give the path of a TOML spec file (see {examples})")
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError(f"spec: '{p}' is not UTF-8 text (byte {e.start}); save the spec as UTF-8 TOML (see {examples})") from None
    except OSError as e:
        raise SpecError(f"spec: cannot read '{p}' ({e.strerror}); check the path and its permissions") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"spec: '{p}' is not valid TOML ({e}); fix the file") from None
    if table not in data:
        return data
    if not isinstance(data[table], dict):
        raise SpecError(f"spec: '{table}' in '{p}' is a {_kind(data[table])}, not a table; "
                        f"write the fields under a [{table}] header (see {examples})")
    return data[table]


def _kind(value: Any) -> str:
    """A word for the type of a spec value (used in messages)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    return type(value).__name__


def validation_message(err: ValidationError, command: str, examples: str | None = None) -> str:
    """The first pydantic error as ``field: problem`` (unknown fields point to the command's help)."""
    e = err.errors()[0]
    field = ".".join(str(x) for x in e["loc"]) or "spec"
    if e["type"] == "extra_forbidden":
        see = f"`phaseprobe {command} --help`" + (f" and {examples}" if examples else "")
        return f"{field}: unknown field; check its spelling (see {see})"
    return f"{field}: {e['msg'].removeprefix('Value error, ')}"


def coerce_value(value: str) -> Any:
    """A command-line value: true/false, none/null, JSON where it parses, else the string."""
    v = value.strip()
    if v.lower() in ("true", "false"):
        return v.lower() == "true"
    if v.lower() in ("none", "null"):
        return None
    try:
        return json.loads(v)
    except json.JSONDecodeError:
        return v


def apply_overrides(data: dict, sets: list[str]) -> dict:
    """``--set a.b=value`` overrides on a spec dict (values parsed as JSON when they can be).

    **Arguments:**

    - ``data``: the spec so far (not modified).
    - ``sets``: the ``key=value`` strings; a dotted key sets a field inside a table
      (``model_options.embed_dim=64``).

    **Returns:** a new dict. A string without ``=``, an empty field name (``=5``, ``a..b``) or a
    dotted key through a field that is not a table (``width.x=1``) raise :class:`SpecError`.
    """
    out = json.loads(json.dumps(data))
    for s in sets or []:
        if "=" not in s:
            raise SpecError(f"--set: '{s}' is not key=value; write e.g. --set width=128")
        k, v = s.split("=", 1)
        parts = [p.strip() for p in k.split(".")]
        if not any(parts):
            raise SpecError(f"--set: the field name in '{s}' is empty; write the field before '=', e.g. --set width=128")
        if not all(parts):
            raise SpecError(f"--set: '{k.strip()}' has an empty part between dots; write e.g. --set model_options.embed_dim=64")
        node = out
        for i, p in enumerate(parts[:-1]):
            if p not in node or node[p] is None:
                node[p] = {}
            elif not isinstance(node[p], dict):
                here = ".".join(parts[:i + 1])
                raise SpecError(f"{here}: is a {_kind(node[p])}, not a table, so '{k.strip()}' names nothing; "
                                f"set it directly, e.g. --set {here}=<value>")
            node = node[p]
        node[parts[-1]] = coerce_value(v)
    return out


def check_seeds(seeds: Any, field: str = "seeds", example: str = "[0, 1, 2]") -> list[int]:
    """A spec's seeds as a list of plain, distinct, non-negative ints.

    **Arguments:**

    - ``seeds``: a count ``n`` (seeds ``0 .. n-1``) or a list of seeds.
    - ``field``: the spec field (named in the message).
    - ``example``: a list to show in the fix.

    **Returns:** the seeds as Python ints. A count below 1, an empty list, a seed that is not a
    whole number, a negative seed or a seed given twice (the same training twice, duplicate
    records) raise :class:`SpecError`.
    """
    if isinstance(seeds, bool):
        raise SpecError(f"{field}: {seeds} is not a seed count or list; give a count (3) or a list ({example})")
    if isinstance(seeds, (int, np.integer)):
        if seeds <= 0:
            raise SpecError(f"{field}: need at least one seed, got {int(seeds)}; give a count (3) or a list ({example})")
        return list(range(int(seeds)))
    vals = list(seeds)
    if not vals:
        raise SpecError(f"{field}: the list is empty; give a count (3) or a list ({example})")
    out: list[int] = []
    for v in vals:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer, float, np.floating)) or float(v) != int(v):
            raise SpecError(f"{field}: {v!r} is not a whole number; give seeds as integers, e.g. {example}")
        out.append(int(v))
    neg = [v for v in out if v < 0]
    if neg:
        raise SpecError(f"{field}: seed {neg[0]} is negative; give seeds >= 0, e.g. {example}")
    dup = sorted({v for v in out if out.count(v) > 1})
    if dup:
        raise SpecError(f"{field}: seed {dup[0]} is given {out.count(dup[0])} times (the same training twice); "
                        f"give each seed once, e.g. {sorted(set(out))}")
    return out


class ScheduleSpec(BaseModel):
    """Adam's epsilon and the learning-rate schedule, the spec fields of the
    :class:`phaseprobe.train.TrainConfig` settings that the sweep and grok specs share (checked
    there, before any compute)."""

    eps: float = 1e-8
    schedule: str = "constant"
    warmup_steps: int = 0
    decay_steps: Optional[int] = None
    end_lr_factor: float = 0.0


SCHEDULE_DEFAULTS: dict[str, Any] = {name: f.default for name, f in ScheduleSpec.model_fields.items()}
"""The schedule fields at the values that reproduce runs made before they existed."""


def without_defaults(d: dict, defaults: dict) -> dict:
    """``d`` without the keys of ``defaults`` whose value is the default (a spec hash leaves out
    settings added later at their default, so older runs keep their hash and resume)."""
    return {k: v for k, v in d.items() if not (k in defaults and defaults[k] == v)}
