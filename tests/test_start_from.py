"""A sweep started from a stored model of another run (spec ``start_from``).

Oracle: full-batch gradient descent has no minibatch order, so a chain that starts from the
source run's model at grid point k and walks the source's grid points k+1, k+2, ... must repeat
the source's own chain there (same parameters, same records). Then the one-line refusals: a
folder that is not a sweep, a missing seed or grid point, an unknown key, another architecture,
and a source that changed after the run started from it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from phaseprobe.errors import PhaseprobeError
from phaseprobe.runs import open_run
from phaseprobe.sweep.driver import run_sweep
from phaseprobe.sweep.spec import make_spec

GRID = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]


def _dln(**kw):
    d = dict(name="dln", dataset="lowrank-linear",
             data_options=dict(singular_values=[2.0], in_dim=4, out_dim=1, n_train=32, n_test=32),
             model="linear", depth=3, width=6, alphas=GRID, mode="up", seeds=2, loss="mse",
             optimizer="gd", lr=0.05, epochs=40, chunk_size=8)  # short: the chains have not converged, so where they start shows
    d.update(kw)
    return make_spec(d)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    d = tmp_path_factory.mktemp("start")
    run_sweep(_dln(), d / "source")
    return d


def test_chain_from_a_stored_model_repeats_the_source_chain(source):
    spec = _dln(alphas=GRID[3:], start_from={"run": str(source / "source"), "branch": "up", "alpha_index": 2})
    assert spec.start_from["spec_hash"] == _dln().hash()  # the source is recorded
    recs = run_sweep(spec, source / "continued")
    src = open_run(source / "source").records
    for seed in (0, 1):
        for i, a in enumerate(GRID[3:]):
            got = recs[(recs.seed == seed) & (recs.alpha_index == i) & recs.final]
            want = src[(src.seed == seed) & (src.alpha_index == i + 3) & src.final]
            assert float(got.alpha.iloc[0]) == pytest.approx(a)
            np.testing.assert_allclose(got.w_sq.to_numpy(), want.w_sq.to_numpy(), rtol=1e-5)
            np.testing.assert_allclose(got.loss.to_numpy(), want.loss.to_numpy(), rtol=1e-5)


def test_a_few_steps_from_the_source_stay_at_its_minimum(source):
    """Three GD steps from the stored model stay near it (within 1 %); three from a fresh init do not."""
    start = {"run": str(source / "source"), "branch": "up", "alpha_index": 2}
    cont = run_sweep(_dln(alphas=GRID[2:3], epochs=3, start_from=start), source / "few-steps")
    fresh = run_sweep(_dln(alphas=GRID[2:3], epochs=3), source / "few-steps-fresh")
    src = open_run(source / "source").records
    want = src[(src.alpha_index == 2) & src.final].sort_values("seed").w_sq.to_numpy()
    got = cont[cont.final].sort_values("seed").w_sq.to_numpy()
    np.testing.assert_allclose(got, want, rtol=1e-2)
    assert not np.allclose(fresh[fresh.final].sort_values("seed").w_sq.to_numpy(), want, rtol=0.1)


def test_fresh_specs_hash_as_before():
    assert "start_from" not in _dln().model_dump()
    assert _dln().hash() == _dln(start_from=None).hash()


@pytest.mark.parametrize("start, field", [
    ({"run": "/nonexistent/run", "alpha_index": 0}, "start_from.run"),
    ({"alpha_index": 0}, "start_from"),
    ({"run": "SRC", "alpha_index": 99, "branch": "up"}, "start_from"),
    ({"run": "SRC", "alpha_index": 0, "brnch": "up"}, "start_from.brnch"),
    ({"run": "SRC", "alpha_index": "x"}, "start_from.alpha_index"),
])
def test_bad_start_from_is_one_line(source, start, field):
    start = {k: (str(source / "source") if v == "SRC" else v) for k, v in start.items()}
    with pytest.raises(PhaseprobeError) as e:
        _dln(start_from=start)
    msg = str(e.value)
    assert msg.startswith(field + ":") and "\n" not in msg


def test_missing_seed_and_other_architecture(source):
    with pytest.raises(PhaseprobeError, match=r"^start_from: .*no stored model for seed 5"):
        _dln(seeds=[0, 5], start_from={"run": str(source / "source"), "alpha_index": 1})
    spec = _dln(width=7, start_from={"run": str(source / "source"), "alpha_index": 1})
    with pytest.raises(PhaseprobeError, match=r"^start_from.run: .*architecture"):
        run_sweep(spec, source / "wider")


def test_changed_source_is_refused(source, tmp_path):
    import shutil

    src = tmp_path / "src"
    shutil.copytree(source / "source", src)
    spec = _dln(alphas=GRID[4:], start_from={"run": str(src), "alpha_index": 3})
    meta = json.loads((src / "spec.json").read_text())
    body = meta.get("spec", meta)
    body["epochs"] = 301
    (src / "spec.json").write_text(json.dumps(meta))
    with pytest.raises(PhaseprobeError, match=r"^start_from.run: .*has changed"):
        make_spec(spec.model_dump())
