"""Observables of a deep linear network on regression data, in closed form.

The training error of a linear map ``A`` is quadratic: with ``S = X^T X / n``,
``B = Y^T X / n`` and ``A* = B S^+`` (the least-squares map),
``E(A) = 1/2 tr((A - A*) S (A - A*)^T) + E_min`` -- exactly the trainer's
``mean_i 1/2 ||A x_i - y_i||^2`` (see :mod:`phaseprobe.conventions`), written without the
cancellation of the expanded form. ``grad E(A) = (A - A*) S``.

Per member and record point (:func:`observe`): the loss, the singular values of the end-to-end map
``W_L...W_1``, its rank (singular values above ``rank_tol``) and stable rank
``||A||_F^2 / ||A||_op^2``, the absolute and relative parameter displacement
``||theta - theta_0||`` and ``||theta - theta_0|| / ||theta_0||``, the gradient norm, the top
eigenvalue of the NTK in the data metric (the Gauss-Newton part of the Hessian, exact) and an
upper bound on the Hessian's norm (the step-size control uses it).
:func:`distance_to_global_min` measures how far the parameters are from the set
``{theta : W_L...W_1 = A*}``.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from phaseprobe.dynamics.teacher import DynamicsError


@dataclass(frozen=True)
class LinearStats:
    """Second moments of the data and what follows from them (float64 numpy)."""

    S: np.ndarray  # X^T X / n  (in x in)
    B: np.ndarray  # Y^T X / n  (out x in)
    A_star: np.ndarray  # least-squares map B S^+
    e_min: float  # irreducible error
    s_eff: np.ndarray  # singular values of A* S^{1/2} (the modes the loss sees), descending
    S_half: np.ndarray

    @property
    def in_dim(self) -> int:
        return int(self.S.shape[0])

    @property
    def out_dim(self) -> int:
        return int(self.B.shape[0])

    @property
    def rank(self) -> int:
        """Rank of the least-squares map (singular values above 1e-4 of the largest: float32 data)."""
        if self.s_eff.size == 0 or self.s_eff[0] <= 0:
            return 0
        return int(np.sum(self.s_eff > 1e-4 * float(self.s_eff[0])))

    def levels(self) -> np.ndarray:
        """Loss at the rank-k saddles, k = 0..rank: ``E_min + 1/2 sum_{i>k} s_i^2``."""
        s = self.s_eff[: self.rank]
        tail = np.concatenate([np.cumsum((s ** 2)[::-1])[::-1], [0.0]])
        return self.e_min + 0.5 * tail


def linear_stats(data) -> LinearStats:
    """Compute :class:`LinearStats` from a regression :class:`~phaseprobe.data.Dataset`."""
    if getattr(data, "task", None) != "regression":
        raise DynamicsError("data: deep-linear dynamics needs regression data (task='regression'), e.g. the lowrank-linear teacher")
    x = np.asarray(data.x_train, dtype=np.float64).reshape(data.n_train, -1)
    y = np.asarray(data.y_train, dtype=np.float64).reshape(data.n_train, -1)
    n = x.shape[0]
    S = x.T @ x / n
    B = y.T @ x / n
    A_star = B @ np.linalg.pinv(S)
    e_min = float(0.5 * np.mean(np.sum((x @ A_star.T - y) ** 2, axis=1)))
    w, Q = np.linalg.eigh(S)
    S_half = (Q * np.sqrt(np.clip(w, 0, None))) @ Q.T
    s_eff = np.linalg.svd(A_star @ S_half, compute_uv=False)
    return LinearStats(S=S, B=B, A_star=A_star, e_min=e_min, s_eff=s_eff, S_half=S_half)


# ---- products along the chain ------------------------------------------------------------------

def chain(weights):
    """Left products ``P_l = W_l...W_1`` (P_0 = I) and right products ``R_l = W_L...W_{l+1}`` (R_L = I).

    ``left[l-1]`` and ``right[l]`` are what the gradient of layer ``l`` (1-based) needs:
    ``grad_{W_l} = right[l]^T G left[l-1]^T``.
    """
    L = len(weights)
    d_in = weights[0].shape[1]
    d_out = weights[-1].shape[0]
    left = [jnp.eye(d_in, dtype=weights[0].dtype)]
    for w in weights:
        left.append(w @ left[-1])
    right = [None] * (L + 1)
    right[L] = jnp.eye(d_out, dtype=weights[0].dtype)
    for l in range(L - 1, -1, -1):
        right[l] = right[l + 1] @ weights[l]
    return left, right


def _op_norm(w, iters: int = 24):
    """Spectral norm: exact from the small Gram matrix for thin layers, power iteration otherwise."""
    m, n = w.shape
    if min(m, n) <= 64:
        g = w @ w.T if m <= n else w.T @ w
        return jnp.sqrt(jnp.maximum(jnp.linalg.eigvalsh(g)[-1], 0.0))
    v0 = jnp.ones((n,), w.dtype) / jnp.sqrt(n) + 0.01 * jnp.sin(jnp.arange(n, dtype=w.dtype))

    def body(_, v):
        u = w.T @ (w @ v)
        return u / (jnp.linalg.norm(u) + 1e-30)

    v = jax.lax.fori_loop(0, iters, body, v0 / jnp.linalg.norm(v0))
    return 1.05 * jnp.linalg.norm(w @ v)  # power iteration underestimates; small margin


def ntk_matrix(left, right, S_half):
    """NTK ``J J^T`` on end-to-end maps in the data metric, as a ``(out*in) x (out*in)`` matrix.

    ``K = sum_l (R_l R_l^T) kron (S^{1/2} P_{l-1}^T P_{l-1} S^{1/2})`` (row-major vec); its top
    eigenvalue is the top eigenvalue of the Gauss-Newton part of the Hessian.
    """
    L = len(left) - 1
    K = 0.0
    for l in range(1, L + 1):
        R = right[l]
        P = left[l - 1] @ S_half
        K = K + jnp.kron(R @ R.T, P.T @ P)
    return K


def _observe_one(weights, weights0, A_star, S, S_half, e_min, rank_tol):
    L = len(weights)
    left, right = chain(weights)
    A = left[L]
    D = A - A_star
    G = D @ S
    loss = 0.5 * jnp.sum((D @ S_half) ** 2) + e_min
    sv = jnp.linalg.svd(A, compute_uv=False)
    rank = jnp.sum(sv > rank_tol)
    stable_rank = jnp.sum(sv ** 2) / jnp.maximum(sv[0] ** 2, 1e-30)
    gsq = 0.0
    for l in range(1, L + 1):
        gl = right[l].T @ G @ left[l - 1].T
        gsq = gsq + jnp.sum(gl ** 2)
    d_out, d_in = A.shape
    if d_out * d_in <= 400:
        lam_gn = jnp.linalg.eigvalsh(ntk_matrix(left, right, S_half))[-1]
    else:  # sum of products of top eigenvalues: an upper bound
        lam_gn = 0.0
        for l in range(1, L + 1):
            P = left[l - 1] @ S_half
            lam_gn = lam_gn + _op_norm(right[l]) ** 2 * _op_norm(P) ** 2
    ops = [_op_norm(w) for w in weights]
    res = 0.0
    for l in range(L):
        for m in range(l + 1, L):
            prod = 1.0
            for j in range(L):
                if j != l and j != m:
                    prod = prod * ops[j]
            res = res + prod
    lam_bound = lam_gn + jnp.sqrt(jnp.sum(G ** 2)) * res
    dsq = sum(jnp.sum((w - w0) ** 2) for w, w0 in zip(weights, weights0))
    n0 = jnp.sqrt(sum(jnp.sum(w0 ** 2) for w0 in weights0))
    nrm = jnp.sqrt(sum(jnp.sum(w ** 2) for w in weights))
    disp = jnp.sqrt(dsq)
    return {
        "loss": loss,
        "sv": sv,
        "rank": rank,
        "stable_rank": stable_rank,
        "disp_abs": disp,
        "disp_rel": disp / jnp.maximum(n0, 1e-30),
        "param_norm": nrm,
        "grad_norm": jnp.sqrt(gsq),
        "lam_gn": lam_gn,
        "lam_bound": lam_bound,
    }


@jax.jit
def _observe_stacked(weights, weights0, A_star, S, S_half, e_min, rank_tol):
    return jax.vmap(_observe_one, in_axes=(0, 0, None, None, None, None, None))(
        weights, weights0, A_star, S, S_half, e_min, rank_tol
    )


class Observer:
    """Evaluates :func:`observe` with the data constants kept on the device (one compile per shape)."""

    def __init__(self, stats: LinearStats, rank_tol: float, dtype=jnp.float32):
        self.stats = stats
        self.consts = (
            jnp.asarray(stats.A_star, dtype), jnp.asarray(stats.S, dtype), jnp.asarray(stats.S_half, dtype),
            jnp.asarray(stats.e_min, dtype), jnp.asarray(rank_tol, dtype),
        )

    def __call__(self, weights, weights0) -> dict[str, np.ndarray]:
        out = _observe_stacked(tuple(weights), tuple(weights0), *self.consts)
        out = jax.device_get(out)
        return {k: np.asarray(v) for k, v in out.items()}


def observe(weights, weights0, stats: LinearStats, rank_tol: float) -> dict[str, np.ndarray]:
    """Observables for every member of stacked ``weights`` (tuples of (K, ...) arrays), as numpy."""
    return Observer(stats, rank_tol, weights[0].dtype)(weights, weights0)


# ---- distance to the set of global minima ---------------------------------------------------------

def _project_one(weights, A_star, iters):
    """Levenberg-Marquardt projection of ``weights`` onto ``{W_L...W_1 = A*}`` (Euclidean metric).

    Each step is the damped minimum-norm correction ``delta = J^T (J J^T + mu)^{-1} r`` with
    ``r = A* - A`` (``J J^T`` from :func:`ntk_matrix` with the identity metric); ``mu`` shrinks after
    a step that lowers ``||r||`` and grows after one that does not (that step is undone).
    """
    L = len(weights)
    d_out, d_in = A_star.shape
    eye = jnp.eye(d_in, dtype=A_star.dtype)

    def resid(ws):
        left, _ = chain(ws)
        return A_star - left[L]

    def step(carry, _):
        ws, mu, rn = carry
        left, right = chain(ws)
        r = A_star - left[L]
        K = ntk_matrix(left, right, eye)
        scale = jnp.trace(K) / K.shape[0] + 1e-30
        y = jnp.linalg.solve(K + mu * scale * jnp.eye(K.shape[0], dtype=K.dtype), r.reshape(-1)).reshape(d_out, d_in)
        new = tuple(w + right[l + 1].T @ y @ left[l].T for l, w in enumerate(ws))
        rn_new = jnp.linalg.norm(resid(new))
        ok = jnp.isfinite(rn_new) & (rn_new < rn)
        ws = jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), new, ws)
        mu = jnp.where(ok, mu / 3.0, mu * 4.0)
        rn = jnp.where(ok, rn_new, rn)
        return (ws, mu, rn), None

    rn0 = jnp.linalg.norm(resid(weights))
    (ws, _, rn), _ = jax.lax.scan(step, (tuple(weights), jnp.asarray(1.0, A_star.dtype), rn0), None, length=iters)
    dist = jnp.sqrt(sum(jnp.sum((a - b) ** 2) for a, b in zip(ws, weights)))
    return dist, rn


@jax.jit
def _project_stacked(weights, A_star, iters_dummy):
    return jax.vmap(_project_one, in_axes=(0, None, None))(weights, A_star, 60)


def _balanced_global_min(stats: LinearStats, shapes) -> tuple:
    """The minimum-norm global minimum ``W_l`` (balanced, aligned, first hidden units), as numpy."""
    from phaseprobe.dynamics.teacher import aligned_init

    U, s, Vt = np.linalg.svd(stats.A_star)
    r = int(np.sum(s > 1e-4 * max(float(s[0]), 1e-300))) if s.size else 0
    L = len(shapes)
    if L == 1:
        return (np.asarray(stats.A_star),)
    width = shapes[0][0]
    if r == 0:
        return tuple(np.zeros(sh) for sh in shapes)
    return aligned_init(U[:, :r], s[:r], Vt[:r].T, L, width)


def distance_to_global_min(weights, stats: LinearStats, *, rel_tol: float = 1e-3):
    """Distance from ``weights`` (stacked) to the set of global minima ``{W_L...W_1 = A*}``.

    Returns ``(upper, lower)`` per member. ``upper`` is the distance to the nearer of two points
    of the set, so an upper bound: the damped Gauss-Newton projection of ``theta`` (the exact
    nearest point to first order, accurate near the set, as in the lazy regime) and the
    minimum-norm balanced factorisation of ``A*`` (the nearest point as ``theta -> 0``, within
    ``||theta||``). ``lower = max(0, sqrt(L sum_i s_i(A*)^{2/L}) - ||theta||)`` is exact for the norm
    bound (every global minimum has at least the minimum-norm factorisation's norm). In the
    saddle regime the two agree to ``O(||theta_0||)``.
    """
    A_star = jnp.asarray(stats.A_star, weights[0].dtype)
    dist, rn = _project_stacked(tuple(weights), A_star, 0)
    dist = np.asarray(dist, dtype=np.float64)
    rn = np.asarray(rn, dtype=np.float64)
    ok = rn <= rel_tol * max(np.linalg.norm(stats.A_star), 1e-30)
    upper = np.where(ok, dist, np.inf)
    shapes = [tuple(w.shape[1:]) for w in weights]
    g = _balanced_global_min(stats, shapes)
    canon = np.sqrt(sum(np.sum((np.asarray(w, np.float64) - gg[None]) ** 2, axis=tuple(range(1, w.ndim))) for w, gg in zip(weights, g)))
    upper = np.minimum(upper, canon)
    L = len(weights)
    s = np.linalg.svd(stats.A_star, compute_uv=False)
    m = np.sqrt(L * np.sum(s ** (2.0 / L)))
    norm = np.sqrt(sum(np.sum(np.asarray(w, dtype=np.float64) ** 2, axis=tuple(range(1, w.ndim))) for w in weights))
    lower = np.maximum(0.0, m - norm)
    return upper, lower
