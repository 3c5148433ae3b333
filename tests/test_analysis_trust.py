"""The sweep analysis says only what it knows (issue 12, items 1-5 and 8).

* ``converged`` is the full-batch regularised-gradient criterion, never the stop reason;
* a transition's interval always contains the grid cell of its jump, and the seed bootstrap only
  widens it (resamples that detect nothing are counted, ``detect_fraction``);
* the order is judged per seed and aggregated with counts; labels name what was measured;
  seed agreement counts seeds jumping within one grid step of each other; one Maxwell point per
  transition, whatever the observable;
* an unfinished branch is analysed on what exists, with a note;
* diverged members are excluded and counted; a chain stops at a member's first divergence;
* counts stay integers.

Synthetic record frames wherever possible; two tiny digits runs (a few seconds each).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from phaseprobe.sweep.analysis import (
    CONTINUOUS,
    FIRST_JUMP,
    FIRST_LOOP,
    NOT_RUN,
    analyze,
    find_transitions,
    plateaus,
    transitions_frame,
)

GRID = np.geomspace(1e-3, 1.0, 31)


def _frame(alphas, curves: dict, rng_seed=0, extra_cols: dict | None = None):
    """``curves[branch] = {seed: (test_acc, loss, w_sq[, diverged])}`` arrays over ``alphas``."""
    rows = []
    for b, per_seed in curves.items():
        for s, arrs in per_seed.items():
            acc, loss, wsq = arrs[:3]
            div = arrs[3] if len(arrs) > 3 else np.zeros(len(acc), bool)
            for i in range(len(acc)):
                if not np.isfinite(acc[i]) and not div[i]:
                    continue  # not recorded (an unfinished branch)
                rows.append({
                    "branch": b, "alpha_index": i, "alpha": float(alphas[i]), "strength": float(alphas[i]),
                    "convention": "l2", "seed": s, "final": True, "record_epoch": 100,
                    "test_acc": float(acc[i]), "train_acc": float(acc[i]), "loss": float(loss[i]),
                    "w_sq": float(wsq[i]), "train_error": float(loss[i]), "diverged": bool(div[i]),
                    "converged": False, "grad_norm": 1e-4, "stop_reason": "diverged" if div[i] else "max_epochs",
                })
    return pd.DataFrame(rows)


def _step_at(i, hi=0.9, lo=0.1, n=31):
    return np.where(np.arange(n) <= i, hi, lo)  # last point of the old phase: i


def _cold(curves_by_seed, loss=None, w=None):
    n = len(next(iter(curves_by_seed.values())))
    loss = np.ones(n) if loss is None else loss
    w = np.ones(n) if w is None else w
    return {"cold": {s: (c, loss, w) for s, c in curves_by_seed.items()}}


# ------------------------------------------------------------------------------------------
# item 1: converged = |grad L| < tol, whatever stopped the run
# ------------------------------------------------------------------------------------------
def _digits_ctx(**kw):
    from phaseprobe.sweep.run import SweepContext
    from phaseprobe.sweep.spec import make_spec

    d = dict(name="trust", dataset="digits", classes=3, n_train=120, n_test=60, model="mlp", depth=2, width=8,
             seeds=2, epochs=40, chunk_size=64)
    d.update(kw)
    return SweepContext(make_spec(d))


def _run_all(ctx):
    """Every unit of the context's spec, records and parameters collected in memory."""
    from phaseprobe.sweep.run import execute_unit, plan_units

    frames, params = [], {}

    def emit(piece, df, arrays):
        frames.append(df)
        params[piece] = arrays

    for u in plan_units(ctx.spec):
        execute_unit(ctx, u, set(), emit, params.__getitem__)
    return pd.concat(frames, ignore_index=True), params


def test_patience_stop_at_chance_is_not_converged():
    """Early stopping (patience 1, an improvement threshold no epoch can meet) stops every training
    after one epoch at chance with a large gradient: stopped by patience, NOT converged."""
    from phaseprobe.sweep.summary import convergence_counts, convergence_line

    ctx = _digits_ctx(alphas="1e-3,1e-2", mode="cold", optimizer="adam", lr=1e-5, patience=1, min_delta=10.0)
    df, _ = _run_all(ctx)
    fin = df[df["final"]]
    assert (fin["stop_reason"] == "patience").all()
    assert (fin["grad_norm"] > 1e-2).all() and (fin["test_acc"] < 0.6).all()
    assert not fin["converged"].any()
    assert (fin["converged_tol"] == ctx.spec.converged_grad_tol).all()
    # the definition, row by row, on every record
    np.testing.assert_array_equal(df["converged"], (df["grad_norm"] < df["converged_tol"]) & ~df["diverged"])
    c = convergence_counts(df)
    assert (c["trainings"], c["converged"], c["stop_reasons"]["patience"], c["diverged"]) == (4, 0, 4, 0)
    assert convergence_line(c) == "0/4 converged (|grad L| < 0.001); 4 stopped by patience"


def test_convergence_counts_recompute_old_records_from_the_gradient():
    """Records written before ``converged_tol`` existed: counted from grad_norm and the given tolerance."""
    from phaseprobe.sweep.summary import convergence_counts

    df = pd.DataFrame({"final": True, "grad_norm": [1e-4, 0.3, 0.5, np.nan], "diverged": [False, False, False, True],
                       "converged": [True, True, True, False], "stop_reason": ["max_epochs", "patience", "patience", "diverged"]})
    c = convergence_counts(df, tol=1e-3)
    assert (c["trainings"], c["converged"], c["diverged"], c["stop_reasons"]["patience"]) == (4, 1, 1, 2)


# ------------------------------------------------------------------------------------------
# item 2: intervals contain the grid cell; the bootstrap widens, never narrows
# ------------------------------------------------------------------------------------------
def test_all_seeds_jumping_at_the_same_step_give_the_grid_cell():
    rng = np.random.default_rng(1)
    df = _frame(GRID, _cold({s: _step_at(14) + 0.003 * rng.standard_normal(31) for s in range(3)}))
    (t,) = find_transitions(df, n_boot=100)
    assert t.alpha_lo == GRID[14] and t.alpha_hi == GRID[15]
    assert t.alpha_lo < t.alpha_c < t.alpha_hi
    assert t.detect_fraction == 1.0


def test_bootstrap_widens_and_counts_resamples_that_detect_nothing():
    # seeds jumping at neighbouring steps: the interval spans all three cells
    df = _frame(GRID, _cold({s: _step_at(13 + s) for s in range(3)}))
    (t,) = find_transitions(df, n_boot=200)
    assert t.alpha_lo <= GRID[13] and t.alpha_hi >= GRID[16]
    # one seed of three jumps: resamples without it see nothing, and they are counted
    df = _frame(GRID, _cold({0: _step_at(14), 1: np.full(31, 0.9), 2: np.full(31, 0.9)}))
    (t,) = find_transitions(df, n_boot=400)
    assert 0.5 < t.detect_fraction < 0.9  # 1 - (2/3)^3 = 0.70 in expectation
    assert t.alpha_lo <= GRID[14] and t.alpha_hi >= GRID[15]
    assert t.first_seeds == 1 and t.n_seeds == 3 and t.order == "undetermined"


# ------------------------------------------------------------------------------------------
# item 3: order per seed, with counts; labels say what was measured; agreement; one Maxwell point
# ------------------------------------------------------------------------------------------
def test_neighbouring_step_seeds_are_first_order_per_seed():
    """Three seeds, each a clean jump, at three neighbouring grid steps: the seed mean is a ramp, but
    every seed jumps at one grid step -- first order (jump) in 3/3 seeds, not continuous."""
    df = _frame(GRID, _cold({s: _step_at(13 + s) for s in range(3)}))
    (t,) = find_transitions(df, n_boot=50)
    assert t.jump_fraction == pytest.approx(1 / 3)  # of the seed mean
    assert t.order == FIRST_JUMP
    assert (t.first_seeds, t.continuous_seeds, t.n_seeds) == (3, 0, 3)
    assert t.order_seeds == "first in 3/3 seeds"
    assert t.seeds_agree == 2  # 13 and 14, or 14 and 15, lie within one grid step of each other


def test_ramps_in_every_seed_are_continuous():
    y = np.full(31, 0.9)
    y[12:18] = np.linspace(0.9, 0.1, 7)[1:]
    y[18:] = 0.1
    (t,) = find_transitions(_frame(GRID, _cold({s: y for s in range(3)})), n_boot=20)
    assert t.order == CONTINUOUS and (t.first_seeds, t.continuous_seeds) == (0, 3)
    assert t.order_seeds == "continuous in 3/3 seeds"


def test_seed_agreement_does_not_use_each_seeds_noise_threshold():
    """All seeds drop at the same step; one seed is so noisy that its own curve has no event above its
    own noise threshold. It still jumps at that step: three seeds agree."""
    rng = np.random.default_rng(0)
    curves = {0: _step_at(14), 1: _step_at(14), 2: _step_at(14) + 0.15 * rng.standard_normal(31)}
    (t,) = find_transitions(_frame(GRID, _cold(curves)), n_boot=20)
    assert t.seeds_agree == 3 and t.n_seeds == 3


def test_loop_is_first_loop_and_cold_jump_is_first_jump_and_maxwell_is_shared():
    """Up branch: accuracy drops after grid point 14, ||w||^2 only after 17; the down branch returns after
    4. The regularised losses cross between grid points 16 and 17: one Maxwell point for both rows."""
    n = 31
    i = np.arange(n)
    L1, L0 = 0.25 + 10 * GRID, np.full(n, 0.7)  # cross at alpha = 0.045
    acc_up, acc_dn = np.where(i <= 14, 0.9, 0.1), np.where(i <= 4, 0.9, 0.1)
    w_up, w_dn = np.where(i <= 17, 5.0, 1e-4), np.where(i <= 4, 5.0, 1e-4)
    loss_up, loss_dn = np.where(i <= 17, L1, L0), np.where(i <= 4, L1, L0)
    df = _frame(GRID, {"up": {s: (acc_up, loss_up, w_up) for s in range(3)},
                       "down": {s: (acc_dn, loss_dn, w_dn) for s in range(3)}})
    res = analyze(df, n_boot=20)
    ups = [t for t in res["transitions"] if t.branch == "up"]
    assert {t.observable for t in ups} == {"test_acc", "w_sq"}
    assert all(t.order == FIRST_LOOP for t in ups)
    m = {t.observable: t.maxwell for t in ups}
    assert np.isfinite(m["test_acc"]) and m["test_acc"] == m["w_sq"]
    assert GRID[16] < m["test_acc"] < GRID[17]
    assert m["test_acc"] == pytest.approx(0.045, rel=0.02)
    cold = _frame(GRID, _cold({s: acc_up for s in range(3)}))
    (t,) = find_transitions(cold, n_boot=10)
    assert t.order == FIRST_JUMP and np.isnan(t.maxwell)


# ------------------------------------------------------------------------------------------
# item 4: a half-finished loop
# ------------------------------------------------------------------------------------------
def test_half_loop_is_analysed_on_what_exists_with_a_note():
    """Up branch: 25 strengths; down branch interrupted after 17 (the largest 17 strengths)."""
    a = np.geomspace(1e-3, 0.3, 25)
    i = np.arange(25)
    nan = np.full(25, np.nan)
    acc_up = np.where(i <= 15, 0.9, 0.1)
    acc_dn = np.where(i <= 3, 0.9, 0.1).astype(float)
    acc_dn[:8] = np.nan  # the down branch starts at the top: its 8 smallest strengths never ran
    loss = np.where(i <= 15, 0.3, 0.5)
    w = np.where(i <= 15, 4.0, 1e-4)
    df = _frame(a, {"up": {s: (acc_up, loss, w) for s in range(3)},
                    "down": {s: (acc_dn, np.where(np.isfinite(acc_dn), 0.5, nan), np.where(np.isfinite(acc_dn), 1e-4, nan))
                             for s in range(3)}})
    res = analyze(df, n_boot=10)
    assert any("down" in n and "17 of 25" in n for n in res["notes"]), res["notes"]
    (t,) = [t for t in res["transitions"] if t.branch == "up" and t.observable == "test_acc"]
    assert t.alpha_lo == a[15] and t.alpha_hi == a[16]
    assert np.isnan(t.spinodal_down)  # the down branch has not come back on what exists
    assert t.hysteresis_area > 0


# ------------------------------------------------------------------------------------------
# item 5: diverged members
# ------------------------------------------------------------------------------------------
def test_diverged_members_are_excluded_and_counted():
    """A flat learned phase; at the three largest strengths every member diverged with huge ||w||^2."""
    n = 31
    div = np.arange(n) >= 28
    acc = np.where(div, 0.1, 0.9)
    w = np.where(div, 1.8e37, 2.0)
    df = _frame(GRID, {"cold": {s: (acc, np.where(div, 1e30, 0.3), w, div) for s in range(3)}})
    res = analyze(df, n_boot=10)
    assert res["transitions"] == []  # the only "transition" is the divergence
    assert any("9 diverged" in n for n in res["notes"]), res["notes"]
    (p,) = plateaus(df, [])
    assert p.level == pytest.approx(0.9) and p.alpha_to == GRID[27] and p.diverged == 9


def _divergence_ctx(mode, epochs):
    return _digits_ctx(alphas="1e-3,1e-2,0.1,1,3,10", mode=mode, optimizer="gd", lr=0.5, seeds=2, epochs=epochs)


def test_divergence_sweep_reports_no_transition_made_by_divergence():
    """`--optimizer gd --lr 0.5 --alphas 1e-3,1e-2,0.1,1,3,10 --mode cold` on digits: GD on
    alpha*||w||^2 with lr 0.5 diverges for alpha > 2. No transition may sit beyond alpha = 1."""
    ctx = _divergence_ctx("cold", 30)
    df, _ = _run_all(ctx)
    fin = df[df["final"]]
    assert fin[fin["alpha"] > 2]["diverged"].all()
    res = analyze(df, n_boot=20)
    assert all(t.alpha_hi <= 1.0 for t in res["transitions"]), res["transitions"]
    assert all(t.diverged == 4 for t in res["transitions"])  # 2 strengths x 2 seeds excluded, counted on every row
    tf = transitions_frame(res["transitions"])
    if len(tf):
        assert str(tf["diverged"].dtype).startswith("int")


def test_chain_stops_at_a_members_divergence_and_resumes_identically():
    """A loop: up 1e-3 .. 10 diverges at alpha = 3; alpha = 10 and the whole down branch are not run."""
    from phaseprobe.sweep.run import execute_unit, plan_units

    ctx = _divergence_ctx("loop", 120)  # long enough for alpha = 3 to overflow
    df, params = _run_all(ctx)
    fin = df[df["final"]].sort_values(["seed", "step_index"])
    for s, g in fin.groupby("seed"):
        first = int(g.loc[g["diverged"], "step_index"].min())
        assert g.loc[g["step_index"] == first, "stop_reason"].item() == "diverged"
        later = g[g["step_index"] > first]
        assert len(later) == 12 - first - 1 and (later["stop_reason"] == NOT_RUN).all()
        assert later["diverged"].all() and not later["converged"].any()
        assert later[["test_acc", "loss", "w_sq", "grad_norm"]].isna().all().all()
    assert not (fin["stop_reason"] == NOT_RUN).all()
    # resumed after the divergence: the same records (the chain remembers which members stopped)
    (u,) = plan_units(ctx.spec)
    done = {p for _, _, p in u.steps[:5]}
    frames = []
    execute_unit(ctx, u, done, lambda p, d, a: frames.append(d), params.__getitem__)
    redo = pd.concat(frames, ignore_index=True)
    orig = df[df["step_index"] >= 5]
    cols = ["branch", "alpha_index", "seed", "stop_reason", "diverged", "converged"]
    pd.testing.assert_frame_equal(redo[cols].reset_index(drop=True), orig[cols].reset_index(drop=True))
    res = analyze(df, n_boot=10)
    for t in res["transitions"]:
        assert t.alpha_hi <= 1.0, t


# ------------------------------------------------------------------------------------------
# item 8: counts stay integers
# ------------------------------------------------------------------------------------------
def test_counts_are_integers_and_labelled():
    rng = np.random.default_rng(2)
    df = _frame(GRID, _cold({s: _step_at(14) + 0.003 * rng.standard_normal(31) for s in range(3)}))
    extra = {f"class_acc_{c}": 0.9 for c in range(2)} | {f"class_prec_{c}": 0.9 for c in range(2)}
    df = df.assign(**extra, n_classes_learned=np.where(df["seed"] == 0, 9, 10))
    res = analyze(df, n_boot=10)
    tf = transitions_frame(res["transitions"])
    for c in ("first_seeds", "continuous_seeds", "n_seeds", "seeds_agree", "diverged"):
        assert str(tf[c].dtype).startswith("int"), c
    assert tf["seeds_agree"].tolist() == [3] and tf["n_seeds"].tolist() == [3]
    pl = pd.DataFrame([p.as_dict() for p in res["plateaus"]])
    assert pl["n_classes_learned"].tolist() == ["9-10", "9-10"]
