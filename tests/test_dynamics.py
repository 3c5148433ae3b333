"""Deep-linear dynamics against closed forms (loss convention: mean 1/2 ||f(x) - y||^2, time = lr x steps).

Oracles: Saxe et al. (2014) sigmoidal mode trajectories; the deep aligned mode-time quadrature;
plateau levels 1/2 sum_{i>k} s_i^2 with singular values learned largest first; the Hessian of
the two-layer rank-k saddle (index (w-k)(r-k), lowest eigenvalue -s_{k+1}); no negative
eigenvalue but an order-L escape at depth >= 3; escape times log(1/sigma)/s_k (two layers) and
~ sigma^-(L-2) (three); the lazy regime's vanishing displacement.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from phaseprobe.dynamics.observe import distance_to_global_min, linear_stats, observe
from phaseprobe.dynamics.phase import PhaseGridSpec, locate_transition, run_gamma_width_grid, width_slopes
from phaseprobe.dynamics.plateaus import analyze_member, certify_saddle, detect_plateaus, loss_function, oracle_escape_times
from phaseprobe.dynamics.run import IntegrateConfig, dln_ensemble, integrate, stack_weights, with_weights
from phaseprobe.dynamics.teacher import (
    DynamicsError,
    aligned_init,
    deep_mode_time,
    make_teacher,
    min_norm_sq,
    plateau_levels,
    saxe_half_time,
    saxe_mode_strength,
)
from phaseprobe.errors import PhaseprobeError

S3 = np.array([4.0, 2.0, 1.0])


@pytest.fixture(scope="module")
def teacher():
    return make_teacher(S3, 5, 5, seed=0)


def _ensemble(L, width, sigmas, key=3, d=5):
    keys = np.stack([np.asarray(jax.random.PRNGKey(key))] * len(sigmas))
    return dln_ensemble(d, d, L, width, sigmas, keys)


# ---- data and conventions ----------------------------------------------------------------------

def test_teacher_is_whitened_and_levels_are_the_oracle(teacher):
    x, y = teacher.x_train.astype(np.float64), teacher.y_train.astype(np.float64)
    n = x.shape[0]
    np.testing.assert_allclose(x.T @ x / n, np.eye(5), atol=2e-6)
    A = teacher.meta["A"]
    np.testing.assert_allclose(np.linalg.svd(A, compute_uv=False)[:3], S3, rtol=1e-12)
    st = linear_stats(teacher)
    assert st.rank == 3
    np.testing.assert_allclose(st.A_star, A, atol=1e-5)
    np.testing.assert_allclose(st.levels(), [10.5, 2.5, 0.5, 0.0], atol=1e-5)
    np.testing.assert_allclose(plateau_levels(S3), [10.5, 2.5, 0.5, 0.0])
    # the balanced aligned global minimum has the minimum norm L sum s_i^(2/L)
    for L in (2, 3):
        ws = aligned_init(teacher.meta["U"], S3, teacher.meta["V"], L, 6)
        assert sum(np.sum(w ** 2) for w in ws) == pytest.approx(min_norm_sq(S3, L), rel=1e-12)


def test_closed_form_loss_is_the_trainers_mse():
    """E(A) = 1/2 tr((A-A*) S (A-A*)^T) + E_min equals mean 1/2 ||A x - y||^2, also unwhitened."""
    from phaseprobe.train import TrainConfig, Trainer

    data = make_teacher([3.0, 1.0], 4, 3, n_train=40, whiten=False, seed=2)
    m = dln_ensemble(4, 3, 3, 6, [0.7, 0.4], np.stack([np.asarray(jax.random.PRNGKey(i)) for i in range(2)]))
    st = linear_stats(data)
    obs = observe(m.weights, m.weights, st, 0.1)
    ev = Trainer(m, data, TrainConfig(loss="mse", optimizer="gd", lr=0.1, batch_size=None, epochs=1)).evaluate(
        eqx_params(m), np.zeros(2))
    np.testing.assert_allclose(obs["loss"], ev["train_error"], rtol=2e-5)
    # the gradient norm from the layer products equals autodiff's
    np.testing.assert_allclose(obs["grad_norm"], ev["grad_norm_E"], rtol=1e-3)


def eqx_params(model):
    import equinox as eqx

    return eqx.filter(model, eqx.is_inexact_array)


# ---- Saxe et al. (2014): one hidden layer, balanced aligned small init -------------------------

def test_saxe_sigmoid_trajectories(teacher):
    """u(t) = s e^{2st} / (e^{2st} - 1 + s/u0), t = lr x steps (tau = 1 in this convention): within 2 %."""
    U, V = teacher.meta["U"], teacher.meta["V"]
    u0, lr = 1e-3, 2e-4
    w0 = stack_weights([aligned_init(U, u0, V, 2, 4)])
    model = with_weights(_ensemble(2, 4, [1.0]), w0)
    run = integrate(model, teacher, IntegrateConfig(t_max=6.0, step="fixed", lr=lr, n_records=80, distance_every=0))
    df = run.member(0)
    np.testing.assert_allclose(df["t"], lr * df["step"], rtol=1e-9)
    assert df["t"].iloc[-1] == pytest.approx(6.0, rel=1e-3)
    # mode strengths u_a = u_a^T (W2 W1) v_a from the recorded end-to-end singular values (aligned modes
    # stay aligned, so the singular values ARE the mode strengths)
    sv = run.sv(0)[:, :3]
    t = df["t"].to_numpy()
    worst = 0.0
    for a, s in enumerate(S3):
        want = saxe_mode_strength(t, s, u0)
        got = np.sort(sv, axis=1)[:, ::-1][:, a]
        worst = max(worst, float(np.max(np.abs(got - want) / want)))
    assert worst < 0.02
    # and the final weights are still aligned: U^T A V diagonal with the mode strengths
    A = run.final_weights[1][0] @ run.final_weights[0][0]
    M = U.T @ A @ V
    np.testing.assert_allclose(np.diag(M), saxe_mode_strength(6.0, S3, u0), rtol=0.02)
    assert np.max(np.abs(M - np.diag(np.diag(M)))) < 1e-4
    assert saxe_half_time(2.0, u0) == pytest.approx(math.log((2 - u0) / u0) / 4)


def test_deep_aligned_mode_follows_the_quadrature(teacher):
    """Depth 3, balanced aligned: da/dt = a^2 (s - a^3); the adaptive integrator's half time within 2 %."""
    U, V = teacher.meta["U"], teacher.meta["V"]
    a0 = 0.05
    w0 = stack_weights([aligned_init(U, a0 ** 3, V, 3, 4)])
    model = with_weights(_ensemble(3, 4, [1.0]), w0)
    run = integrate(model, teacher, IntegrateConfig(t_max=40.0, distance_every=0))
    df = run.member(0)
    sv = np.sort(run.sv(0)[:, :3], axis=1)[:, ::-1]
    for a, s in enumerate(S3):
        t_half = deep_mode_time(a0, (s / 2) ** (1 / 3), s, 3)
        i = int(np.argmax(sv[:, a] >= s / 2))
        assert i > 0
        t0, t1 = df["t"].iloc[i - 1], df["t"].iloc[i]
        y0, y1 = sv[i - 1, a], sv[i, a]
        t_cross = t0 + (t1 - t0) * (s / 2 - y0) / (y1 - y0)
        assert t_cross == pytest.approx(t_half, rel=0.02)


# ---- plateaus and saddles ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def depth3_run(teacher):
    model = _ensemble(3, 8, [3e-3], key=1)
    return integrate(model, teacher, IntegrateConfig(t_max=400.0, keep_params=True, distance_every=0))


def test_depth3_plateaus_match_the_oracle(depth3_run):
    """Plateau k at 1/2 sum_{i>k} s_i^2 (1 %), rank k, singular values s_1..s_k learned largest first (1 %)."""
    plats = analyze_member(depth3_run, 0)
    assert [p.rank for p in plats] == [0, 1, 2]
    levels = plateau_levels(S3)
    for k, p in enumerate(plats):
        assert p.level == pytest.approx(levels[k], rel=0.01)
        np.testing.assert_allclose(p.learned_sv, S3[:k], rtol=0.01)
    esc = [p.t_escape for p in plats]
    assert np.all(np.diff(esc) > 0)
    final = depth3_run.member(0).iloc[-1]
    assert final["excess_loss"] < 1e-4 and final["rank"] == 3


def test_depth3_plateaus_are_higher_order_saddles(depth3_run):
    """No Hessian eigenvalue below -0.1 s_{k+1}, yet E falls like -L^{-L/2} s_{k+1} eps^3 along the escape direction."""
    plats = analyze_member(depth3_run, 0, certify=True)
    assert len(plats) == 3
    for k, p in enumerate(plats):
        c = p.certificate
        assert c["kind"] == "higher_order_saddle"
        assert c["index"] == 0
        assert c["sigma_1"] == pytest.approx(S3[k], rel=0.01)
        assert c["escape_order"] == pytest.approx(3.0, abs=0.1)
        assert c["escape_coef"] == pytest.approx(c["predicted_coef"], rel=0.1)


def test_exact_saddles_hessian_two_vs_three_layers(teacher):
    """Balanced aligned rank-k critical points: L = 2 Hessian index (w-k)(r-k), min eigenvalue -s_{k+1};
    L = 3 no negative eigenvalue at all (the Hessian vanishes at the origin) but an escape of order 3."""
    from phaseprobe.geometry import exact_hessian

    st = linear_stats(teacher)
    U, V = teacher.meta["U"], teacher.meta["V"]
    w, r = 4, 3
    for k in range(r):
        for L in (2, 3):
            ws = aligned_init(U[:, :k], S3[:k], V[:, :k], L, w) if k else tuple(
                np.zeros(sh) for sh in [(w, 5)] + [(w, w)] * (L - 2) + [(5, w)])
            with jax.enable_x64(True):
                H = exact_hessian(loss_function(st), tuple(jnp.asarray(x, jnp.float64) for x in ws))
            lam = np.linalg.eigvalsh(H)
            c = certify_saddle(ws, st)
            if L == 2:
                assert lam[0] == pytest.approx(-S3[k], abs=1e-5)
                assert int(np.sum(lam < -1e-6)) == (w - k) * (r - k)
                assert c["kind"] == "strict_saddle" and c["index"] == (w - k) * (r - k)
                assert c["escape_order"] == pytest.approx(2.0, abs=0.05)
            else:
                assert lam[0] > -1e-5
                if k == 0:
                    assert np.max(np.abs(lam)) < 1e-12
                assert c["kind"] == "higher_order_saddle" and c["index"] == 0
                assert c["escape_order"] == pytest.approx(3.0, abs=0.05)
                assert c["escape_coef"] == pytest.approx(-(3 ** -1.5) * S3[k], rel=0.02)


def test_depth2_plateau_point_is_a_strict_saddle(teacher):
    """A trained two-layer network on its rank-1 plateau: index (w-1)(r-1), lowest eigenvalue -s_2 (2 %)."""
    run = integrate(_ensemble(2, 6, [1e-5], key=1), teacher, IntegrateConfig(t_max=6.0, keep_params=True, distance_every=0))
    plats = analyze_member(run, 0, certify=True)
    ranks = [p.rank for p in plats]
    assert ranks[:2] == [0, 1]
    for k, p in enumerate(plats[:2]):
        c = p.certificate
        assert c["kind"] == "strict_saddle"
        assert c["index"] == (6 - k) * (3 - k)
        assert c["min_eig"] == pytest.approx(-S3[k], rel=0.02)
        assert p.level == pytest.approx(plateau_levels(S3)[k], rel=0.01)


# ---- escape times ------------------------------------------------------------------------------

def test_escape_times_two_layers_grow_like_log_inverse_sigma(teacher):
    sig = np.array([1e-2, 1e-3, 1e-4])
    run = integrate(_ensemble(2, 8, sig), teacher, IntegrateConfig(t_max=15.0, distance_every=0))
    lv = run.stats.levels() - run.stats.e_min
    esc = np.array([oracle_escape_times(run.member(m)["t"], run.member(m)["excess_loss"], lv) for m in range(3)])
    for k in range(3):
        slope = np.polyfit(np.log10(1 / sig), esc[:, k], 1)[0]  # time per decade of 1/sigma
        assert slope == pytest.approx(math.log(10) / S3[k], rel=0.05)


def test_escape_times_three_layers_grow_like_inverse_sigma(teacher):
    sig = np.array([0.02, 0.01, 0.005])
    run = integrate(_ensemble(3, 8, sig), teacher, IntegrateConfig(t_max=300.0, distance_every=0))
    lv = run.stats.levels() - run.stats.e_min
    t1 = np.array([oracle_escape_times(run.member(m)["t"], run.member(m)["excess_loss"], lv)[0] for m in range(3)])
    ratios = t1[1:] / t1[:-1]  # halving sigma
    assert np.all((ratios > 1.9) & (ratios < 2.15))
    assert ratios[1] < ratios[0]  # approaching 2 as sigma -> 0
    slope = np.polyfit(np.log(sig), np.log(t1), 1)[0]
    assert slope == pytest.approx(-(3 - 2), abs=0.06)


# ---- the lazy regime and the transition ----------------------------------------------------------

def test_lazy_displacement_shrinks_with_width(teacher):
    spec = PhaseGridSpec(gammas=(0.5, 2.0), widths=(16, 64, 256), seeds=(0,), depth=2,
                    integrate=IntegrateConfig(t_max=40.0, loss_tol=1e-4, distance_every=0))
    res = run_gamma_width_grid(spec, teacher)
    s = res.summary
    assert not s["diverged"].any()
    assert (s["final_excess_loss"] < 1e-3 * 10.5).all()
    sl = width_slopes(s, "disp_abs").set_index("gamma")["slope"]
    assert sl[0.5] < -0.1  # lazy: ||theta_end - theta_0|| -> 0 as the width grows (theory -0.25)
    assert sl[2.0] > -0.05  # saddle regime: O(1)
    g = locate_transition(s, "disp_abs")["gamma_c"]
    assert 0.5 < g < 2.0
    # relative displacement falls in both regimes at gamma < 2 ... but the absolute one separates them
    assert s[s.gamma == 2.0]["disp_abs"].min() > s[s.gamma == 0.5]["disp_abs"].max()


def test_distance_to_global_minimum(teacher):
    st = linear_stats(teacher)
    U, V = teacher.meta["U"], teacher.meta["V"]
    up, lo = distance_to_global_min(stack_weights([aligned_init(U, S3, V, 3, 6)]), st)
    assert up[0] < 1e-5 and lo[0] < 1e-5
    # tiny init: within ||theta_0|| of the minimum-norm distance sqrt(L sum s^(2/L))
    m = _ensemble(3, 8, [1e-3])
    up, lo = distance_to_global_min(tuple(m.weights), st)
    norm = float(np.sqrt(sum(np.sum(np.asarray(w, np.float64) ** 2) for w in m.weights)))
    mn = math.sqrt(min_norm_sq(S3, 3))
    assert lo[0] == pytest.approx(mn - norm, rel=1e-5)
    assert lo[0] <= up[0] <= mn + norm + 1e-6  # both within ||theta_0|| of the minimum-norm distance
    # lazy init (gamma = 0.5, width 256): close to the first-order (NTK) distance sqrt(r^T K^-1 r), r = A* - A_0,
    # and far below the minimum-norm distance
    from phaseprobe.dynamics.observe import chain, ntk_matrix

    m = _ensemble(2, 256, [256 ** -0.25])
    up, lo = distance_to_global_min(tuple(m.weights), st)
    with jax.enable_x64(True):
        ws = tuple(jnp.asarray(np.asarray(w), jnp.float64) for w in m.weights)
        ws = tuple(w[0] for w in ws)
        left, right = chain(ws)
        K = np.asarray(ntk_matrix(left, right, jnp.eye(5, dtype=jnp.float64)))
        r = (st.A_star - np.asarray(left[-1])).reshape(-1)
    d_lin = float(np.sqrt(r @ np.linalg.solve(K, r)))
    assert lo[0] == 0.0
    assert up[0] == pytest.approx(d_lin, rel=0.15)
    assert up[0] < 0.5 * math.sqrt(min_norm_sq(S3, 2))


def test_detect_plateaus_on_a_staircase():
    """Two logistic drops in log time: two plateaus above the floor, none before t_min."""
    t = np.geomspace(1e-2, 1e3, 600)
    x = np.log10(t)
    loss = 1 + 9 / (1 + np.exp((x - 0.5) * 30)) + 1e-6
    loss = loss - 1 / (1 + np.exp(-(x - 2.0) * 30)) * 0.999
    r = detect_plateaus(t, loss, floor=1e-2)
    assert len(r) == 2
    assert t[r[0][1]] < 10 ** 0.5 < t[r[1][0]] and t[r[1][1]] < 100
    assert len(detect_plateaus(t, loss, floor=1e-2, t_min=3.0)) == 1  # the first flat stretch ends at t ~ 3


# ---- the trainer capability this package adds -----------------------------------------------------

def test_trainer_advance_equals_train(teacher):
    from phaseprobe.train import TrainConfig, Trainer

    m = _ensemble(3, 6, [0.3, 0.2])
    tr = Trainer(m, teacher, TrainConfig(loss="mse", optimizer="gd", lr=0.01, batch_size=None, epochs=25))
    ref = tr.train(m, np.zeros(2), key=jax.random.PRNGKey(0), lr=np.array([0.01, 0.02]))
    new, _, div = tr.advance(m, 25, lr=np.array([0.01, 0.02]))
    for a, b in zip(new.weights, ref.model.weights):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    assert not div.any()
    frozen, _, _ = tr.advance(m, 25, lr=np.array([0.0, 0.02]))
    np.testing.assert_array_equal(np.asarray(frozen.weights[0][0]), np.asarray(m.weights[0][0]))
    with pytest.raises(PhaseprobeError, match="^lr: "):
        tr.advance(m, 5, lr=np.array([-1.0, 0.1]))


# ---- bad input -----------------------------------------------------------------------------------

@pytest.mark.parametrize("data,field", [
    ({"width": 0, "gamma": 1.0}, "width"),
    ({"width": 2}, "width"),  # below the default teacher's rank 4
    ({"teacher": {"singular_values": [1.0, -1.0]}}, "teacher.singular_values"),
    ({"teacher": {"singular_values": [1, 1, 1, 1, 1, 1, 1], "in_dim": 6}}, "teacher.singular_values"),
    ({"integrate": {"t_max": 0}}, "integrate.t_max"),
    ({"integrate": {"step": "rk4"}}, "integrate.step"),
    ({"depth": 0}, "depth"),
    ({"widht": 16}, "widht"),
    ({"sigma": -1.0}, "sigma"),
    ({"gamma": None, "sigma": None}, "gamma"),
])
def test_bad_spec_fails_before_compute_in_one_line(data, field):
    from phaseprobe.dynamics.spec import make_dln_spec as make_spec

    with pytest.raises(PhaseprobeError) as e:
        make_spec(data)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(field + ":")


def test_bad_grid_and_model_inputs():
    from phaseprobe.dynamics.spec import make_dln_spec as make_spec

    with pytest.raises(PhaseprobeError, match=r"^grid.widths: width 2 is below the teacher's rank 4"):
        make_spec({"grid": {"widths": [2, 16]}}, grid=True)
    with pytest.raises(PhaseprobeError, match=r"^grid.gammas:"):
        make_spec({"grid": {"gammas": []}}, grid=True)
    with pytest.raises(DynamicsError, match=r"^width: must be a positive integer"):
        dln_ensemble(5, 5, 3, 0, [0.1], np.asarray(jax.random.PRNGKey(0))[None])
    data = make_teacher(S3, 5, 5)
    with pytest.raises(DynamicsError, match=r"^width: 2 is below the teacher's rank 3"):
        integrate(_ensemble(2, 2, [0.1]), data, IntegrateConfig(t_max=1.0))
    with pytest.raises(DynamicsError, match=r"^n_train: whitening needs"):
        make_teacher(S3, 5, 5, n_train=3)


def test_cli_bad_input_exits_2_with_one_line(tmp_path):
    import subprocess
    import sys

    exe = [sys.executable, "-c", "from phaseprobe.cli import main; main()"]
    r = subprocess.run(exe + ["dln", "--width", "0", "--gamma", "1", "--out", str(tmp_path / "x")], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == ["error: width: must be an integer >= 1, got 0"]
    assert not (tmp_path / "x").exists()


def test_cli_single_run_and_grid_write_outputs(tmp_path):
    from typer.testing import CliRunner

    from phaseprobe.cli import app

    out = tmp_path / "one"
    r = CliRunner().invoke(app, ["dln", "--out", str(out), "--width", "6", "--singular-values", "4,1", "--gamma", "5",
                                 "--set", "teacher.in_dim=4", "--set", "teacher.out_dim=4", "--t-max", "200"])
    assert r.exit_code == 0, r.output
    for f in ("records.parquet", "plateaus.parquet", "dln_saddle_to_saddle.png", "report.html", "spec.json", "summary.json"):
        assert (out / f).exists(), f
    import pandas as pd

    pl = pd.read_parquet(out / "plateaus.parquet")
    assert list(pl["rank"]) == [0, 1]
    assert set(pl["cert_kind"]) == {"higher_order_saddle"}
    out = tmp_path / "grid"
    r = CliRunner().invoke(app, ["dln", "--grid", "--out", str(out), "--gammas", "0.5,2", "--widths", "8,32", "--seeds", "0",
                                 "--singular-values", "4,1", "--set", "teacher.in_dim=4", "--set", "teacher.out_dim=4",
                                 "--t-max", "30"])
    assert r.exit_code == 0, r.output
    for f in ("grid_summary.parquet", "grid_records.parquet", "transition.json", "dln_phase_diagram.png", "report.html"):
        assert (out / f).exists(), f
    s = pd.read_parquet(out / "grid_summary.parquet")
    assert len(s) == 4 and set(s["gamma"]) == {0.5, 2.0}
