"""Alpha sweeps (cold, up, down, loop), their analysis (transitions, order, spinodals, Maxwell
point, plateaus) and the run entry point :func:`run_sweep`.

The names below load on first use, so reading or checking a spec (``phaseprobe.sweep.spec``)
does not import JAX: a command refuses bad input before the numerical stack starts.
"""

import importlib

_EXPORTS = {
    "MODES": "spec", "SweepSpec": "spec", "apply_overrides": "spec", "load_spec_file": "spec",
    "make_spec": "spec", "parse_strength_grid": "spec",
    "SweepContext": "run", "Unit": "run", "execute_unit": "run", "plan_units": "run",
    "run_sweep": "driver",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"phaseprobe.sweep.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'phaseprobe.sweep' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
