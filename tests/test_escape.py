"""``phaseprobe escape``: Arrhenius escape of a deep linear network from its metastable rank-0 phase.

The closed-form barrier (project convention, :mod:`phaseprobe.conventions`). A depth-3 network of
width 1, ``f(x) = c b a x``, learns ``y = s x`` from whitened inputs (``x = +-1``), so the data error
is ``E = mean 1/2 (f(x) - y)^2 = 1/2 (u - s)^2`` with ``u = a b c``, and the regularised loss is::

    V(a, b, c) = 1/2 (abc - s)^2 + alpha (a^2 + b^2 + c^2).

Critical points: ``dV/da = (u - s) bc + 2 alpha a = 0``; times ``a``: ``(u - s) u + 2 alpha a^2 = 0``,
and the same with ``b``, ``c``, so ``a^2 = b^2 = c^2`` wherever ``u != 0`` (balanced). On the balanced
line ``a = b = c``, ``V(a) = 1/2 (a^3 - s)^2 + 3 alpha a^2`` and ``V'(a) = 3a [a (a^3 - s) + 2 alpha]``:
besides the origin (a minimum for every ``alpha > 0``, Hessian ``2 alpha I``), the roots of
``g(a) = a (s - a^3) = 2 alpha``. ``g`` peaks at ``a^3 = s/4`` with ``g = 3 (s/4)^(4/3)``, so for
``alpha < alpha_c = 3/2 (s/4)^(4/3)`` there are two: the saddle ``a_s`` (smaller) and the learned
minimum ``a_on``. The learned phase is the stable one below the equal-loss point
``alpha* = 1/2 (s/2)^(4/3)`` (where ``u_on = s/2``). The barrier out of the trapped origin is::

    dV = V(a_s) - V(0) = 1/2 (a_s^3 - s)^2 + 3 alpha a_s^2 - 1/2 s^2,
    ~= 4 alpha^3 / s^2  for small alpha  (a_s ~= 2 alpha / s).

For ``s = 1``, ``alpha = 0.15``: ``a_s = 0.30913`` (``a^4 - a + 0.3 = 0``), ``dV = 0.013898``;
``alpha_c = 0.2362``, ``alpha* = 0.1984``. Under Langevin dynamics ``w <- w - lr grad V + sqrt(2 lr T) xi``
the stationary density is ``exp(-V/T)`` and (Kramers) the escape rate is ``A exp(-dV/T)`` with a
prefactor ``A`` independent of ``T``, so ``ln tau = dV/T + c``.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from phaseprobe.errors import PhaseprobeError
from phaseprobe.escape.analysis import budget_records, escape_time_table, fit_arrhenius
from phaseprobe.escape.spec import make_escape_spec
from phaseprobe.escape.theory import critical_alpha, maxwell_alpha, mode_barrier, mode_energy
from phaseprobe.experiment import get_kind, run_experiment

SMALL = dict(replicas=48, barrier_ratios=[3.0, 4.0, 5.0, 6.0], steps=40_000, n_pieces=8, lr=0.1)


def test_closed_form_barrier_matches_the_docstring_and_brute_force():
    b = mode_barrier(1.0, 0.15, 3)
    assert b.a_saddle == pytest.approx(0.309132, abs=1e-6)
    assert b.a_saddle ** 4 - b.a_saddle + 0.3 == pytest.approx(0.0, abs=1e-12)
    assert b.barrier == pytest.approx(0.5 * (b.a_saddle ** 3 - 1) ** 2 + 0.45 * b.a_saddle ** 2 - 0.5, rel=1e-12)
    assert b.barrier == pytest.approx(0.013898, abs=2e-6)
    assert critical_alpha(1.0, 3) == pytest.approx(1.5 * 0.25 ** (4 / 3), rel=1e-12)
    assert maxwell_alpha(1.0, 3) == pytest.approx(0.5 * 0.5 ** (4 / 3), rel=1e-12)
    # the saddle is the maximum of V along the balanced line between the two minima
    a = np.linspace(0, b.a_on, 200001)
    v = mode_energy(a, 1.0, 0.15, 3)
    assert v.max() - v[0] == pytest.approx(b.barrier, rel=1e-6)
    assert b.depth_on < 0  # alpha < alpha*: the learned phase is the stable one, rank 0 metastable
    assert mode_barrier(1.0, 0.01, 3).barrier == pytest.approx(4 * 0.01 ** 3, rel=0.05)  # small-alpha limit


def test_the_trainer_loss_is_the_closed_form_energy():
    """The kind's network and data give V(a, a, a) through the trainer's own regularised loss."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    from phaseprobe.escape.kind import EscapeContext

    ctx = EscapeContext(make_escape_spec(SMALL))
    model = ctx.members(1)
    for a in (0.0, 0.2, 0.30913, 0.8):
        m = jax.tree_util.tree_map(lambda x: jnp.full_like(x, a) if eqx.is_inexact_array(x) else x, model)
        ev = ctx.trainer.evaluate(eqx.filter(m, eqx.is_inexact_array), jnp.full((1,), 0.15, jnp.float32), grad=False)
        assert float(np.ravel(ev["loss"])[0]) == pytest.approx(mode_energy(a, 1.0, 0.15, 3), rel=1e-5, abs=1e-7)


def test_fit_recovers_a_known_barrier_from_censored_exponential_times():
    rng = np.random.default_rng(0)
    temps = np.repeat([1.0, 0.5, 0.333, 0.25], 200)
    tau = 3.0 * np.exp(2.0 / temps)
    t = rng.exponential(tau)
    budget = 400.0
    fit = fit_arrhenius(temps, np.minimum(t, budget), t < budget)
    assert fit["censored"] > 100
    assert fit["dF_lo"] < 2.0 < fit["dF_hi"]
    assert abs(fit["dF"] - 2.0) < 0.1
    # dropping the censored replicas (a mean over the escaped ones only) is biased low
    ok = t < budget
    naive = np.polyfit(1 / np.unique(temps), [np.log(t[ok & (temps == T)].mean()) for T in np.unique(temps)], 1)[0]
    assert naive < fit["dF_lo"]


def test_bad_input_fails_in_one_line():
    with pytest.raises(PhaseprobeError, match="^alpha: .*alpha\\*"):
        make_escape_spec({"alpha": 0.21})
    with pytest.raises(PhaseprobeError, match="^depth: "):
        make_escape_spec({"depth": 2})
    with pytest.raises(PhaseprobeError, match="^temperatures: "):
        make_escape_spec({"temperatures": [0.003]})
    with pytest.raises(PhaseprobeError, match="^replicas: "):
        make_escape_spec({"replicas": "many"})


@pytest.fixture(scope="module")
def escape_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("escape")
    spec = make_escape_spec(SMALL)
    run_experiment("escape", spec, out)
    res = get_kind("escape").analyse(out, figures=True)
    return out, spec, res


def test_trap_is_prepared_at_rank_zero(escape_run):
    out, spec, res = escape_run
    from phaseprobe.store import RunStore

    prep = RunStore(out).load_piece_records("prepare")
    assert abs(float(prep["end_to_end"].iloc[0])) < 1e-6
    assert prep["alpha_prepare"].iloc[0] > critical_alpha(1.0, 3)
    # the barrier measured with the trainer's loss on the path trapped -> learned minimum
    b = spec.barrier()
    assert prep["barrier_path_max"].iloc[0] == pytest.approx(b.barrier, rel=1e-3)
    assert prep["saddle_end_to_end_path"].iloc[0] == pytest.approx(b.u_saddle, rel=2e-2)
    assert prep["learned_minus_trapped_loss"].iloc[0] == pytest.approx(b.depth_on, rel=1e-3)
    assert res["arrhenius"]["barrier_measured"].iloc[0] == pytest.approx(b.barrier, rel=1e-3)


def test_fitted_barrier_within_15_percent_of_closed_form(escape_run):
    out, spec, res = escape_run
    a = res["arrhenius"].iloc[0]
    assert abs(a["dF_fit"] / spec.barrier().barrier - 1) < 0.15
    assert a["dF_lo"] < a["dF_fit"] < a["dF_hi"]
    assert (out / "escape_survival.png").exists() and (out / "escape_arrhenius.png").exists()


def test_escape_time_ratio_within_its_sampling_interval(escape_run):
    """tau(T_cold) / tau(T_hot) against exp(dV (1/T_cold - 1/T_hot)); the measured log-ratio's
    95 % interval is +-1.96 sqrt(1/d_1 + 1/d_2) (d the escapes)."""
    out, spec, res = escape_run
    tab = res["escape_times"]
    hot, cold = tab.iloc[0], tab.iloc[2]
    measured = math.log(cold["tau_steps"] / hot["tau_steps"])
    predicted = spec.barrier().barrier * (1 / cold["temperature"] - 1 / hot["temperature"])
    half = 1.96 * math.sqrt(1 / hot["escaped"] + 1 / cold["escaped"])
    assert abs(measured - predicted) < half
    assert predicted > 1.5  # the ratio spans several-fold: the test can fail


def test_censoring_half_budget_gives_the_same_fit(escape_run):
    """A budget at which about half the replicas are still trapped fits the same barrier (within
    its interval) as the full budget: censored replicas count through their exposure."""
    out, spec, res = escape_run
    from phaseprobe.store import RunStore

    allrec = RunStore(out).load_records()
    frac = {p: 1 - budget_records(allrec, p)["escaped"].mean() for p in sorted(allrec["piece"].unique()) if p.startswith("t")}
    piece = min(frac, key=lambda p: abs(frac[p] - 0.5))
    assert 0.3 < frac[piece] < 0.7
    short = budget_records(allrec, piece)
    fit_short = fit_arrhenius(short["temperature"], short["exposure_steps"], short["escaped"])
    fit_long = res["fit"]
    assert fit_long["censored"] < fit_short["censored"]
    assert fit_short["dF_lo"] < fit_long["dF"] < fit_short["dF_hi"]
    assert len(res["records"]) == len(short)
    tab = escape_time_table(short)
    assert (tab["censored_frac"] > 0).any()


def _cli(*args, **kw):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "phaseprobe.cli", "escape", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def test_killed_run_resumes_bit_identical_and_show_opens_it(tmp_path):
    from phaseprobe.runs import open_run
    from phaseprobe.store import RunStore

    flags = ["--replicas", "8", "--barrier-ratios", "3,5", "--steps", "3000", "--set", "n_pieces=6", "--no-figures"]
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert _cli(*flags, "--out", str(full)).wait(timeout=300) == 0
    p = _cli(*flags, "--out", str(killed))
    deadline = time.time() + 240
    while time.time() < deadline and len(list(killed.glob("records/*.parquet"))) < 3:
        time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert len(list((killed / "records").glob("*.parquet"))) < 7
    q = _cli(*flags, "--out", str(killed))
    text = q.communicate(timeout=300)[0]
    assert q.returncode == 0, text
    a, b = RunStore(full), RunStore(killed)
    pd.testing.assert_frame_equal(a.load_records().drop(columns=["seconds"], errors="ignore"),
                                  b.load_records().drop(columns=["seconds"], errors="ignore"))
    for piece in a.done_pieces():
        pa, pb = a.load_params(piece), b.load_params(piece)
        assert pa.keys() == pb.keys() and all(np.array_equal(pa[k], pb[k]) for k in pa)
    show = subprocess.run([sys.executable, "-m", "phaseprobe.cli", "show", str(killed)], capture_output=True, text=True)
    assert show.returncode == 0 and "arrhenius" in show.stdout, show.stdout + show.stderr
    run = open_run(killed)
    assert run.kind == "escape" and len(run.records) > 0
    m = run.model(temperature_index=1, replica=3)
    assert len(m.weights) == 3


def test_grid_writes_one_run_per_cell_and_show_opens_the_grid(tmp_path):
    from phaseprobe.runs import open_run

    out = tmp_path / "grid"
    p = _cli("--replicas", "4", "--barrier-ratios", "3,4", "--steps", "1000", "--set", "n_pieces=2", "--no-figures",
             "--out", str(out), "--grid", "alpha=0.12,0.15")
    text = p.communicate(timeout=300)[0]
    assert p.returncode == 0, text
    cells = sorted(d.name for d in (out / "cells").iterdir())
    assert cells == ["alpha-0.12", "alpha-0.15"]
    for c in cells:
        assert (out / "cells" / c / "arrhenius.csv").exists()
    show = subprocess.run([sys.executable, "-m", "phaseprobe.cli", "show", str(out)], capture_output=True, text=True)
    assert show.returncode == 0, show.stdout + show.stderr
    run = open_run(out)
    assert run.kind == "grid" and len(run.cells) == 2 and len(run.records) > 0
