"""Geometry of the error landscape: HVPs, Hessians, Lanczos, SLQ, Hutchinson, curvature, saddles.

Every tool takes a scalar loss ``loss_fn(params) -> scalar`` and a parameter pytree, so it works
for the data error ``E``, for ``L_alpha = E + alpha ||w - w_ref||^2`` and for any model.
:func:`make_error_fn` / :func:`make_loss_fn` build those two from (model, dataset, loss kind,
alpha, reference, penalty mask) in phaseprobe's convention (``E`` a mean over the training set,
accumulated in chunks so memory stays bounded).

Small models (up to ``max_params``, default 5000) get the exact dense Hessian; larger ones the
stochastic path (Lanczos at both ends, Hutchinson, Hutch++ and XTrace traces with standard
errors).
"""

from phaseprobe.geometry.along_path import analyze_minima, curvature_change_points, match_transitions
from phaseprobe.geometry.base import (
    DEFAULT_MAX_PARAMS,
    GeometryError,
    HessianTooLargeError,
    num_params,
    params_of,
)
from phaseprobe.geometry.curvature import (
    SCALE,
    Curvature,
    curvature_exact,
    curvature_from_terms,
    curvature_stochastic,
    scalar_curvature,
)
from phaseprobe.geometry.hessian import (
    exact_hessian,
    flat_hvp,
    grad_and_hvp,
    hessian_terms,
    hvp,
    hvp_flat,
    hvp_many,
    penalised_hvp,
    value_and_flat_grad,
)
from phaseprobe.geometry.lanczos import LanczosResult, lanczos, lanczos_operator, power_iteration, tridiagonal_eigh
from phaseprobe.geometry.stochastic import (
    SpectralDensity,
    TraceEstimate,
    hutchinson,
    probe_samples,
    slq_density,
    trace_estimates,
    u_square,
)
from phaseprobe.geometry.trace import (
    SketchedTrace,
    hutch_plus_plus,
    hutch_plus_plus_operator,
    trace_matvecs_for,
    xtrace,
    xtrace_operator,
)
from phaseprobe.geometry.losses import ErrorFn, PenalisedLoss, make_error_fn, make_loss_fn, penalised
from phaseprobe.geometry.saddle import (
    INDEX_REL_TOL,
    RESIDUAL_RTOL,
    NegativeCount,
    count_negative,
    count_negative_ritz,
    index_label,
    EscapeDirection,
    EscapeResult,
    PointClass,
    SaddleIndex,
    classify_point,
    escape_test,
    fit_leading_order,
    multilinear_escape_direction,
    rank_one_chain_direction,
    saddle_index,
)

__all__ = [
    "DEFAULT_MAX_PARAMS",
    "INDEX_REL_TOL",
    "RESIDUAL_RTOL",
    "NegativeCount",
    "count_negative",
    "count_negative_ritz",
    "index_label",
    "SCALE",
    "Curvature",
    "ErrorFn",
    "EscapeDirection",
    "EscapeResult",
    "GeometryError",
    "HessianTooLargeError",
    "LanczosResult",
    "PenalisedLoss",
    "PointClass",
    "SaddleIndex",
    "SketchedTrace",
    "SpectralDensity",
    "TraceEstimate",
    "analyze_minima",
    "classify_point",
    "curvature_change_points",
    "curvature_exact",
    "curvature_from_terms",
    "curvature_stochastic",
    "escape_test",
    "exact_hessian",
    "fit_leading_order",
    "flat_hvp",
    "grad_and_hvp",
    "hessian_terms",
    "hutch_plus_plus",
    "hutch_plus_plus_operator",
    "hutchinson",
    "hvp",
    "hvp_flat",
    "hvp_many",
    "lanczos",
    "lanczos_operator",
    "make_error_fn",
    "make_loss_fn",
    "match_transitions",
    "multilinear_escape_direction",
    "num_params",
    "params_of",
    "penalised",
    "penalised_hvp",
    "power_iteration",
    "probe_samples",
    "rank_one_chain_direction",
    "saddle_index",
    "scalar_curvature",
    "slq_density",
    "trace_estimates",
    "trace_matvecs_for",
    "tridiagonal_eigh",
    "u_square",
    "xtrace",
    "xtrace_operator",
]
