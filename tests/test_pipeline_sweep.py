"""The experiment pipeline, tested through real processes on the sweep kind: SIGKILL and resume
(with a carried optimiser state), the writer lock, unusable --out folders, progress when stderr is
not a terminal, a Ray address that answers but is not Ray, `show` and `open_run` on runs and grids."""

from __future__ import annotations

import json
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

import phaseprobe
from phaseprobe.progress import ProgressReporter
from phaseprobe.store import RunStore, StoreError

# a loop chain with a carried optimiser (fresh_opt = false): a resume must restore Adam's moments
TINY = """[sweep]
name = "pipe"
dataset = "digits"
model = "mlp"
depth = 2
width = 8
alphas = "1e-3:1:6"
mode = "loop"
seeds = 2
optimizer = "adam"
lr = 0.003
epochs = 60
fresh_opt = false
"""

WALL = ["seconds"]


def _cli(*args, cwd=None, **kw):
    env = dict(os.environ, COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "phaseprobe.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600, **kw)


def _popen(*args):
    return subprocess.Popen([sys.executable, "-m", "phaseprobe.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, COLUMNS="200"))


def _spec(tmp_path: Path) -> Path:
    p = tmp_path / "tiny.toml"
    p.write_text(TINY)
    return p


def _records(out: Path) -> pd.DataFrame:
    df = RunStore(out).load_records().drop(columns=WALL)
    return df.sort_values(["branch", "alpha_index", "seed", "record_epoch"]).reset_index(drop=True)


def _arrays(out: Path) -> dict:
    st = RunStore(out)
    return {p: st.load_params(p) for p in sorted(st.done_pieces())}


def _wait_for_pieces(out: Path, n: int, proc, timeout: float = 300) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        d = out / "records"
        if d.exists() and len([p for p in d.glob("*.parquet") if not p.name.startswith(".tmp")]) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"finished before {n} pieces: {proc.stderr.read()[-2000:]}")
        time.sleep(0.05)
    raise AssertionError("timed out waiting for pieces")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    d = tmp_path_factory.mktemp("ref")
    spec = _spec(d)
    r = _cli("sweep", "--spec", str(spec), "--out", str(d / "run"), "--no-figures")
    assert r.returncode == 0, r.stderr[-3000:]
    return d / "run", spec


def test_sigkill_then_rerun_is_bit_identical(reference, tmp_path):
    ref, spec = reference
    out = tmp_path / "run"
    p = _popen("sweep", "--spec", str(spec), "--out", str(out), "--no-figures")
    _wait_for_pieces(out, 4, p)  # mid-chain: the up branch is half done
    p.send_signal(signal.SIGKILL)
    p.wait()
    n_before = len(RunStore(out).done_pieces())
    assert 0 < n_before < 12
    r = _cli("sweep", "--spec", str(spec), "--out", str(out), "--no-figures")
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resuming: {2 * n_before}/24 trainings already in the store" in r.stderr
    pd.testing.assert_frame_equal(_records(out), _records(ref))
    a, b = _arrays(out), _arrays(ref)
    assert a.keys() == b.keys()
    for piece in a:
        assert a[piece].keys() == b[piece].keys()
        assert any(k.startswith("o") for k in a[piece])  # the carried optimiser state is stored
        for k in a[piece]:
            np.testing.assert_array_equal(a[piece][k], b[piece][k], err_msg=f"{piece}/{k}")


def test_second_writer_fails_with_one_line_and_nothing_of_the_first_is_lost(reference, tmp_path):
    _, spec = reference
    long = tmp_path / "long.toml"
    # one piece quickly, then a long one: the first writer is busy while the second is tried
    long.write_text(TINY.replace('alphas = "1e-3:1:6"', 'alphas = "1e-3:1:40"\nchunk_size = 1')
                    .replace("epochs = 60", "epochs = 20000").replace('mode = "loop"', 'mode = "cold"'))
    out = tmp_path / "run"
    p = _popen("sweep", "--spec", str(long), "--out", str(out), "--no-figures")
    try:
        _wait_for_pieces(out, 1, p)
        meta = (out / "spec.json").read_bytes()
        for other in (["--set", "epochs=5"], []):  # another spec, and the same spec
            r = _cli("sweep", "--spec", str(long), *other, "--out", str(out), "--no-figures")
            lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
            assert r.returncode == 2 and len(lines) == 1, r.stderr
            assert lines[0].startswith("error: out:") and f"process {p.pid}" in lines[0]
        assert p.poll() is None, "the first writer ended before the second was tried"
        assert (out / "spec.json").read_bytes() == meta
    finally:
        p.kill()
        p.wait()
    st = RunStore(out)
    files = [f for f in (out / "records").glob("*.parquet") if not f.name.startswith(".tmp")]
    assert len(st.done_pieces()) == len(files) >= 1  # every piece the first wrote reads back


def test_a_stale_lock_is_taken_over(tmp_path):
    st = RunStore(tmp_path / "run")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    st.root.mkdir()
    st.lock_path.write_text(f"{dead.pid}\n")
    st.lock()
    assert st.lock_path.read_text().split()[0] == str(os.getpid())
    st.unlock()
    assert not st.lock_path.exists()


def test_a_live_lock_is_refused_in_process(tmp_path):
    st = RunStore(tmp_path / "run")
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        st.root.mkdir()
        st.lock_path.write_text(f"{live.pid}\n")
        with pytest.raises(StoreError, match=f"process {live.pid}"):
            st.lock()
    finally:
        live.kill()
        live.wait()


@pytest.mark.parametrize("case", ["file", "garbage_meta", "read_only", "unwritable_fs"])
def test_unusable_out_folders_are_one_line_and_untouched(tmp_path, case):
    out = tmp_path / "o"
    if case == "unwritable_fs":  # a folder nobody can create, root included
        out = Path("/proc/phaseprobe-run")
    elif case == "file":
        out.write_text("not a folder")
    elif case == "garbage_meta":
        out.mkdir()
        (out / "spec.json").write_text("{not json")
    else:
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders")
        out.mkdir()
        out.chmod(0o500)
    before = {p: p.read_bytes() for p in ([out] if out.is_file() else out.rglob("*")) if p.is_file()} if out.exists() else {}
    r = _cli("sweep", "--set", "epochs=1", "--alphas", "0.01", "--set", "seeds=1", "--out", str(out), "--no-figures")
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: out:"), r.stderr
    assert "Traceback" not in r.stderr
    after = {p: p.read_bytes() for p in ([out] if out.is_file() else out.rglob("*")) if p.is_file()} if out.exists() else {}
    assert after == before


def test_progress_without_a_terminal_writes_log_lines(reference, tmp_path):
    _, spec = reference
    out = tmp_path / "run"
    r = _cli("sweep", "--spec", str(spec), "--out", str(out), "--no-figures")
    assert r.returncode == 0
    assert "[trainings] 0/24 runs" in r.stderr and "[trainings] 24/24 runs (100%)" in r.stderr
    assert "new run in" in r.stderr
    log = (out / "progress.log").read_text()
    assert "[trainings] 24/24" in log


def test_progress_reporter_ticks_while_no_work_finishes():
    import io

    buf = io.StringIO()
    rep = ProgressReporter(stream=buf, every=0.2, terminal=False)
    task = rep.phase("slow", total=3)
    time.sleep(1.1)  # nothing finishes: the reporter still says where it is
    task.advance(1)
    task.finish()
    rep.close()
    lines = [ln for ln in buf.getvalue().splitlines() if ln.startswith("[slow]")]
    assert len(lines) >= 5, lines  # the start, >= 3 ticks of 0.2 s in 1.1 s, the end
    assert lines[-1].startswith("[slow] 1/3 runs") and lines[-1].endswith("done")


def test_a_port_that_is_not_ray_is_refused_quickly(tmp_path):
    pytest.importorskip("ray")
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    port = srv.getsockname()[1]
    conns = []

    def accept():  # accepts and stays silent, like a server of another protocol waiting for input
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            conns.append(c)

    threading.Thread(target=accept, daemon=True).start()
    try:
        t0 = time.monotonic()
        r = _cli("sweep", "--set", "epochs=1", "--alphas", "0.01", "--set", "seeds=1", "--engine", "ray",
                 "--address", f"127.0.0.1:{port}", "--out", str(tmp_path / "o"), "--no-figures")
        assert time.monotonic() - t0 < 60
    finally:
        srv.close()
        for c in conns:
            c.close()
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "is not a Ray cluster" in lines[0], r.stderr
    assert not (tmp_path / "o").exists()


def test_show_and_open_run_on_a_sweep(reference):
    ref, _ = reference
    r = _cli("show", str(ref))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "trainings" in r.stdout
    run = phaseprobe.open_run(ref)
    assert run.kind == "sweep" and run.spec["name"] == "pipe"
    assert len(run.records) == len(RunStore(ref).load_records())
    # a stored model rebuilt from the store gives back the stored parameters
    import equinox as eqx
    import jax

    m = run.model(branch="up", alpha_index=2, seed=1)
    piece = "up-s000-a0002"
    stored = RunStore(ref).load_params(piece)
    leaves = jax.tree_util.tree_leaves(eqx.filter(m, eqx.is_inexact_array))
    assert len(leaves) == len([k for k in stored if k.startswith("p")])
    for i, leaf in enumerate(leaves):
        np.testing.assert_array_equal(np.asarray(leaf), stored[f"p{i:03d}"][1])


def test_grid_folder_show_and_open_run(tmp_path):
    out = tmp_path / "grid"
    r = _cli("sweep", "--set", "epochs=5", "--set", "alphas=0.001,0.1", "--set", "seeds=1", "--set", "width=4",
             "--set", "mode=cold", "--grid", "depth=1,2", "--out", str(out), "--no-figures")
    assert r.returncode == 0, r.stderr[-2000:]
    r = _cli("show", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "depth-1" in r.stdout and "depth-2" in r.stdout
    run = phaseprobe.open_run(out)
    assert run.kind == "grid" and len(run.cells) == 2
    assert set(run.records["cell"]) == {"depth-1", "depth-2"}
    assert json.loads((out / "spec.json").read_text())["spec"]["cell_kind"] == "sweep"


def test_curvature_on_a_damaged_piece_names_it_and_exits_2(reference, tmp_path):
    import shutil

    ref, _ = reference
    run = tmp_path / "run"
    shutil.copytree(ref, run)
    victim = sorted((run / "params").glob("*.npz"))[3]
    victim.write_bytes(b"damaged")
    r = _cli("curvature", str(run))
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1, r.stderr[-2000:]
    assert lines[0].startswith("error: run: piece") and victim.stem in lines[0]
