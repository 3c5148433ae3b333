"""Saddles of the unregularised error ``E`` between two basins, and Hessian spectra along paths.

:func:`refine_saddle` starts from a point (the highest-error point of a probe's jump segment)
and runs a few steps of a saddle search on ``E`` itself:

* ``method="gad"`` (default): gentlest-ascent / minimum-mode following. With ``v`` the bottom
  eigenvector of ``H = grad^2 E`` (Lanczos on the **bottom end**, warm-started from the previous
  step) the step is ``x <- x + eta (-g + 2 (g.v) v)``: uphill along ``v``, downhill in every
  other direction, so it converges to index-1 saddles. ``eta = 1 / max|lambda|`` (the top Ritz
  value of the same run), capped at ``max_step`` in norm.
* ``method="gradnorm"``: gradient descent on ``|grad E|^2 / 2`` (its gradient is ``H g``, one
  Hessian-vector product); it converges to the nearest critical point of any index.

Small models (up to ``max_params`` parameters, default 5000) then get a few Newton steps on
``grad E = 0`` with the exact Hessian (quadratic convergence to the critical point found).
The index is the number of eigenvalues of ``H`` below ``-tol``, computed directly at the bottom
end (dense ``eigh`` for small models, bottom Lanczos Ritz values otherwise; see
:func:`phaseprobe.geometry.saddle_index`), never inferred from a largest-magnitude list.

Cost in per-sample gradient evaluations: a gradient over n samples costs n, a Hessian-vector
product 2n (forward-over-reverse), a Lanczos run of m steps 2nm, the dense Hessian 2nP.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from phaseprobe.geometry import exact_hessian, lanczos, saddle_index
from phaseprobe.geometry.base import DEFAULT_MAX_PARAMS
from phaseprobe.paths.landscape import PathError

HVP_COST = 2.0


@dataclass
class SaddleResult:
    """A refined critical point of E: where, how high, how steep, its index and bottom spectrum."""

    x: np.ndarray
    error: float
    grad_norm: float
    start_error: float
    start_grad_norm: float
    index: int
    index_lower_bound: bool
    negative_eigs: np.ndarray
    bottom_eigs: np.ndarray
    top_eig: float
    steps: int
    newton_steps: int
    grad_evals: float
    method: str
    tol: float
    history: list = field(default_factory=list, repr=False)

    def row(self) -> dict:
        return {
            "saddle_error": self.error, "saddle_grad_norm": self.grad_norm, "saddle_start_error": self.start_error,
            "saddle_start_grad_norm": self.start_grad_norm, "saddle_index": self.index,
            "saddle_index_lower_bound": self.index_lower_bound,
            "saddle_negative_eigs": " ".join(f"{v:.4g}" for v in self.negative_eigs),
            "saddle_min_eig": float(self.bottom_eigs[0]) if len(self.bottom_eigs) else float("nan"),
            "saddle_top_eig": self.top_eig, "saddle_steps": self.steps, "saddle_newton_steps": self.newton_steps,
            "saddle_grad_evals": self.grad_evals, "saddle_method": self.method,
        }


def _samples(land, subset):
    return int(min(subset, land.n_samples)) if subset else int(land.n_samples)


def refine_saddle(land, x0, *, method: str = "gad", steps: int = 30, subset: int | None = None, num_iter: int = 20,
                  k: int = 8, step_size: float | None = None, max_step: float | None = None, grad_tol: float = 0.0,
                  newton_steps: int = 8, max_params: int = DEFAULT_MAX_PARAMS, key=0) -> SaddleResult:
    """A few saddle-search steps on E from ``x0`` (flat vector); see the module docstring.

    ``subset`` evaluates E on the first ``subset`` training samples (networks); ``num_iter``
    Lanczos steps per GAD step; ``k`` bottom eigenvalues reported; ``grad_tol`` stops early.
    """
    if method not in ("gad", "gradnorm"):
        raise PathError(f"saddle_method: unknown '{method}'; use 'gad' or 'gradnorm'")
    if not (isinstance(steps, (int, np.integer)) and steps >= 0):
        raise PathError(f"saddle_steps: must be an integer >= 0, got {steps!r}")
    E, dt = land.error_fn(subset)
    n_samp = _samples(land, subset)
    dim = int(land.dim)
    m = int(min(num_iter, dim))
    cost = 0.0
    with land.precision():
        vg = jax.jit(jax.value_and_grad(E))
        hvp_j = jax.jit(lambda x, u: jax.jvp(jax.grad(E), (x,), (u,))[1])
        x = jnp.asarray(np.asarray(x0), dt)
        e0, g0 = vg(x)
        cost += n_samp
        start_e, start_g = float(e0), float(jnp.linalg.norm(g0))
        best = (start_g, np.asarray(x), float(e0))
        hist = [start_g]
        v = None
        lam_top = None
        rng = jax.random.PRNGKey(int(key))
        it = 0
        for it in range(int(steps)):
            e, g = (e0, g0) if it == 0 else vg(x)
            if it > 0:
                cost += n_samp
            gn = float(jnp.linalg.norm(g))
            if gn < best[0]:
                best = (gn, np.asarray(x), float(e))
            hist.append(gn)
            if not np.isfinite(gn) or gn <= grad_tol:
                break
            if method == "gad" or lam_top is None:
                res = lanczos(E, x, 1, num_iter=m, v0=v, key=jax.random.fold_in(rng, it))
                cost += HVP_COST * n_samp * m
                vv = jnp.asarray(res.smallest_vectors[0], dt)
                v = vv
                lam_top = max(abs(float(res.largest[0])), abs(float(res.smallest[0])), 1e-12)
            eta = (1.0 / lam_top) if step_size is None else float(step_size)
            if method == "gad":
                d = -g + 2.0 * jnp.vdot(g, v) * v
            else:
                hg = hvp_j(x, g)
                cost += HVP_COST * n_samp
                d = -hg / lam_top
            step = eta * d
            sn = float(jnp.linalg.norm(step))
            if max_step is not None and sn > max_step:
                step = step * (max_step / sn)
            x = x + step
        e, g = vg(x)
        cost += n_samp
        gn = float(jnp.linalg.norm(g))
        if gn < best[0]:
            best = (gn, np.asarray(x), float(e))
        hist.append(gn)
        gbest, xb, eb = best
        x = jnp.asarray(xb, dt)
        n_newton = 0
        if dim <= max_params and newton_steps > 0:
            _, g = vg(x)
            cost += n_samp
        if dim <= max_params and newton_steps > 0:
            for _ in range(int(newton_steps)):
                H = exact_hessian(E, x, max_params=max_params)
                cost += HVP_COST * n_samp * dim
                lam, V = np.linalg.eigh(H.astype(np.float64))
                gv = np.asarray(g, np.float64)
                keep = np.abs(lam) > 1e-10 * max(np.abs(lam).max(), 1e-30)
                dx = -(V[:, keep] @ ((V[:, keep].T @ gv) / lam[keep]))
                xn = x + jnp.asarray(dx, dt)
                en, gnew = vg(xn)
                cost += n_samp
                gnn = float(jnp.linalg.norm(gnew))
                if not np.isfinite(gnn) or gnn >= gbest:
                    break
                x, g, gbest, eb = xn, gnew, gnn, float(en)
                n_newton += 1
                hist.append(gnn)
                if gnn == 0.0:
                    break
        si = saddle_index(E, x, k=k, key=int(key), max_params=max_params)
        cost += HVP_COST * n_samp * (dim if si.method == "exact" else (si.eigenvalues.size * 4 + 20))
        xb = np.asarray(x)
    bottom = np.asarray(si.eigenvalues)[: int(k)]
    neg = bottom[bottom < -si.tol]
    return SaddleResult(x=xb, error=eb, grad_norm=gbest, start_error=start_e, start_grad_norm=start_g, index=int(si.index),
                        index_lower_bound=bool(si.lower_bound), negative_eigs=neg, bottom_eigs=bottom, top_eig=float(si.max_eig),
                        steps=int(it + 1) if steps else 0, newton_steps=n_newton, grad_evals=cost, method=method, tol=float(si.tol),
                        history=hist)


def bottom_eigs(land, x, *, k: int = 1, num_iter: int = 40, subset: int | None = None, max_params: int = DEFAULT_MAX_PARAMS,
                key=0) -> tuple[np.ndarray, np.ndarray]:
    """``(bottom k, top k)`` eigenvalues of ``grad^2 E`` at ``x``: dense for small models, else Lanczos (both ends)."""
    E, dt = land.error_fn(subset)
    with land.precision():
        xj = jnp.asarray(np.asarray(x), dt)
        if land.dim <= max_params:
            lam = np.linalg.eigvalsh(exact_hessian(E, xj, max_params=max_params).astype(np.float64))
            return lam[:k], lam[::-1][:k]
        res = lanczos(E, xj, k, num_iter=max(int(num_iter), k), key=int(key))
        return np.asarray(res.smallest), np.asarray(res.largest)


def path_spectra(land, points: np.ndarray, *, k: int = 5, num_iter: int = 40, subset: int | None = None,
                 max_params: int = DEFAULT_MAX_PARAMS, key=0) -> pd.DataFrame:
    """Bottom and top ``k`` Hessian eigenvalues of the **unregularised** E at every point.

    Large models use Lanczos at both ends directly (the bottom end is computed, never inferred
    from a largest-magnitude list); each run is warm-started from the previous point's bottom
    Ritz vector.
    """
    E, dt = land.error_fn(subset)
    rows = []
    v0 = None
    with land.precision():
        for i, x in enumerate(np.asarray(points)):
            xj = jnp.asarray(x, dt)
            if land.dim <= max_params:
                lam = np.linalg.eigvalsh(exact_hessian(E, xj, max_params=max_params).astype(np.float64))
                lo, hi = lam[:k], lam[::-1][:k]
            else:
                res = lanczos(E, xj, k, num_iter=max(int(num_iter), k), v0=v0, key=jax.random.fold_in(jax.random.PRNGKey(int(key)), i))
                lo, hi = np.asarray(res.smallest), np.asarray(res.largest)
                v0 = res.smallest_vectors[0]
            row = {"point": i}
            row.update({f"hess_min_{j + 1}": float(v) for j, v in enumerate(lo)})
            row.update({f"hess_max_{j + 1}": float(v) for j, v in enumerate(hi)})
            rows.append(row)
    return pd.DataFrame(rows)
