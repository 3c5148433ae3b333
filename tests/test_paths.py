"""The L2 probe, its baselines, barriers, saddles and the basin graph.

Oracles: the 1-D toy of the probe digest (section 2.4, convention L = E + b/2 x^2 = "wd"), a
2-D curved double well whose minima, saddle, saddle height, Hessian and straight-line barrier
are known in closed form (its fold is computed independently with scipy), a convex problem
(barrier zero), and a small MLP on digits (the Bezier curve lowers the straight line's barrier).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
import scipy.optimize

from phaseprobe import conventions
from phaseprobe.errors import PhaseprobeError
from phaseprobe.paths import (
    FunctionLandscape,
    PathError,
    ProbeConfig,
    branch_defect,
    build_basin_graph,
    draw_basin_graph,
    evaluate_bezier,
    evaluate_linear,
    evaluate_polyline,
    find_jumps,
    fit_bezier,
    polyline_points,
    refine_saddle,
    run_probe,
)


# ------------------------------------------------------------------------------------ toys
def toy1d(x):
    x = x[0]
    return 1.0 - 0.9 * jnp.exp(-(x - 3.0) ** 2 / 0.5) - 0.5 * jnp.exp(-(x - 1.0) ** 2 / 0.5)


def toy1d_np(x):
    return 1.0 - 0.9 * np.exp(-(x - 3.0) ** 2 / 0.5) - 0.5 * np.exp(-(x - 1.0) ** 2 / 0.5)


def toy1d_prime(x):
    return 0.9 * 4 * (x - 3.0) * np.exp(-(x - 3.0) ** 2 / 0.5) + 0.5 * 4 * (x - 1.0) * np.exp(-(x - 1.0) ** 2 / 0.5)


KAPPA, S = 5.0, 0.5  # E(x, y) = (x^2 - 1)^2 + kappa (y - s (1 - x^2))^2: minima (+-1, 0), saddle (0, s) at height 1


def toy2d(v):
    x, y = v[0], v[1]
    return (x ** 2 - 1) ** 2 + KAPPA * (y - S * (1 - x ** 2)) ** 2


def toy2d_grad_np(v, alpha, ref):
    x, y = v
    r = y - S * (1 - x ** 2)
    gx = 4 * x * (x ** 2 - 1) + 2 * KAPPA * r * (2 * S * x) + 2 * alpha * (x - ref[0])
    gy = 2 * KAPPA * r + 2 * alpha * (y - ref[1])
    return np.array([gx, gy])


def toy2d_hess_np(v, alpha):
    x, y = v
    r = y - S * (1 - x ** 2)
    hxx = 12 * x ** 2 - 4 + 2 * KAPPA * ((2 * S * x) ** 2 + r * 2 * S) + 2 * alpha
    hxy = 2 * KAPPA * 2 * S * x
    hyy = 2 * KAPPA + 2 * alpha
    return np.array([[hxx, hxy], [hxy, hyy]])


@pytest.fixture(scope="module")
def probe1d():
    land = FunctionLandscape(toy1d, 1, lr=0.1, max_steps=200000, grad_tol=1e-10, x64=True)
    b = np.round(np.arange(0.0, 0.5001, 0.01), 10)  # the digest's convention: L = E + b/2 x^2 ("wd")
    cfg = ProbeConfig(strengths=b, convention="wd", bisect_tol=1e-7, excursion=True)
    return land, run_probe(land, np.array([[3.0]]), None, cfg)


@pytest.fixture(scope="module")
def probe2d():
    land = FunctionLandscape(toy2d, 2, lr=0.02, max_steps=200000, grad_tol=1e-9, x64=True)
    a, b = np.array([-1.0, 0.0]), np.array([1.0, 0.0])
    cfg = ProbeConfig(strengths=np.linspace(0.0, 3.0, 61), bisect_tol=1e-8)
    return land, a, b, run_probe(land, a[None], b[None], cfg)


def test_toy1d_spinodal_jump_matches_digest(probe1d):
    land, res = probe1d
    assert len(res.transitions) == 1
    t = res.transitions[0]
    assert t.confirmed
    # the jump lies between grid points b = 0.42 and 0.43, bisected to the spinodal b = 0.4247
    assert t.index == 42
    assert t.strength_hi - t.strength_lo < 1e-6
    assert t.strength_c == pytest.approx(0.4247, abs=5e-4)
    # canonical alpha = b / 2 ("wd" convention, conversion through conventions only)
    assert t.alpha_lo == pytest.approx(conventions.to_alpha(t.strength_lo, "wd"), rel=1e-12)
    assert t.alpha_lo == pytest.approx(t.strength_lo / 2, rel=1e-12)
    # x 2.480 -> 0.815, E 0.470 -> 0.533 (up), L 1.776 -> 0.674 (down), r down
    assert t.x_lo[0] == pytest.approx(2.48, abs=0.03)
    assert t.x_hi[0] == pytest.approx(0.815, abs=0.005)
    assert t.lo["train_error"] == pytest.approx(0.470, abs=0.01)
    assert t.hi["train_error"] == pytest.approx(0.533, abs=0.002)
    assert t.lo["loss"] == pytest.approx(1.776, abs=0.01)
    assert t.hi["loss"] == pytest.approx(0.674, abs=0.002)
    assert t.hi["dist"] < t.lo["dist"]
    # the recorded loss is E + b/2 x^2 at the model (independent numpy evaluation)
    assert t.hi["loss"] == pytest.approx(toy1d_np(t.x_hi[0]) + t.strength_hi / 2 * t.x_hi[0] ** 2, abs=1e-9)
    # fold condition E''(x*) = -b at the last pre-jump point (sqrt approach: loose tolerance)
    assert t.fold_min_eig == pytest.approx(-t.strength_lo, abs=0.01)
    # basins: the far well's minimum before, the near one after
    assert t.basin_lo[0] == pytest.approx(3.0, abs=0.05) and t.basin_hi[0] == pytest.approx(1.0, abs=0.05)


def test_toy1d_saddle_is_the_barrier_top(probe1d):
    land, res = probe1d
    sd = res.transitions[0].saddle
    x_star = scipy.optimize.brentq(toy1d_prime, 1.5, 2.7)  # the local maximum of E between the wells
    assert sd.x[0] == pytest.approx(x_star, abs=1e-6)
    assert sd.error == pytest.approx(toy1d_np(x_star), abs=1e-9)
    assert sd.index == 1 and sd.negative_eigs.size == 1
    h = 1e-4
    e2 = (toy1d_np(x_star + h) - 2 * toy1d_np(x_star) + toy1d_np(x_star - h)) / h ** 2
    assert sd.negative_eigs[0] == pytest.approx(e2, rel=1e-3)


def test_toy1d_excursion_shows_hysteresis(probe1d):
    land, res = probe1d
    ex = res.transitions[0].excursion
    # raised past the jump, then lowered to b = 0: the model stays in the near well (hysteresis)
    assert ex.strengths[-1] == 0.0
    assert ex.end_basin == res.transitions[0].basin_hi
    assert not ex.returned
    assert ex.start_basin == res.transitions[0].basin_lo


def test_branch_defect_is_zero_along_a_branch(probe1d):
    land, res = probe1d
    p = res.records[res.records["phase"] == "probe"].sort_values("index")
    d = branch_defect(p["alpha"].to_numpy(), p["loss"].to_numpy(), p["dist"].to_numpy())
    jump = res.transitions[0].index
    # envelope theorem: dL*/dalpha = ||w - w_ref||^2 along a branch; the trapezoid error is tiny
    off = np.delete(d, jump)
    assert np.max(np.abs(off[:35])) < 1e-4
    assert d[jump] < -1.0
    assert find_jumps(p["alpha"].to_numpy(), p["loss"].to_numpy(), p["dist"].to_numpy()) == [jump]


def _fold_2d_independent():
    """The fold of the branch from (-1, 0) toward (1, 0), with scipy only: a continuation scan with
    BFGS, then Newton (fsolve) on grad L = 0, det Hess L = 0."""
    ref = np.array([1.0, 0.0])
    fun = lambda v, a: float((v[0] ** 2 - 1) ** 2 + KAPPA * (v[1] - S * (1 - v[0] ** 2)) ** 2 + a * np.sum((v - ref) ** 2))  # noqa: E731
    x = np.array([-1.0, 0.0])
    prev = None
    for a in np.linspace(0.0, 1.5, 301):
        r = scipy.optimize.minimize(fun, x, args=(a,), jac=lambda v, a: toy2d_grad_np(v, a, ref), method="BFGS", tol=1e-12)
        if np.linalg.norm(r.x - x) > 0.3 and prev is not None:
            break
        x, prev = r.x, (a, r.x)
    a0, x0 = prev

    def F(z):
        v, a = z[:2], z[2]
        return np.concatenate([toy2d_grad_np(v, a, ref), [np.linalg.det(toy2d_hess_np(v, a))]])

    z = scipy.optimize.fsolve(F, np.concatenate([x0, [a0]]), xtol=1e-13)
    return z[2], z[:2]


def test_toy2d_fold_saddle_and_barrier(probe2d):
    land, a, b, res = probe2d
    assert len(res.transitions) == 1
    t = res.transitions[0]
    assert t.confirmed
    # a fold: the starting basin's minimum vanishes where det Hess L = 0
    alpha_c, x_c = _fold_2d_independent()
    assert t.alpha_lo <= alpha_c + 1e-4 and t.alpha_hi >= alpha_c - 1e-4
    assert 0.5 * (t.alpha_lo + t.alpha_hi) == pytest.approx(alpha_c, abs=1e-4)
    assert np.linalg.norm(t.x_lo - x_c) < 0.02
    assert t.basin_lo == (-1.0, 0.0) and t.basin_hi == (1.0, 0.0)
    lam = np.linalg.eigvalsh(toy2d_hess_np(t.x_lo, 0.0))
    assert t.fold_min_eig == pytest.approx(lam[0], abs=1e-6)
    assert t.fold_min_eig == pytest.approx(-2 * alpha_c, abs=0.02)
    # the refined saddle is the analytic one: (0, s), height 1, Hessian diag(-4, 2 kappa), index 1
    sd = t.saddle
    assert np.linalg.norm(sd.x - np.array([0.0, S])) < 1e-6
    assert sd.error == pytest.approx(1.0, abs=1e-10)
    assert sd.index == 1
    assert sd.negative_eigs == pytest.approx([-4.0], abs=1e-6)
    assert sd.top_eig == pytest.approx(2 * KAPPA, abs=1e-6)
    # the barrier along the probe path through the saddle is the saddle height (minima at E = 0)
    v, marks = res.path_vertices(0, saddles=True, to_ref=True)
    pe = evaluate_polyline(land, v, "probe+saddle", n_points=801, marks=marks)
    assert pe.barrier == pytest.approx(1.0, abs=1e-9)
    assert list(pe.marks.values())[0] == pytest.approx(pe.argmax_t, abs=1e-12)
    # the straight line's barrier in closed form: max_x (1 + kappa s^2)(1 - x^2)^2 = 1 + kappa s^2
    lin = evaluate_linear(land, a, b, n_points=41)
    assert lin.barrier == pytest.approx(1 + KAPPA * S ** 2, abs=1e-12)
    assert lin.grad_evals == 0
    # a Bezier curve on the toy lowers the straight line's barrier
    bz = fit_bezier(land, a[None], b[None], epochs=1500, n_t=8, lr=0.01)
    be = evaluate_bezier(land, a, bz.control[0], b, n_points=201, grad_evals=bz.grad_evals[0])
    assert 1.0 - 1e-9 <= be.barrier < lin.barrier - 0.3
    assert be.grad_evals == 1500 * 8


def test_gradnorm_saddle_search_converges_to_the_analytic_saddle():
    land = FunctionLandscape(toy2d, 2, x64=True)
    sd = refine_saddle(land, np.array([0.15, 0.3]), method="gradnorm", steps=60, newton_steps=8)
    assert np.linalg.norm(sd.x - np.array([0.0, S])) < 1e-8
    assert sd.index == 1 and sd.error == pytest.approx(1.0, abs=1e-12)


def test_basin_graph_of_the_toy(probe2d, tmp_path):
    land, a, b, res = probe2d
    g = build_basin_graph([res])
    assert set(g.nodes) == {(-1.0, 0.0), (1.0, 0.0)}
    e = g.edges_frame()
    sad = e[e["kind"] == "saddle"]
    assert len(sad) == 1
    row = sad.iloc[0]
    assert row["saddle_error"] == pytest.approx(1.0, abs=1e-9) and row["saddle_index"] == 1
    assert row["barrier_from"] == pytest.approx(1.0 - res.transitions[0].lo["train_error"], abs=1e-12)
    p = draw_basin_graph(g, tmp_path / "g.png")
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_convex_problem_has_zero_barrier():
    av = jnp.array([1.0, 2.0, -1.0])
    land = FunctionLandscape(lambda x: (jnp.dot(av, x) - 1.0) ** 2, 3, lr=0.05, grad_tol=1e-10, x64=True)
    a, b = np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.5, 0.0])  # two minima (a.x = 1)
    res = run_probe(land, a[None], b[None], ProbeConfig(strengths=np.linspace(0, 1, 11)))
    assert res.transitions == []
    v, _ = res.path_vertices(0, to_ref=True)
    pe = evaluate_polyline(land, v, "probe", n_points=101)
    assert abs(pe.barrier) < 1e-12
    assert abs(evaluate_linear(land, a, b).barrier) < 1e-12
    bz = fit_bezier(land, a[None], b[None], epochs=200, lr=0.01)
    assert abs(evaluate_bezier(land, a, bz.control[0], b).barrier) < 1e-6


def test_ensemble_members_match_single_runs():
    land = FunctionLandscape(toy1d, 1, lr=0.1, max_steps=50000, grad_tol=1e-9, x64=True)
    cfg = ProbeConfig(strengths=np.linspace(0.0, 0.25, 26), bisect_tol=1e-5, saddles=False, fold_check=False)
    starts, refs = np.array([[3.0], [2.9]]), np.array([[0.0], [-0.3]])
    both = run_probe(land, starts, refs, cfg)
    for k in range(2):
        one = run_probe(land, starts[k:k + 1], refs[k:k + 1], cfg)
        np.testing.assert_allclose(both.checkpoints[:, k], one.checkpoints[:, 0], rtol=0, atol=1e-12)
        tk = both.member_transitions(k)
        assert len(tk) == len(one.transitions) == 1
        assert tk[0].alpha_lo == one.transitions[0].alpha_lo
    # the reference moves the transition: the pull toward -0.3 is stronger at the far well
    assert both.member_transitions(1)[0].alpha_lo < both.member_transitions(0)[0].alpha_lo


def test_polyline_points_and_barrier_definition():
    v = np.array([[0.0, 0.0], [3.0, 0.0], [3.0, 1.0]])
    pts, t, isv = polyline_points(v, n_points=5)
    assert isv.sum() == 3
    np.testing.assert_allclose(t[isv], [0.0, 0.75, 1.0])
    np.testing.assert_allclose(pts[isv], v)
    land = FunctionLandscape(lambda x: x[0] + x[1] ** 2, 2, x64=True)
    pe = evaluate_polyline(land, v, "poly", n_points=5)
    # E = x + y^2 along the path: ends at 0 and 4, max 4 -> barrier = 4 - (0 + 4)/2 = 2
    assert pe.barrier == pytest.approx(2.0)
    assert pe.length == pytest.approx(4.0)


def test_bad_inputs_fail_cleanly():
    land = FunctionLandscape(toy2d, 2)
    with pytest.raises(PathError, match="strictly increasing"):
        run_probe(land, np.zeros((1, 2)), None, ProbeConfig(strengths=[0.0, 0.2, 0.1]))
    with pytest.raises(PathError, match="start"):
        run_probe(land, np.zeros((1, 3)), None, ProbeConfig(strengths=[0.0, 0.1]))
    with pytest.raises(PathError, match=r"^b: expected flat parameter vectors of length 2 .*got shape \(1, 3\)"):
        fit_bezier(land, np.zeros((1, 2)), np.zeros((1, 3)))
    with pytest.raises(PathError, match=r"^b: got 2 end points for 1 start points"):
        fit_bezier(land, np.zeros((1, 2)), np.zeros((2, 2)))
    with pytest.raises(PathError, match="convention"):
        run_probe(land, np.zeros((1, 2)), None, ProbeConfig(strengths=[0.0, 0.1], convention="decoupled"))
    # what the path code raises is a PhaseprobeError (the CLI prints it as one line, exit 2),
    # with one line that starts with the field it names
    for call, field in ((lambda: fit_bezier(land, np.zeros((1, 2)), np.zeros((1, 3))), "b"),
                        (lambda: run_probe(land, np.zeros((1, 3)), None, ProbeConfig(strengths=[0.0, 0.1])), "start")):
        with pytest.raises(PhaseprobeError) as e:
            call()
        assert str(e.value).startswith(f"{field}: ") and "\n" not in str(e.value)


# ------------------------------------------------------------------------------------ networks
@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory):
    """A tiny cold sweep on digits (two seeds at one strength) whose saved minima we connect."""
    from phaseprobe.sweep.driver import run_sweep
    from phaseprobe.sweep.spec import make_spec

    out = tmp_path_factory.mktemp("sweep")
    spec = make_spec(dict(dataset="digits", n_train=400, depth=1, width=16, activation="tanh", alphas="0.0", mode="cold",
                          seeds=2, optimizer="adam", lr=1e-2, epochs=150, batch_size=None))
    run_sweep(spec, out)
    return out


def test_connect_minima_from_a_sweep_run(sweep_run, tmp_path):
    from phaseprobe.paths.workflow import connect, make_path_spec
    from phaseprobe.store import RunStore

    spec = make_path_spec(dict(run=[str(sweep_run)], n_strengths=6, bisect_tol=1e-5, saddle_steps=3, saddle_subset=200,
                               bezier_epochs=15, n_points=21, epochs=20, patience=3), "connect")
    out = tmp_path / "connect"
    res = connect(spec, out)
    land = res["land"]
    # the minima are the sweep's saved parameters, flattened in the landscape's order
    st = RunStore(sweep_run)
    piece = res["info"]["chosen"][0]["piece"]
    arrays = st.load_params(piece)
    leaves = [arrays[f"p{i:03d}"][res["info"]["chosen"][0]["member"]].ravel() for i in range(len(arrays))]
    np.testing.assert_array_equal(res["probe"].start[0], np.concatenate(leaves))
    s = res["summary"].set_index("method")
    # the Bezier curve lowers the barrier of linear interpolation
    assert s.loc["bezier", "barrier"] < s.loc["linear", "barrier"] - 0.05
    # gradient evaluations, counted per sample the same way: epochs x n_train
    assert s.loc["bezier", "grad_evals"] == res["bezier"].epochs[0] * land.n_samples
    assert s.loc["bezier", "grad_evals"] <= 15 * land.n_samples
    rec = res["probe"].records
    steps = rec[rec["phase"].isin(["probe", "bisect"])]["steps"].sum()
    assert s.loc["probe", "grad_evals"] == pytest.approx(steps * land.n_samples)
    assert s.loc["linear", "grad_evals"] == 0
    # the ends of every path are the two minima (same errors at t = 0 and t = 1)
    ends = res["summary"].groupby("method")[["error_start", "error_end"]].first()
    assert ends["error_start"].nunique() == 1 or np.ptp(ends["error_start"]) < 1e-5
    # records, checkpoints, tables, figures, report
    assert (out / "paths.png").exists() and (out / "probe.png").exists() and (out / "report.html").exists()
    assert "Paths between minima" in (out / "report.html").read_text()
    assert len(list((out / "params").glob("probe-*.npz"))) == 6
    df = pd.read_csv(out / "paths_summary.csv")
    assert set(df["method"]) >= {"probe", "linear", "bezier"}


def test_bad_run_folders_error_before_compute(sweep_run, tmp_path):
    import shutil

    from phaseprobe.paths.workflow import load_minima

    # a run folder without parameters
    bare = tmp_path / "bare"
    shutil.copytree(sweep_run, bare)
    shutil.rmtree(bare / "params")
    with pytest.raises(PathError, match="no saved parameters"):
        load_minima([bare])
    # minima of different architectures
    other = tmp_path / "wide"
    shutil.copytree(sweep_run, other)
    meta = json.loads((other / "spec.json").read_text())
    meta["spec"]["width"] = 32
    (other / "spec.json").write_text(json.dumps(meta))
    with pytest.raises(PathError, match="architecture"):
        load_minima([sweep_run, other])
    # the command line prints one line and exits with status 2
    r = subprocess.run([sys.executable, "-m", "phaseprobe.cli", "connect", "--run", str(bare), "--out", str(tmp_path / "o"),
                        "--no-figures"], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error: run:") and len(r.stderr.strip().splitlines()) == 1


def test_network_landscape_rejects_another_architecture():
    from phaseprobe.data import load_dataset
    from phaseprobe.models import build_model, init_members
    from phaseprobe.paths import NetworkLandscape

    data = load_dataset("digits", n_train=64, n_test=32)
    make = lambda w: (lambda k: build_model("mlp", data.input_shape, 10, key=k, depth=1, width=w))  # noqa: E731
    land = NetworkLandscape(make(8)(jax.random.PRNGKey(0)), data)
    wide = init_members(make(9), jnp.stack([jax.random.PRNGKey(1)]))
    with pytest.raises(PathError, match="architecture"):
        land.flatten_model(wide)


def test_spectra_along_the_path_are_the_analytic_hessian_eigenvalues(probe2d):
    from phaseprobe.paths import path_spectra

    land, a, b, res = probe2d
    pts = res.checkpoints[::10, 0]
    sp = path_spectra(land, pts, k=2)
    for i, p in enumerate(pts):
        lam = np.linalg.eigvalsh(toy2d_hess_np(p, 0.0))  # the unregularised E, bottom end first
        assert sp.loc[i, "hess_min_1"] == pytest.approx(lam[0], abs=1e-8)
        assert sp.loc[i, "hess_max_1"] == pytest.approx(lam[1], abs=1e-8)


def test_bisection_rejects_a_continuous_change():
    """A steep but continuous change of the minimiser (a convex problem) is no fold: bisection
    sees the gap close with the bracket and does not confirm it."""
    from phaseprobe.paths.probe import ProbeTransition, _bisect, _Recorder

    land = FunctionLandscape(lambda x: 0.5 * (x[0] - 3.0) ** 2, 1, lr=0.1, grad_tol=1e-10, x64=True)
    cfg = ProbeConfig(strengths=[0.0, 1.0], bisect_tol=1e-6).validate()
    lo = land.minimise(np.array([[3.0]]), [0.0], None)
    hi = land.minimise(np.array([[3.0]]), [1.0], None)
    for r in (lo, hi):
        r.metrics["dist"] = np.abs(r.x[:, 0])
    pick = lambda r: {k: float(np.asarray(v)[0]) for k, v in r.metrics.items()}  # noqa: E731
    t = ProbeTransition(member=0, index=0, strength_lo=0.0, strength_hi=1.0, alpha_lo=0.0, alpha_hi=1.0, x_lo=lo.x[0], x_hi=hi.x[0],
                        lo=pick(lo), hi=pick(hi), basin_lo=(3.0,), basin_hi=(1.0,))
    # x*(alpha) = 3 / (1 + 2 alpha): 3 -> 1 over the bracket, continuously
    assert t.x_hi[0] == pytest.approx(1.0, abs=1e-8)
    _bisect(land, [t], np.zeros((1, 1)), [0], cfg, _Recorder(land, cfg, ["0"], [0], None), None)
    assert t.confirmed is False
    assert t.bisect_steps <= 6  # stopped early: the gap shrank like the bracket
    a_lo = t.alpha_lo
    assert t.x_lo[0] == pytest.approx(3.0 / (1 + 2 * a_lo), abs=1e-7)
