"""`phaseprobe curvature` on a stored sweep: the run-folder path gives the same numbers as the
geometry toolbox applied by hand, and bad run folders fail with one-line errors."""

import numpy as np
import pytest
from typer.testing import CliRunner

from phaseprobe.cli import app
from phaseprobe.geometry import GeometryError, curvature_exact, exact_hessian, make_error_fn
from phaseprobe.geometry.run_curvature import curvature_of_run, curvature_report
from phaseprobe.store import RunStore
from phaseprobe.sweep import make_spec, run_sweep
from phaseprobe.sweep.run import SweepContext


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("curv") / "run"
    spec = make_spec(dict(
        name="tiny", dataset="gaussian-mixture", data_options=dict(n_classes=3, dim=4, n_train=60, n_test=30, separation=3.0),
        model="mlp", depth=2, width=4, alphas="1e-3:1:5", mode="up", seeds=2, optimizer="adam", lr=0.05, epochs=40,
    ))
    run_sweep(spec, out)
    return out, spec


def test_run_curvature_matches_toolbox(tiny_run):
    out, spec = tiny_run
    geo = curvature_of_run(out, exact=True)
    assert len(geo) == 5 * 2 and set(geo["branch"]) == {"up"}
    # recompute one point by hand: load its parameters, exact Hessian of E, closed-form R
    row = geo.iloc[7]
    store = RunStore(out)
    ctx = SweepContext(spec)
    model = ctx.arrays_to_model(store.load_params(row["piece"]), 2)
    import equinox as eqx
    import jax

    m = 0 if row["seed"] == 0 else 1
    one = jax.tree_util.tree_map(lambda x: x[m] if eqx.is_array(x) else x, model)
    err = make_error_fn(one, ctx.dataset, "ce")
    params = eqx.filter(one, eqx.is_inexact_array)
    H = exact_hessian(err, params)
    g = np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(jax.grad(err)(params))])
    R = curvature_exact(g, H)
    assert np.isclose(row["R_E"], R, rtol=1e-3, atol=1e-6)
    rep = curvature_report(out, geo)
    assert (out / "curvature.png").exists() and (out / "report.html").exists()
    assert "Curvature along the L2 path" in (out / "report.html").read_text()


def test_bad_run_folders(tmp_path):
    with pytest.raises(Exception) as e:
        curvature_of_run(tmp_path)
    # one line that says what to give (the store now names any phaseprobe run folder)
    assert "phaseprobe" in str(e.value) and "\n" not in str(e.value)
    res = CliRunner().invoke(app, ["curvature", str(tmp_path)])
    assert res.exit_code != 0


def test_saddle_index_is_labelled_exact_or_lower_bound(tiny_run):
    out, _ = tiny_run
    ex = curvature_of_run(out, exact=True, seeds=[0])
    st = curvature_of_run(out, exact=False, n_probes=8, lanczos_k=2, seeds=[0])
    for geo in (ex, st):
        for c in ("saddle_index_L", "saddle_index_L_exact", "saddle_index_L_label", "saddle_rel_tol", "residual_tol",
                  "bottom_L_residuals", "neg_eigs_E", "neg_eigs_E_exact", "neg_eigs_E_label"):
            assert c in geo.columns, c
        for r in geo.itertuples(index=False):
            assert r.saddle_index_L_label == (f"{r.saddle_index_L}" if r.saddle_index_L_exact else f">= {r.saddle_index_L}")
            assert r.saddle_index_lower_bound == (not r.saddle_index_L_exact)
            assert r.tol == pytest.approx(r.saddle_rel_tol * max(abs(r.lambda_min_L), abs(r.lambda_max_L)), rel=1e-6)
    assert ex["saddle_index_L_exact"].all() and (ex["residual_tol"] == 0).all()
    # an exact Lanczos count agrees with the dense spectrum's
    same = st["saddle_index_L_exact"].to_numpy()
    assert np.array_equal(st["saddle_index_L"].to_numpy()[same], ex["saddle_index_L"].to_numpy()[same])
    # the CLI lists each seed's label (never a seed mean of counts), the parquet keeps the columns
    res = CliRunner().invoke(app, ["curvature", str(out), "--stochastic", "--probes", "8", "--k", "2", "--seed", "0"])
    assert res.exit_code == 0, res.output
    assert "saddle index L per seed" in res.output
    import pandas as pd

    pq = pd.read_parquet(out / "curvature.parquet")
    assert pd.api.types.is_string_dtype(pq["saddle_index_L_label"]) and pq["saddle_index_L_exact"].dtype == bool
    assert "saddle index of L_alpha per stored minimum" in (out / "report.html").read_text()
