"""Specs that show the phenomenon their commands advertise (issue 14, item 5):

* ``phaseprobe sweep`` with no flags (the embedded default: digits, minibatches of 128): a closed
  hysteresis loop -- the up branch's jump and the down branch's return both inside the grid, so
  both spinodals and the Maxwell point (where the two branches' regularised losses cross) are
  found from the data, in that order; run for real through the CLI (about a minute on two cores);
* ``phaseprobe basins`` with no flags: at least one bisection-confirmed jump, its fold checked and
  its saddle refined, an edge of kind ``saddle`` in the basin graph (about a minute on two cores);
* ``phaseprobe connect``'s verdict line: a run either lists a confirmed transition or says in one
  line that none was found.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from phaseprobe.commands.connect import confirmed_verdict
from phaseprobe.sweep.spec import DEFAULT_SPEC, fit_default_batch, make_spec

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args, cwd):
    env = dict(os.environ, COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "phaseprobe.cli", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=1800)


@pytest.mark.slow
def test_default_sweep_finds_both_spinodals_and_the_maxwell_point(tmp_path):
    r = _cli("sweep", "--out", "run", "--no-figures", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    grid = make_spec(dict(DEFAULT_SPEC)).alpha_grid()
    t = pd.read_csv(tmp_path / "run" / "transitions.csv")
    acc = t[t.observable == "test_acc"]
    up = acc[acc.branch == "up"]
    assert len(up) == 1, acc.to_string()
    u = up.iloc[0]
    # the up branch collapses to chance; a down-branch return is paired with it: a loop
    assert u.jump < -0.5 and u.order == "first (loop)"
    paired = acc[(acc.branch == "down") & (acc.alpha_c == u.spinodal_down)]
    assert len(paired) == 1 and paired.iloc[0].jump > 0 and paired.iloc[0].order == "first (loop)"
    # both spinodals strictly inside the grid, the loop spanning a decade of alpha
    assert grid[0] < u.spinodal_down < u.spinodal_up < grid[-1]
    assert u.spinodal_up / u.spinodal_down > 10
    # the Maxwell point lies between the spinodals, in the up jump's metastable stretch
    assert np.isfinite(u.maxwell) and u.spinodal_down < u.maxwell < u.spinodal_up
    assert u.maxwell > u.spinodal_up / 2
    assert u.hysteresis_area > 0.5


def test_connect_verdict_says_plainly_when_nothing_is_confirmed():
    cols = ["label", "confirmed"]
    assert confirmed_verdict(pd.DataFrame(columns=cols)) == (
        "no confirmed transition found: the probe grid showed no jump (transitions.csv lists every candidate)")
    two = pd.DataFrame({"label": ["a", "b"], "confirmed": [False, False]})
    line = confirmed_verdict(two)
    assert line.startswith("no confirmed transition found: 2 candidate jumps") and "\n" not in line
    assert confirmed_verdict(pd.DataFrame({"label": ["a", "b"], "confirmed": [False, True]})) is None


def test_default_batch_falls_back_to_full_batch_only_for_sets_smaller_than_one_batch(tmp_path):
    d = dict(DEFAULT_SPEC)
    assert fit_default_batch(d) == (d, None)  # digits: 1,437 training images
    assert fit_default_batch({**d, "n_train": 500}) == ({**d, "n_train": 500}, None)
    small, note = fit_default_batch({**d, "n_train": 100})
    assert small["batch_size"] is None and note.startswith("batch_size:") and "100 examples" in note
    rng = np.random.default_rng(0)
    npz = tmp_path / "a.npz"
    np.savez(npz, x_train=rng.normal(size=(60, 4)), y_train=rng.integers(0, 2, 60),
             x_test=rng.normal(size=(20, 4)), y_test=rng.integers(0, 2, 20))
    own = {**d, "dataset": "npz", "data_options": {"path": str(npz), "sha256": "x"}}
    assert fit_default_batch(own)[0]["batch_size"] is None
    assert make_spec(fit_default_batch({**d, "n_train": 100})[0]).batch_size is None
    # an explicit batch is the user's: the command only adjusts the default's
    r = _cli("sweep", "--n-train", "100", "--batch", "128", "--out", "run", cwd=tmp_path)
    assert r.returncode == 2 and "batch_size" in (r.stdout + r.stderr)


@pytest.mark.slow
def test_default_basins_finds_a_confirmed_jump_with_its_saddle(tmp_path):
    r = _cli("basins", "--out", "run", "--no-figures", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    t = pd.read_csv(tmp_path / "run" / "transitions.csv")
    assert "confirmed" in t.columns
    ok = t[t.confirmed.astype(bool)]
    assert len(ok) >= 1, t.to_string()
    j = ok.iloc[0]
    # bisected below the grid step (0.003) and a real jump: the error rises, the distance to w_ref falls
    assert j.bracket < 1e-4 and j.error_hi - j.error_lo > 0.05 and j.dist_hi < j.dist_lo
    # a fold: the Hessian of E at the last pre-jump model has lambda_min at or below -2 beta
    assert j.fold_min_eig_E <= j["fold_condition_-2alpha"]
    # its saddle refined: an index count (or lower bound) of at least 1 negative direction
    assert j.saddle_index >= 1
    edges = pd.read_csv(tmp_path / "run" / "basin_edges.csv")
    assert (edges.kind == "saddle").any(), edges.to_string()
