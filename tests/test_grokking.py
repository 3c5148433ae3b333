"""Grokking on modular arithmetic: data, token models, the grid, delays, hysteresis, geometry, CLI."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from phaseprobe.data.base import DataError
from phaseprobe.data.modular import OPS, is_prime, load_modular, modular_table
from phaseprobe.errors import PhaseprobeError, SpecError
from phaseprobe.grokking import GrokContext, crossing_step, grid_members, grokking_summary, make_grok_spec, train_grok_grid
from phaseprobe.models import build_model, count_params
from phaseprobe.models.nets import MODELS, ModelError

# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("op", OPS)
def test_modular_labels_are_the_operation(op):
    p = 7
    x, y = modular_table(p, op)
    a, b = x[:, 0].astype(int), x[:, 1].astype(int)
    if op == "+":
        want = (a + b) % p
    elif op == "-":
        want = (a - b) % p
    elif op == "*":
        want = (a * b) % p
    else:
        assert np.all(b != 0) and len(y) == p * (p - 1)
        # y is the c with c * b = a (mod p)
        assert np.all((y.astype(int) * b) % p == a)
        want = y
    assert np.array_equal(y, want)
    assert x.dtype == np.int32 and y.dtype == np.int32


def test_modular_split_is_seeded_and_complete():
    d1 = load_modular(p=23, op="+", train_frac=0.3, seed=0)
    d2 = load_modular(p=23, op="+", train_frac=0.3, seed=0)
    d3 = load_modular(p=23, op="+", train_frac=0.3, seed=1)
    assert d1.n_classes == 23 and d1.input_shape == (2,)
    assert d1.n_train == round(0.3 * 529) and d1.n_train + d1.n_test == 529
    assert np.array_equal(d1.x_train, d2.x_train) and np.array_equal(d1.y_test, d2.y_test)
    assert not np.array_equal(d1.x_train, d3.x_train)
    pairs = {tuple(r) for r in np.concatenate([d1.x_train, d1.x_test]).tolist()}
    assert len(pairs) == 529  # every pair once, train and test disjoint
    assert np.array_equal(d1.y_train, (d1.x_train[:, 0] + d1.x_train[:, 1]) % 23)


@pytest.mark.parametrize("kwargs, field", [
    (dict(p=1), "p:"), (dict(p=0), "p:"), (dict(p=-5), "p:"),
    (dict(op="%"), "op:"), (dict(op="pow"), "op:"), (dict(op=None), "op:"),
    (dict(train_frac=0.0), "train_frac:"), (dict(train_frac=1.0), "train_frac:"), (dict(train_frac=1.5), "train_frac:"),
    (dict(p=21, op="/"), "p:"),
])
def test_modular_bad_input_is_a_one_line_data_error(kwargs, field):
    with pytest.raises(DataError) as e:
        load_modular(**kwargs)
    msg = str(e.value)
    assert msg.startswith(field) and "\n" not in msg and ";" in msg


def test_is_prime_and_op_aliases():
    assert [n for n in range(30) if is_prime(n)] == [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]
    assert load_modular(p=11, op="div").meta["op"] == "/"
    assert load_modular(p=11, op="mul").meta["op"] == "*"


# ---------------------------------------------------------------------------------------------
# token models
# ---------------------------------------------------------------------------------------------


def test_token_models_registered_and_shaped():
    assert "embed-mlp" in MODELS and "transformer" in MODELS
    d = load_modular(p=11, train_frac=0.5)
    key = jax.random.PRNGKey(0)
    m = build_model("embed-mlp", d.input_shape, 11, key=key, depth=1, width=16, embed_dim=8)
    assert m(d.x_train[0]).shape == (11,)
    assert count_params(m) == 11 * 8 + (16 * 16 + 16) + (16 * 11 + 11)
    t = build_model("transformer", d.input_shape, 11, key=key, width=32, embed_dim=16, n_heads=4)
    out = jax.vmap(t)(d.x_train[:5])
    assert out.shape == (5, 11) and bool(jnp.all(jnp.isfinite(out)))
    # init_scale multiplies every parameter
    big = build_model("embed-mlp", d.input_shape, 11, key=key, depth=1, width=16, embed_dim=8, init_scale=3.0)
    leaves = zip(jax.tree_util.tree_leaves(m), jax.tree_util.tree_leaves(big))
    assert all(np.allclose(3.0 * np.asarray(a), np.asarray(b)) for a, b in leaves)


def test_token_model_bad_options():
    with pytest.raises(ModelError, match="model_options.heads"):
        build_model("embed-mlp", (2,), 11, key=jax.random.PRNGKey(0), heads=2)
    with pytest.raises(ModelError, match="embed_dim"):
        build_model("transformer", (2,), 11, key=jax.random.PRNGKey(0), embed_dim=10, n_heads=4)
    with pytest.raises(ModelError, match="input"):
        build_model("embed-mlp", (1, 8, 8), 11, key=jax.random.PRNGKey(0))


def test_transformer_fits_training_set():
    """The one-layer transformer (through the foundation trainer) memorises a small table."""
    from phaseprobe.train import TrainConfig, Trainer

    d = load_modular(p=11, op="+", train_frac=0.5, seed=0)
    one = build_model("transformer", d.input_shape, 11, key=jax.random.PRNGKey(0), width=64, embed_dim=32, n_heads=4)
    model = jax.tree_util.tree_map(lambda x: x[None] if eqx.is_array(x) else x, one)  # a one-member ensemble
    tr = Trainer(model, d, TrainConfig(loss="ce", optimizer="adamw", lr=3e-3, batch_size=None, epochs=300))
    res = tr.train(model, jnp.zeros(1), key=jax.random.PRNGKey(1))
    assert res.records[-1]["train_acc"][0] == 1.0


# ---------------------------------------------------------------------------------------------
# spec
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("data, field", [
    ({"op": "%"}, "op:"), ({"p": 1}, "p:"), ({"setup": "nope"}, "setup:"), ({"widht": 3}, "widht:"),
    ({"train_frac": 1.0}, "train_frac:"), ({"weight_decays": [-1.0]}, "weight_decays:"),
    ({"init_scales": [0.0]}, "init_scales:"), ({"model": "mlp"}, "model:"), ({"p": 22, "op": "/"}, "p:"),
    ({"hysteresis": {"mode": "sideways"}}, "hysteresis.mode:"),
    ({"hysteresis": {"enabled": True, "weight_decays": "1,2,3", "tops": [0.5]}}, "hysteresis.tops:"),
])
def test_spec_errors_are_one_line(data, field):
    with pytest.raises(SpecError) as e:
        make_grok_spec(data)
    assert str(e.value).startswith(field) and "\n" not in str(e.value)


def test_spec_setup_and_deviations():
    s = make_grok_spec({"setup": "nanda"})
    assert s.p == 113 and s.model == "transformer" and s.b2 == 0.98 and s.deviations() == {}
    s = make_grok_spec({"setup": "nanda", "p": 59})
    assert s.deviations() == {"p": (113, 59)}
    assert "Nanda" in s.setup_cite()


def test_crossing_step_interpolates_in_log_steps():
    steps = np.array([10, 100, 1000])
    assert crossing_step(steps, np.array([0.0, 0.5, 1.0]), 0.75) == pytest.approx(np.sqrt(100 * 1000))
    assert np.isnan(crossing_step(steps, np.array([0.0, 0.5, 0.9]), 0.95))
    assert crossing_step(steps, np.array([1.0, 1.0, 1.0]), 0.9) == 10


# ---------------------------------------------------------------------------------------------
# the grid: grokking with weight decay, memorising without (one ensemble)
# ---------------------------------------------------------------------------------------------

QUICK = {"setup": "quick", "weight_decays": [0.0, 3.0], "init_scales": [2.0], "steps": 3000, "n_records": 40}


@pytest.fixture(scope="module")
def quick_grid():
    spec = make_grok_spec(QUICK)
    ctx = GrokContext(spec)
    df, params = train_grok_grid(ctx)
    return spec, ctx, df, params, grokking_summary(df, spec)


def test_weight_decay_groks_and_no_weight_decay_memorises(quick_grid):
    spec, ctx, df, params, s = quick_grid
    assert spec.p == 23 and ctx.trainer.full_batch
    wd3 = s[s["weight_decay"] == 3.0].iloc[0]
    wd0 = s[s["weight_decay"] == 0.0].iloc[0]
    # with weight decay: fits the training set first, then the test set (> 95 %) within 3000 steps
    assert wd3["final_test_acc"] > 0.95 and wd3["final_phase"] == "generalising"
    assert wd3["t_train"] < 300 and wd3["t_test"] > 3 * wd3["t_train"] and wd3["delay"] > 0
    # without weight decay (large init): fits the training set, stays memorising
    assert wd0["final_train_acc"] == 1.0 and wd0["final_test_acc"] < 0.1
    assert wd0["final_phase"] == "memorising" and not wd0["grokked"]
    # the weight norm shrinks with weight decay and grows without
    first = df[df["step"] == df["step"].min()].set_index("weight_decay")["w_sq"]
    assert wd3["final_w_sq"] < 0.5 * first[3.0] and wd0["final_w_sq"] > first[0.0]
    # records are log-spaced and every record carries a phase
    steps = np.sort(df[df["member"] == 0]["step"].unique())
    assert steps[0] == 1 and steps[-1] == 3000 and len(steps) > 20
    assert set(df["phase"]) <= {"underfit", "memorising", "grokking", "generalising"}


def test_grid_is_deterministic_and_members_match_single_builds():
    spec = make_grok_spec({**QUICK, "weight_decays": [0.0, 1.0], "init_scales": [1.0, 3.0], "steps": 40, "n_records": 5})
    ctx = GrokContext(spec)
    a, pa = train_grok_grid(ctx)
    b, pb = train_grok_grid(ctx)  # fresh inits from the seeds again (the data split's seeding is tested above)
    cols = ["member", "step", "train_acc", "test_acc", "train_error", "test_error", "w_sq"]
    pd.testing.assert_frame_equal(a[cols], b[cols])
    assert all(np.array_equal(pa["grid-c0000"][k], pb["grid-c0000"][k]) for k in pa["grid-c0000"])
    # member m of the stacked init == build_model(..., init_scale=s) from the same seed's key
    mem = grid_members(spec)
    stacked = ctx.members(mem["seed"].tolist(), mem["init_scale"].tolist())
    from phaseprobe.grokking.phase import init_key

    for m, row in mem.iterrows():
        single = build_model(spec.model, (2,), spec.p, key=init_key(row["seed"]), depth=spec.depth, width=spec.width,
                             init_scale=row["init_scale"], **spec.model_options())
        for x, y in zip(jax.tree_util.tree_leaves(stacked), jax.tree_util.tree_leaves(single)):
            np.testing.assert_allclose(np.asarray(x)[m], np.asarray(y), rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# metastability: geometry of plateau vs solution; the warm-started weight-decay loop
# ---------------------------------------------------------------------------------------------


def test_geometry_compares_plateau_and_solution(quick_grid):
    from phaseprobe.grokking.metastable import compare_geometry

    spec, ctx, df, params, s = quick_grid
    g = make_grok_spec({**QUICK, "geometry": {"enabled": True, "n_probes": 8, "lanczos_k": 2}}).geometry
    geo = compare_geometry(ctx, s, params, grid_members(spec), geometry=g)
    assert list(geo["point"]) == ["memorising plateau", "generalised solution", "memoriser (wd 0, end)"]
    plateau, sol, mem = (geo.iloc[i] for i in range(3))
    assert plateau["train_acc"] >= 0.99 and plateau["test_acc"] < 0.5  # really on the plateau
    assert sol["test_acc"] > 0.95 and sol["step"] == 3000
    assert plateau["alpha"] == 1.5 and mem["alpha"] == 0.0
    wd3 = s[s["weight_decay"] == 3.0].iloc[0]
    assert wd3["t_train"] < plateau["step"] < wd3["t_test"]
    for col in ("R_E", "R_L", "lambda_max_E", "lambda_min_L", "tr_H_E"):
        assert np.all(np.isfinite(geo[col].to_numpy(float)))
    # H_L = H_E + 2 alpha I (the penalty covers every parameter): the spectrum shifts by 2 alpha = 3
    assert plateau["lambda_max_L"] == pytest.approx(plateau["lambda_max_E"] + 3.0, rel=0.05)


def test_hysteresis_loop_uses_the_sweep_continuation(tmp_path):
    from phaseprobe.grokking.metastable import hysteresis_curves, hysteresis_loops, hysteresis_summaries, run_hysteresis

    spec = make_grok_spec({**QUICK, "hysteresis": {"enabled": True, "weight_decays": "0.1,1", "steps_per_point": 30}})
    assert hysteresis_loops(spec) == [("top 1", [0.1, 1.0])]
    df = run_hysteresis(spec, tmp_path / "h")
    assert set(df["branch"]) == {"up", "down"} and set(df["convention"]) == {"decoupled"}
    assert np.allclose(df["alpha"], df["weight_decay"] / 2)
    curves = hysteresis_curves(df, spec)
    # loop order: up 0.1 -> 1, then down 1 -> 0.1, each a warm start of the previous point
    assert list(zip(curves["branch"], curves["weight_decay"])) == [("up", 0.1), ("up", 1.0), ("down", 1.0), ("down", 0.1)]
    summ = hysteresis_summaries(curves)["top 1"]
    assert "memorising_returns" in summ and "area_test_acc" in summ
    # resuming: the same spec in the same folder trains nothing new and gives the same records
    again = run_hysteresis(spec, tmp_path / "h")
    assert len(again) == len(df)


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def test_cli_grok_writes_parquet_figures_and_report(tmp_path):
    from typer.testing import CliRunner

    from phaseprobe.cli import app

    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["grok", "--setup", "quick", "--p", "11", "--wd", "0,3", "--init-scales", "1",
                                 "--steps", "60", "--no-hysteresis", "--no-geometry", "--out", str(out)])
    assert r.exit_code == 0, r.output
    for f in ("grok_records.parquet", "grok_summary.parquet", "grok_delays.parquet", "grok_curves.png",
              "grok_delay.png", "grok_phase.png", "report.html", "grok_spec.json"):
        assert (out / f).exists(), f
    rec = pd.read_parquet(out / "grok_records.parquet")
    assert set(rec["weight_decay"]) == {0.0, 3.0} and rec["step"].max() == 60
    assert "deviations" in (out / "grok_spec.json").read_text()


def test_cli_bad_operation_exits_cleanly():
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "phaseprobe.cli", "grok", "--op", "%", "--out", "/nonexistent/x"],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == ["error: op: unknown operation '%'; use one of '+', '-', '*', '/' (or add, sub, mul, div)"]


def test_example_specs_parse_and_name_their_setup():
    import glob

    from phaseprobe.grokking import DEFAULT_GROK_SPEC, SETUPS, load_grok_file

    files = sorted(glob.glob("examples/grok*.toml"))
    assert len(files) >= 4
    for f in files:
        s = make_grok_spec(load_grok_file(f))
        assert s.setup in SETUPS
    default = make_grok_spec(load_grok_file("examples/grok_default.toml"))
    assert default.hash() == make_grok_spec(DEFAULT_GROK_SPEC).hash()  # the file is the embedded default
