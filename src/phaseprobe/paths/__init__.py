"""Paths in parameter space: the L2 probe, its baselines, barriers, saddles, the basin hierarchy.

* :func:`run_probe` / :class:`ProbeConfig` -- the L2 probe ("pathfinder") of the published
  protocol (``E + beta*||w - w_ref||^2``, beta raised on a linear grid, warm starts, a fresh
  optimiser per beta), bisected transitions, and phaseprobe's additions (fold check, saddles,
  excursions, Hessian spectra), for an ensemble of probes at once;
* :class:`NetworkLandscape` (networks, THE trainer) and :class:`FunctionLandscape` (toy
  functions of a parameter vector): the two landscapes the same code walks on;
* :func:`evaluate_linear`, :func:`fit_bezier` / :func:`evaluate_bezier`,
  :func:`evaluate_polyline` -- baselines and dense path metrics (barrier, length, gradient
  evaluations, per-class accuracy);
* :func:`refine_saddle`, :func:`path_spectra` -- saddles of E and spectra along paths;
* :func:`build_basin_graph` / :func:`draw_basin_graph` -- the basin hierarchy;
* :mod:`phaseprobe.paths.workflow` -- the path spec, ``connect`` and ``basins`` end to end and
  their analysis (the CLI's); :mod:`phaseprobe.paths.kind` -- both as experiment kinds
  (phases of resumable units on any engine); :mod:`phaseprobe.paths.pieces` -- what their
  stages store, read back.
"""

from phaseprobe.paths.baselines import BezierResult, CurveModel, fit_bezier
from phaseprobe.paths.basins import BasinEdge, BasinGraph, BasinNode, build_basin_graph, draw_basin_graph
from phaseprobe.paths.landscape import PAPER_TRAIN, FunctionLandscape, MinResult, NetworkLandscape, PathError
from phaseprobe.paths.metrics import (
    PathEval,
    barrier,
    bezier_points,
    evaluate_bezier,
    evaluate_linear,
    evaluate_polyline,
    polyline_points,
)
from phaseprobe.paths.probe import (
    Excursion,
    ProbeConfig,
    ProbeResult,
    ProbeTransition,
    basin_str,
    branch_defect,
    find_jumps,
    run_probe,
)
from phaseprobe.paths.saddles import SaddleResult, bottom_eigs, path_spectra, refine_saddle

__all__ = [
    "PAPER_TRAIN", "BasinEdge", "BasinGraph", "BasinNode", "BezierResult", "CurveModel", "Excursion", "FunctionLandscape",
    "MinResult", "NetworkLandscape", "PathError", "PathEval", "ProbeConfig", "ProbeResult", "SaddleResult", "ProbeTransition",
    "barrier", "basin_str", "bezier_points", "bottom_eigs", "branch_defect", "build_basin_graph", "draw_basin_graph",
    "evaluate_bezier", "evaluate_linear", "evaluate_polyline", "find_jumps", "fit_bezier", "path_spectra",
    "polyline_points", "refine_saddle", "run_probe",
]
