"""Geometry toolbox: every quantity against a closed form or an independent computation."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse.linalg
from jax.flatten_util import ravel_pytree

from phaseprobe.errors import PhaseprobeError
from phaseprobe.geometry import (
    GeometryError,
    HessianTooLargeError,
    analyze_minima,
    classify_point,
    curvature_change_points,
    curvature_exact,
    curvature_stochastic,
    escape_test,
    exact_hessian,
    hessian_terms,
    hutchinson,
    hvp,
    lanczos,
    lanczos_operator,
    make_error_fn,
    make_loss_fn,
    match_transitions,
    multilinear_escape_direction,
    params_of,
    penalised_hvp,
    rank_one_chain_direction,
    saddle_index,
    scalar_curvature,
    slq_density,
    u_square,
)
from phaseprobe.geometry.base import to_float64
from phaseprobe.models import DeepLinear, MLP


# ---------------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------------
# One architecture and one data shape throughout, so compiled programs are shared between tests.
def _data(n=48, d=4, c=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)).astype(np.float32), rng.integers(0, c, n).astype(np.int32)


def _mlp(seed=0, width=8, depth=1, act="tanh", bias=True):
    return MLP(4, 3, depth=depth, width=width, activation=act, bias=bias, key=jax.random.PRNGKey(seed))


@eqx.filter_jit
def _call(f, *args):
    """Evaluate ``f(*args)`` compiled (op-by-op evaluation of transformed code is slow)."""
    return f(*args)


@eqx.filter_jit
def _grad(f, p):
    return jax.grad(f)(p)


class _MatOp(eqx.Module):
    A: jax.Array

    def __call__(self, v):
        return self.A @ v


def _flat_loss(loss_fn, params):
    flat, unravel = ravel_pytree(params)
    return (lambda u: loss_fn(unravel(u))), flat


def _whitened_teacher(T):
    """Inputs with X^T X / n = I and targets y = T x: MSE E = 1/2 ||A - T||_F^2."""
    d = T.shape[1]
    X = (np.sqrt(d) * np.eye(d)).astype(np.float32)
    return X, (X @ T.T).astype(np.float32)


def _dln_at(weights, in_dim, out_dim, width):
    m = DeepLinear(in_dim, out_dim, depth=len(weights), width=width, sigma=0.1, key=jax.random.PRNGKey(0))
    return eqx.tree_at(lambda m: m.weights, m, tuple(jnp.asarray(w, jnp.float32) for w in weights))


# ---------------------------------------------------------------------------------------------
# losses, HVP, exact Hessian
# ---------------------------------------------------------------------------------------------
def test_error_fn_chunked_matches_direct_and_trainer():
    from phaseprobe.data import Dataset
    from phaseprobe.train import TrainConfig, Trainer

    x, y = _data()
    m = _mlp()
    p = params_of(m)
    out = np.asarray(jax.vmap(m)(jnp.asarray(x)), np.float64)
    logp = out - np.log(np.sum(np.exp(out), -1, keepdims=True))
    ce = -float(np.mean(logp[np.arange(len(y)), y]))
    mse = float(np.mean(0.5 * np.sum((out - np.eye(3)[y]) ** 2, -1)))
    for chunk in (5, 4096):  # ragged last chunk (48 = 9*5 + 3), one big chunk
        assert abs(float(_call(make_error_fn(m, (x, y), "ce", chunk_size=chunk), p)) - ce) < 1e-5
        assert abs(float(_call(make_error_fn(m, (x, y), "mse", chunk_size=chunk), p)) - mse) < 1e-5
    # equal chunks, fewer padded rows than chunks: 48 examples in chunks of at most 5 are
    # 10 chunks of 5 (2 padded rows), never more than 5 per chunk
    e5 = make_error_fn(m, (x, y), "ce", chunk_size=5)
    assert e5.x.shape[:2] == (10, 5) and float(e5.wts.sum()) == 48
    e20 = make_error_fn(m, (x, y), "ce", chunk_size=20)
    assert e20.x.shape[:2] == (3, 16) and float(e20.wts.sum()) == 48
    # the same E and L_alpha as the trainer's evaluation (one convention project-wide)
    ds = Dataset("toy", x, y, x[:5], y[:5], n_classes=3)
    tr = Trainer(m, ds, TrainConfig(loss="ce", penalty_on="weights"))
    stacked = jax.tree_util.tree_map(lambda a: a[None], p)
    ev = tr.evaluate(stacked, np.array([0.3]))
    L = make_loss_fn(m, ds, "ce", 0.3, penalty_on="weights", chunk_size=8)
    assert abs(float(_call(L.error, p)) - float(ev["train_error"][0])) < 1e-5
    assert abs(float(_call(L, p)) - float(ev["loss"][0])) < 1e-4


def test_hvp_equals_dense_hessian_and_jax_hessian():
    x, y = _data()
    m = _mlp()
    with jax.enable_x64(True):
        p = to_float64(params_of(m))
        E = make_error_fn(m, (x, y), "ce")
        H = exact_hessian(E, p)
        f, flat = _flat_loss(E, p)
        H_ref = np.asarray(jax.jit(jax.hessian(f))(flat))  # forward-over-reverse Jacobian, independent path
        assert H.shape == (flat.size, flat.size)
        np.testing.assert_allclose(H, H_ref, atol=1e-12, rtol=1e-10)
        # batched columns (the accelerator default; remainder batch included) give the same matrix
        np.testing.assert_allclose(exact_hessian(E, p, batch_size=8), H, atol=1e-13)
        # central finite differences of the gradient, column by column (independent of autodiff HVPs)
        g = jax.jit(jax.grad(f))
        h = 1e-5
        for j in (0, 7, flat.size - 1):
            e = np.zeros(flat.size)
            e[j] = h
            fd = (np.asarray(g(flat + e)) - np.asarray(g(flat - e))) / (2 * h)
            np.testing.assert_allclose(H[:, j], fd, atol=1e-7)
        # HVP on pytrees, vmapped over probes
        unravel = ravel_pytree(p)[1]
        V = np.random.default_rng(1).normal(size=(5, flat.size))
        hv = jax.jit(jax.vmap(lambda v: ravel_pytree(hvp(E, p, unravel(v)))[0]))(jnp.asarray(V))
        np.testing.assert_allclose(np.asarray(hv), V @ H, atol=1e-12)


def test_hvp_vmaps_over_ensemble_members():
    x, y = _data()
    ms = [_mlp(seed=s) for s in (0, 1, 2)]
    stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *[params_of(m) for m in ms])
    E = make_error_fn(ms[0], (x, y), "ce")
    n = ravel_pytree(params_of(ms[0]))[0].size
    unravel = ravel_pytree(params_of(ms[0]))[1]
    V = jnp.asarray(np.random.default_rng(2).normal(size=(3, n)), jnp.float32)
    vt = jax.vmap(unravel)(V)
    batched = jax.jit(jax.vmap(lambda p, v: ravel_pytree(hvp(E, p, v))[0]))(stacked, vt)
    for i, m in enumerate(ms):
        H = exact_hessian(E, params_of(m))
        np.testing.assert_allclose(np.asarray(batched[i]), H @ np.asarray(V[i]), rtol=1e-4, atol=1e-5)


def test_penalised_hessian_keeps_mask_term():
    x, y = _data()
    m = _mlp()
    alpha = 0.25
    with jax.enable_x64(True):
        p = to_float64(params_of(m))
        ref = jax.tree_util.tree_map(lambda a: 0.1 * jnp.ones_like(a), p)
        L = make_loss_fn(m, (x, y), "ce", alpha, ref=ref, penalty_on="weights")
        HE, d = hessian_terms(L, p)
        HL = exact_hessian(L, p)
        np.testing.assert_allclose(HL, HE + np.diag(d), atol=1e-12)
        # biases are not penalised: the penalty term is NOT 2 alpha I
        n_bias = sum(int(l.bias.size) for l in m.layers)
        assert np.sum(d == 0.0) == n_bias and np.allclose(d[d > 0], 2 * alpha)
        assert np.abs(HL - (HE + 2 * alpha * np.eye(len(d)))).max() > 0.4
        # the split HVP (data term by autodiff, penalty term exact) equals autodiff of L
        unravel = ravel_pytree(p)[1]
        v = np.random.default_rng(3).normal(size=len(d))
        a = ravel_pytree(_call(penalised_hvp, L, p, unravel(jnp.asarray(v))))[0]
        np.testing.assert_allclose(np.asarray(a), HL @ v, atol=1e-12)


def test_exact_hessian_size_guard():
    big = MLP(64, 10, depth=1, width=80, key=jax.random.PRNGKey(0))  # 6010 parameters
    x = np.zeros((4, 64), np.float32)
    y = np.zeros(4, np.int32)
    E = make_error_fn(big, (x, y), "ce")
    with pytest.raises(HessianTooLargeError) as err:
        exact_hessian(E, params_of(big))
    msg = str(err.value)
    assert isinstance(err.value, PhaseprobeError)
    assert "\n" not in msg and msg.startswith("params:") and "Lanczos" in msg and "6010" in msg
    small = _mlp()
    Es = make_error_fn(small, _data(), "ce")
    with pytest.raises(HessianTooLargeError):
        scalar_curvature(Es, params_of(small), exact=True, max_params=10)
    # auto mode falls back to the stochastic estimate instead of failing
    c = scalar_curvature(Es, params_of(small), max_params=10, n_probes=8)
    assert c.method == "stochastic" and np.isfinite(c.stderr)


@pytest.mark.parametrize(
    "call, field",
    [
        (lambda m, d: make_error_fn(m, d, "hinge"), "loss:"),
        (lambda m, d: make_loss_fn(m, d, "ce", -1.0), "alpha:"),
        (lambda m, d: make_error_fn(m, (d[0], d[1][:3]), "ce"), "data:"),
        (lambda m, d: make_error_fn(m, (d[0], d[0][:, :3]), "ce"), "loss:"),
        (lambda m, d: lanczos(make_error_fn(m, d), params_of(m), 0), "k:"),
        (lambda m, d: hutchinson(make_error_fn(m, d), params_of(m), 1), "n_probes:"),
        (lambda m, d: escape_test(make_error_fn(m, d), params_of(m), eps=[0.1]), "eps:"),
        (lambda m, d: curvature_change_points([1, 2, 3], [1, 2]), "R:"),
    ],
)
def test_bad_input_one_line_errors(call, field):
    with pytest.raises(GeometryError) as err:
        call(_mlp(), _data())
    assert str(err.value).startswith(field) and "\n" not in str(err.value)


# ---------------------------------------------------------------------------------------------
# Lanczos, SLQ, Hutchinson
# ---------------------------------------------------------------------------------------------
def test_lanczos_both_ends_match_eigh_and_eigsh():
    x, y = _data()
    m = _mlp()  # 67 parameters, random init: an indefinite Hessian
    with jax.enable_x64(True):
        p = to_float64(params_of(m))
        E = make_error_fn(m, (x, y), "ce")
        H = exact_hessian(E, p)
        lam = np.linalg.eigvalsh(H)
        assert lam[0] < -1e-3  # both ends are really needed here
        res = lanczos(E, p, 3, num_iter=40, key=1)
        np.testing.assert_allclose(res.largest, lam[::-1][:3], rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(res.smallest, lam[:3], rtol=1e-6, atol=1e-8)
        assert np.all(res.largest_residuals < 1e-5) and np.all(res.smallest_residuals < 1e-5)
        # Ritz vectors are eigenvectors
        for val, vec in zip(res.smallest, res.smallest_vectors):
            np.testing.assert_allclose(H @ vec, val * vec, atol=1e-5)
        la = scipy.sparse.linalg.eigsh(H, k=3, which="LA", return_eigenvectors=False)
        sa = scipy.sparse.linalg.eigsh(H, k=3, which="SA", return_eigenvectors=False)
        np.testing.assert_allclose(np.sort(res.largest), np.sort(la), rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(np.sort(res.smallest), np.sort(sa), rtol=1e-6, atol=1e-8)
    # float32 run (the default precision) agrees to float32 accuracy
    res32 = lanczos(E, params_of(m), 2, num_iter=40, key=1)
    scale = np.abs(lam).max()
    assert np.allclose(res32.largest, lam[::-1][:2], atol=1e-4 * scale)
    assert np.allclose(res32.smallest, lam[:2], atol=1e-4 * scale)


def test_lanczos_bottom_is_not_a_magnitude_list_and_survives_breakdown():
    # spectrum: one small negative eigenvalue hidden under large positive ones
    rng = np.random.default_rng(0)
    n = 50
    spec = np.concatenate([[-0.05], np.linspace(1.0, 10.0, n - 1)])
    Q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    A = (Q * spec) @ Q.T
    mags = spec[np.argsort(-np.abs(spec))][:5]
    assert np.all(mags > 0)  # a largest-magnitude list never shows the negative eigenvalue
    with jax.enable_x64(True):
        op = _MatOp(jnp.asarray(A))  # an operator module: one compilation for every matrix below
        res = lanczos_operator(op, n, 2, num_iter=n, key=0, dtype=jnp.float64)
        assert abs(res.smallest[0] + 0.05) < 1e-10 and abs(res.largest[0] - 10.0) < 1e-10
        # warm start ON an eigenvector: the Krylov space is invariant at once; the run restarts
        res2 = lanczos_operator(op, n, 2, num_iter=n, v0=Q[:, 10], key=0, dtype=jnp.float64)
        assert abs(res2.smallest[0] + 0.05) < 1e-10 and abs(res2.largest[0] - 10.0) < 1e-10
        # an exactly rank-2 operator (many zero eigenvalues): breakdowns, still exact
        B = np.outer(Q[:, 0], Q[:, 0]) * 3.0 - np.outer(Q[:, 1], Q[:, 1]) * 2.0
        res3 = lanczos_operator(_MatOp(jnp.asarray(B)), n, 2, num_iter=n, key=0, dtype=jnp.float64)
        assert abs(res3.largest[0] - 3.0) < 1e-10 and abs(res3.smallest[0] + 2.0) < 1e-10


def test_slq_density_closed_form_on_diagonal_quadratic():
    lam = np.linspace(-1.0, 3.0, 40)
    with jax.enable_x64(True):
        w = jnp.asarray(np.random.default_rng(0).normal(size=40))
        loss = lambda p: 0.5 * jnp.sum(jnp.asarray(lam) * p * p)  # noqa: E731  Hessian = diag(lam)
        dens = slq_density(loss, w, n_probes=4, num_iter=40, key=0)
        # Rademacher probes have v_i^2 = 1: the quadrature moments are exact for a diagonal H
        assert abs(dens.moment(1) - lam.mean()) < 1e-12
        assert abs(dens.moment(2) - np.mean(lam**2)) < 1e-12
        assert abs(dens.integral() - 1.0) < 1e-6
        assert abs(dens.grid_moment(1) - lam.mean()) < 1e-6
        np.testing.assert_allclose(dens.weights.sum(axis=1), 1.0, atol=1e-12)
        te = hutchinson(loss, w, 16, key=1)
        assert abs(te.tr_H - lam.sum()) < 1e-10 and te.tr_H_se < 1e-10
        # a diagonal Hessian gives every Rademacher probe the same v^T H v (SE 0 whatever the
        # probes): rotate it, so that the probes matter. Var(v^T A v) = 2 sum_{i != j} A_ij^2 and
        # the probe-mean moments must agree with the closed forms within their standard errors
        Q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(40, 40)))
        A = (Q * lam) @ Q.T
        Aj = jnp.asarray(A)
        rot = lambda p: 0.5 * p @ (Aj @ p)  # noqa: E731
        te = hutchinson(rot, w, 400, key=2)
        off = A - np.diag(np.diag(A))
        se_true = np.sqrt(2.0 * np.sum(off**2) / 400)
        assert 0.85 * se_true < te.tr_H_se < 1.15 * se_true
        assert abs(te.tr_H - lam.sum()) < 3 * te.tr_H_se and abs(te.tr_H2 - np.sum(lam**2)) < 3 * te.tr_H2_se
        assert abs(te.tr_H_sq - lam.sum() ** 2) < 3 * te.tr_H_sq_se
        d2 = slq_density(rot, w, n_probes=64, num_iter=40, key=3)
        # the first SLQ moment of one probe is v^T H v / n: its SE is the Hutchinson one over n
        assert 0.7 < d2.moment_se(1) / (se_true * np.sqrt(400 / 64) / 40) < 1.3
        assert abs(d2.moment(1) - lam.mean()) < 3 * d2.moment_se(1)
        assert abs(d2.moment(2) - np.mean(lam**2)) < 3 * d2.moment_se(2)


def test_slq_and_hutchinson_on_mlp_within_three_standard_errors():
    x, y = _data()
    m = _mlp()
    with jax.enable_x64(True):
        p = to_float64(params_of(m))
        E = make_error_fn(m, (x, y), "ce")
        H = exact_hessian(E, p)
        n = H.shape[0]
        tr, tr2 = np.trace(H), np.sum(H * H)
        dens = slq_density(E, p, n_probes=64, num_iter=30, key=3)
        assert abs(dens.integral() - 1.0) < 1e-4
        assert abs(dens.grid_moment(1) - dens.moment(1)) < 1e-4 * abs(dens.moment(1)) + 1e-8
        assert abs(dens.moment(1) - tr / n) < 3 * dens.moment_se(1)
        assert abs(dens.moment(2) - tr2 / n) < 3 * dens.moment_se(2)
        te = hutchinson(E, p, 200, key=4)
        # vectorised probe batches (the accelerator default) draw the same probes
        te7 = hutchinson(E, p, 200, key=4, probe_batch=7)
        np.testing.assert_allclose(te7.samples_vHv, te.samples_vHv, rtol=1e-10, atol=1e-12)
        dens4 = slq_density(E, p, n_probes=64, num_iter=30, key=3, probe_batch=4)
        np.testing.assert_allclose(dens4.nodes, dens.nodes, atol=1e-8)
        assert abs(te.tr_H - tr) < 3 * te.tr_H_se
        assert abs(te.tr_H2 - tr2) < 3 * te.tr_H2_se
        assert abs(te.tr_H_sq - tr**2) < 3 * te.tr_H_sq_se
        # the U-statistic is the mean over ordered pairs i != j of a_i a_j
        a = te.samples_vHv[:20]
        brute = np.mean([a[i] * a[j] for i in range(20) for j in range(20) if i != j])
        assert abs(u_square(a) - brute) < 1e-9 * abs(brute)


# ---------------------------------------------------------------------------------------------
# scalar curvature: closed forms that do not use the Gauss-equation formula
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [3, 4, 5])
def test_curvature_of_hemisphere_is_n_times_n_minus_one(n):
    rng = np.random.default_rng(n)
    with jax.enable_x64(True):
        f = lambda x: jnp.sqrt(1.0 - jnp.sum(x * x))  # noqa: E731  upper unit hemisphere, a round S^n
        for _ in range(3):
            x0 = rng.normal(size=n)
            x0 *= rng.uniform(0.2, 0.8) / np.linalg.norm(x0)
            c = scalar_curvature(f, jnp.asarray(x0), exact=True)
            assert c.grad_norm > 0.1
            assert abs(c.R - n * (n - 1)) < 1e-8 * n * n


def _gauss_2d(fx, fy, fxx, fyy, fxy):
    return 2.0 * (fxx * fyy - fxy**2) / (1 + fx**2 + fy**2) ** 2


@pytest.mark.parametrize(
    "f, derivs",
    [
        (lambda x, y: 0.7 * x**2 + 1.3 * y**2, lambda x, y: (1.4 * x, 2.6 * y, 1.4, 2.6, 0.0)),
        (lambda x, y: x**2 - y**2, lambda x, y: (2 * x, -2 * y, 2.0, -2.0, 0.0)),
        (lambda x, y: x * y, lambda x, y: (y, x, 0.0, 0.0, 1.0)),
        (lambda x, y: jnp.sin(x) * jnp.cos(y),
         lambda x, y: (np.cos(x) * np.cos(y), -np.sin(x) * np.sin(y), -np.sin(x) * np.cos(y),
                       -np.sin(x) * np.cos(y), -np.cos(x) * np.sin(y))),
    ],
    ids=["paraboloid", "saddle", "monkey-free-saddle-xy", "sin-cos"],
)
def test_curvature_of_2d_graphs_is_twice_gauss_curvature(f, derivs):
    with jax.enable_x64(True):
        for pt in [(0.3, -0.5), (1.1, 0.4), (-0.7, 0.9)]:
            c = scalar_curvature(lambda w: f(w[0], w[1]), jnp.asarray(pt), exact=True)
            expect = _gauss_2d(*derivs(*pt))
            assert abs(c.R - expect) < 1e-10 * max(1.0, abs(expect))
            assert c.grad_norm > 0.0


def test_stochastic_curvature_within_three_standard_errors():
    x, y = _data()
    m = _mlp()
    with jax.enable_x64(True):
        p = to_float64(params_of(m))
        for lossf in (make_error_fn(m, (x, y), "ce"), make_loss_fn(m, (x, y), "ce", 0.05, penalty_on="weights")):
            ex = scalar_curvature(lossf, p, exact=True)
            st = scalar_curvature(lossf, p, exact=False, n_probes=300, key=5)
            assert ex.method == "exact" and st.method == "stochastic"
            assert st.stderr > 0 and abs(st.R - ex.R) < 3 * st.stderr
            assert abs(st.gHg - ex.gHg) < 1e-9 * max(1, abs(ex.gHg)) and abs(st.gH2g - ex.gH2g) < 1e-9 * max(1, ex.gH2g)
            # at a point with g != 0 the gradient terms matter (DESIGN pitfall 2)
            g2 = ex.grad_norm**2
            critical_only = (ex.tr_H**2 - ex.tr_H2)
            assert abs(ex.R - critical_only) > 1e-3 * abs(critical_only) or g2 < 1e-12


_COVERAGE_POINTS = [
    # (name, f(w), point): closed-form R (hemisphere: n (n - 1); 2-D graph: 2 K); none has a
    # diagonal Hessian, where Rademacher probes give the exact value with SE 0
    ("hemisphere-2", lambda w: jnp.sqrt(1.0 - jnp.sum(w * w)), (0.3, -0.5)),
    ("hemisphere-2-top", lambda w: jnp.sqrt(1.0 - jnp.sum(w * w)), (0.05, 0.02)),
    ("hemisphere-3", lambda w: jnp.sqrt(1.0 - jnp.sum(w * w)), (0.2, 0.4, -0.3)),
    ("hemisphere-4", lambda w: jnp.sqrt(1.0 - jnp.sum(w * w)), (0.1, 0.2, 0.3, -0.2)),
    ("sin-cos", lambda w: jnp.sin(w[0]) * jnp.cos(w[1]), (1.1, 0.4)),
    ("sin-cos-b", lambda w: jnp.sin(w[0]) * jnp.cos(w[1]), (-0.7, 0.9)),
    ("xy", lambda w: w[0] * w[1], (0.3, -0.5)),
]


def _closed_form_R(name, pt):
    x = np.asarray(pt, np.float64)
    if name.startswith("hemisphere"):
        return x.size * (x.size - 1.0)
    if name.startswith("sin-cos"):
        a, b = x
        return _gauss_2d(np.cos(a) * np.cos(b), -np.sin(a) * np.sin(b), -np.sin(a) * np.cos(b),
                         -np.sin(a) * np.cos(b), -np.cos(a) * np.sin(b))
    return _gauss_2d(x[1], x[0], 0.0, 0.0, 1.0)


def test_stochastic_curvature_standard_error_covers_95_percent():
    # 400 independent 64-probe estimates at each of seven points: the fraction within 2 SE of the
    # closed-form R must be that of a normal error bar (~95 %); the delete-one jackknife of the
    # quadratic estimator collapsed where its linear term vanishes (72 % at the xy point)
    draws, n_probes = 400, 64
    inside, lines = [], []
    with jax.enable_x64(True):
        for j, (name, f, pt) in enumerate(_COVERAGE_POINTS):
            x = jnp.asarray(pt, jnp.float64)
            n = x.shape[0]
            g = np.asarray(jax.grad(f)(x), np.float64)
            hv = lambda v: jax.jvp(jax.grad(f), (x,), (v,))[1]  # noqa: E731,B023
            V = jax.random.rademacher(jax.random.PRNGKey(100 + j), (draws, n_probes, n), dtype=jnp.float64)
            HV = jax.vmap(jax.vmap(hv))(V)
            a = np.asarray(jnp.sum(V * HV, axis=-1))
            b = np.asarray(jnp.sum(HV * HV, axis=-1))
            Hg = np.asarray(hv(jnp.asarray(g)), np.float64)
            est = np.array([curvature_stochastic(a[d], b[d], g, Hg) for d in range(draws)])
            R = _closed_form_R(name, pt)
            err = est[:, 0] - R
            frac = float(np.mean(np.abs(err) < 2.0 * est[:, 1]))
            inside.append(frac)
            lines.append(f"{name}: {frac:.3f}")
            assert np.all(est[:, 1] > 0)
            # unbiased: the mean of 400 estimates lies within 4 of its standard errors of R
            assert abs(err.mean()) < 4.0 * err.std() / np.sqrt(draws), name
            # no point far below: in 2-D, v^T H v takes two values only and the error is not normal
            # (84 % at sin-cos-b), but a collapsed error bar falls much lower
            assert frac >= 0.8, lines
    pooled = float(np.mean(inside))
    print(f"fraction within 2 SE: pooled {pooled:.3f}; " + ", ".join(lines))
    assert 0.93 <= pooled <= 0.97, (pooled, lines)


# ---------------------------------------------------------------------------------------------
# saddles
# ---------------------------------------------------------------------------------------------
def test_two_layer_linear_origin_is_strict_saddle_with_index_width_times_rank():
    # oracle #5 of the deep-linear digest: index = width * rank(T), most negative eigenvalue -s_1
    T = np.diag([3.0, 2.0, 0.0]).astype(np.float32)  # rank 2
    X, Y = _whitened_teacher(T)
    width = 4
    m = _dln_at([np.zeros((width, 3)), np.zeros((3, width))], 3, 3, width)
    E = make_error_fn(m, (X, Y), "mse")
    p = params_of(m)
    assert abs(float(E(p)) - 0.5 * np.sum(T**2)) < 1e-6
    si = saddle_index(E, p)
    assert si.index == width * 2 and abs(si.min_eig + 3.0) < 1e-5
    pc = classify_point(E, p, key=0)
    assert pc.kind == "strict_saddle" and pc.index == 8
    # Lanczos bottom end gives the same index on the same point
    sl = saddle_index(E, p, exact=False, k=12, num_iter=24, key=1)
    assert sl.index == 8 and not sl.lower_bound


def test_three_layer_linear_origin_is_higher_order_saddle_not_minimum():
    T = np.diag([3.0, 2.0, 1.0]).astype(np.float32)
    X, Y = _whitened_teacher(T)
    m = _dln_at([np.zeros((3, 3))] * 3, 3, 3, 3)
    E = make_error_fn(m, (X, Y), "mse")
    p = params_of(m)
    H = exact_hessian(E, p)
    assert np.all(H == 0.0)  # a Hessian test alone would call this a minimum
    pc = classify_point(E, p, key=0)
    assert pc.kind == "higher_order_saddle" and pc.index == 0
    assert abs(pc.order - 3.0) < 0.05
    # along the rank-one balanced direction aligned with T's top singular pair:
    # L(eps v) - L(0) = -s_1 L^(-L/2) eps^L exactly up to O(eps^(2L))
    v = rank_one_chain_direction(p, np.eye(3)[0], np.eye(3)[0], key=2)
    r = escape_test(E, p, v)
    plus = r.directions[0]
    assert plus.escapes and abs(plus.order - 3.0) < 1e-3
    assert abs(plus.coef + 3.0 * 3.0**-1.5) < 1e-3
    # the built-in multilinear candidate finds that optimal escape by itself
    u = multilinear_escape_direction(E, p, key=3)
    ru = escape_test(E, p, u)
    best = min(ru.directions, key=lambda d: d.coef)
    assert abs(best.coef + 3.0 * 3.0**-1.5) < 1e-3


def test_three_layer_rank_one_saddle_vs_global_minimum():
    T = np.diag([3.0, 2.0, 1.0]).astype(np.float32)
    X, Y = _whitened_teacher(T)
    a = 3.0 ** (1.0 / 3.0)
    W = np.zeros((3, 3))
    W[0, 0] = a
    sad = _dln_at([W] * 3, 3, 3, 3)  # balanced aligned rank-1 critical point: PSD Hessian
    E = make_error_fn(sad, (X, Y), "mse")
    ps = params_of(sad)
    assert abs(float(E(ps)) - 0.5 * (4 + 1)) < 1e-5  # plateau 1/2 sum_{i>1} s_i^2
    pc = classify_point(E, ps, key=0)
    assert pc.index == 0 and pc.min_eig > -pc.tol
    assert pc.kind == "higher_order_saddle" and abs(pc.order - 3.0) < 0.1
    # the explicit escape: a rank-one direction in the second mode
    V = rank_one_chain_direction(ps, np.eye(3)[1], np.eye(3)[1], key=1)
    Vt = jax.tree_util.tree_leaves(V)
    V = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(ps), [
        jnp.asarray(np.outer(np.eye(3)[1], np.eye(3)[1]) / np.sqrt(3), v.dtype) for v in Vt])
    r = escape_test(E, ps, V)
    assert r.directions[0].escapes and abs(r.directions[0].coef + 2.0 * 3.0**-1.5) < 1e-3
    # the global minimum (A = T, balanced) is a minimum: PSD and no escape found
    mn = _dln_at([np.diag(np.diag(T) ** (1.0 / 3.0))] * 3, 3, 3, 3)
    pm = classify_point(E, params_of(mn), key=0)
    assert pm.kind == "minimum" and pm.order is None


def test_not_critical_and_strict_saddle_of_a_penalised_toy():
    # 1-D double well with an L2 anchor: E(x) = 1 - 0.9 exp(-(x-3)^2/0.5) - 0.5 exp(-(x-1)^2/0.5)
    with jax.enable_x64(True):
        E = lambda w: 1 - 0.9 * jnp.exp(-((w[0] - 3) ** 2) / 0.5) - 0.5 * jnp.exp(-((w[0] - 1) ** 2) / 0.5)  # noqa: E731
        b = 0.2
        L = lambda w: E(w) + 0.5 * b * w[0] ** 2  # noqa: E731
        from scipy.optimize import brentq

        dL = jax.jit(jax.grad(lambda z: L(jnp.array([z]))))
        xs = np.linspace(1.5, 2.8, 2001)
        gs = np.asarray(jax.jit(jax.vmap(dL))(jnp.asarray(xs)))
        i = int(np.argmin(np.abs(gs)))  # the saddle between the two wells (E'' < -b there)
        xstar = brentq(lambda x: float(dL(x)), xs[max(i - 5, 0)], xs[i + 5], xtol=1e-14)
        pc = classify_point(L, jnp.array([xstar]), key=0)
        assert pc.kind == "strict_saddle" and pc.index == 1
        pc2 = classify_point(L, jnp.array([2.0 if abs(xstar - 2.0) > 0.1 else 2.5]), key=0)
        assert pc2.kind == "not_critical"


# ---------------------------------------------------------------------------------------------
# along a path
# ---------------------------------------------------------------------------------------------
def test_analyze_minima_exact_and_stochastic_agree():
    x, y = _data()
    ms = [_mlp(seed=s) for s in (0, 1, 2)]
    stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *ms)
    alphas = np.array([0.0, 0.05, 0.5])
    ex = analyze_minima(stacked, (x, y), "ce", alphas, penalty_on="weights", lanczos_k=2)
    ex_list = analyze_minima(ms, (x, y), "ce", alphas, penalty_on="weights", lanczos_k=2)
    np.testing.assert_allclose(ex["R_E"], ex_list["R_E"], rtol=1e-6)
    assert (ex["method"] == "exact").all() and len(ex) == 3
    for i, m in enumerate(ms):
        p = params_of(m)
        L = make_loss_fn(m, (x, y), "ce", alphas[i], penalty_on="weights")
        HE, d = hessian_terms(L, p)
        HL = HE + np.diag(d)
        gE = np.asarray(ravel_pytree(_grad(L.error, p))[0], np.float64)
        gL = np.asarray(ravel_pytree(_grad(L, p))[0], np.float64)
        lamL = np.linalg.eigvalsh(HL)
        assert abs(ex["R_E"][i] - curvature_exact(gE, HE)) < 1e-6 * max(1, abs(ex["R_E"][i]))
        assert abs(ex["R_L"][i] - curvature_exact(gL, HL)) < 1e-6 * max(1, abs(ex["R_L"][i]))
        assert abs(ex["lambda_min_L"][i] - lamL[0]) < 1e-5 and abs(ex["lambda_max_L"][i] - lamL[-1]) < 1e-5
        assert ex["saddle_index_L"][i] == int(np.sum(lamL < -ex["tol"][i]))
        assert abs(ex["grad_norm_L"][i] - np.linalg.norm(gL)) < 1e-5
        assert abs(ex["L"][i] - float(_call(L, p))) < 1e-5
    # an anchored penalty: with ref = member 0's own weights its distance is 0 and L = E there
    anc = analyze_minima(stacked, (x, y), "ce", alphas, refs=params_of(ms[0]), penalty_on="weights", lanczos_k=2)
    assert anc["dist_ref"][0] == 0.0 and anc["L"][0] == anc["E"][0]
    La = make_loss_fn(ms[2], (x, y), "ce", alphas[2], ref=params_of(ms[0]), penalty_on="weights")
    assert abs(anc["L"][2] - float(_call(La, params_of(ms[2])))) < 1e-5
    n = ex["n_params"][0]
    st = analyze_minima(stacked, (x, y), "ce", alphas, penalty_on="weights", exact=False, n_probes=200,
                        lanczos_k=2, num_iter=n, key=7)
    assert (st["method"] == "stochastic").all()
    for col in ("R_E", "R_L"):
        assert np.all(np.abs(st[col] - ex[col]) < 3 * st[col + "_se"])
    np.testing.assert_allclose(st["lambda_max_L"], ex["lambda_max_L"], rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(st["lambda_min_L"], ex["lambda_min_L"], rtol=1e-3, atol=1e-4)
    assert np.all(np.abs(st["tr_H_E"] - ex["tr_H_E"]) < 3 * st["tr_H_E_se"])


def test_change_points_sign_jump_kink_and_matching():
    alpha = np.geomspace(1e-4, 1e0, 41)
    x = np.log10(alpha)
    # smooth, crossing zero at alpha = 1e-2: one sign change, nothing else
    cp = curvature_change_points(alpha, (x + 2.0) * (1 + 0.1 * x**2))
    assert list(cp["kind"]) == ["sign_change"] and abs(np.log10(cp["alpha"][0]) + 2.0) < 1e-9
    # first-order transition: R jumps to exactly 0 (the w = 0 phase), no sign change
    R = np.where(alpha < 3e-2, 4.0 + 0.5 * x, 0.0)
    cp = curvature_change_points(alpha, R)
    assert list(cp["kind"]) == ["jump"]
    assert alpha[cp["i_left"][0]] < 3e-2 <= alpha[cp["i_right"][0]]
    # continuous transition: a kink at alpha = 1e-3 (a grid point)
    R = np.abs(x + 3.0) + 1.0
    cp = curvature_change_points(alpha, R)
    assert list(cp["kind"]) == ["kink"] and abs(np.log10(cp["alpha"][0]) + 3.0) < 1e-9
    # a jump hidden in noise that its standard errors cannot resolve is flagged insignificant
    cp = curvature_change_points(alpha, np.where(alpha < 3e-2, 1.0, 0.0), R_se=np.full(41, 1.0))
    assert list(cp["kind"]) == ["jump"] and not cp["significant"][0]
    # matching transitions to change points in log10 alpha
    cps = curvature_change_points(alpha, np.where(alpha < 3e-2, 4.0 + 0.5 * x, 0.0))
    mt = match_transitions([2.5e-2, 1e-3], cps, max_log10_distance=0.2)
    assert mt["kind"][0] == "jump" and mt["matched"][0] and not mt["matched"][1]
    assert abs(mt["log10_distance"][1] - abs(np.log10(cps["alpha"][0]) + 3.0)) < 1e-12
    empty = match_transitions([1e-2], [])
    assert not empty["matched"][0] and np.isnan(empty["change_alpha"][0])
