"""Engines: local vs Ray give the same records; a killed worker and a killed driver lose and
duplicate nothing; spec grids; one-line errors before compute.

The Ray tests start their own Ray head on 127.0.0.1 (``LocalCluster``, 2 CPUs) and stop it at
the end. Both the test process and the cluster's workers keep a persistent JAX compilation
cache (separate folders, so each side compiles its own programs once): every sweep here uses
ensembles of 2 members, so the whole file compiles the trainer about once per process.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from phaseprobe.engine.grid import GridError, expand, load_grid_records, parse_grid, run_grid, summarize_grid
from phaseprobe.errors import PhaseprobeError
from phaseprobe.sweep.driver import run_sweep
from phaseprobe.sweep.run import plan_units
from phaseprobe.sweep.spec import DEFAULT_SPEC, make_spec

ray = pytest.importorskip("ray")

from phaseprobe.engine.cluster import LocalCluster  # noqa: E402
from phaseprobe.engine.ray_engine import EngineError, RayEngine, parse_address, probe_address  # noqa: E402

KEY = ["branch", "alpha_index", "seed", "record_epoch"]
NOT_NUMBERS = {"seconds"}  # wall time of a piece: the only column allowed to differ

# tiny sweeps; every ensemble has 2 members so all of them share one compiled program
BASE = {**DEFAULT_SPEC, "name": "engine-test", "dataset": "digits", "model": "mlp", "depth": 2, "width": 8,
        "activation": "relu", "optimizer": "adam", "lr": 0.003, "convention": "l2", "patience": None}
COLD = {**BASE, "mode": "cold", "alphas": "1e-3:0.3:4", "seeds": 1, "epochs": 20, "chunk_size": 2}
LOOP = {**BASE, "mode": "loop", "alphas": "1e-3:0.3:6", "seeds": 2, "epochs": 60}
LOOP_FLAGS = ["--dataset", "digits", "--model", "mlp", "--depth", "2", "--width", "8", "--activation", "relu",
              "--optimizer", "adam", "--lr", "0.003", "--convention", "l2", "--mode", "loop",
              "--alphas", "1e-3:0.3:6", "--seeds", "2", "--epochs", "60", "--set", "name=engine-test"]


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _cli(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "phaseprobe.cli", *args], capture_output=True, text=True, **kw)


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(KEY).reset_index(drop=True)


def assert_same_records(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """Same rows, each exactly once, and the same numbers (to 1e-7) in every numeric column."""
    assert not got.duplicated(KEY).any(), "a record appears twice"
    assert len(got) == len(want)
    a, b = _sorted(got), _sorted(want)
    assert a[KEY].equals(b[KEY])
    numeric = [c for c in b.columns if c not in NOT_NUMBERS and b[c].dtype.kind in "fiub"]
    assert "test_acc" in numeric and "loss" in numeric
    for c in numeric:
        np.testing.assert_allclose(a[c].to_numpy(float), b[c].to_numpy(float), rtol=0, atol=1e-7, err_msg=c)
    for c in ("stop_reason", "spec_hash"):
        assert (a[c] == b[c]).all(), c


def _n_pieces(spec) -> int:
    return sum(len(u.pieces) for u in plan_units(spec))


def _pieces_in(records_dir: Path) -> list[Path]:
    """Finished pieces in a records folder (a write cut short leaves a ``.tmp-*`` file: not a piece)."""
    return [p for p in records_dir.glob("*.parquet") if not p.name.startswith(".tmp-")] if records_dir.exists() else []


def _one_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, text
    return lines[0]


# ---- no cluster needed ----------------------------------------------------------------------

def test_grid_parse_expand_and_errors():
    g = parse_grid(["width=64,256", "depth=1,2,3 classes=2,5,10"])
    assert g == {"width": [64, 256], "depth": [1, 2, 3], "classes": [2, 5, 10]}
    cells = expand(g)
    assert len(cells) == 18 and len({c.cid for c in cells}) == 18
    assert cells[0].cid == "width-64_depth-1_classes-2" and cells[0].values == {"width": 64, "depth": 1, "classes": 2}
    assert cells[-1].values == {"width": 256, "depth": 3, "classes": 10}
    g = parse_grid("classes=[0,1],[0,1,2] alphas=1e-4:1:9 optimizer=adam,sgd data_options.separation=1.5,3")
    assert g["classes"] == [[0, 1], [0, 1, 2]] and g["alphas"] == ["1e-4:1:9"]
    assert g["optimizer"] == ["adam", "sgd"] and g["data_options.separation"] == [1.5, 3]
    assert expand({"classes": [[0, 1]]})[0].cid == "classes-0.1"
    for bad, needle in [([], "no fields"), (["width="], "empty value"), (["width=8,,16"], "empty value"),
                        (["widht=8"], "unknown spec field 'widht'"), (["width=8", "width=16"], "given twice"),
                        (["width"], "not field=v1,v2"), (["width=8,8"], "twice"), (["depth.x=1"], "unknown spec field")]:
        with pytest.raises(GridError) as e:
            parse_grid(bad)
        assert needle in str(e.value) and "\n" not in str(e.value)


def test_grid_bad_cell_fails_before_compute(tmp_path):
    out = tmp_path / "grid"
    with pytest.raises(PhaseprobeError) as e:
        run_grid(COLD, {"width": [8, 0]}, out)
    msg = str(e.value)
    assert "width" in msg and "grid cell width-0" in msg and "\n" not in msg
    assert not out.exists()  # nothing written, nothing computed


def test_address_errors(monkeypatch):
    for bad in ("nonsense", "127.0.0.1:", "127.0.0.1:99999", ":80"):
        with pytest.raises(EngineError) as e:
            parse_address(bad)
        assert str(e.value).startswith("address: ")
    port = _free_port()
    with pytest.raises(EngineError) as e:
        probe_address(f"127.0.0.1:{port}", timeout=1.0)
    assert f"127.0.0.1:{port}" in str(e.value) and "\n" not in str(e.value)
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")  # 'auto' resolves through RAY_ADDRESS
    with pytest.raises(EngineError) as e:
        RayEngine("auto")
    assert "no Ray cluster answers" in str(e.value)


def test_cli_unreachable_address_exit_2_one_line_before_compute(tmp_path):
    port = _free_port()
    out = tmp_path / "run"
    r = _cli("sweep", *LOOP_FLAGS, "--engine", "ray", "--address", f"127.0.0.1:{port}", "--out", str(out), "--no-figures")
    assert r.returncode == 2, r.stderr
    line = _one_line(r.stderr)
    assert line.startswith("error: address: no Ray cluster answers at 127.0.0.1:") and str(port) in line
    assert not out.exists()
    r = _cli("sweep", *LOOP_FLAGS, "--grid", "width=", "--out", str(out))
    assert r.returncode == 2 and _one_line(r.stderr).startswith("error: grid: 'width' has an empty value")
    assert not out.exists()


def test_ray_missing_is_a_one_line_error(tmp_path):
    code = ("import sys; sys.modules['ray'] = None\n"  # this interpreter cannot import ray
            "from phaseprobe.engine import get_engine\n"
            "from phaseprobe.errors import PhaseprobeError\n"
            "try:\n    get_engine('ray', address='127.0.0.1:1')\n"
            "except PhaseprobeError as e:\n    print(e)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert _one_line(r.stdout).startswith("engine: Ray is not installed")


# ---- on a real local Ray cluster ------------------------------------------------------------

@pytest.fixture(scope="module")
def jax_cache(tmp_path_factory):
    """A persistent compilation cache for this process (its own folder)."""
    import jax

    old = (jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs)
    jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("jax-cache-local")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    yield
    jax.config.update("jax_compilation_cache_dir", old[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", old[1])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cache = tmp_path_factory.mktemp("jax-cache-workers")
    c = LocalCluster(num_cpus=2, env={"JAX_COMPILATION_CACHE_DIR": str(cache),
                                      "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"})
    c.start()
    try:
        ray.init(address=c.address, _node_ip_address="127.0.0.1", log_to_driver=False)
        yield c
    finally:
        ray.shutdown()
        c.stop()


@pytest.fixture(scope="module")
def refs(tmp_path_factory, jax_cache):
    """The local engine's records of the cold and the loop spec (the references)."""
    d = tmp_path_factory.mktemp("local")
    return {"cold": run_sweep(make_spec(COLD), d / "cold"), "loop": run_sweep(make_spec(LOOP), d / "loop")}


@pytest.mark.ray
def test_local_and_ray_give_identical_records(cluster, refs, tmp_path):
    eng = RayEngine(cluster.address)
    for name, data in (("cold", COLD), ("loop", LOOP)):
        spec = make_spec(data)
        seen = []
        df = run_sweep(spec, tmp_path / name, engine=eng, on_runs=seen.append)
        assert_same_records(df, refs[name])
        assert sum(seen) == sum(u.n_runs for u in plan_units(spec))  # progress counts every training once
        assert len(_pieces_in(tmp_path / name / "records")) == _n_pieces(spec)
    assert eng.stats["duplicates_skipped"] == 0
    # a chain streams: each of its alpha steps is written by the driver as it arrives
    assert eng.stats["written"] == _n_pieces(make_spec(COLD)) + _n_pieces(make_spec(LOOP))


@pytest.mark.ray
def test_worker_killed_mid_task_is_retried_nothing_lost_or_duplicated(cluster, refs, tmp_path):
    spec = make_spec(LOOP)  # one chain unit: 12 alpha steps, one task
    trace, out = tmp_path / "trace", tmp_path / "run"
    trace.mkdir()
    eng = RayEngine(cluster.address, trace_dir=trace)
    killed: list[int] = []

    def killer():
        log, rec = trace / "tasks.log", out / "records"
        t0 = time.monotonic()
        while time.monotonic() - t0 < 300:
            # kill the worker once the chain has streamed at least one step into the store
            if log.exists() and _pieces_in(rec):
                pid = int(log.read_text().split()[1])
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.01)

    th = threading.Thread(target=killer, daemon=True)
    th.start()
    df = run_sweep(spec, out, engine=eng)
    th.join(timeout=5)
    assert killed, "the worker was not killed"
    starts = [ln.split() for ln in (trace / "tasks.log").read_text().splitlines()]
    assert len(starts) == 2 and starts[0][0] == starts[1][0] == "chain-s000"  # the same unit, retried once
    assert int(starts[0][1]) == killed[0] and int(starts[1][1]) != killed[0]  # ...on another worker process
    assert eng.stats["written"] == _n_pieces(spec)  # every piece written once in this run
    assert len(_pieces_in(out / "records")) == _n_pieces(spec)
    assert_same_records(df, refs["loop"])


@pytest.mark.ray
def test_driver_killed_mid_sweep_resumes_to_identical_records(cluster, refs, tmp_path):
    spec = make_spec(LOOP)
    out = tmp_path / "run"
    args = ["sweep", *LOOP_FLAGS, "--engine", "ray", "--address", cluster.address, "--out", str(out), "--no-figures"]
    log = open(tmp_path / "first-run.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "phaseprobe.cli", *args], stdout=log, stderr=subprocess.STDOUT)
    rec = out / "records"
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < 300 and proc.poll() is None:
            if len(_pieces_in(rec)) >= 2:
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the driver ended before it could be killed: " + (tmp_path / "first-run.log").read_text()[-2000:]
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    log.close()
    n_before = len(_pieces_in(rec))
    assert 2 <= n_before < _n_pieces(spec), "the driver was not killed mid-sweep"
    r = _cli(*args, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming:" in r.stderr
    from phaseprobe.store import RunStore

    store = RunStore(out)
    assert store.meta()["spec_hash"] == spec.hash()  # the CLI flags give the same spec
    assert len(_pieces_in(rec)) == _n_pieces(spec)
    assert_same_records(store.load_records(), refs["loop"])


@pytest.mark.ray
def test_grid_through_ray_one_store_one_report(cluster, refs, tmp_path):
    out = tmp_path / "grid"
    grid = parse_grid(["lr=0.003,0.01", "mode=cold,up"])
    eng = RayEngine(cluster.address)
    df = run_grid(COLD, grid, out, engine=eng)
    cells = [c.cid for c in expand(grid)]
    assert cells == ["lr-0.003_mode-cold", "lr-0.003_mode-up", "lr-0.01_mode-cold", "lr-0.01_mode-up"]
    for cid in cells:
        assert (out / "cells" / cid / "spec.json").exists()
    assert set(df["cell"]) == set(cells)
    assert set(df.loc[df["cell"] == "lr-0.01_mode-up", "lr"]) == {0.01}
    assert set(df.loc[df["cell"] == "lr-0.01_mode-up", "branch"]) == {"up"}
    # the cell that equals the cold spec has the cold spec's numbers
    same = df[df["cell"] == "lr-0.003_mode-cold"].drop(columns=["cell", "lr", "grid_mode"])
    assert_same_records(same, refs["cold"])
    res = summarize_grid(out, figures=True, n_boot=20)
    assert list(res["cells"]["cell"]) == cells
    html = (out / "report.html").read_text()
    assert html.count("<h2>Cell ") == 4 and "Spec grid" in html
    assert (out / "cells.csv").exists() and (out / "transitions.csv").exists()
    # rerun: everything is in the store, nothing is recomputed
    planned = []
    run_grid(COLD, grid, out, engine=RayEngine(cluster.address), on_plan=lambda t, a: planned.append((t, a)))
    assert planned[0][0] == planned[0][1]
    with pytest.raises(PhaseprobeError) as e:  # another grid in the same folder is refused
        run_grid(COLD, parse_grid("lr=0.003"), out)
    assert "holds a different spec" in str(e.value)
