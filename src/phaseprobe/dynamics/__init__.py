"""Deep linear networks: init-scale phases, rank trajectories, plateaus and the saddles beneath them.

``f(x) = W_L ... W_1 x``, every entry ``N(0, sigma^2)`` with ``sigma^2 = width^-gamma``, trained by
full-batch gradient descent (THE trainer) on the loss ``mean 1/2 ||f(x) - y||^2``; with whitened
inputs and a teacher ``y = T x`` that is ``1/2 ||T - W_L...W_1||_F^2``. Time is ``lr x steps``.

* :mod:`~phaseprobe.dynamics.teacher` -- whitened low-rank teachers and the closed forms (Saxe's
  sigmoids, the deep mode-time quadrature, plateau levels, minimum norm);
* :mod:`~phaseprobe.dynamics.observe` -- per-record observables (loss, singular values, rank, stable
  rank, displacement, NTK, Hessian bound, distance to the global minima);
* :mod:`~phaseprobe.dynamics.run` -- the integrator (fixed or adaptive GD steps through the trainer);
* :mod:`~phaseprobe.dynamics.plateaus` -- plateaus in log time, escape times, saddle certificates;
* :mod:`~phaseprobe.dynamics.phase` -- the gamma x width grid, the located transition, escape scaling;
* :mod:`~phaseprobe.dynamics.spec` -- the ``phaseprobe dln`` spec (validated, one-line errors);
* :mod:`~phaseprobe.dynamics.units` -- the pipeline's units (one ensemble, one stored piece each);
* :mod:`~phaseprobe.dynamics.analysis` -- plateaus/certificates, order parameters and escape fits
  from a run folder;
* :mod:`~phaseprobe.dynamics.kind` -- the experiment kinds ``dln`` (one run), ``dln-grid`` (the
  phase diagram) and ``dln-escape`` (escape times), their stored models and ``show``.
"""

from phaseprobe.dynamics.observe import LinearStats, distance_to_global_min, linear_stats, observe
from phaseprobe.dynamics.phase import (
    PhaseGridResult,
    PhaseGridSpec,
    escape_fits,
    escape_scaling,
    integrate_escape_depth,
    integrate_width,
    locate_transition,
    order_parameters,
    run_gamma_width_grid,
    sigma_of,
    width_slopes,
)
from phaseprobe.dynamics.plateaus import (
    LossPlateau,
    analyze_member,
    certify_saddle,
    crossing_time,
    detect_plateaus,
    escape_direction,
    loss_function,
    oracle_escape_times,
    plateau_table,
)
from phaseprobe.dynamics.run import DLNRun, IntegrateConfig, dln_ensemble, integrate, stack_weights, with_weights
from phaseprobe.dynamics.spec import (
    DEFAULT_DLN_SPEC,
    DLNEscapeSpec,
    DLNPhaseGridSpec,
    DLNSpec,
    load_dln_file,
    make_dln_spec,
)
from phaseprobe.dynamics.teacher import (
    DynamicsError,
    aligned_init,
    deep_mode_time,
    make_teacher,
    min_norm_sq,
    plateau_levels,
    saxe_half_time,
    saxe_mode_strength,
)

__all__ = [
    "DEFAULT_DLN_SPEC", "DLNEscapeSpec", "DLNPhaseGridSpec", "DLNRun", "DLNSpec", "DynamicsError", "IntegrateConfig",
    "LinearStats", "LossPlateau", "PhaseGridResult", "PhaseGridSpec",
    "aligned_init", "analyze_member", "certify_saddle", "crossing_time", "deep_mode_time", "detect_plateaus",
    "distance_to_global_min", "dln_ensemble", "escape_direction", "escape_fits", "escape_scaling", "integrate",
    "integrate_escape_depth", "integrate_width", "linear_stats", "load_dln_file", "locate_transition", "loss_function",
    "make_dln_spec", "make_teacher", "min_norm_sq", "observe", "oracle_escape_times", "order_parameters",
    "plateau_levels", "plateau_table", "run_gamma_width_grid", "saxe_half_time", "saxe_mode_strength", "sigma_of",
    "stack_weights", "width_slopes", "with_weights",
]
