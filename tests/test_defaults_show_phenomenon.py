"""Specs that show the phenomenon their commands advertise (issue 14, item 5):

* ``examples/digits_closed_loop.toml`` (the default sweep's network on minibatches): a closed
  hysteresis loop -- the up branch's jump and the down branch's return both inside the grid, so
  both spinodals and the Maxwell point (where the two branches' regularised losses cross) are
  found from the data, in that order; run for real through the CLI (about a minute on two cores);
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
from phaseprobe.sweep.spec import load_spec_file, make_spec

ROOT = Path(__file__).resolve().parents[1]
CLOSED_LOOP = ROOT / "examples" / "digits_closed_loop.toml"


def _cli(*args, cwd):
    env = dict(os.environ, COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "phaseprobe.cli", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=1800)


@pytest.mark.slow
def test_closed_loop_spec_finds_both_spinodals_and_the_maxwell_point(tmp_path):
    r = _cli("sweep", "--spec", str(CLOSED_LOOP), "--out", "run", "--no-figures", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    grid = make_spec(load_spec_file(CLOSED_LOOP)).alpha_grid()
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
