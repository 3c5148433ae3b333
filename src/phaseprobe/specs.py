"""Helpers every experiment spec shares (sweep, grok, dln, connect/basins, grids).

One place for: reading a TOML spec file, turning a pydantic validation error into the project's
one-line ``field: problem; fix`` message, and ``--set key=value`` overrides.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from phaseprobe.errors import SpecError


def read_toml_spec(path: str | Path, table: str, examples: str = "examples/") -> dict:
    """The ``[table]`` of a TOML spec file (or its top level); one-line errors for bad files."""
    p = Path(path)
    if not p.exists():
        raise SpecError(f"spec: file '{p}' does not exist; give the path of a TOML spec (see {examples})")
    try:
        data = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"spec: '{p}' is not valid TOML ({e}); fix the file") from None
    return data.get(table, data)


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
    """``--set a.b=value`` overrides on a spec dict (values parsed as JSON when they can be)."""
    out = json.loads(json.dumps(data))
    for s in sets or []:
        if "=" not in s:
            raise SpecError(f"--set: '{s}' is not key=value; write e.g. --set width=128")
        k, v = s.split("=", 1)
        node = out
        parts = k.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = coerce_value(v)
    return out
