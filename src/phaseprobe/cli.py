"""The ``phaseprobe`` command: one subcommand per experiment.

Each subcommand lives in ``phaseprobe.commands.<name>`` and exposes ``register(app)``.
Bad input raises :class:`~phaseprobe.errors.PhaseprobeError` before any compute; it is printed
as one line ``error: ...`` and the command exits with status 2.
"""

from __future__ import annotations

import importlib
import sys

import typer

from phaseprobe.errors import PhaseprobeError

app = typer.Typer(
    name="phaseprobe",
    help="Map how neural-network training changes phase: L2 sweeps with hysteresis, landscape "
    "curvature and saddles, L2-probe paths, deep linear dynamics, grokking.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

COMMANDS = ("sweep", "show", "curvature", "dln", "grok", "connect", "basins", "compare", "escape")

for _name in COMMANDS:
    try:
        _mod = importlib.import_module(f"phaseprobe.commands.{_name}")
    except ModuleNotFoundError as _e:  # a subcommand not built yet
        if _e.name == f"phaseprobe.commands.{_name}":
            continue
        raise
    _mod.register(app)


def main() -> None:
    try:
        app()
    except PhaseprobeError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2)


if __name__ == "__main__":
    main()
