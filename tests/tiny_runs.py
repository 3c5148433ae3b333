"""Tiny sweep and grid run folders shared by the view tests (tables, report, compare): made once
per test session through the real ``phaseprobe`` command, in-process (digits, width 8)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from phaseprobe.cli import app

SPEC = """[sweep]
name = "{name}"
dataset = "digits"
model = "mlp"
depth = 2
width = 8
alphas = "{alphas}"
convention = "{convention}"
mode = "loop"
seeds = 2
optimizer = "adam"
lr = 0.01
epochs = 30
"""

_CACHE: dict[str, tuple[Path, str]] = {}


def invoke(*args: str, columns: int = 80):
    """``phaseprobe ARGS`` in-process with ``COLUMNS``; returns the click result."""
    return CliRunner().invoke(app, list(args), env={"COLUMNS": str(columns)}, catch_exceptions=False)


def tiny_sweep(root: Path, name: str = "tiny", alphas: str = "1e-3:1:4", convention: str = "l2") -> tuple[Path, str]:
    """A loop sweep's folder and the sweep command's stdout (made once per session and name)."""
    if name not in _CACHE:
        d = Path(root) / name
        d.mkdir(parents=True, exist_ok=True)
        spec = d / "spec.toml"
        spec.write_text(SPEC.format(name=name, alphas=alphas, convention=convention))
        r = invoke("sweep", "--spec", str(spec), "--out", str(d / "run"))
        assert r.exit_code == 0, r.output[-3000:]
        _CACHE[name] = (d / "run", r.stdout)
    return _CACHE[name]


def tiny_grid(root: Path) -> tuple[Path, str]:
    """A 2-cell grid (depth 1, 2; cold, one seed, two strengths) and the command's stdout."""
    if "grid" not in _CACHE:
        out = Path(root) / "grid"
        r = invoke("sweep", "--set", "epochs=5", "--set", "alphas=0.001,0.1", "--set", "seeds=1", "--set", "width=4",
                   "--set", "mode=cold", "--grid", "depth=1,2", "--out", str(out))
        assert r.exit_code == 0, r.output[-3000:]
        _CACHE["grid"] = (out, r.stdout)
    return _CACHE["grid"]
