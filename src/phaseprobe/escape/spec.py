"""The spec of ``phaseprobe escape`` (:class:`EscapeSpec`).

A deep linear network ``f(x) = W_L ... W_1 x`` (scalar input and output, hidden ``width``) learns
a one-dimensional teacher ``y = s x`` from whitened inputs, so ``E = 1/2 (W_L...W_1 - s)^2``
exactly. It is trapped in the lower-rank phase (rank 0, the origin) by training to convergence,
noise-free, at ``prepare_factor * alpha_c`` (above the upper spinodal, where the origin is the
only minimum), then held at ``alpha`` (between the lower spinodal 0 and the equal-loss point
``alpha*``, so the origin is metastable and the learned phase stable) under Langevin noise
``w <- w - lr grad L + sqrt(2 lr T) xi`` at every temperature of the grid, ``replicas`` copies
each, all in one ensemble. A replica has escaped at the first check (every ``check_every``
steps) at which its end-to-end value ``W_L...W_1`` exceeds ``threshold`` (default: midway
between the saddle's and the learned minimum's end-to-end values).
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from phaseprobe.errors import PhaseprobeError, SpecError


class EscapeSpec(BaseModel):
    """First-passage times out of the trapped rank-0 phase of a deep linear network (module doc)."""

    model_config = ConfigDict(extra="forbid")

    name: str = "escape"
    depth: int = 3
    width: int = 1
    singular_value: float = 1.0
    alpha: float = 0.15
    """Canonical strength (``L = E + alpha ||w||^2``) at which the escape runs."""
    barrier_ratios: list[float] = [3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    """Temperatures as ``T = dV / ratio`` with ``dV`` the closed-form barrier (unless ``temperatures``)."""
    temperatures: Optional[list[float]] = None
    replicas: int = 96
    lr: float = 0.1
    steps: int = 300_000
    check_every: int = 100
    n_pieces: int = 10
    threshold: Optional[float] = None
    prepare_factor: float = 1.5
    prepare_steps: int = 3000
    init_sigma: float = 0.5
    seed: int = 0

    def hash(self) -> str:
        d = self.model_dump()
        d.pop("name", None)
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]

    # ---- derived ---------------------------------------------------------------------------
    def barrier(self):
        from phaseprobe.escape.theory import mode_barrier

        return mode_barrier(self.singular_value, self.alpha, self.depth)

    def temperature_grid(self) -> np.ndarray:
        if self.temperatures is not None:
            return np.asarray(self.temperatures, np.float64)
        return self.barrier().barrier / np.asarray(self.barrier_ratios, np.float64)

    def escape_threshold(self) -> float:
        if self.threshold is not None:
            return float(self.threshold)
        b = self.barrier()
        return 0.5 * (b.u_saddle + b.u_on)

    def piece_steps(self) -> list[int]:
        """Cumulative step count at the end of each piece (multiples of ``check_every``)."""
        checks = self.steps // self.check_every
        ends = np.linspace(0, checks, self.n_pieces + 1).round().astype(int)[1:]
        return [int(e) * self.check_every for e in ends]

    def check(self) -> "EscapeSpec":
        """Validate everything before any compute (one-line errors)."""
        from phaseprobe.escape.theory import maxwell_alpha

        for f in ("depth", "width", "replicas", "steps", "check_every", "n_pieces", "prepare_steps"):
            if getattr(self, f) < 1:
                raise SpecError(f"{f}: must be a positive integer, got {getattr(self, f)}")
        if self.depth < 3:
            raise SpecError(f"depth: the rank-0 phase is metastable only for depth >= 3 weight matrices, got {self.depth}; use depth >= 3")
        for f in ("singular_value", "lr", "init_sigma", "alpha"):
            v = getattr(self, f)
            if not (math.isfinite(v) and v > 0):
                raise SpecError(f"{f}: must be a positive number, got {v}")
        a_star = maxwell_alpha(self.singular_value, self.depth)
        if self.alpha >= a_star:
            raise SpecError(f"alpha: {self.alpha} is not below the equal-loss point alpha* = {a_star:.4g}, so the "
                            f"rank-0 phase is not metastable; use alpha < {a_star:.4g}")
        if not self.prepare_factor > 1:
            raise SpecError(f"prepare_factor: the trap is prepared above alpha_c, so it must exceed 1, got {self.prepare_factor}")
        if self.steps < self.check_every * self.n_pieces:
            raise SpecError(f"steps: {self.steps} is fewer than check_every x n_pieces = {self.check_every * self.n_pieces}; raise steps")
        temps = self.temperature_grid()
        if len(temps) < 2 or not np.all(np.isfinite(temps)) or np.any(temps <= 0):
            raise SpecError("temperatures: give at least two positive temperatures (or barrier_ratios)")
        if len(set(np.round(temps, 15))) != len(temps):
            raise SpecError("temperatures: duplicate values; give distinct temperatures")
        if self.threshold is not None:
            b = self.barrier()
            if not (b.u_saddle < self.threshold < b.u_on):
                raise SpecError(f"threshold: must lie between the saddle's ({b.u_saddle:.4g}) and the learned "
                                f"minimum's ({b.u_on:.4g}) end-to-end values, got {self.threshold}")
        return self


def make_escape_spec(data: dict) -> EscapeSpec:
    """A validated :class:`EscapeSpec` from a dict, with one-line errors."""
    try:
        spec = EscapeSpec.model_validate(dict(data))
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "spec"
        raise SpecError(f"{field}: {err['msg']}; fix the value (see `phaseprobe escape --help`)") from None
    except PhaseprobeError:
        raise
    return spec.check()
