"""Bad input stops at the door: one line ``error: field: problem; fix``, exit status 2, no traceback.

Every case runs the real command in its own process (``python -m phaseprobe.cli``) and checks
that it exits with status 2, writes exactly one line to stderr (starting ``error: <field>``),
shows no traceback, and leaves the ``--out`` folder as it was: absent when it did not exist,
byte for byte the same when it held a run. The processes run a few at a time; each refusal
happens before the model is built or anything trained (a width of 2e8 would otherwise allocate
hundreds of petabytes).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from phaseprobe.errors import PhaseprobeError


def _cli(args, cwd, timeout=300):
    env = dict(os.environ, COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "phaseprobe.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)


def _snapshot(folder: Path) -> dict | None:
    """Every file under ``folder`` with its bytes (None when the folder does not exist)."""
    if not folder.exists():
        return None
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


@dataclass(frozen=True)
class Case:
    name: str
    args: tuple[str, ...]  # {tmp}, {run} are filled in; --out is added
    field: str  # stderr must start with "error: <field>"
    says: str = ""  # ... and contain this
    existing_out: bool = False  # --out is a copy of a finished run folder (must stay byte-identical)


TINY = ("--alphas", "1e-3,1e-2", "--mode", "cold", "--epochs", "2", "--n-train", "100", "--width", "8", "--seeds", "1")

CASES = [
    Case("spec-is-a-folder", ("sweep", "--spec", "{tmp}/specdir"), "spec:", "is a folder"),
    Case("spec-not-utf8", ("sweep", "--spec", "{tmp}/latin1.toml"), "spec:", "not UTF-8"),
    Case("spec-table-is-a-number", ("sweep", "--spec", "{tmp}/sweep5.toml"), "spec:", "not a table"),
    Case("classes-not-integers", ("sweep", "--classes", "a,b"), "classes:", "'a,b'"),
    Case("set-through-a-number", ("sweep", "--set", "width.x=1"), "width:", "not a table"),
    Case("set-empty-field-name", ("sweep", "--set", "=5"), "--set:", "field name"),
    Case("duplicate-seeds", ("sweep", *TINY, "--set", "seeds=[0,0]"), "seeds:", "2 times"),
    Case("duplicate-seeds-into-a-run", ("sweep", *TINY, "--set", "seeds=[1,1]"), "seeds:", "2 times", existing_out=True),
    Case("unknown-model-option", ("sweep", *TINY, "--set", "model_options.foo=1"), "model_options.foo:", "not an option"),
    Case("negative-seed", ("sweep", *TINY, "--set", "seeds=[-1,0]"), "seeds:", "negative"),
    Case("record-every-negative", ("sweep", *TINY, "--set", "record_every=-5"), "record_every:", "positive"),
    Case("batch-larger-than-data", ("sweep", *TINY, "--batch", "5000"), "batch_size:", "larger than the training set"),
    Case("batch-larger-than-data-into-a-run", ("sweep", *TINY, "--batch", "5000"), "batch_size:", "larger", existing_out=True),
    Case("data-dir-is-a-file", ("sweep", *TINY, "--dataset", "fashion-mnist", "--data-dir", "{tmp}/afile"), "data_dir:", "is a file"),
    Case("width-2e8", ("sweep", *TINY, "--width", "200000000"), "width:", "GB"),
    Case("width-3e5-x-64-members", ("sweep", "--alphas", "1e-3,1e-2", "--mode", "up", "--epochs", "2", "--n-train", "100",
                                    "--width", "300000", "--seeds", "64"), "width:", "64 members"),
    Case("width-2e8-into-a-run", ("sweep", *TINY, "--width", "200000000"), "width:", "GB", existing_out=True),
    Case("connect-strengths-log-range", ("connect", "--strengths", "1e-3:-1:5"), "strengths:", "positive ends"),
    Case("basins-strengths-negative", ("basins", "--strengths", "lin:0:-1:5"), "strengths:", ">= 0"),
    Case("connect-run-seed-missing", ("connect", "--run", "{run}", "--run-seeds", "5"), "run_seeds:", "available: [0]"),
    Case("grok-duplicate-seeds", ("grok", "--set", "seeds=[0,0]"), "seeds:", "2 times"),
    Case("grok-width-too-large", ("grok", "--set", "embed_dim=2000000", "--set", "width=100000"), "width:", "GB"),
    Case("dln-width-2e8", ("dln", "--width", "200000000"), "width:", "GB"),
]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Run every case (a few processes at a time); ``{name: (completed process, out before, out after)}``."""
    tmp = tmp_path_factory.mktemp("bad_input")
    (tmp / "specdir").mkdir()
    (tmp / "latin1.toml").write_bytes('[sweep]\nname = "d\u00e9j\u00e0"\n'.encode("latin-1"))
    (tmp / "sweep5.toml").write_text("sweep = 5\n")
    (tmp / "afile").write_text("not a folder\n")
    run = tmp / "run"  # a finished tiny sweep (seed 0 only): the existing --out and connect's --run
    r = _cli(["sweep", *TINY, "--out", str(run), "--no-figures"], cwd=tmp)
    assert r.returncode == 0, r.stderr[-3000:]

    def one(case: Case):
        out = tmp / f"out-{case.name}"
        if case.existing_out:
            shutil.copytree(run, out)
        before = _snapshot(out)
        args = [a.format(tmp=tmp, run=run) for a in case.args] + ["--out", str(out)]
        try:
            proc = _cli(args, cwd=tmp, timeout=120)
        except subprocess.TimeoutExpired as e:  # a refusal takes seconds; still running = not refused
            proc = subprocess.CompletedProcess(e.cmd, None, "", f"still running after {e.timeout} s")
        return case.name, (proc, before, _snapshot(out))

    with ThreadPoolExecutor(max_workers=3) as ex:
        return dict(ex.map(one, CASES))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_line_exit_2_and_leaves_out_unchanged(results, case):
    proc, before, after = results[case.name]
    err = proc.stderr
    assert "Traceback" not in err, err[-3000:]
    assert proc.returncode == 2, (proc.returncode, err[-3000:])
    lines = err.splitlines()
    assert len(lines) == 1, err[-3000:]
    assert lines[0].startswith(f"error: {case.field}"), lines[0]
    assert case.says in lines[0], lines[0]
    assert "np.int64" not in lines[0] and "np.float64" not in lines[0], lines[0]
    assert after == before, f"{case.name}: the --out folder changed"
    if not case.existing_out:
        assert before is None


# ---- the same checks, in-process (cheap, exact messages) ------------------------------------
def test_seed_lists_refuse_duplicates_and_negatives_and_give_plain_ints():
    from phaseprobe.specs import check_seeds

    assert check_seeds(3) == [0, 1, 2]
    got = check_seeds([np.int64(4), 2.0])
    assert got == [4, 2] and all(type(s) is int for s in got)
    for bad, part in [([0, 0], "2 times"), ([3, -1], "negative"), ([], "empty"), (0, "at least one"),
                      ([0.5], "whole number"), (True, "not a seed count")]:
        with pytest.raises(PhaseprobeError, match=part) as ei:
            check_seeds(bad, "grid.seeds")
        assert str(ei.value).startswith("grid.seeds: ")


def test_overrides_name_the_field_that_is_wrong():
    from phaseprobe.specs import apply_overrides

    assert apply_overrides({"model_options": {}}, ["model_options.embed_dim=64"]) == {"model_options": {"embed_dim": 64}}
    assert apply_overrides({}, ["data_options.noise=0.1"]) == {"data_options": {"noise": 0.1}}
    for sets, start in [(["=5"], "--set: the field name"), ([" . =5"], "--set: the field name"),
                        (["a..b=1"], "--set: 'a..b' has an empty part"), (["width.x=1"], "width: is a number"),
                        (["width"], "--set: 'width' is not key=value")]:
        with pytest.raises(PhaseprobeError) as ei:
            apply_overrides({"width": 64}, sets)
        assert str(ei.value).startswith(start), str(ei.value)


def test_alpha_zero_is_a_point_of_a_linear_grid_and_a_log_range_needs_positive_ends():
    from phaseprobe.sweep.spec import make_spec, parse_strength_grid

    assert parse_strength_grid("lin:0:0.1:3").tolist() == [0.0, 0.05, 0.1]
    assert parse_strength_grid("0,0.01").tolist() == [0.0, 0.01]
    assert make_spec({"alphas": "lin:0:0.1:3", "seeds": 1}).alpha_grid()[0] == 0.0
    with pytest.raises(PhaseprobeError, match=r"^alphas: a log range needs positive ends.*'lin:0:0.1:5'"):
        parse_strength_grid("0:0.1:5")
    with pytest.raises(PhaseprobeError, match=r"^strengths: strength -1 is not allowed"):
        parse_strength_grid([0.0, -1.0], field="strengths")


def test_model_options_refuse_unknown_keys_naming_the_known_ones():
    from phaseprobe.sweep.spec import make_spec

    assert make_spec({"model": "conv", "model_options": {"channels": [4]}, "seeds": 1}).model_options == {"channels": [4]}
    with pytest.raises(PhaseprobeError, match=r"^model_options.chanels: not an option of model 'conv' \('conv' takes channels\)"):
        make_spec({"model": "conv", "model_options": {"chanels": [4]}, "seeds": 1})
    with pytest.raises(PhaseprobeError, match=r"^model_options.foo: .*'mlp' takes none"):
        make_spec({"model_options": {"foo": 1}, "seeds": 1})


def test_memory_estimate_counts_parameters_slots_activations_and_data():
    import jax

    from phaseprobe.models import build_model
    from phaseprobe.resources import ResourceError, check_fits, estimate_training_bytes, params_and_activations

    def make_one(key):
        return build_model("mlp", (64,), 10, key=key, depth=2, width=32)

    n_params, acts = params_and_activations(make_one)
    model = make_one(jax.random.PRNGKey(0))
    assert n_params == sum(x.size for x in jax.tree_util.tree_leaves(model) if hasattr(x, "size"))
    assert n_params == 64 * 32 + 32 + 32 * 32 + 32 + 32 * 10 + 10
    assert acts == 32 + 32 + 10
    est = estimate_training_bytes(n_params, members=6, optimizer="adam", batch=100, activations_per_example=acts, data_bytes=1000)
    assert est.params == n_params * 6 * 4 * 4  # parameters, gradient, two Adam moments; float32
    assert est.activations == acts * 100 * 6 * 4
    assert est.total == est.params + est.activations + 1000
    assert estimate_training_bytes(n_params, 6, "sgd", 100, acts).params == n_params * 6 * 2 * 4
    assert check_fits(est, width=32, available=est.total) is est
    with pytest.raises(ResourceError) as ei:
        check_fits(est, width=32, available=est.total - 1, where="available memory")
    msg = str(ei.value)
    assert msg.startswith("width: 32 x 6 members x batch 100 needs about") and "\n" not in msg
