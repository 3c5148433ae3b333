"""A transition's strength interval, read from one row of a sweep's transitions table.

Kept apart from :mod:`phaseprobe.plots.sweep_plots` so that the command-line tables
(``phaseprobe sweep --no-figures``, ``phaseprobe show``) do not import matplotlib.
"""

from __future__ import annotations

import numpy as np


def _num(t: dict, *keys) -> float:
    for k in keys:
        v = t.get(k)
        if v is not None and not (isinstance(v, float) and np.isnan(v)):
            try:
                return float(v)
            except (TypeError, ValueError):
                continue
    return float("nan")


def _strength(t: dict, key: str, factor: float) -> float:
    """A transition's strength: the ``*_strength`` / ``strength_*`` column, else alpha x factor."""
    names = {"alpha_c": "strength_c", "alpha_lo": "strength_lo", "alpha_hi": "strength_hi",
             "spinodal_up": "spinodal_up_strength", "spinodal_down": "spinodal_down_strength",
             "maxwell": "maxwell_strength"}
    v = _num(t, names.get(key, key))
    return v if np.isfinite(v) else _num(t, key) * factor


def interval(t: dict, factor: float = 1.0) -> tuple[float, float, int]:
    """A transition's interval in strength: the bisection bracket when the run refined it
    (``refined_steps`` > 0, ``bracket_lo/hi``), else the grid cell widened by the seed bootstrap
    (``strength_lo/hi``). **Returns:** (lo, hi, number of bisection steps)."""
    steps = _num(t, "refined_steps")
    steps = int(steps) if np.isfinite(steps) else 0
    if steps > 0 and np.isfinite(_num(t, "bracket_lo")) and np.isfinite(_num(t, "bracket_hi")):
        return _num(t, "bracket_lo"), _num(t, "bracket_hi"), steps
    return _strength(t, "alpha_lo", factor), _strength(t, "alpha_hi", factor), 0
