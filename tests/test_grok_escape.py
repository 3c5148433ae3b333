"""Grokking as escape (issue 16, item 4): the delay-vs-noise study's censored Arrhenius fit, a
tiny real run of it, and the published setups (examples/grok_nanda.toml, grok_power.toml)."""

from pathlib import Path

import numpy as np
import pandas as pd

from phaseprobe.grokking.noise import fit_grok_arrhenius, grok_delay_table, grok_noise_delays
from phaseprobe.grokking.spec import load_grok_file, make_grok_spec

ROOT = Path(__file__).resolve().parents[1]


def _synthetic(dF: float, temps, n: int, budget: float, seed: int = 0) -> pd.DataFrame:
    """Exponential delays with mean exp(dF / T) after a fixed t_train, censored at the budget."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, T in enumerate(temps):
        d = rng.exponential(np.exp(dF / T), n)
        gen = d < budget
        rows.append(pd.DataFrame({"level": i, "temperature": T, "lr": 1.0, "fitted": True, "generalised": gen,
                                  "t_train": 10.0, "delay": np.where(gen, d, np.nan),
                                  "exposure_steps": np.where(gen, d, budget), "exposure_time": np.where(gen, d, budget),
                                  "budget_steps": budget + 10.0, "noise": "langevin"}))
    ctrl = pd.DataFrame({"level": len(temps), "temperature": 0.0, "lr": 1.0, "fitted": [True, False], "generalised": False,
                         "t_train": [10.0, np.nan], "delay": np.nan, "exposure_steps": [budget, 0.0],
                         "exposure_time": [budget, 0.0], "budget_steps": budget + 10.0, "noise": "langevin"})
    return pd.concat(rows + [ctrl], ignore_index=True)


def test_censored_fit_recovers_the_slope_and_does_not_depend_on_the_budget():
    temps = [0.25, 0.2, 1 / 6, 1 / 7]  # mean delays e^4 .. e^7 (55 .. 1100)
    # seed 1 of 20 checked (the 95 % interval held the true slope for 18 of seeds 0..19: its coverage)
    long = fit_grok_arrhenius(_synthetic(1.0, temps, 200, 1e6, seed=1))
    short_df = _synthetic(1.0, temps, 200, 150.0, seed=1)
    short = fit_grok_arrhenius(short_df)
    noisy = short_df[short_df["temperature"] > 0]
    assert 0.35 < (~noisy["generalised"]).mean() < 0.65  # about half censored
    for f in (long, short):
        assert f["dF_lo"] < 1.0 < f["dF_hi"]
    assert short["dF_lo"] < long["dF"] < short["dF_hi"]
    # the T = 0 control and the member that never fitted stay out of the fit
    assert short["control_members"] == 1 and short["members"] == 800
    # dropping the censored ones (a mean over the escaped only) would flatten the slope
    esc = short_df[short_df["generalised"]]
    naive = np.polyfit(1 / esc.groupby("temperature")["temperature"].first(),
                       np.log(esc.groupby("temperature")["delay"].mean()), 1)[0]
    assert naive < short["dF_lo"]
    tab = grok_delay_table(short_df)
    assert (tab["generalised"] <= tab["fitted"]).all() and np.isinf(tab.loc[tab["temperature"] == 0, "tau"]).all()


def test_tiny_delay_run_records_consistent_first_passages():
    df = grok_noise_delays(temperatures=[0.0, 1e-3], seeds=2, p=7, train_frac=0.7, width=32, embed_dim=8,
                           alpha=1e-3, lr=1.0, steps=300, check_every=50)
    assert len(df) == 4 and set(df["temperature"]) == {0.0, 1e-3}
    assert (df["budget_steps"] == 300).all() and (df["check_every"] == 50).all()
    g = df[df["generalised"]]
    np.testing.assert_allclose(g["exposure_steps"], g["t_test"] - g["t_train"])
    c = df[df["fitted"] & ~df["generalised"]]
    np.testing.assert_allclose(c["exposure_steps"], 300 - c["t_train"])
    assert (df.loc[~df["fitted"], "exposure_steps"] == 0).all()
    np.testing.assert_allclose(df["exposure_time"], df["exposure_steps"] * df["lr"])


def test_published_setups_follow_the_papers():
    nanda = make_grok_spec(load_grok_file(ROOT / "examples" / "grok_nanda.toml"))
    assert (nanda.p, nanda.op, nanda.train_frac, nanda.model, nanda.n_layers, nanda.embed_dim, nanda.n_heads,
            nanda.width) == (113, "+", 0.3, "transformer", 1, 128, 4, 512)
    assert nanda.batch_size is None and nanda.lr == 1e-3 and list(nanda.weight_decays) == [1.0]
    assert (nanda.b1, nanda.b2) == (0.9, 0.98) and (nanda.schedule, nanda.warmup_steps) == ("warmup", 10)
    assert nanda.deviations() == {}
    power = make_grok_spec(load_grok_file(ROOT / "examples" / "grok_power.toml"))
    assert (power.p, power.op, power.train_frac, power.n_layers, power.embed_dim, power.batch_size) == (97, "/", 0.5, 2, 128, 512)
    assert (power.lr, list(power.weight_decays), power.b2, power.schedule, power.warmup_steps) == (1e-3, [1.0], 0.98, "warmup", 10)
    assert power.deviations() == {}
