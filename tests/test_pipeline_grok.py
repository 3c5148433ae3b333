"""``phaseprobe grok`` on the experiment pipeline, through real processes: SIGKILL mid-grid and
resume (the grid's stretches carry AdamW's state), progress lines without a terminal, a folder of
another kind refused, ``--grid`` (one sub-run per cell, one report), ``show`` and ``open_run``
(with stored models), and the Ray engine giving the local engine's records."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import phaseprobe
from phaseprobe.grokking import make_grok_spec, plan_grid_units
from phaseprobe.store import RunStore
from phaseprobe.train import log_epochs

# 2 grid members stored in 6 stretches, then one hysteresis loop (4 warm-started points)
TINY = """[grok]
name = "pipe-grok"
setup = "quick"
p = 11
train_frac = 0.6
weight_decays = [0.0, 3.0]
init_scales = [1.0]
steps = 120
n_records = 12
width = 16
embed_dim = 8
pieces_per_chunk = 6

[grok.hysteresis]
enabled = true
weight_decays = "0.1,1"
steps_per_point = 20

[grok.geometry]
enabled = false
"""
SPEC = make_grok_spec(tomllib.loads(TINY)["grok"])
N_GRID = len(plan_grid_units(SPEC)[0].pieces)  # the grid's stretches (cut at record steps)
N_REC = len(log_epochs(SPEC.steps, SPEC.n_records))  # records of a grid member
N_PIECES = N_GRID + 4  # and the hysteresis loop's 4 points
WALL = ["seconds"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """The subprocesses share one persistent compilation cache (each program compiles once)."""
    cache = tmp_path_factory.mktemp("jax-cache")
    return dict(os.environ, COLUMNS="200", JAX_COMPILATION_CACHE_DIR=str(cache),
                JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")


def _cli(env, *args):
    return subprocess.run([sys.executable, "-m", "phaseprobe.cli", "grok", *args], capture_output=True, text=True,
                          env=env, timeout=900)


def _records(out: Path) -> pd.DataFrame:
    df = RunStore(out).load_records().drop(columns=WALL)
    return df.sort_values(["stage", "piece", "member", "seed", "step", "record_epoch"]
                          if "record_epoch" in df.columns else ["stage", "piece", "member", "step"]).reset_index(drop=True)


def _arrays(out: Path) -> dict:
    st = RunStore(out)
    return {p: st.load_params(p) for p in sorted(st.done_pieces())}


def _n_pieces(out: Path) -> int:
    d = out / "records"
    return len([p for p in d.glob("*.parquet") if not p.name.startswith(".tmp")]) if d.exists() else 0


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("spec") / "tiny.toml"
    p.write_text(TINY)
    return p


@pytest.fixture(scope="module")
def reference(tmp_path_factory, spec_file, env):
    """An uninterrupted run (figures and report too); its stderr is not a terminal."""
    out = tmp_path_factory.mktemp("ref") / "run"
    r = _cli(env, "--spec", str(spec_file), "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    return out, r


def test_reference_run_logs_progress_and_writes_its_outputs(reference):
    out, r = reference
    assert "new run in" in r.stderr and f"({2 * N_GRID + 4} trainings planned)" in r.stderr
    # every phase counts its own work, in log lines (stderr is a pipe here) and in progress.log
    g = 2 * N_GRID
    assert f"[grid] 0/{g} runs" in r.stderr and f"[grid] {g}/{g} runs (100%)" in r.stderr
    assert "[hysteresis] 4/4 runs (100%)" in r.stderr
    assert f"[grid] {g}/{g}" in (out / "progress.log").read_text()
    assert _n_pieces(out) == N_PIECES
    for f in ("grok_records.parquet", "delays.csv", "members.csv", "hysteresis.csv", "grok_curves.png",
              "grok_hysteresis.png", "report.html", "grok_spec.json"):
        assert (out / f).exists(), f
    assert not (out / ".lock").exists()
    rec = pd.read_parquet(out / "grok_records.parquet")
    assert rec["step"].max() == 120 and set(rec["weight_decay"]) == {0.0, 3.0}
    assert rec.groupby("member")["final"].sum().tolist() == [1, 1]


def test_sigkill_mid_grid_then_rerun_is_bit_identical(reference, spec_file, env, tmp_path):
    ref, _ = reference
    out = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-m", "phaseprobe.cli", "grok", "--spec", str(spec_file), "--out", str(out),
                          "--no-figures"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        t0 = time.monotonic()
        while _n_pieces(out) < 2:  # inside the grid's chain of stretches
            assert p.poll() is None, "finished before it could be killed"
            assert time.monotonic() - t0 < 600, "timed out waiting for pieces"
            time.sleep(0.02)
        p.send_signal(signal.SIGKILL)
    finally:
        p.wait()
    n_before = len(RunStore(out).done_pieces())
    assert 2 <= n_before < N_PIECES, n_before
    print(f"killed with {n_before} of {N_PIECES} pieces stored ({N_GRID} grid stretches)")
    r = _cli(env, "--spec", str(spec_file), "--out", str(out), "--no-figures")
    assert r.returncode == 0, r.stderr[-3000:]
    runs_done = 2 * min(n_before, N_GRID) + max(n_before - N_GRID, 0)  # 2 members per grid stretch
    assert f"resuming: {runs_done}/{2 * N_GRID + 4} trainings already in the store" in r.stderr
    pd.testing.assert_frame_equal(_records(out), _records(ref))
    a, b = _arrays(out), _arrays(ref)
    assert a.keys() == b.keys() and len(a) == N_PIECES
    for piece in a:
        assert a[piece].keys() == b[piece].keys()
        assert any(k.startswith("o") for k in a[piece]), piece  # AdamW's state is stored with the piece
        for k in a[piece]:
            np.testing.assert_array_equal(a[piece][k], b[piece][k], err_msg=f"{piece}/{k}")


def test_a_folder_of_another_kind_is_refused_with_one_line(spec_file, env, tmp_path):
    out = tmp_path / "sweep-run"
    RunStore(out).init({"name": "x"}, "0123456789abcdef", kind="sweep")
    before = (out / "spec.json").read_bytes()
    r = _cli(env, "--spec", str(spec_file), "--out", str(out))
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: out:") and "a sweep run" in lines[0], r.stderr
    assert (out / "spec.json").read_bytes() == before and not (out / "records").exists()


def test_show_and_open_run_on_a_grok_run(reference, env):
    out, _ = reference
    r = subprocess.run([sys.executable, "-m", "phaseprobe.cli", "show", str(out)], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "grokking delay" in r.stdout and f"by stage: grid {2 * N_REC}, hysteresis" in r.stdout
    assert "warm-started weight-decay sweep" in r.stdout
    run = phaseprobe.open_run(out)
    assert run.kind == "grok" and run.spec["name"] == "pipe-grok"
    assert len(run.records) == len(RunStore(out).load_records())
    assert {"delays", "members", "hysteresis"} <= set(run.tables)
    # stored models rebuilt from the store give back the stored parameters
    import equinox as eqx
    import jax

    def leaves(m):
        return [np.asarray(x) for x in jax.tree_util.tree_leaves(eqx.filter(m, eqx.is_inexact_array))]

    stored = RunStore(out).load_params(f"grid-c0000-s{N_GRID - 1:02d}")
    got = leaves(run.model(weight_decay=3.0))
    assert len(got) == len([k for k in stored if k.startswith("p")])
    for i, x in enumerate(got):
        np.testing.assert_array_equal(x, stored[f"p{i:03d}"][1])  # member 1: weight decay 3
    h = run.model(branch="down", weight_decay=0.1)
    stored = RunStore(out).load_params("hyst-l00-down-s000-a0000")
    for i, x in enumerate(leaves(h)):
        np.testing.assert_array_equal(x, stored[f"p{i:03d}"][0])
    with pytest.raises(phaseprobe.errors.PhaseprobeError, match="step 7 is not a stored step"):
        run.model(weight_decay=0.0, step=7)


def test_grid_writes_one_sub_run_per_cell_and_one_report(spec_file, env, tmp_path):
    out = tmp_path / "grid"
    r = _cli(env, "--spec", str(spec_file), "--set", "hysteresis.enabled=false", "--set", "pieces_per_chunk=2",
             "--grid", "lr=0.01,0.003", "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    cells = sorted(p.name for p in (out / "cells").iterdir())
    assert cells == ["lr-0.003", "lr-0.01"]
    for c in cells:
        assert RunStore(out / "cells" / c).meta()["kind"] == "grok"
        assert (out / "cells" / c / "grok_curves.png").exists() and (out / "cells" / c / "delays.csv").exists()
    report = (out / "report.html").read_text()
    assert len(list(out.glob("report_cell-*.json"))) == 2 and (out / "cells.csv").exists()  # one section per cell
    assert "Cell lr = 0.01" in report and "Cell lr = 0.003" in report
    r = subprocess.run([sys.executable, "-m", "phaseprobe.cli", "show", str(out)], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "grid of 2 cells of kind grok" in r.stdout and "lr-0.003" in r.stdout
    run = phaseprobe.open_run(out)
    assert run.kind == "grid" and [c.kind for c in run.cells] == ["grok", "grok"]
    assert set(run.records["cell"]) == {"lr-0.01", "lr-0.003"}
    assert run.cells[0].model(weight_decay=0.0) is not None


@pytest.mark.ray
def test_ray_engine_gives_the_local_records(reference, spec_file, env, tmp_path):
    pytest.importorskip("ray")
    ref, _ = reference
    out = tmp_path / "ray"
    r = _cli(env, "--spec", str(spec_file), "--engine", "ray", "--address", "local", "--no-figures", "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    pd.testing.assert_frame_equal(_records(out), _records(ref))
    a, b = _arrays(out), _arrays(ref)
    assert a.keys() == b.keys()
    for piece in a:
        for k in a[piece]:
            np.testing.assert_array_equal(a[piece][k], b[piece][k], err_msg=f"{piece}/{k}")
