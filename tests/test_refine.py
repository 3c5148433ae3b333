"""Adaptive strength refinement (spec ``refine``): bisection of every transition and Maxwell point.

The oracle is Ziyin & Ueda's scalar deep linear model (three weight matrices, full-batch GD, a
loop sweep): the up branch jumps to w = 0 at its spinodal (~0.6 for s = 2) and the branches'
regularised losses cross at the Maxwell point alpha_c = 0.5. A coarse grid (step 0.1) plus
refinement to 0.0125 must agree with a fine uniform grid (step 0.0125) within one fine step, with
far fewer trainings. Then: the transition table's brackets, resume after SIGKILL in the middle of
a refinement (a carried Adam state), and the spec's one-line errors.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from phaseprobe.errors import PhaseprobeError
from phaseprobe.store import RunStore
from phaseprobe.sweep.analysis import find_transitions, is_refined
from phaseprobe.sweep.driver import run_sweep
from phaseprobe.sweep.refine import n_bisections, refine_table
from phaseprobe.sweep.spec import load_spec_file, make_spec

S1 = 2.0
FINE_STEP = 0.0125
ALPHA_MAXWELL = 0.5  # closed form for L = 3, s = 2 (see tests/test_sweep.py)


def _dln(alphas, **kw):
    d = dict(name="dln-L3", dataset="lowrank-linear",
             data_options=dict(singular_values=[S1], in_dim=4, out_dim=1, n_train=32, n_test=32),
             model="linear", depth=3, width=6, alphas=alphas, mode="loop", seeds=2, loss="mse",
             optimizer="gd", lr=0.05, epochs=1500, chunk_size=8)
    d.update(kw)
    return make_spec(d)


COARSE = dict(alphas="lin:0.32:0.92:7", refine=True, refine_to=FINE_STEP)  # step 0.1; fine points are a superset
FINE = dict(alphas="lin:0.42:0.72:25")  # step 0.0125 around both the Maxwell point and the spinodal


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("refine")
    coarse = run_sweep(_dln(**COARSE), d / "coarse")
    fine = run_sweep(_dln(**FINE), d / "fine")
    return d, coarse, fine


def _up(df):
    (t,) = [t for t in find_transitions(df, "w_sq", n_boot=20) if t.branch == "up"]
    return t


# ------------------------------------------------------------------------------------------
def test_bisection_count_closed_form():
    # a 0.1 wide bracket to below 0.0125: three halvings (0.05, 0.025, 0.0125)
    assert n_bisections(0.1, 0.3, ("absolute", 0.0125), "l2") == 3
    assert n_bisections(0.1, 0.3, ("absolute", 0.01), "l2") == 4
    # 'wd' strengths are beta = 2 alpha: an absolute beta width of 0.025 is an alpha width of 0.0125
    assert n_bisections(0.1, 0.3, ("absolute", 0.025), "wd") == 3
    # relative: 2 % of the lower end 0.5 = 0.01 -> ceil(log2(0.1 / 0.01)) = 4
    assert n_bisections(0.1, 0.5, ("relative", 0.02), "l2") == 4
    assert n_bisections(0.005, 0.5, ("relative", 0.02), "l2") == 0  # already narrow enough


def test_spec_refine_fields_and_one_line_errors():
    base = dict(dataset="digits", alphas="1e-3:1:5", seeds=1)
    assert make_spec(base).refine_target() == ("relative", 0.02)
    assert make_spec({**base, "refine_to": "5%"}).refine_target() == ("relative", 0.05)
    assert make_spec({**base, "refine_to": 0.0005}).refine_target() == ("absolute", 0.0005)
    assert make_spec({**base, "refine_to": "0.0005"}).refine_target() == ("absolute", 0.0005)
    # without refinement its settings change no number: the hash (and resuming old runs) stays
    assert make_spec({**base, "refine_to": "7%"}).hash() == make_spec(base).hash()
    assert make_spec({**base, "refine": True}).hash() != make_spec(base).hash()
    for bad in ("abc", 0, -0.1, "0%", "150%", float("nan")):
        with pytest.raises(PhaseprobeError) as e:
            make_spec({**base, "refine": True, "refine_to": bad})
        msg = str(e.value)
        assert msg.startswith("refine_to:") and "\n" not in msg and "2%" in msg


def test_cli_refine_bad_value_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "phaseprobe.cli", "sweep", "--refine", "abc", "--out", str(tmp_path / "x")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: refine_to:"), r.stderr
    assert not (tmp_path / "x").exists()  # refused before the run folder is touched


def test_coarse_plus_refine_agrees_with_the_fine_grid(runs):
    _, coarse, fine = runs
    tc, tf = _up(coarse), _up(fine)
    # the upper spinodal: within one fine step, and the refined bracket is at most one fine step wide
    assert abs(tc.alpha_c - tf.alpha_c) <= FINE_STEP
    assert tc.alpha_bracket_hi - tc.alpha_bracket_lo <= FINE_STEP + 1e-9
    assert tf.alpha_bracket_lo - 1e-9 <= tc.alpha_c <= tf.alpha_bracket_hi + 1e-9  # inside the fine grid's cell
    assert tc.refined_steps >= 3 and tf.refined_steps == 0
    # the Maxwell point: within one fine step of the fine grid's and of the closed form
    assert abs(tc.maxwell - tf.maxwell) <= FINE_STEP
    assert tc.maxwell == pytest.approx(ALPHA_MAXWELL, abs=FINE_STEP)
    assert tc.maxwell_hi - tc.maxwell_lo <= FINE_STEP + 1e-9
    assert tc.order == tf.order == "first (loop)"
    # far fewer trainings: 7 strengths x 2 branches x 2 seeds + the bisections, against 25 x 2 x 2
    n_coarse, n_fine = int(coarse["final"].sum()), int(fine["final"].sum())
    assert n_fine == 100 and n_coarse < 0.6 * n_fine
    # a fine grid over the coarse grid's whole range would need 49 x 2 x 2 = 196 trainings
    assert n_coarse < 196 / 3


def test_refined_points_are_ordinary_records(runs):
    d, coarse, _ = runs
    fin = coarse[coarse["final"]]
    ref = fin[is_refined(fin)]
    grid = _dln(**COARSE).alpha_grid()
    assert len(ref) and (ref["alpha_index"] == -1).all()
    assert not np.isin(ref["alpha"].to_numpy(), grid).any()  # strengths off the grid, each stored with its record
    np.testing.assert_allclose(ref["strength"], ref["alpha"])  # convention l2
    assert (ref["refine_lo"] < ref["refine_hi"]).all() and (ref["refine_pass"] == 1).all()
    # every bisection step trains all seeds; a Maxwell step both branches at the same strength
    assert (ref.groupby(["refine_id", "refine_step", "branch"])["seed"].nunique() == 2).all()
    mx = ref[ref["refine_id"].str.contains("maxwell")]
    assert set(mx["branch"]) == {"up", "down"}
    tab = refine_table(coarse).set_index("branch")
    assert set(tab.index) == {"up", "maxwell"}
    assert (tab["alpha_hi"] - tab["alpha_lo"] <= FINE_STEP + 1e-9).all()
    # each step's bracket holds the next step's strength (a bisection)
    for rid, g in ref.groupby("refine_id"):
        g = g.sort_values("refine_step").drop_duplicates("refine_step")
        for (_, a), (_, b) in zip(g.iterrows(), g.iloc[1:].iterrows()):
            assert a["refine_lo"] < b["alpha"] < a["refine_hi"]
    # the up steps are warm starts from the grid point before the jump: the steps that landed
    # before the jump sit on the learned branch (||w||^2 of order 1), those after on w ~ 0
    up = ref[ref["refine_id"] == "refine-up-t0"]
    assert (up[up["refine_side"] == "before"]["w_sq"] > 0.5).all()
    assert (up[up["refine_side"] == "after"]["w_sq"] < 1e-3).all()
    # the store loads them, and a rerun plans nothing new
    again = run_sweep(_dln(**COARSE), d / "coarse")
    assert len(again) == len(coarse)


def test_refinement_in_member_chunks_equals_one_program(tmp_path):
    """Three seeds in chunks of two (two grid chains): each bisection step trains every seed, chunk by
    chunk, and decides on all of them; the numbers equal those of one three-member program."""
    kw = dict(alphas="lin:0.5:0.8:4", mode="up", seeds=3, refine=True, refine_to=0.025)
    a = run_sweep(_dln(chunk_size=2, **kw), tmp_path / "c2")
    b = run_sweep(_dln(chunk_size=3, **kw), tmp_path / "c3")
    key = ["refine_id", "refine_step", "seed"]
    ra, rb = (x[x["final"] & is_refined(x)].sort_values(key).reset_index(drop=True) for x in (a, b))
    assert len(ra) >= 3 * 2 and (ra.groupby(["refine_id", "refine_step"])["seed"].nunique() == 3).all()
    assert list(ra["refine_id"]) == list(rb["refine_id"])
    np.testing.assert_allclose(ra["alpha"], rb["alpha"])
    np.testing.assert_allclose(ra["w_sq"], rb["w_sq"], rtol=1e-4, atol=1e-6)
    assert list(ra["refine_side"]) == list(rb["refine_side"])
    assert RunStore(tmp_path / "c2").load_params("refine-up-t0-b01")["p000"].shape[0] == 3


def test_transition_table_reports_brackets_and_figures_draw(runs):
    from phaseprobe.geometry.run_curvature import _points
    from phaseprobe.runs import open_run
    from phaseprobe.sweep.summary import summarize

    d, _, _ = runs
    res = summarize(d / "coarse", figures=True, n_boot=20)
    tr = res["transitions"]
    for c in ("bracket_lo", "bracket_hi", "bracket_width", "refined_steps", "maxwell_width"):
        assert c in tr.columns
    up = tr[(tr["branch"] == "up") & (tr["observable"] == "w_sq")].iloc[0]
    assert up["bracket_width"] <= FINE_STEP + 1e-9 and up["refined_steps"] >= 3
    assert up["maxwell_width"] <= FINE_STEP + 1e-9
    assert (d / "coarse" / "sweep.png").stat().st_size > 0
    csv = pd.read_csv(d / "coarse" / "transitions.csv")
    assert "bracket_width" in csv.columns
    assert not any("strengths finished" in n for n in res["notes"])  # refined strengths are extra, not missing
    fine = summarize(d / "fine", figures=False, n_boot=20)["transitions"]
    fu = fine[(fine["branch"] == "up") & (fine["observable"] == "w_sq")].iloc[0]
    assert fu["refined_steps"] == 0 and fu["bracket_width"] == pytest.approx(FINE_STEP, rel=1e-6)
    # grid-only consumers: stored models by grid index, the curvature's points
    run = open_run(d / "coarse")
    m = run.model(branch="up", alpha_index=2, seed=0)
    assert m is not None
    spec = _dln(**COARSE)
    pts = _points(spec, RunStore(d / "coarse"))
    assert len(pts) == 14 and not any(p[0].startswith("refine-") for p in pts)
    r = subprocess.run([sys.executable, "-m", "phaseprobe.cli", "show", str(d / "coarse"), "--wide"],
                       capture_output=True, text=True, timeout=300, env=dict(os.environ, COLUMNS="250"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "bracket width" in r.stdout and "refined" in r.stdout


# ------------------------------------------------------------------------------------------
# SIGKILL in the middle of a refinement, then rerun: equal to an uninterrupted run
# ------------------------------------------------------------------------------------------
GM = """[sweep]
name = "refine-gm"
dataset = "gaussian-mixture"
data_options = { n_classes = 3, dim = 6, n_train = 60, n_test = 60 }
model = "mlp"
depth = 2
width = 8
alphas = "1e-4:1:7"
mode = "loop"
seeds = 2
optimizer = "adam"
lr = 0.01
epochs = 100
chunk_size = 3
fresh_opt = false
refine = true
refine_to = "5%"
"""
N_GRID_PIECES = 14  # 7 strengths x 2 branches, one chunk of seeds


def _canon(out: Path) -> pd.DataFrame:
    df = RunStore(out).load_records().drop(columns=["seconds"])
    key = ["branch", "alpha", "alpha_index", "seed", "record_epoch"]
    return df.sort_values(key).reset_index(drop=True)


def test_sigkill_mid_refinement_then_rerun_equals_uninterrupted(tmp_path):
    """A loop with a carried Adam state (``fresh_opt = false``): the bisections restart from the
    stored grid models and their optimiser states; two refinement passes."""
    spec_path = tmp_path / "gm.toml"
    spec_path.write_text(GM)
    ref = tmp_path / "ref"
    run_sweep(make_spec(load_spec_file(spec_path)), ref)
    ref_pieces = RunStore(ref).done_pieces()
    refine_pieces = sorted(p for p in ref_pieces if p.startswith("refine-"))
    assert len(refine_pieces) >= 5  # the run has a refinement long enough to interrupt
    assert any(k.startswith("o") for k in RunStore(ref).load_params("up-s000-a0000"))  # the carried state is stored

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "phaseprobe.cli", "sweep", "--spec", str(spec_path), "--out", str(out), "--no-figures"]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 400:
        d = out / "records"
        n = len([q for q in d.glob("refine-*.parquet")]) if d.exists() else 0
        if n >= 2:  # a piece is done once its arrays follow its records
            break
        assert p.poll() is None, p.stderr.read()[-2000:]
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.wait()
    done = RunStore(out).done_pieces()
    n_ref_done = len([q for q in done if q.startswith("refine-")])
    assert len(done) >= N_GRID_PIECES and 1 <= n_ref_done < len(refine_pieces), "not killed mid-refinement"
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert RunStore(out).done_pieces() == ref_pieces
    pd.testing.assert_frame_equal(_canon(out), _canon(ref))
    a, b = RunStore(out), RunStore(ref)
    for piece in refine_pieces:
        pa, pb = a.load_params(piece), b.load_params(piece)
        assert pa.keys() == pb.keys()
        for k in pa:
            np.testing.assert_array_equal(pa[k], pb[k], err_msg=f"{piece}/{k}")


def test_down_return_maxwell_and_seeds_that_jump_apart(tmp_path):
    """A loop of a small MLP: the up branch loses learning, the down branch regains it (its return)
    lower down, and the branches' regularised losses cross (a Maxwell crossing is bisected); the two seeds lose learning at different strengths, so the seed
    mean has two steps and a second pass narrows the one the first left. Every bracket the analysis
    reports ends below refine_to (5 % of the bracket's lower end)."""
    data = load_spec_file_text(GM.replace("fresh_opt = false", "fresh_opt = true"), tmp_path)
    df = run_sweep(make_spec(data), tmp_path / "run")
    tab = refine_table(df)
    assert {"up", "down", "maxwell"} <= set(tab["branch"])
    assert any(str(r).endswith("p2") for r in tab["refine_id"])  # a second pass ran
    trs = find_transitions(df, "test_acc", n_boot=0)
    assert {t.branch for t in trs} >= {"up", "down"}
    for t in trs:
        assert t.refined_steps >= 1
        assert t.alpha_bracket_hi - t.alpha_bracket_lo <= 0.05 * t.alpha_bracket_lo * (1 + 1e-9), t
    (up,) = [t for t in trs if t.branch == "up"]
    assert np.isfinite(up.maxwell) and up.maxwell_hi - up.maxwell_lo <= 0.05 * up.maxwell_lo * (1 + 1e-9)
    # the down branch regains learning below the up branch's jump (a hysteresis loop)
    (down,) = [t for t in trs if t.branch == "down"]
    assert down.alpha_c < up.alpha_c


def load_spec_file_text(text: str, folder: Path) -> dict:
    p = folder / "spec.toml"
    p.write_text(text)
    return load_spec_file(p)
