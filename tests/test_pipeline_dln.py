"""``phaseprobe dln`` on the experiment pipeline, each check against a real subprocess.

A SIGKILL mid-run, then the same command: records and stored arrays equal to an uninterrupted
run (the wall-time column aside); ``--grid field=v1,v2`` writes one sub-run per cell and one
report; ``phaseprobe show`` exits 0 and ``open_run`` loads every dln kind and the grid folder;
``--out`` into a folder of another kind is refused in one line and leaves it as it was.
Tiny settings: a rank-2 teacher in 3 dimensions, widths 4 and 6.
"""

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

TEACHER = ["--singular-values", "4,1", "--set", "teacher.in_dim=3", "--set", "teacher.out_dim=3",
           "--set", "integrate.delta=0.2", "--set", "integrate.chunk=32"]
PHASE = ["--phase-diagram", "--gammas", "0.5,2", "--widths", "4,6", "--seeds", "0", "--grid-depth", "2", "--t-max", "5",
         "--set", "grid.loss_tol=1e-3", "--no-figures"] + TEACHER
ONE = ["--depth", "2", "--gamma", "3", "--t-max", "20", "--no-certify"] + TEACHER
ESCAPE = ["--escape", "--set", "escape.depths=[2]", "--set", "escape.width=4", "--set", "escape.sigmas_depth2=[0.01,0.001]",
          "--no-figures"] + TEACHER


def _cmd(*args) -> list[str]:
    return [sys.executable, "-m", "phaseprobe.cli", *map(str, args)]


def _run(*args, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(_cmd(*args), capture_output=True, text=True, timeout=timeout)


def _ok(r: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def _pieces(run_dir: Path) -> list[str]:
    d = Path(run_dir) / "records"
    return sorted(p.stem for p in d.glob("*.parquet") if not p.name.startswith(".tmp-")) if d.exists() else []


def _records(run_dir: Path) -> dict[str, pd.DataFrame]:
    return {p: pd.read_parquet(Path(run_dir) / "records" / f"{p}.parquet").drop(columns=["seconds"]) for p in _pieces(run_dir)}


def _arrays(run_dir: Path, piece: str) -> dict[str, np.ndarray]:
    with np.load(Path(run_dir) / "params" / f"{piece}.npz") as z:
        return {k: z[k] for k in z.files}


def _assert_same_store(a: Path, b: Path) -> None:
    ra, rb = _records(a), _records(b)
    assert list(ra) == list(rb) and ra
    for piece in ra:
        pd.testing.assert_frame_equal(ra[piece], rb[piece], check_exact=True)
        xa, xb = _arrays(a, piece), _arrays(b, piece)
        assert sorted(xa) == sorted(xb)
        for k in xa:
            np.testing.assert_array_equal(xa[k], xb[k], err_msg=f"{piece}:{k}")


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 600) -> None:
    t0 = time.monotonic()
    while not ready():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (rc {proc.returncode}) before it could be killed mid-run")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            raise AssertionError("the run never reached the point to kill it")
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.fixture(scope="module")
def phase_ref(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dln-phase") / "ref"
    _ok(_run("dln", *PHASE, "--out", out))
    return out


@pytest.fixture(scope="module")
def cells(tmp_path_factory) -> Path:
    """A spec grid of single runs: --grid width=4,6 (with figures: the cells' and the grid's report)."""
    out = tmp_path_factory.mktemp("dln-cells") / "grid"
    _ok(_run("dln", *ONE, "--grid", "width=4,6", "--out", out))
    return out


def test_phase_diagram_sigkill_then_rerun_is_identical(phase_ref, tmp_path):
    out = tmp_path / "cut"
    proc = subprocess.Popen(_cmd("dln", *PHASE, "--out", out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _kill_when(proc, lambda: len(_pieces(out)) >= 1)
    assert _pieces(out) == ["width-00004"]  # killed with the second width in flight
    r = _ok(_run("dln", *PHASE, "--out", out))
    assert "resuming: 2/4 trainings already in the store" in r.stderr
    _assert_same_store(phase_ref, out)
    for f in ("grid_summary.parquet", "grid_records.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(phase_ref / f).drop(columns=["seconds"], errors="ignore"),
                                      pd.read_parquet(out / f).drop(columns=["seconds"], errors="ignore"))
    r = _ok(_run("dln", *PHASE, "--out", out))  # everything done: says so, computes nothing
    assert "resuming: 4/4 trainings already in the store" in r.stderr and "nothing to run" in r.stderr


def test_single_run_sigkill_then_rerun_is_identical(cells, tmp_path):
    """Killed while integrating (its one piece not written), rerun: equal to the same network run
    uninterrupted as the width-4 cell of the spec grid (the cell's name is not in its records)."""
    out = tmp_path / "one"
    proc = subprocess.Popen(_cmd("dln", *ONE, "--width", "4", "--no-figures", "--out", out),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _kill_when(proc, lambda: "new run in" in (Path(out) / "progress.log").read_text() if (Path(out) / "progress.log").exists() else False)
    assert _pieces(out) == []
    r = _ok(_run("dln", *ONE, "--width", "4", "--no-figures", "--out", out))
    assert "new run in" in r.stderr  # nothing of the killed run was in the store
    _assert_same_store(cells / "cells" / "width-4", out)


def test_spec_grid_writes_one_subrun_per_cell_and_one_report(cells):
    from phaseprobe.store import RunStore

    top = RunStore(cells).meta()
    assert top["kind"] == "grid" and top["spec"]["cell_kind"] == "dln"
    assert sorted(p.name for p in (cells / "cells").iterdir()) == ["width-4", "width-6"]
    for cid, w in (("width-4", 4), ("width-6", 6)):
        cdir = cells / "cells" / cid
        meta = RunStore(cdir).meta()
        assert meta["kind"] == "dln" and meta["spec"]["width"] == w
        assert _pieces(cdir) == ["run"]
        assert (cdir / "dln_saddle_to_saddle.png").stat().st_size > 0 and (cdir / "plateaus.csv").exists()
    assert sorted(p.name for p in cells.glob("report*.html")) == ["report.html"]
    html = (cells / "report.html").read_text()
    assert "Cell width = 4" in html and "Cell width = 6" in html
    cl = pd.read_csv(cells / "cells.csv")
    assert list(cl["cell"]) == ["width-4", "width-6"] and (cl["records"] > 0).all()


def test_show_and_open_run_on_every_dln_kind(phase_ref, cells, tmp_path):
    import phaseprobe
    from phaseprobe.models import DeepLinear

    esc = tmp_path / "escape"
    _ok(_run("dln", *ESCAPE, "--out", esc))
    for d, words in ((phase_ref, ("dln-grid", "transitions", "disp_abs")), (cells, ("grid of 2 cells", "width-6")),
                     (cells / "cells" / "width-4", ("plateaus", "oracle escape times")), (esc, ("escape_fits", "escape_times"))):
        r = _ok(_run("show", d))
        for w in words:
            assert w in r.stdout, (d, w, r.stdout[-2000:])
        assert "no finished records" not in r.stdout

    run = phaseprobe.open_run(phase_ref)
    assert run.kind == "dln-grid" and set(run.records["width"]) == {4, 6} and len(run.tables["grid_summary"]) == 4
    m = run.model(width=6, gamma=2.0, seed=0)
    assert isinstance(m, DeepLinear) and [w.shape for w in m.weights] == [(6, 3), (3, 6)]
    np.testing.assert_array_equal(np.asarray(m.weights[0]), _arrays(phase_ref, "width-00006")["p000"][1])

    grid = phaseprobe.open_run(cells)
    assert grid.kind == "grid" and set(grid.records["cell"]) == {"width-4", "width-6"}
    one = grid.cells[0]
    assert one.kind == "dln" and "plateaus" in one.tables
    final, first = one.model(), one.model(at="initial")
    assert [w.shape for w in final.weights] == [(4, 3), (3, 4)]
    assert not np.array_equal(np.asarray(final.weights[0]), np.asarray(first.weights[0]))
    if len(one.tables["plateaus"]):
        assert isinstance(one.model(plateau=0), DeepLinear)

    e = phaseprobe.open_run(esc)
    assert e.kind == "dln-escape" and sorted(set(e.records["sigma"])) == [0.001, 0.01]
    assert len(e.tables["escape_times"]) == 2 * 2  # two sigmas x two escapes (rank-2 teacher)
    assert [w.shape for w in e.model(depth=2, sigma=0.001).weights] == [(4, 3), (3, 4)]


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_out_into_a_folder_of_another_kind_is_refused_and_left_unchanged(phase_ref, tmp_path):
    from phaseprobe.store import RunStore
    from phaseprobe.sweep.spec import make_spec

    sweep = tmp_path / "sweep"
    spec = make_spec({"dataset": "gaussian-mixture", "n_train": 64, "alphas": "0.01,0.1", "seeds": 1, "epochs": 2})
    store = RunStore(sweep)
    store.init(spec.model_dump(), spec.hash(), kind="sweep")
    store.write_piece("cold-c0000", pd.DataFrame({"alpha": [0.01, 0.1], "final": [True, True]}), {"p000": np.zeros(3)})
    (sweep / "progress.log").write_text("a sweep's log\n")
    for target, held in ((sweep, "a sweep run"), (phase_ref, "a dln-grid run")):
        before = _snapshot(target)
        r = _run("dln", *ONE, "--width", "4", "--no-figures", "--out", target)
        assert r.returncode == 2
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: out: ") and held in lines[0], r.stderr
        assert _snapshot(target) == before
