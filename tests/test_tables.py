"""Terminal tables fit 80 columns: the helpers' fitting and formatting, and `show` / the sweep
command's own printout on a real sweep and grid with COLUMNS=80 (every line <= 80, no nan)."""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from phaseprobe.plots.tables import Col, fit_table, fmt_bracket, fmt_count, fmt_num, print_fitted, table_width

from tiny_runs import invoke, tiny_grid, tiny_sweep


def _lines(text: str) -> list[str]:
    return text.splitlines()


def _assert_fits(text: str, width: int = 80):
    long = [ln for ln in _lines(text) if len(ln.rstrip()) > width]
    assert not long, "lines wider than %d:\n%s" % (width, "\n".join(long))
    assert "nan" not in text.lower().replace("nanmean", ""), text


def test_formatting_never_prints_nan_and_counts_are_integers():
    assert fmt_num(float("nan")) == "—" and fmt_num(None, missing="not reached") == "not reached"
    assert fmt_num(np.int64(3)) == "3" and fmt_count(3.0) == "3" and fmt_count(np.float32(12)) == "12"
    assert fmt_num(0.0641234) == "0.0641"
    assert fmt_bracket(0.064, 0.05, 0.08) == "0.064 [0.05, 0.08]"
    assert fmt_bracket(0.064, float("nan"), float("nan")) == "0.064"
    assert fmt_bracket(float("nan"), 0.05, 0.08) == "—"


def test_fit_table_drops_least_important_columns_first_and_names_them():
    df = pd.DataFrame({"a": ["x" * 10] * 3, "b": [1.5, 2.5, math.nan], "c": ["y" * 30] * 3, "d": ["z" * 30] * 3})
    cols = [Col("a", "a"), Col("b", "b (units)"), Col("c", "c", priority=1), Col("d", "d", priority=2)]
    wide = fit_table(df, cols, width=10_000)
    assert wide.dropped == [] and table_width(wide.table) > 80
    f = fit_table(df, cols, width=60)
    assert f.dropped == ["d"] and table_width(f.table) <= 60
    f = fit_table(df, cols, width=30)
    assert f.dropped == ["d", "c"] and table_width(f.table) <= 30
    narrow = Console(width=20, record=True, file=io.StringIO())  # essential columns wrap, nothing is cut
    print_fitted(narrow, df, cols)
    out = narrow.export_text()
    assert max(len(ln.rstrip()) for ln in out.splitlines()) <= 20 and out.replace("\n", "").count("x") >= 30
    con = Console(width=60, record=True, file=io.StringIO())
    print_fitted(con, df, cols, title="a title long enough to wrap across the narrow table's width, twice or more")
    out = con.export_text()
    assert "left out to fit 60 columns: d" in out and "—" in out
    assert max(len(ln.rstrip()) for ln in out.splitlines()) <= 60


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    return tiny_sweep(tmp_path_factory.getbasetemp() / "views")


def test_sweep_printout_and_show_fit_80_columns(sweep):
    run, printed = sweep
    _assert_fits(printed)
    assert "alpha_c [bracket]" in printed or "transitions: none found" in printed
    r = invoke("show", str(run), columns=80)
    assert r.exit_code == 0, r.output
    _assert_fits(r.stdout)
    assert "trainings" in r.output
    w = invoke("show", str(run), "--wide", columns=80)
    assert w.exit_code == 0
    if "alpha_c [bracket]" in r.output:  # --wide adds the columns the fitted table left out
        assert "--wide shows them" in r.output and "--wide shows them" not in w.output
        assert max(len(ln) for ln in _lines(w.output)) > 80


def test_show_on_a_grid_fits_80_columns(tmp_path_factory):
    out, printed = tiny_grid(tmp_path_factory.getbasetemp() / "views")
    _assert_fits(printed)
    r = invoke("show", str(out), columns=80)
    assert r.exit_code == 0, r.output
    _assert_fits(r.stdout)
    assert "depth-1" in r.output and "depth-2" in r.output
