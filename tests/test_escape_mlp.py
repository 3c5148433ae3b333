"""The MLP trap on digits (``phaseprobe escape --system mlp``): the trivial phase prepared on the
down branch and held below the equal-loss point is metastable -- noise-free replicas stay at
chance accuracy over the whole budget, Langevin replicas at a high enough temperature escape --
and the run is a resumable pipeline run with the censored fit and the measured barrier."""

import json

import numpy as np
import pytest

from phaseprobe.errors import SpecError
from phaseprobe.escape.mlp import make_mlp_escape_spec, mlp_budget_records, summarize_mlp_escape
from phaseprobe.experiment import run_experiment
from phaseprobe.store import RunStore

# the default model and trap (digits, 200 images, MLP 2x8 relu, alpha 0.02), fewer replicas and steps;
# in the default run 11 of 12 replicas at T = barrier escaped within 300 steps
TINY = {"barrier_ratios": [1.0, 4.0], "replicas": 6, "control_replicas": 4, "steps": 300, "check_every": 25,
        "n_pieces": 2, "saddle_steps": 0}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("escape-mlp") / "run"
    spec = make_mlp_escape_spec(TINY)
    run_experiment("escape-mlp", spec, out)
    return out, spec


def test_trap_is_metastable_and_noise_escapes(tiny_run):
    out, spec = tiny_run
    rec = RunStore(out).load_records()
    prep = rec[rec["piece"] == "prepare"].iloc[0]
    # the down branch's trap is the trivial phase; the up branch at the same alpha learns
    assert prep["trapped_train_acc"] < 0.2 and prep["learned_train_acc"] > 0.6
    assert prep["learned_minus_trapped_loss"] < 0  # below the equal-loss point: the trap is the metastable one
    assert prep["barrier_path_max"] > 0  # a barrier separates them on the straight path
    last = mlp_budget_records(rec)
    ctrl = last[last["temperature_index"] < 0]
    hot = last[last["temperature_index"] == 0]
    assert len(ctrl) == 4 and not ctrl["escaped"].any() and ctrl["train_acc"].max() < 0.2
    assert ctrl["w_sq"].max() < 1e-2 * hot["w_sq"].min()  # noise-free, the trap stays at w ~ 0
    assert hot["escaped"].sum() >= 3  # at T = the measured barrier most escape within 300 steps
    np.testing.assert_allclose(hot["temperature"], prep["barrier"], rtol=1e-6)
    assert (last["exposure_steps"] <= spec.steps).all()


def test_resume_and_analysis(tiny_run):
    out, spec = tiny_run
    before = RunStore(out).load_records()
    run_experiment("escape-mlp", spec, out)  # everything is stored: nothing reruns
    after = RunStore(out).load_records()
    assert len(after) == len(before)
    res = summarize_mlp_escape(out, figures=True)
    a = res["arrhenius"].iloc[0]
    assert a["control_escaped"] == 0 and a["escapes"] >= 3
    assert a["barrier_source"] == "path maximum" and a["barrier"] == pytest.approx(a["barrier_path_max"])
    t = res["escape_times"]
    # tau in lr x steps is tau in steps times the Langevin step
    np.testing.assert_allclose(t["tau_time"], t["tau_steps"] * spec.lr)
    assert (out / "escape_arrhenius.png").exists() and (out / "escape_survival.png").exists()
    assert "training accuracy >" in json.dumps(list(res["records"]["criterion"].unique()))


@pytest.mark.parametrize("data,field", [
    ({"noise": "brownian"}, "noise"),
    ({"alpha": 0.2, "prepare_alpha": 0.1}, "prepare_alpha"),
    ({"depth": 1}, "depth"),
    ({"noise": "sgd", "lrs": [0.1]}, "lrs"),
    ({"temperatures": [0.001, 0.001]}, "temperatures"),
    ({"threshold": 1.5}, "threshold"),
])
def test_spec_errors_are_one_line(data, field):
    with pytest.raises(SpecError) as e:
        make_mlp_escape_spec(data)
    assert str(e.value).startswith(field) and "\n" not in str(e.value)
