"""The L2 probe's types: its settings, its transitions (and excursions) and its result.

The algorithm that fills them is in :mod:`phaseprobe.paths.probe` (see its docstring for the
protocol); :mod:`phaseprobe.paths.pieces` stores and reads them back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from phaseprobe import conventions
from phaseprobe.paths.landscape import PathError
from phaseprobe.paths.saddles import SaddleResult


@dataclass
class ProbeConfig:
    """Settings of the probe's outer loop (the per-strength training lives in the landscape).

    ``strengths``: the increasing grid in ``convention``. ``min_jump``: smallest training-error
    jump read as a transition (same units as E). ``bisect_tol``: bracket width in strength
    units (the published transition models are bracketed to about 1e-10; the precision of the
    parameters, float32 for networks, sets a floor: the bisection stops when the midpoint no
    longer differs from the ends in that precision).
    """

    strengths: Sequence[float]
    convention: str = "l2"
    min_jump: float = 0.02
    k_sigma: float = 3.0
    bisect: bool = True
    bisect_tol: float = 1e-10
    bisect_max_steps: int = 40
    saddles: bool = True
    saddle_method: str = "gad"
    saddle_steps: int = 30
    saddle_subset: int | None = None
    saddle_points: int = 33
    saddle_max_step: float | None = None
    fold_check: bool = True
    excursion: bool = False
    excursion_up: int = 2
    hessian_k: int = 0
    hessian_every: int = 1
    hessian_subset: int | None = None
    hessian_iter: int = 40

    def validate(self) -> "ProbeConfig":
        conventions.check_convention(self.convention)
        if self.convention == "decoupled":
            raise PathError("convention: the probe's penalty is in the gradient; use 'l2' (beta*||w - w_ref||^2) or 'wd' (beta/2*||...||^2)")
        s = np.asarray(self.strengths, np.float64).reshape(-1)
        if s.size < 2:
            raise PathError(f"strengths: the probe needs at least 2 strengths, got {s.size}; e.g. 'lin:0:0.05:26'")
        if not np.all(np.isfinite(s)) or np.any(s < 0):
            raise PathError("strengths: every strength must be finite and >= 0")
        if np.any(np.diff(s) <= 0):
            raise PathError("strengths: the probe only raises beta; give a strictly increasing grid")
        if not (self.min_jump > 0):
            raise PathError(f"min_jump: must be > 0, got {self.min_jump}")
        if not (self.bisect_tol > 0):
            raise PathError(f"bisect_tol: must be > 0, got {self.bisect_tol}")
        for name in ("bisect_max_steps", "saddle_steps", "saddle_points", "excursion_up", "hessian_k", "hessian_every"):
            v = getattr(self, name)
            if not (isinstance(v, (int, np.integer)) and v >= 0):
                raise PathError(f"{name}: must be an integer >= 0, got {v!r}")
        if self.hessian_every < 1:
            raise PathError("hessian_every: must be >= 1")
        return self

    @property
    def alphas(self) -> np.ndarray:
        return np.asarray(conventions.to_alpha(np.asarray(self.strengths, np.float64), self.convention), np.float64).reshape(-1)


@dataclass
class Excursion:
    """Up past a transition, then back down the grid: where the model ends up (ours, not the paper's)."""

    strengths: np.ndarray  # the schedule walked (up, then down)
    errors: np.ndarray
    basins: list
    end_basin: tuple
    start_basin: tuple  # the basin the probe started in (grid point 0)
    pre_basin: tuple  # the basin just before the jump
    returned: bool  # ends in the pre-jump basin
    return_strength: float  # where the down walk left the post-jump basin (nan if it never did)
    grad_evals: float


@dataclass
class ProbeTransition:
    """A jump of one probe member, bracketed (and bisected) in strength."""

    member: int
    index: int  # grid index of the last point before the jump
    strength_lo: float
    strength_hi: float
    alpha_lo: float
    alpha_hi: float
    x_lo: np.ndarray
    x_hi: np.ndarray
    lo: dict
    hi: dict
    basin_lo: tuple
    basin_hi: tuple
    bisect_steps: int = 0
    confirmed: bool | None = None
    grad_evals: float = 0.0
    fold_min_eig: float = float("nan")
    noise_error: float = float("nan")  # |E| change from retraining the pre-jump model at its own strength
    noise_dist: float = float("nan")
    saddle: SaddleResult | None = None
    excursion: Excursion | None = None
    lo_models: list = field(default_factory=list, repr=False)  # (alpha, x) of every bisection point below the jump
    hi_models: list = field(default_factory=list, repr=False)  # (alpha, x) of every bisection point above it

    @property
    def strength_c(self) -> float:
        return 0.5 * (self.strength_lo + self.strength_hi)

    def row(self) -> dict:
        r = {
            "member": self.member, "index": self.index, "strength_lo": self.strength_lo, "strength_hi": self.strength_hi,
            "strength_c": self.strength_c, "alpha_lo": self.alpha_lo, "alpha_hi": self.alpha_hi,
            "bracket": self.strength_hi - self.strength_lo, "bisect_steps": self.bisect_steps, "confirmed": self.confirmed,
            "error_lo": self.lo["train_error"], "error_hi": self.hi["train_error"],
            "dE": self.hi["train_error"] - self.lo["train_error"], "dL": self.hi["loss"] - self.lo["loss"],
            "dist_lo": self.lo["dist"], "dist_hi": self.hi["dist"], "dr": self.hi["dist"] - self.lo["dist"],
            "test_acc_lo": self.lo.get("test_acc", np.nan), "test_acc_hi": self.hi.get("test_acc", np.nan),
            "basin_lo": basin_str(self.basin_lo), "basin_hi": basin_str(self.basin_hi),
            "fold_min_eig_E": self.fold_min_eig, "fold_condition_-2alpha": -2.0 * self.alpha_lo,
            "grad_evals_bisect": self.grad_evals, "noise_error": self.noise_error, "noise_dist": self.noise_dist,
        }
        if self.saddle is not None:
            r.update(self.saddle.row())
        if self.excursion is not None:
            ex = self.excursion
            r.update({"excursion_end_basin": basin_str(ex.end_basin), "excursion_returned": ex.returned,
                      "excursion_return_strength": ex.return_strength, "excursion_grad_evals": ex.grad_evals})
        return r


def basin_str(b) -> str:
    """A basin label as text: a class set ``{0,1,3}`` or a rounded point ``(1.0, 0.0)``."""
    if b is None:
        return ""
    if len(b) and all(isinstance(v, (int, np.integer)) for v in b):
        return "{" + ",".join(str(int(v)) for v in b) + "}"
    if len(b) == 0:
        return "{}"
    return "(" + ", ".join(f"{float(v):g}" for v in b) + ")"


@dataclass
class ProbeResult:
    """Everything one probe ensemble produced. ``checkpoints[i, k]`` is member k at grid point i."""

    records: pd.DataFrame
    checkpoints: np.ndarray
    strengths: np.ndarray
    alphas: np.ndarray
    convention: str
    start: np.ndarray
    ref: np.ndarray
    transitions: list[ProbeTransition]
    basins: list[list[tuple]]  # [grid point][member]
    grad_evals: np.ndarray  # per member: probe steps
    seconds: float
    labels: list[str] = field(default_factory=list)
    spectra: pd.DataFrame | None = None

    @property
    def n_members(self) -> int:
        return int(self.checkpoints.shape[1])

    def member_transitions(self, member: int) -> list[ProbeTransition]:
        return sorted([t for t in self.transitions if t.member == member], key=lambda t: t.index)

    def total_grad_evals(self, member: int, *, bisect: bool = True, saddles: bool = True) -> float:
        g = float(self.grad_evals[member])
        for t in self.member_transitions(member):
            if bisect:
                g += t.grad_evals
            if saddles and t.saddle is not None:
                g += t.saddle.grad_evals
        return g

    def path_vertices(self, member: int, *, saddles: bool = True, to_ref: bool = False) -> tuple[np.ndarray, dict]:
        """The probe's polyline for ``member``: the start model, the checkpoints, the transition models
        (and saddles) at every jump, optionally ending at w_ref.

        Returns ``(vertices, marks)`` with ``marks`` naming the saddle vertices.
        """
        cps = self.checkpoints[:, member]
        by_index = {t.index: t for t in self.member_transitions(member)}
        verts = [self.start[member]]
        marks = {}
        for i in range(len(cps)):
            verts.append(cps[i])
            t = by_index.get(i)
            if t is not None:
                # the bisection's models are probe points at strengths inside the bracket: below the
                # jump in increasing strength, then (past the saddle) above it in increasing strength
                verts.extend(x for _, x in sorted(t.lo_models, key=lambda p: p[0]))
                verts.append(t.x_lo)
                if saddles and t.saddle is not None:
                    verts.append(t.saddle.x)
                    marks[f"saddle@{t.strength_c:.4g}"] = t.saddle.x
                verts.append(t.x_hi)
                verts.extend(x for _, x in sorted(t.hi_models, key=lambda p: p[0]))
        if to_ref:
            verts.append(self.ref[member])
        return np.stack(verts), marks

    def transitions_frame(self) -> pd.DataFrame:
        rows = []
        for t in sorted(self.transitions, key=lambda t: (t.member, t.index)):
            r = t.row()
            r["label"] = self.labels[t.member] if self.labels else str(t.member)
            r["convention"] = self.convention
            rows.append(r)
        return pd.DataFrame(rows)
