"""Tests of the alpha sweep: transition analysis on synthetic curves, the deep-linear oracle of
Ziyin & Ueda, interruption and resumption, bad specs, and the CLI end to end.

Everything runs on tiny models for a few hundred steps; the file takes well under three minutes
on two CPU cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from phaseprobe.errors import PhaseprobeError
from phaseprobe.sweep.analysis import (
    CONTINUOUS,
    FIRST_JUMP,
    FIRST_ORDER,
    crossing,
    detect_events,
    find_transitions,
    hysteresis_area,
    plateaus,
)
from phaseprobe.store import RunStore
from phaseprobe.sweep.driver import run_sweep
from phaseprobe.sweep.spec import make_spec

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------
# synthetic records, shaped like the store's (one final row per branch x alpha x seed)
# ------------------------------------------------------------------------------------------
def _records(alphas, curves: dict, seeds=(0, 1, 2), noise=0.0, extra: dict | None = None, rng_seed=0):
    """``curves[branch] = (test_acc(alpha), loss(alpha), w_sq(alpha))`` arrays over ``alphas``."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for b, (acc, loss, wsq) in curves.items():
        for s in seeds:
            for i, a in enumerate(alphas):
                row = {
                    "branch": b, "alpha_index": i, "alpha": float(a), "strength": float(a), "convention": "l2",
                    "seed": s, "final": True, "record_epoch": 100,
                    "test_acc": float(acc[i] + noise * rng.standard_normal()),
                    "train_acc": float(acc[i]), "loss": float(loss[i]), "w_sq": float(wsq[i]),
                    "train_error": float(loss[i]), "diverged": False, "converged": True,
                }
                for k, v in (extra or {}).get(b, {}).items():
                    row[k] = float(v[i])
                rows.append(row)
    return pd.DataFrame(rows)


GRID = np.geomspace(1e-3, 1.0, 31)  # 10 points per decade
H = np.log10(GRID[1] / GRID[0])  # grid step in decades


def _step(alphas, at, hi, lo):
    return np.where(alphas < at, hi, lo)


def test_detect_events_step_and_ramp_closed_form():
    y = np.r_[np.full(10, 0.9), np.full(10, 0.1)]
    (e,) = detect_events(y)
    assert (e.i0, e.i1, e.i_max) == (9, 10, 9)
    assert e.total == pytest.approx(-0.8) and e.jump_fraction == pytest.approx(1.0)
    ramp = np.r_[np.full(10, 0.9), np.linspace(0.9, 0.1, 6)[1:], np.full(10, 0.1)]
    (e,) = detect_events(ramp)
    assert e.i0 == 9 and e.i1 == 14  # the five equal steps 0.9 -> 0.1
    assert e.jump_fraction == pytest.approx(0.2)
    assert detect_events(np.full(20, 0.5)) == []


def test_step_with_loop_is_first_order_with_spinodals_area_and_maxwell():
    """Up branch jumps 0.9 -> 0.1 between grid points 15 and 16; down branch returns between 4 and 5.

    Losses: the learned phase has ``L1 = 0.25 + 10 alpha``, the trivial phase ``L0 = 0.4``; they cross at
    alpha = 0.015, between the two spinodals (0.0028 and 0.0335): that is the Maxwell point.
    """
    a = GRID
    i_up, i_dn = 16, 5  # first index of the new phase on each branch
    acc_up = np.where(np.arange(31) < i_up, 0.9, 0.1)
    acc_dn = np.where(np.arange(31) < i_dn, 0.9, 0.1)
    L1, L0 = 0.25 + 10 * a, np.full_like(a, 0.4)
    a_max = 0.15 / 10  # closed form: 0.25 + 10 a = 0.4
    assert a[i_dn - 1] < a_max < a[i_up - 1]
    loss_up = np.where(np.arange(31) < i_up, L1, L0)
    loss_dn = np.where(np.arange(31) < i_dn, L1, L0)
    w_up = np.where(np.arange(31) < i_up, 5.0, 1e-4)
    w_dn = np.where(np.arange(31) < i_dn, 5.0, 1e-4)
    df = _records(a, {"up": (acc_up, loss_up, w_up), "down": (acc_dn, loss_dn, w_dn)}, noise=0.005)
    trs = find_transitions(df, "test_acc", n_boot=50)
    up = [t for t in trs if t.branch == "up"]
    dn = [t for t in trs if t.branch == "down"]
    assert len(up) == 1 and len(dn) == 1
    t = up[0]
    assert t.order == FIRST_ORDER
    assert t.alpha_c == pytest.approx(np.sqrt(a[i_up - 1] * a[i_up]), rel=1e-9)
    assert t.spinodal_up == pytest.approx(np.sqrt(a[i_up - 1] * a[i_up]), rel=1e-9)
    assert t.spinodal_down == pytest.approx(np.sqrt(a[i_dn - 1] * a[i_dn]), rel=1e-9)
    assert t.jump == pytest.approx(-0.8, abs=0.02) and t.seeds_agree == 3 and t.n_seeds == 3  # seeds, a count
    # Maxwell point: crossing of the constructed losses, interpolated linearly in log alpha
    j = np.searchsorted(a, a_max) - 1
    f0, f1 = L1[j] - L0[j], L1[j + 1] - L0[j + 1]
    expect = np.exp(np.log(a[j]) + f0 / (f0 - f1) * (np.log(a[j + 1]) - np.log(a[j])))
    assert t.maxwell == pytest.approx(expect, rel=1e-9)
    assert t.maxwell == pytest.approx(a_max, rel=0.01)  # and the interpolation is close to the truth
    # hysteresis area: the branches differ by ~0.8 on grid points i_dn .. i_up-1 (trapezoid on the log grid)
    assert t.hysteresis_area == pytest.approx(0.8 * H * (i_up - i_dn), rel=0.03)
    assert dn[0].hysteresis_area == t.hysteresis_area and dn[0].maxwell == t.maxwell
    # ||w||^2 sees the same first-order transition
    (tw,) = [t for t in find_transitions(df, "w_sq", n_boot=20) if t.branch == "up"]
    assert tw.order == FIRST_ORDER and tw.spinodal_down == pytest.approx(t.spinodal_down)


def test_jump_without_loop_is_not_called_first_order():
    a = GRID
    acc = _step(a, a[15] * 1.01, 0.9, 0.1)
    loss = np.ones_like(a)
    w = np.ones_like(a)
    df = _records(a, {"up": (acc, loss, w), "down": (acc, loss, w)})
    (t,) = [t for t in find_transitions(df, n_boot=10) if t.branch == "up"]
    assert t.order == "jump-no-loop" and t.hysteresis_area == pytest.approx(0.0, abs=1e-12)


def test_linear_ramp_is_continuous_with_kink_at_its_start():
    a = GRID
    y = np.full(31, 0.9)
    y[12:18] = np.linspace(0.9, 0.1, 7)[1:]  # leaves 0.9 after grid point 11, reaches 0.1 at 17
    y[18:] = 0.1
    df = _records(a, {"cold": (y, np.ones(31), np.ones(31))}, noise=0.003)
    (t,) = find_transitions(df, n_boot=50)
    assert t.order == CONTINUOUS
    assert t.alpha_kink == pytest.approx(a[11])
    assert a[11] < t.alpha_c < a[17]
    assert t.jump == pytest.approx(-0.8, abs=0.02)


def test_wsq_ramp_to_zero_is_continuous_and_step_to_zero_first_order():
    """||w||^2 is detected in log10, where any approach to 0 looks steep; its order uses the linear scale."""
    a = GRID
    ramp = np.clip(4.0 * (1 - a / a[20]), 0, None) + 1e-9  # a linear order parameter vanishing at a[20]
    step = np.where(a < a[20], 4.0 * (1 - a / a[27]), 0.0) + 1e-9
    acc = np.full(31, 0.5)
    (tr,) = find_transitions(_records(a, {"cold": (acc, np.ones(31), ramp)}), "w_sq", n_boot=10)
    (ts,) = find_transitions(_records(a, {"cold": (acc, np.ones(31), step)}), "w_sq", n_boot=10)
    assert tr.order == CONTINUOUS and ts.order == FIRST_JUMP  # a cold sweep measures no loop
    assert tr.alpha_c == pytest.approx(np.sqrt(a[19] * a[20]))  # the order parameter vanishes there
    assert ts.alpha_c == pytest.approx(np.sqrt(a[19] * a[20]))


def test_wsq_jitter_in_the_trivial_phase_is_not_a_transition():
    """After a first-order drop to w ~ 0 the optimiser leaves ||w||^2 jittering at ~1e-5 by factors of a
    few (several tenths of a decade in log10): exactly one transition, the drop."""
    a = GRID
    rng = np.random.default_rng(3)
    w = np.where(a < a[12], 15.0 * (1 - a), 1e-5 * 4.0 ** rng.uniform(-1, 1, 31))
    (t,) = find_transitions(_records(a, {"cold": (np.full(31, 0.5), np.ones(31), w)}), "w_sq", n_boot=10)
    assert t.order == FIRST_JUMP and t.alpha_c == pytest.approx(np.sqrt(a[11] * a[12]))  # cold: no loop measured


def test_hysteresis_area_and_crossing_closed_form():
    a = np.geomspace(0.01, 1, 5)  # log10 step 0.5
    up = np.array([1.0, 1.0, 1.0, 0.0, 0.0])
    dn = np.array([1.0, 0.0, 0.0, 0.0, 0.0])
    # |up - dn| = [0,1,1,0,0]: trapezoid in log10 alpha = 0.5*(0.5) + 0.5*1 + 0.5*(0.5) = 1.0
    assert hysteresis_area(a, up, dn) == pytest.approx(1.0)
    f = np.log(a) - np.log(0.05)  # zero at alpha = 0.05, linear in log alpha: interpolation is exact
    assert crossing(a, f, 0, 4) == pytest.approx(0.05, rel=1e-12)
    assert crossing(a, np.ones(5), 0, 4) is None


def test_plateaus_name_the_learned_classes():
    a = GRID
    acc = np.where(a < a[15] * 1.01, 0.9, 0.5)
    # class 0 learned everywhere, class 1 only below the step (recall and precision both >= 0.5)
    extra = {"cold": {"class_acc_0": np.full(31, 0.9), "class_prec_0": np.full(31, 0.9),
                      "class_acc_1": np.where(a < a[15] * 1.01, 0.9, 0.0),
                      "class_prec_1": np.where(a < a[15] * 1.01, 0.9, 0.0)}}
    df = _records(a, {"cold": (acc, np.ones(31), np.ones(31))}, extra=extra)
    trs = find_transitions(df, n_boot=10)
    pls = plateaus(df, trs)
    assert [p.classes for p in pls] == [[0, 1], [0]]
    assert pls[0].level == pytest.approx(0.9) and pls[1].level == pytest.approx(0.5)
    assert pls[0].alpha_to == a[15] and pls[1].alpha_from == a[16]


# ------------------------------------------------------------------------------------------
# deep linear networks: the closed-form critical strength (Ziyin & Ueda)
# ------------------------------------------------------------------------------------------
S1 = 2.0  # the teacher's one singular value


def alpha_c_formula(s: float, L: int) -> float:
    r"""Critical canonical alpha of a deep linear net with ``L`` weight matrices, scalar output.

    Derivation in this project's convention. Data: whitened inputs (``X^T X / n = I``) and targets
    ``y = a^T x`` with ``||a|| = s`` (dataset lowrank-linear, one singular value, ``out_dim = 1``).
    The net ``f(x) = W_L ... W_1 x = b^T x``. Then

        E = mean_i 1/2 (y_i - f(x_i))^2 = 1/2 ||a - b||^2,
        L_alpha = E + alpha * sum_l ||W_l||_F^2.

    For a fixed end-to-end row ``b`` the penalty is minimised by balanced layers (AM-GM on the layer
    scales): ``min sum_l ||W_l||^2 = L ||b||^(2/L)``; and ``b`` is best aligned with ``a``. So the
    global problem is the 1-D problem over the learned strength ``t = ||b|| >= 0``:

        g(t) = 1/2 (s - t)^2 + alpha L t^(2/L).

    Multiplying by 2: ``(s - t)^2 + (2 alpha) L t^(2/L)``, the per-mode problem of the deep-linear
    digest with ``lambda = 2 alpha``. Hence

    * L = 2 (one hidden layer): ``g'(t) = t - s + 2 alpha``; ``t* = max(s - 2 alpha, 0)``, a continuous
      transition at ``alpha_c = s / 2`` (order parameter ||w||^2 = 2 t* = 2 (s - 2 alpha), linear).
    * L >= 3: ``t = 0`` is always a local minimum; the nonzero branch ties with it (Maxwell point)
      where ``g(t) = g(0)`` and ``g'(t) = 0`` together: ``t* = (L-2)/(L-1) s`` and
      ``2 alpha_c = s^(2-2/L) (L-2)^((L-2)/L) / (L-1)^((2L-2)/L)``. The nonzero branch ends (upper
      spinodal) at ``t_sp = (L-2)/(2L-2) s``, ``2 alpha_sp = (s - t_sp) t_sp^(1-2/L)``.
    """
    if L == 2:
        return s / 2.0
    return 0.5 * s ** (2 - 2 / L) * (L - 2) ** ((L - 2) / L) / (L - 1) ** ((2 * L - 2) / L)


def alpha_sp_formula(s: float, L: int) -> float:
    t = (L - 2) / (2 * L - 2) * s
    return 0.5 * (s - t) * t ** (1 - 2 / L)


def alpha_c_brute(s: float, L: int) -> float:
    """Bisection on alpha for min_{t > 0} g(t) = g(0), g minimised by a dense 1-D scan (no formula)."""
    t = np.linspace(1e-6, s, 200001)

    def gap(alpha):  # min over t>0 of g minus g(0): < 0 while the learned branch wins
        return np.min(0.5 * (s - t) ** 2 + alpha * L * t ** (2 / L)) - 0.5 * s ** 2

    lo, hi = 1e-4, 10.0 * s
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if gap(mid) < -1e-12 else (lo, mid)
    return 0.5 * (lo + hi)


def test_deep_linear_formula_matches_brute_force():
    for L in (2, 3, 4):
        assert alpha_c_formula(S1, L) == pytest.approx(alpha_c_brute(S1, L), rel=1e-4)
    # the digest's tabulated value (its lambda = 2 alpha): lambda_c / s^(4/3) = 0.396850 for L = 3
    assert 2 * alpha_c_formula(1.0, 3) == pytest.approx(0.396850, rel=1e-5)
    # the upper spinodal: where the nonzero stationary point of g disappears (brute force on g')
    t = np.linspace(1e-6, S1, 400001)
    for L in (3, 4):
        a_sp = alpha_sp_formula(S1, L)
        has_min = lambda al: np.any(np.diff(np.sign(t - S1 + 2 * al * t ** (2 / L - 1))) > 0)  # noqa: E731
        assert has_min(a_sp * 0.999) and not has_min(a_sp * 1.001)


def _dln_spec(depth, alphas, mode, epochs):
    return make_spec(dict(
        name=f"dln-L{depth}", dataset="lowrank-linear",
        data_options=dict(singular_values=[S1], in_dim=4, out_dim=1, n_train=32, n_test=32),
        model="linear", depth=depth, width=6, alphas=alphas, mode=mode, seeds=2, loss="mse",
        optimizer="gd", lr=0.05, epochs=epochs, chunk_size=8,
    ))


def test_deep_linear_three_layers_first_order_maxwell_point(tmp_path):
    """L = 3 weight matrices (two hidden layers), full-batch GD, a loop sweep.

    The up branch stays learned past the Maxwell point and jumps to 0 near the upper spinodal; the
    down branch starts at 0, a local minimum for every alpha > 0, and stays there. The crossing of the
    branches' regularised losses is the Maxwell point: within 5 % of the closed form (0.5 for s = 2).
    """
    L = 3
    ac, asp = alpha_c_formula(S1, L), alpha_sp_formula(S1, L)
    df = run_sweep(_dln_spec(L, "0.3:0.9:19", "loop", 1500), tmp_path / "dln3")
    trs = [t for t in find_transitions(df, "w_sq", n_boot=20) if t.branch == "up"]
    assert len(trs) == 1
    t = trs[0]
    assert t.maxwell == pytest.approx(ac, rel=0.05)
    assert t.order == FIRST_ORDER and t.hysteresis_area > 0
    step = 0.9 / 0.3
    assert asp / step ** (1 / 18) < t.spinodal_up < asp * step ** (1 / 18)  # within one grid step
    assert np.isnan(t.spinodal_down)  # the trivial minimum never destabilises on the way down
    # the learned branch sits on the closed-form minimum of g: ||w||^2 = L t^(2/L)
    up = df[df.final & (df.branch == "up") & (df.alpha < ac)]
    for a, wsq in zip(up.alpha, up.w_sq):
        tt = np.linspace(1e-4, S1, 200001)
        tstar = tt[np.argmin(0.5 * (S1 - tt) ** 2 + a * L * tt ** (2 / L))]
        assert wsq == pytest.approx(L * tstar ** (2 / L), rel=2e-3)


def test_deep_linear_one_hidden_layer_continuous_at_closed_form(tmp_path):
    """L = 2 (one hidden layer): ||w||^2 = 2 (s - 2 alpha) falls linearly to 0 at alpha_c = s/2 = 1."""
    ac = alpha_c_formula(S1, 2)
    df = run_sweep(_dln_spec(2, "0.4:1.6:19", "up", 1500), tmp_path / "dln2")
    (t,) = find_transitions(df, "w_sq", n_boot=20)
    assert t.order == CONTINUOUS
    assert t.alpha_c == pytest.approx(ac, rel=0.05)
    fin = df[df.final]
    below = fin[fin.alpha < 0.9 * ac]
    np.testing.assert_allclose(below.w_sq, 2 * (S1 - 2 * below.alpha), rtol=2e-3)
    assert (fin[fin.alpha > 1.05 * ac].w_sq < 1e-6).all()


# ------------------------------------------------------------------------------------------
# interruption, resumption, no duplicates
# ------------------------------------------------------------------------------------------
def _tiny_spec(mode, **kw):
    d = dict(name="tiny", dataset="gaussian-mixture", data_options=dict(n_classes=3, dim=6, n_train=60, n_test=60),
             model="mlp", depth=1, width=8, alphas="1e-3:1e-1:4", mode=mode, seeds=2, optimizer="adam", lr=1e-2,
             epochs=30, chunk_size=3, record_every=10)
    d.update(kw)
    return make_spec(d)


class Stop(Exception):
    pass


KEY = ["branch", "alpha_index", "seed", "record_epoch"]


def _canon(df):
    return df.drop(columns=["seconds"]).sort_values(KEY).reset_index(drop=True)


def test_interrupted_sweep_resumes_to_identical_records(tmp_path):
    """A loop sweep (two chains of warm starts) stopped after three trainings, then rerun."""
    mode = "loop"
    spec = _tiny_spec(mode)
    ref = run_sweep(spec, tmp_path / "ref")
    assert not ref.duplicated(KEY).any()
    n_final = len(spec.alpha_grid()) * len(spec.seed_list()) * (2 if mode == "loop" else 1)
    assert ref["final"].sum() == n_final

    seen = {"n": 0}

    def boom(n):
        seen["n"] += n
        if seen["n"] >= 3:
            raise Stop()

    with pytest.raises(Stop):
        run_sweep(spec, tmp_path / "run", on_runs=boom)
    part = RunStore(tmp_path / "run").load_records()
    assert 0 < part["final"].sum() < n_final  # interrupted part-way, finished pieces kept

    plan = {}
    out = run_sweep(spec, tmp_path / "run", on_plan=lambda total, done: plan.update(total=total, done=done))
    assert plan["total"] == n_final and 0 < plan["done"] < n_final
    assert not out.duplicated(KEY).any()
    pd.testing.assert_frame_equal(_canon(out), _canon(ref), check_exact=False, rtol=1e-6, atol=1e-7)
    # a third run does nothing and changes nothing
    again = run_sweep(spec, tmp_path / "run", on_plan=lambda total, done: plan.update(done2=done))
    assert plan["done2"] == n_final
    pd.testing.assert_frame_equal(_canon(again), _canon(out))


def test_store_refuses_a_different_spec_in_the_same_folder(tmp_path):
    a, b = _tiny_spec("cold", alphas="0.01"), _tiny_spec("cold", alphas="0.02")
    assert a.hash() != b.hash() and a.hash() == _tiny_spec("cold", alphas="0.01", name="renamed").hash()
    RunStore(tmp_path / "r").init(a.model_dump(), a.hash())
    with pytest.raises(PhaseprobeError, match=r"^out: .*holds a different spec") as ei:
        run_sweep(b, tmp_path / "r", on_runs=lambda n: pytest.fail("computed before refusing"))
    assert "\n" not in str(ei.value)
    assert not (tmp_path / "r" / "records").exists()


# ------------------------------------------------------------------------------------------
# bad specs: one line naming the field, before any compute; the CLI exits 2
# ------------------------------------------------------------------------------------------
BAD = [
    ({"alphas": "-1:1:5"}, "alphas"),
    ({"alphas": "1e-3:1e-1"}, "alphas"),
    ({"alphas": ""}, "alphas"),
    ({"width": 0}, "width"),
    ({"depth": -1}, "depth"),
    ({"epochs": 0}, "epochs"),
    ({"lr": -1.0}, "lr"),
    ({"mode": "sideways"}, "mode"),
    ({"seeds": 0}, "seeds"),
    ({"convention": "L2"}, "convention"),
    ({"optimizer": "lbfgs"}, "optimizer"),
    ({"model": "resnet"}, "model"),
    ({"activation": "swish"}, "activation"),
    ({"loss": "hinge"}, "loss"),
    ({"patience": 0}, "patience"),
    ({"batch_size": 0}, "batch_size"),
    ({"widht": 3}, "widht"),
]


@pytest.mark.parametrize("bad,field", BAD)
def test_bad_spec_values_give_one_line_naming_the_field(bad, field):
    d = dict(name="x", dataset="digits", alphas="1e-3:1e-1:3", seeds=1, epochs=2)
    d.update(bad)
    with pytest.raises(PhaseprobeError) as ei:
        make_spec(d)
    msg = str(ei.value)
    assert "\n" not in msg and msg.startswith(f"{field}:"), msg


@pytest.mark.parametrize("bad,field", [
    ({"dataset": "imagenet"}, "dataset"),
    ({"dataset": "fashion-mnist", "data_dir": "/nonexistent/folder"}, "data_dir"),
    ({"dataset": "digits", "classes": [0, 42]}, "classes"),
])
def test_bad_data_fails_before_the_store_is_touched(tmp_path, bad, field):
    d = dict(name="x", alphas="1e-3:1e-1:3", seeds=1, epochs=2)
    d.update(bad)
    with pytest.raises(PhaseprobeError) as ei:
        run_sweep(make_spec(d), tmp_path / "out")
    msg = str(ei.value)
    assert "\n" not in msg and msg.startswith(f"{field}:"), msg
    assert not (tmp_path / "out").exists()


def _cli(*args, cwd=None):
    env = dict(os.environ, COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "phaseprobe.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


def test_cli_bad_values_exit_2_with_one_line(tmp_path):
    cases = [
        (["--set", "width=0"], "width"),
        (["--alphas", "1e-3:-1:5"], "alphas"),
        (["--dataset", "imagenet"], "dataset"),
        (["--spec", str(tmp_path / "missing.toml")], "spec"),
    ]
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text('[sweep]\nmode = "sideways"\n')
    cases.append((["--spec", str(bad_toml)], "mode"))
    cases.append((["show", str(tmp_path / "nothing")], "run"))
    for args, field in cases:
        r = _cli(*(args if args[0] == "show" else ["sweep", *args, "--out", str(tmp_path / "o")]))
        assert r.returncode == 2, (args, r.stderr[-2000:])
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith(f"error: {field}:"), (args, r.stderr)
        assert not (tmp_path / "o").exists()


def test_cli_end_to_end_sweep_then_show(tmp_path):
    spec = tmp_path / "tiny.toml"
    spec.write_text(
        '[sweep]\nname = "e2e"\ndataset = "digits"\nclasses = 3\nn_train = 150\nmodel = "mlp"\n'
        'depth = 1\nwidth = 8\nalphas = "1e-3:1:5"\nmode = "loop"\nseeds = 2\nlr = 0.01\nepochs = 40\n'
    )
    out = tmp_path / "run"
    r = _cli("sweep", "--spec", str(spec), "--set", "epochs=30", "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    meta = json.loads((out / "spec.json").read_text())
    assert meta["spec"]["epochs"] == 30 and meta["spec"]["name"] == "e2e"
    for f in ("transitions.csv", "plateaus.csv", "sweep.png", "classes.png", "report.html"):
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    n_pieces = len(list((out / "records").glob("*.parquet")))
    assert n_pieces == 10  # 5 strengths up + 5 down, one piece each
    r2 = _cli("show", str(out))
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert "trainings" in r2.stdout and "down" in r2.stdout and "up" in r2.stdout
    # a rerun of the same command resumes: nothing is recomputed
    r3 = _cli("sweep", "--spec", str(spec), "--set", "epochs=30", "--out", str(out), "--no-figures")
    assert r3.returncode == 0 and "resuming: 20/20" in r3.stderr
    assert len(list((out / "records").glob("*.parquet"))) == n_pieces
