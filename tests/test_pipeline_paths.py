"""`phaseprobe connect` and `phaseprobe basins` on the experiment pipeline, through real processes:
SIGKILL mid-run then the same command again equals an uninterrupted run (records without the
wall-time columns, every stored array), `--grid` (one sub-run per cell, one report), `show` and
`open_run` on runs and grids, a folder of another kind refused in one line, and (Ray) the same
records from `--engine ray --address local`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import phaseprobe
from phaseprobe.errors import PhaseprobeError
from phaseprobe.store import RunStore

# tiny settings: a 64-4-10 tanh MLP on 120 digits, two fresh minima, a 4-step probe
CONNECT = ["connect", "--n-train", "120", "--width", "4", "--depth", "1", "--n-strengths", "4", "--bezier-epochs", "2",
           "--set", "activation=tanh", "--set", "start_epochs=8", "--set", "epochs=3", "--set", "patience=null",
           "--set", "n_points=5", "--set", "saddle_steps=1", "--set", "saddle_subset=60", "--set", "lr=0.01"]
# basins toward w_ref = 0 on a 64-8-8-10 tanh MLP; the jump detector is loosened (min_jump, k_sigma) so that
# this tiny probe has a jump and every later stage runs: bisection (3 steps), or without it saddles,
# an excursion and a nested probe
BASINS = ["basins", "--n-train", "200", "--strengths", "lin:0:0.08:9", "--set", "width=8", "--set", "activation=tanh",
          "--set", "start_epochs=150", "--set", "epochs=50", "--set", "lr=0.01", "--set", "min_jump=0.05", "--set", "k_sigma=1",
          "--set", "bisect_tol=0.001", "--set", "bisect_max_steps=3", "--set", "saddle_steps=1", "--set", "saddle_subset=60",
          "--set", "hessian_subset=60", "--set", "excursion=true", "--set", "excursion_up=1", "--set", "max_nest=1",
          "--set", "n_strengths=2", "--set", "patience=5"]
WALL = ["seconds"]


def _env():
    return dict(os.environ, COLUMNS="200")


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "phaseprobe.cli", *args], capture_output=True, text=True, env=_env(),
                          timeout=900)


def _records(out: Path) -> pd.DataFrame:
    return RunStore(out).load_records().drop(columns=WALL).reset_index(drop=True)


def _arrays(out: Path) -> dict:
    st = RunStore(out)
    return {p: st.load_params(p) for p in sorted(st.done_pieces())}


def _assert_same_run(a: Path, b: Path) -> None:
    ra, rb = _records(a), _records(b)
    pd.testing.assert_frame_equal(ra, rb)
    xa, xb = _arrays(a), _arrays(b)
    assert sorted(xa) == sorted(xb)
    for piece in xa:
        assert sorted(xa[piece]) == sorted(xb[piece]), piece
        for k in xa[piece]:
            np.testing.assert_array_equal(xa[piece][k], xb[piece][k], err_msg=f"{piece}:{k}")


def _kill_after(args: list[str], out: Path, piece: str, timeout: float = 600) -> None:
    """Start the command, SIGKILL it as soon as ``records/<piece>.parquet`` exists."""
    proc = subprocess.Popen([sys.executable, "-m", "phaseprobe.cli", *args, "--out", str(out), "--no-figures"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env())
    t0 = time.monotonic()
    target = out / "records" / f"{piece}.parquet"
    try:
        while not target.exists():
            if proc.poll() is not None:
                raise AssertionError(f"finished before {piece} was written: {proc.stderr.read()[-2000:]}")
            if time.monotonic() - t0 > timeout:
                raise AssertionError(f"timed out waiting for {piece}")
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


@pytest.fixture(scope="module")
def connect_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("connect") / "run"
    r = _cli(*CONNECT, "--out", str(out), "--no-figures")
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def test_connect_killed_mid_probe_then_rerun_equals_uninterrupted(connect_run, tmp_path):
    out = tmp_path / "killed"
    _kill_after(CONNECT, out, "probe-s000001")
    done = RunStore(out).done_pieces()
    assert "minima" in done and "probe-s000003" not in done and "bezier" not in done
    r = _cli(*CONNECT, "--out", str(out), "--no-figures")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming:" in r.stderr and "already in the store" in r.stderr
    # every phase counted its own work: the probe bar resumed at the pieces already stored
    assert "[probe]" in r.stderr and "(resumed)" in r.stderr
    _assert_same_run(connect_run, out)
    for name in ("paths_summary.csv", "transitions.csv", "paths.parquet"):
        assert (out / name).exists()


def test_connect_show_open_run_and_models(connect_run):
    r = _cli("show", str(connect_run))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "minima" in r.stdout and "paths_summary" in r.stdout and "probe: 4 strengths x 1 members" in r.stdout
    run = phaseprobe.open_run(connect_run)
    assert run.kind == "connect"
    assert set(run.records["phase"]) >= {"minima", "probe", "bezier"}
    assert set(run.tables["paths_summary"]["method"]) >= {"probe", "linear", "bezier"}
    x = run.store.load_params("minima")["x"]
    import jax
    from jax.flatten_util import ravel_pytree
    import equinox as eqx

    m1 = run.model(minimum=1)
    np.testing.assert_array_equal(np.asarray(ravel_pytree(eqx.filter(m1, eqx.is_inexact_array))[0]), x[1])
    m = run.model(member=0, index=2)
    out = jax.vmap(m)(np.zeros((3, 64), np.float32))
    assert out.shape == (3, 10)
    with pytest.raises(PhaseprobeError, match="model:"):
        run.model(member=0, index=99)


def test_another_kinds_folder_is_refused_in_one_line(connect_run, tmp_path):
    r = _cli(*BASINS, "--out", str(connect_run), "--no-figures")
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: out:") and "connect run" in err[0]


def test_connect_grid_one_run_per_cell_and_one_report(tmp_path):
    out = tmp_path / "grid"
    r = _cli(*CONNECT, "--out", str(out), "--grid", "n_strengths=3,4")
    assert r.returncode == 0, r.stderr[-3000:]
    cells = sorted(p.name for p in (out / "cells").iterdir())
    assert cells == ["n_strengths-3", "n_strengths-4"]
    for c in cells:
        assert (out / "cells" / c / "spec.json").exists() and (out / "cells" / c / "paths_summary.csv").exists()
    assert (out / "report.html").exists() and (out / "cells.csv").exists()
    assert len(pd.read_csv(out / "cells.csv")) == 2
    r = _cli("show", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "grid of 2 cells of kind connect" in r.stdout
    run = phaseprobe.open_run(out)
    assert run.kind == "grid" and len(run.cells) == 2
    probe = run.records[run.records["phase"] == "probe"]
    assert sorted(probe.groupby("cell")["index"].nunique()) == [3, 4]
    assert run.cells[0].model(minimum=0) is not None


def _probe_in_process(out: Path):
    """The stored first probe of a basins run next to :func:`run_probe` run here on the same inputs."""
    from phaseprobe.paths import pieces as P
    from phaseprobe.paths.kind import PathContext, make_path_spec_loose, probe_inputs
    from phaseprobe.paths.probe import run_probe

    run = phaseprobe.open_run(out)
    spec = make_path_spec_loose(run.spec, "basins")
    inp = probe_inputs(spec, "basins", run.store, "")
    stored = P.probe_result(run.store, P.read_probe(run.store, inp))
    direct = run_probe(PathContext(spec).land, inp.start, None, inp.config, seeds=inp.seeds, labels=inp.labels)
    return run, stored, direct


def _assert_same_probe(stored, direct) -> None:
    pd.testing.assert_frame_equal(stored.records.reset_index(drop=True), direct.records.reset_index(drop=True))
    pd.testing.assert_frame_equal(stored.transitions_frame(), direct.transitions_frame())
    np.testing.assert_array_equal(stored.checkpoints, direct.checkpoints)
    for ts, td in zip(stored.transitions, direct.transitions):
        assert len(ts.lo_models) == len(td.lo_models) and len(ts.hi_models) == len(td.hi_models)
        for (a1, x1), (a2, x2) in zip(ts.lo_models + ts.hi_models, td.lo_models + td.hi_models):
            assert a1 == a2
            np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(stored.grad_evals, direct.grad_evals)


def test_basins_killed_mid_bisection_resumes_to_the_uninterrupted_probe(tmp_path):
    """Killed after the first bisection step, rerun: the stored probe (grid, bisection chain,
    verdict) is the probe an uninterrupted ``run_probe`` computes, to the bit."""
    out = tmp_path / "killed"
    _kill_after(BASINS, out, "bisect-s000000")
    assert "bisect-end" not in RunStore(out).done_pieces()
    r = _cli(*BASINS, "--out", str(out), "--no-figures")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming:" in r.stderr
    done = RunStore(out).done_pieces()
    assert {"bisect-s000000", "bisect-s000001", "bisect-s000002", "bisect-end"} <= done
    run, stored, direct = _probe_in_process(out)
    assert len(direct.transitions) == 1 and direct.transitions[0].bisect_steps == 3
    _assert_same_probe(stored, direct)
    r = _cli("show", str(out))
    assert r.returncode == 0 and "basin_nodes" in r.stdout and "basin_edges" in r.stdout
    t = run.tables["transitions"].iloc[0]
    assert {"strength_lo", "strength_hi", "confirmed"} <= set(run.tables["transitions"].columns)
    m = run.model(member=int(t["member"]), index=int(t["index"]), point="hi")
    from jax.flatten_util import ravel_pytree
    import equinox as eqx

    np.testing.assert_array_equal(np.asarray(ravel_pytree(eqx.filter(m, eqx.is_inexact_array))[0]), stored.transitions[0].x_hi)


def test_basins_killed_mid_excursion_resumes_to_the_uninterrupted_probe(tmp_path):
    """Without bisection the jump goes on to a saddle, an excursion and a nested probe; killed
    mid-excursion and rerun, the first probe equals ``run_probe``'s and the nested probe ran."""
    args = [*BASINS, "--set", "bisect=false"]
    out = tmp_path / "killed"
    _kill_after(args, out, "excursion-s000000")
    assert "excursion-s000004" not in RunStore(out).done_pieces()
    r = _cli(*args, "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "[excursion]" in r.stderr and "[nest-probe]" in r.stderr
    done = RunStore(out).done_pieces()
    assert "saddle-m000-i0002" in done and "nest-probe-s000002" in done
    run, stored, direct = _probe_in_process(out)
    assert direct.transitions[0].saddle is not None and direct.transitions[0].excursion is not None
    _assert_same_probe(stored, direct)
    assert set(run.tables["transitions"]["probe"]) == {"ref0", "nest"}
    assert (out / "basins.png").exists() and (out / "probe_nested.png").exists() and (out / "report.html").exists()


@pytest.mark.ray
def test_connect_on_ray_gives_the_local_records(connect_run, tmp_path):
    pytest.importorskip("ray")
    out = tmp_path / "ray"
    r = _cli(*CONNECT, "--engine", "ray", "--address", "local", "--out", str(out), "--no-figures")
    assert r.returncode == 0, r.stderr[-3000:]
    _assert_same_run(connect_run, out)
