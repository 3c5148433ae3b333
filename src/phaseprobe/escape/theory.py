"""Closed forms for one mode of a deep linear network under L2 (the project's convention).

One mode of teacher singular value ``s`` learned by ``L`` balanced scalar layers ``a`` (end-to-end
``u = a^L``), with whitened inputs, MSE ``E = 1/2 (u - s)^2`` and penalty ``alpha * sum_l a_l^2``::

    V(a) = 1/2 (a^L - s)^2 + alpha * L * a^2
    V'(a) = 0  <=>  a = 0  or  g(a) := a^(L-2) (s - a^L) = 2 alpha

For ``L >= 3`` ``g`` rises from 0 to its maximum at ``a_c^L = s (L-2)/(2L-2)`` and falls to 0 at
``a = s^(1/L)``: below ``alpha_c = g(a_c)/2`` the equation has two roots, the saddle ``a_s`` (the
smaller) and the learned minimum ``a_on``; the origin is a minimum for every ``alpha > 0``. The
barrier out of the origin is ``dV = V(a_s) - V(0)``. Every critical point with ``u != 0`` is
balanced (multiply ``dV/da_l = (u - s) u / a_l + 2 alpha a_l`` by ``a_l``: ``a_l^2`` is the same
for every ``l``), so the lowest saddle of the full weight space lies on the balanced line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy.optimize import brentq

from phaseprobe.errors import PhaseprobeError


def mode_energy(a: float, s: float, alpha: float, depth: int) -> float:
    """``V(a) = 1/2 (a^L - s)^2 + alpha L a^2``: the regularised loss of one balanced mode."""
    return 0.5 * (a ** depth - s) ** 2 + alpha * depth * a * a


def critical_alpha(s: float, depth: int) -> float:
    """Upper spinodal ``alpha_c`` of a mode (canonical alpha): above it only the origin is a critical point.

    ``alpha_c = 1/2 a_c^(L-2) (s - a_c^L)`` with ``a_c^L = s (L-2)/(2L-2)``; for ``L = 3``,
    ``alpha_c = 3/2 (s/4)^(4/3)``.
    """
    if depth < 3:
        raise PhaseprobeError(f"depth: a first-order transition needs depth >= 3 weight matrices, got {depth}")
    ac = (s * (depth - 2) / (2 * depth - 2)) ** (1.0 / depth)
    return 0.5 * ac ** (depth - 2) * (s - ac ** depth)


def maxwell_alpha(s: float, depth: int) -> float:
    """Equal-loss strength ``alpha*`` (learned mode and origin have the same ``V``), canonical alpha.

    At ``alpha*`` the learned root has ``u = s (L-2)/(L-1)``; ``alpha* = 1/2 a^(L-2) (s - a^L)`` there.
    """
    u = s * (depth - 2) / (depth - 1)
    a = u ** (1.0 / depth)
    return 0.5 * a ** (depth - 2) * (s - u)


@dataclass(frozen=True)
class ModeBarrier:
    """Stationary points of one mode at strength ``alpha``: saddle ``a_s``, learned minimum
    ``a_on`` (per layer), their end-to-end values and the regularised losses relative to the origin."""

    a_saddle: float
    a_on: float
    u_saddle: float
    u_on: float
    barrier: float
    """``V(a_s) - V(0)``: the energy barrier out of the origin (the trapped lower-rank phase)."""
    depth_on: float
    """``V(a_on) - V(0)``: negative when the learned phase is the stable one (alpha < alpha*)."""


def mode_barrier(s: float, alpha: float, depth: int) -> ModeBarrier:
    """The saddle, the learned minimum and the barrier of one mode (see the module doc).

    **Arguments:**

    - `s`: the teacher's singular value (> 0).
    - `alpha`: canonical L2 strength, ``0 < alpha < alpha_c``.
    - `depth`: weight matrices ``L >= 3``.

    **Returns:** a :class:`ModeBarrier`.
    """
    ac_alpha = critical_alpha(s, depth)
    if not (0 < alpha < ac_alpha):
        raise PhaseprobeError(f"alpha: must lie in (0, alpha_c = {ac_alpha:.6g}) for a barrier to exist, got {alpha}; lower alpha")
    g = lambda a: a ** (depth - 2) * (s - a ** depth) - 2 * alpha  # noqa: E731
    a_peak = (s * (depth - 2) / (2 * depth - 2)) ** (1.0 / depth)
    a_s = brentq(g, 1e-300 if depth > 3 else 0.0, a_peak, xtol=1e-15, rtol=1e-14, maxiter=500) if g(0.0) < 0 else 0.0
    a_on = brentq(g, a_peak, s ** (1.0 / depth), xtol=1e-15, rtol=1e-14, maxiter=500)
    v0 = mode_energy(0.0, s, alpha, depth)
    return ModeBarrier(a_s, a_on, a_s ** depth, a_on ** depth, mode_energy(a_s, s, alpha, depth) - v0,
                       mode_energy(a_on, s, alpha, depth) - v0)


def arrhenius_ratio(barrier: float, t1: float, t2: float) -> float:
    """Predicted escape-time ratio ``tau(T1) / tau(T2) = exp(dF (1/T1 - 1/T2))`` (prefactor independent of T)."""
    return math.exp(barrier * (1.0 / t1 - 1.0 / t2))
