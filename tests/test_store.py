"""Tests of the run store: atomic pieces, damaged files detected and redone (never read),
resumption without duplicates, one-line errors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from phaseprobe.errors import PhaseprobeError
from phaseprobe.store import RunStore
from phaseprobe.store.run_store import StoreError, _atomic_write_bytes
from phaseprobe.sweep.driver import run_sweep
from phaseprobe.sweep.spec import make_spec


def _frame(piece: str, n: int = 3) -> pd.DataFrame:
    return pd.DataFrame({"piece": [piece] * n, "alpha": np.linspace(0.1, 0.3, n), "seed": np.arange(n),
                         "final": [True] * n})


def _params(k: int = 2) -> dict:
    return {"p000": np.arange(6 * k, dtype=np.float32).reshape(k, 6), "p001": np.ones((k, 3), np.float32)}


def _store(tmp_path) -> RunStore:
    st = RunStore(tmp_path / "run")
    st.init({"name": "t"}, "hash0", kind="sweep")
    return st


def test_pieces_round_trip_and_leave_no_temporaries(tmp_path):
    st = _store(tmp_path)
    st.write_piece("a", _frame("a"), _params())
    st.write_piece("b", _frame("b"), _params())
    assert st.done_pieces() == {"a", "b"}
    df = st.load_records()
    assert len(df) == 6 and set(df["piece"]) == {"a", "b"}
    np.testing.assert_array_equal(st.load_params("a")["p000"], _params()["p000"])
    left = [p.name for p in (tmp_path / "run").rglob("*") if p.name.startswith(".tmp-")]
    assert left == []
    # rewriting a piece replaces it: no duplicate rows
    st.write_piece("a", _frame("a"), _params())
    assert len(st.load_records()) == 6


def test_a_write_that_dies_half_way_leaves_nothing_under_the_final_name(tmp_path):
    target = tmp_path / "records" / "x.parquet"

    def half(tmp):
        Path(tmp).write_bytes(b"PAR1 half a file")
        raise KeyboardInterrupt  # the process is stopped in the middle of the write

    with pytest.raises(KeyboardInterrupt):
        _atomic_write_bytes(target, half)
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_a_leftover_temporary_is_not_a_piece(tmp_path):
    """A killed process can leave a temporary file behind: it is neither done nor read."""
    st = _store(tmp_path)
    st.write_piece("a", _frame("a"), _params())
    (st.records_dir / ".tmp-abc123.parquet").write_bytes(b"PAR1 truncated")
    assert st.done_pieces() == {"a"}
    assert len(st.load_records()) == 3


def test_truncated_records_are_quarantined_and_not_done(tmp_path):
    st = _store(tmp_path)
    st.write_piece("a", _frame("a"), _params())
    st.write_piece("b", _frame("b"), _params())
    rp = st.records_dir / "b.parquet"
    data = rp.read_bytes()
    rp.write_bytes(data[: len(data) // 2])  # cut short
    # never read: loading the folder names the damaged file in one line
    with pytest.raises(StoreError) as ei:
        st.load_records()
    assert "\n" not in str(ei.value) and str(ei.value).startswith("records:") and "b.parquet" in str(ei.value)
    assert st.done_pieces() == {"a"}
    assert not rp.exists() and (st.records_dir / "b.parquet.corrupt").exists()
    assert set(st.load_records()["piece"]) == {"a"}


@pytest.mark.parametrize("damage", ["garbage", "truncate", "missing"])
def test_damaged_parameters_make_the_piece_undone(tmp_path, damage):
    st = _store(tmp_path)
    st.write_piece("a", _frame("a"), _params())
    pp = st.params_dir / "a.npz"
    if damage == "garbage":
        pp.write_bytes(b"not a zip file at all")
    elif damage == "truncate":
        pp.write_bytes(pp.read_bytes()[:40])
    else:
        pp.unlink()
    assert st.done_pieces() == set()
    assert not (st.records_dir / "a.parquet").exists()  # records moved aside with the params
    assert (st.records_dir / "a.parquet.corrupt").exists()
    assert st.load_records().empty


def test_spec_mismatch_and_non_run_folder_are_one_line_errors(tmp_path):
    st = _store(tmp_path)
    with pytest.raises(PhaseprobeError) as ei:
        RunStore(tmp_path / "run").init({"name": "t"}, "otherhash")
    assert "\n" not in str(ei.value) and str(ei.value).startswith("out:")
    st.init({"name": "t"}, "hash0")  # the same spec: resumes, no error
    with pytest.raises(PhaseprobeError) as ei:
        RunStore(tmp_path / "nowhere").meta()
    assert "\n" not in str(ei.value) and str(ei.value).startswith("run:")


def _tiny(mode):
    return make_spec(dict(
        name="store", dataset="gaussian-mixture", data_options=dict(n_classes=3, dim=5, n_train=45, n_test=45),
        model="mlp", depth=1, width=6, alphas="1e-3:1e-1:3", mode=mode, seeds=2, lr=1e-2, epochs=15, chunk_size=2,
    ))


@pytest.mark.parametrize("mode", ["up", "cold"])
def test_damaged_pieces_of_a_finished_sweep_are_redone_identically(tmp_path, mode):
    spec = _tiny(mode)
    out = tmp_path / "run"
    ref = run_sweep(spec, out)
    st = RunStore(out)
    pieces = sorted(p.stem for p in st.records_dir.glob("*.parquet"))
    # up: one chain of both seeds (chunk 2), one piece per alpha step; cold: 3 alphas x 2 seeds = 6 cells / chunk 2
    expected = {"up": [f"up-s000-a{i:04d}" for i in range(3)], "cold": [f"cold-c{j:04d}" for j in range(3)]}[mode]
    assert pieces == expected
    # cut one record file short, and garble the parameters of another piece
    rp = st.records_dir / f"{pieces[1]}.parquet"
    rp.write_bytes(rp.read_bytes()[:100])
    (st.params_dir / f"{pieces[0]}.npz").write_bytes(b"\x00" * 64)
    mtimes = {p: (st.records_dir / f"{p}.parquet").stat().st_mtime_ns for p in pieces[2:]}
    plan = {}
    again = run_sweep(spec, out, on_plan=lambda total, done: plan.update(total=total, done=done))
    assert plan["done"] == (plan["total"] - 4 if mode == "cold" else 0)  # cold: two cells per damaged piece
    key = ["branch", "alpha_index", "seed", "record_epoch"]
    assert not again.duplicated(key).any()
    a = again.drop(columns="seconds").sort_values(key).reset_index(drop=True)
    b = ref.drop(columns="seconds").sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-6, atol=1e-7)
    assert (st.records_dir / f"{pieces[1]}.parquet.corrupt").exists()
    assert (st.params_dir / f"{pieces[0]}.npz.corrupt").exists()
    if mode == "cold":  # independent pieces: the intact one is not recomputed
        assert all((st.records_dir / f"{p}.parquet").stat().st_mtime_ns == m for p, m in mtimes.items())
