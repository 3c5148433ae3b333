"""Saddle indices from Lanczos are exact only when the count is closed by a converged,
non-negative Ritz value; otherwise they are lower bounds, shown ">= n"."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from phaseprobe.geometry import (
    count_negative,
    count_negative_ritz,
    index_label,
    lanczos_operator,
    saddle_index,
)


class _MatOp(eqx.Module):
    A: jax.Array

    def __call__(self, v):
        return self.A @ v


def _matrix(n_neg: int, n: int = 200, seed: int = 0):
    rng = np.random.default_rng(seed)
    spec = np.concatenate([-np.linspace(0.05, 1.0, n_neg), np.linspace(0.05, 3.0, n - n_neg)])
    Q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    return (Q * spec) @ Q.T, spec


@pytest.mark.parametrize("k", [5, 20])
def test_forty_negative_eigenvalues_give_a_lower_bound(k):
    # 40 small negative eigenvalues under a wide positive spectrum: the bottom Ritz values are
    # slow to converge, and among the k smallest some are positive and unconverged (counting
    # signs alone gave 2 and 12, both called exact)
    rng = np.random.default_rng(0)
    n = 200
    spec = np.concatenate([np.linspace(-0.05, -0.002, 40), np.geomspace(0.001, 10.0, n - 40)])
    Q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    A = (Q * spec) @ Q.T
    res = lanczos_operator(_MatOp(jnp.asarray(A, jnp.float32)), n, k, key=0)
    assert res.ritz_residuals is not None and res.ritz_residuals.shape == res.ritz_values.shape
    assert np.any(res.smallest >= 0)  # the case that used to be called exact
    c = count_negative_ritz(res.ritz_values, res.ritz_residuals, k)
    assert not c.exact and 0 <= c.count <= min(k, 40)
    assert c.label == f">= {c.count}"
    # the whole spectrum, counted exactly, has all 40
    assert count_negative(spec).count == 40 and count_negative(spec).exact


def test_two_negative_eigenvalues_and_enough_k_give_exactly_two():
    A, _ = _matrix(2)
    res = lanczos_operator(_MatOp(jnp.asarray(A, jnp.float32)), A.shape[0], 20, key=0)
    c = count_negative_ritz(res.ritz_values, res.ritz_residuals, 20)
    assert c.exact and c.count == 2 and c.label == "2"
    # every counted Ritz value is converged and certainly below the threshold
    th = res.smallest[:2]
    assert np.all(th + res.smallest_residuals[:2] < -c.threshold)
    assert np.all(res.smallest_residuals[:2] <= c.residual_tol)


def test_counting_rules_on_given_ritz_values():
    # converged negatives closed by a converged non-negative value: exact
    c = count_negative_ritz([-2.0, -1.0, 0.5, 3.0], [1e-9, 1e-9, 1e-9, 1e-9])
    assert (c.count, c.exact) == (2, True)
    # the next value up is not converged: the count is not closed
    c = count_negative_ritz([-2.0, -1.0, 0.5, 3.0], [1e-9, 1e-9, 0.4, 1e-9])
    assert (c.count, c.exact) == (2, False)
    # an unconverged negative value is not counted, and the count is a lower bound
    c = count_negative_ritz([-2.0, -1.0, 0.5, 3.0], [1e-9, 0.5, 1e-9, 1e-9])
    assert (c.count, c.exact) == (1, False) and c.label == ">= 1"
    # a tiny negative value (-1e-7 of the scale) is below the relative threshold: not counted
    c = count_negative_ritz([-3e-7, 0.5, 3.0], [1e-12, 1e-12, 1e-12])
    assert (c.count, c.exact) == (0, True) and c.threshold >= 1e-4 * 3.0 - 1e-15
    # every requested value negative: only a lower bound
    c = count_negative_ritz([-2.0, -1.0, -0.5, 3.0], [1e-9] * 4, k=3)
    assert (c.count, c.exact) == (3, False)
    # the exact spectrum: a recorded relative threshold
    e = count_negative([-8.35e-7, 0.2, 1.0, 2.0])
    assert e.count == 0 and e.exact and e.threshold == pytest.approx(max(1e-4, 1000 * np.finfo(np.float32).eps) * 2.0)
    assert index_label(3, True) == "3" and index_label(3, False) == ">= 3"


def test_saddle_index_lanczos_is_a_lower_bound_until_closed():
    A, _ = _matrix(40, n=120, seed=1)
    with jax.enable_x64(True):
        Aj = jnp.asarray(A)
        loss = lambda w: 0.5 * w @ (Aj @ w)  # noqa: E731  Hessian A
        w0 = jnp.zeros(120)
        few = saddle_index(loss, w0, exact=False, k=5, key=0)
        assert few.lower_bound and not few.exact and few.label.startswith(">= ") and few.index <= 5
        assert few.residuals is not None and len(few.residuals) == 5
        full = saddle_index(loss, w0, exact=False, k=60, num_iter=120, key=0)
        assert full.exact and full.index == 40 and full.label == "40"
        ex = saddle_index(loss, w0, exact=True)
        assert ex.exact and ex.index == 40
