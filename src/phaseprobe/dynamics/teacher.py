"""Low-rank linear teachers and the closed-form oracles of deep-linear learning.

Convention (:mod:`phaseprobe.conventions`): the data error is ``E = mean_i 1/2 ||A x_i - y_i||^2``.
With whitened inputs (``X^T X / n = I``) and ``y = T x`` this is ``1/2 ||A - T||_F^2``, so gradient
descent with learning rate ``eta`` is an Euler step of the gradient flow with time
``t = eta * steps`` and time constant ``tau = 1`` (Saxe, McClelland & Ganguli 2014, eq. 2 with
``tau = 1/eta`` iterations).

Oracles (all in that convention):

* :func:`saxe_mode_strength` -- one hidden layer, balanced init aligned with the teacher's
  singular vectors: the strength ``u = u_a^T A v_a`` of mode ``a`` obeys ``du/dt = 2u(s - u)``, so
  ``u(t) = s e^{2st} / (e^{2st} - 1 + s/u0)`` (Saxe eq. 12, tau = 1).
* :func:`deep_mode_time` -- L weight matrices, aligned and balanced: each layer's scale ``a``
  obeys ``da/dt = a^{L-1} (s - a^L)``; the time to go from ``a0`` to ``a1`` is a quadrature.
* :func:`plateau_levels` -- the loss at the rank-k saddle is ``1/2 sum_{i>k} s_i^2`` (plus the
  irreducible error of the data, 0 for a noiseless teacher).
* :func:`min_norm_sq` -- ``min_{W_L..W_1 = A} sum ||W_l||_F^2 = L sum_i s_i(A)^{2/L}``.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from phaseprobe.data import Dataset
from phaseprobe.errors import PhaseprobeError


class DynamicsError(PhaseprobeError):
    """A bad deep-linear dynamics request (one line: field, problem, fix)."""


def _orthonormal(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((n, k)))
    return q * np.sign(np.diag(r))[None, :]


def check_singular_values(singular_values: Sequence[float], in_dim: int, out_dim: int) -> np.ndarray:
    s = np.asarray(singular_values, dtype=np.float64).ravel()
    if s.size == 0:
        raise DynamicsError("singular_values: the teacher needs at least one singular value; e.g. singular_values=[4, 2, 1]")
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise DynamicsError(f"singular_values: every teacher singular value must be finite and > 0, got {list(map(float, s))}")
    if in_dim < 1 or out_dim < 1:
        raise DynamicsError(f"in_dim/out_dim: must be >= 1, got in_dim={in_dim}, out_dim={out_dim}")
    if s.size > min(in_dim, out_dim):
        raise DynamicsError(
            f"singular_values: {s.size} values but the teacher is {out_dim}x{in_dim} (rank <= {min(in_dim, out_dim)}); "
            "give fewer singular values or larger in_dim/out_dim"
        )
    return s


def make_teacher(
    singular_values: Sequence[float],
    in_dim: int,
    out_dim: int | None = None,
    n_train: int | None = None,
    *,
    whiten: bool = True,
    seed: int = 0,
    basis: str = "random",
    n_test: int = 0,
) -> Dataset:
    """Regression data ``y = T x`` from a low-rank teacher ``T = U diag(s) V^T``.

    ``basis="random"`` draws ``U``, ``V`` with orthonormal columns from ``seed``; ``"identity"``
    uses the first coordinate axes (``T = diag(s)`` padded). With ``whiten=True`` the training
    inputs satisfy ``X^T X / n_train = I`` exactly (needs ``n_train >= in_dim``; default
    ``n_train = in_dim``). ``meta`` holds ``A`` (= T), ``U``, ``V`` and ``singular_values``.
    """
    out_dim = in_dim if out_dim is None else out_dim
    s = check_singular_values(singular_values, in_dim, out_dim)
    order = np.argsort(-s)
    s = s[order]
    n_train = in_dim if n_train is None else int(n_train)
    if n_train < 1:
        raise DynamicsError(f"n_train: must be >= 1, got {n_train}")
    if whiten and n_train < in_dim:
        raise DynamicsError(f"n_train: whitening needs n_train >= in_dim ({in_dim}), got {n_train}; raise n_train or set whiten=false")
    if basis not in ("random", "identity"):
        raise DynamicsError(f"basis: unknown '{basis}'; use 'random' or 'identity'")
    rng = np.random.default_rng(seed)
    r = s.size
    if basis == "random":
        U = _orthonormal(rng, out_dim, r)
        V = _orthonormal(rng, in_dim, r)
    else:
        U = np.eye(out_dim)[:, :r]
        V = np.eye(in_dim)[:, :r]
    A = U @ np.diag(s) @ V.T
    g = rng.standard_normal((n_train, in_dim))
    if whiten:
        q, _ = np.linalg.qr(g)  # n x d, orthonormal columns
        x = math.sqrt(n_train) * q
    else:
        x = g
    xt = rng.standard_normal((n_test, in_dim))
    return Dataset(
        name="lowrank-linear",
        x_train=x.astype(np.float32),
        y_train=(x @ A.T).astype(np.float32),
        x_test=xt.astype(np.float32),
        y_test=(xt @ A.T).astype(np.float32),
        n_classes=0,
        task="regression",
        meta={"A": A, "U": U, "V": V, "singular_values": s, "whitened": bool(whiten), "seed": int(seed), "basis": basis},
    )


# ---- closed forms ------------------------------------------------------------------------------

def saxe_mode_strength(t, s: float, u0: float):
    """Saxe et al. (2014) eq. 12 with tau = 1: ``u(t) = s e^{2st} / (e^{2st} - 1 + s/u0)``."""
    t = np.asarray(t, dtype=np.float64)
    e = np.exp(np.minimum(2.0 * s * t, 700.0))
    return s * e / (e - 1.0 + s / u0)


def saxe_half_time(s: float, u0: float) -> float:
    """Time for a balanced mode to reach ``s/2`` from ``u0``: ``ln((s - u0)/u0) / (2 s)``."""
    return math.log((s - u0) / u0) / (2.0 * s)


def deep_mode_time(a0: float, a1: float, s: float, depth: int, n: int = 20001) -> float:
    """Gradient-flow time for a balanced aligned mode's per-layer scale to go ``a0 -> a1``.

    ``da/dt = a^{L-1} (s - a^L)`` (Saxe eq. 15 per layer), so ``t = int da / (a^{L-1}(s - a^L))``,
    integrated on a log grid in ``a`` (needs ``0 < a0 < a1 < s^{1/L}``).
    """
    if not (0 < a0 < a1 < s ** (1.0 / depth)):
        raise DynamicsError("a0/a1: need 0 < a0 < a1 < s^(1/L)")
    x = np.linspace(math.log(a0), math.log(a1), n)
    a = np.exp(x)
    f = a / (a ** (depth - 1) * (s - a ** depth))  # dt/dx = a * dt/da
    return float(np.trapezoid(f, x))


def plateau_levels(singular_values: Sequence[float], floor: float = 0.0) -> np.ndarray:
    """Loss at the rank-k saddles, k = 0..r: ``1/2 sum_{i>k} s_i^2 + floor`` (s sorted descending)."""
    s = np.sort(np.asarray(singular_values, dtype=np.float64))[::-1]
    tail = np.concatenate([np.cumsum((s ** 2)[::-1])[::-1], [0.0]])
    return 0.5 * tail + floor


def min_norm_sq(singular_values: Sequence[float], depth: int) -> float:
    """``min sum_l ||W_l||_F^2`` over factorisations of a map with these singular values."""
    s = np.asarray(singular_values, dtype=np.float64)
    return float(depth * np.sum(s ** (2.0 / depth)))


def aligned_init(U, s_init, V, depth: int, width: int):
    """Balanced weights aligned with ``U``, ``V``: every mode has per-layer scale ``s_init^{1/L}``.

    ``W_1 = sum_a a_a e_a v_a^T``, middle ``W_l = sum_a a_a e_a e_a^T``, ``W_L = sum_a a_a u_a e_a^T``
    with hidden units ``e_a`` the first coordinate axes, so ``W_L...W_1 = U diag(s_init) V^T``
    and ``W_{l+1}^T W_{l+1} = W_l W_l^T`` (balanced). Returns a tuple of numpy arrays.
    """
    U = np.asarray(U, dtype=np.float64)
    V = np.asarray(V, dtype=np.float64)
    u = np.broadcast_to(np.asarray(s_init, dtype=np.float64), (U.shape[1],))
    r = U.shape[1]
    if width < r:
        raise DynamicsError(f"width: {width} is below the number of aligned modes {r}; use width >= {r}")
    a = u ** (1.0 / depth)
    E = np.eye(width)[:, :r]
    if depth == 1:
        return (U @ np.diag(u) @ V.T,)
    ws = [E @ np.diag(a) @ V.T]
    for _ in range(depth - 2):
        ws.append(E @ np.diag(a) @ E.T)
    ws.append(U @ np.diag(a) @ E.T)
    return tuple(ws)
