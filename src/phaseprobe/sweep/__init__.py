"""Alpha sweeps (cold, up, down, loop), their analysis (transitions, order, spinodals, Maxwell
point, plateaus) and the run entry point :func:`run_sweep`."""

from phaseprobe.sweep.spec import MODES, SweepSpec, apply_overrides, load_spec_file, make_spec, parse_grid
from phaseprobe.sweep.run import SweepContext, Unit, execute_unit, plan_units
from phaseprobe.sweep.driver import run_sweep

__all__ = ["MODES", "SweepSpec", "SweepContext", "Unit", "apply_overrides", "execute_unit",
           "load_spec_file", "make_spec", "parse_grid", "plan_units", "run_sweep"]
