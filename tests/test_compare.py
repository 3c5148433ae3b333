"""`phaseprobe compare` on two tiny sweeps of different conventions: refused without --convert
(before any output), with --convert every strength in one convention (the weight-decay run's beta
shown as alpha = beta/2), one overlaid figure, the transitions side by side, a report page."""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest

from phaseprobe.commands.compare import compare_runs
from phaseprobe.errors import PhaseprobeError
from phaseprobe.plots.interactive import compare_figure

from tiny_runs import invoke, tiny_sweep


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.getbasetemp() / "views"
    a, _ = tiny_sweep(root)                                                    # alpha = 1e-3 .. 1 (l2)
    b, _ = tiny_sweep(root, name="tiny_wd", alphas="2e-3:2:4", convention="wd")  # beta = 2e-3 .. 2
    return a, b


def test_different_conventions_are_refused_without_convert(runs, tmp_path):
    a, b = runs
    with pytest.raises(PhaseprobeError, match="conventions differ .*--convert"):
        compare_runs([a, b], tmp_path / "cmp")
    assert not (tmp_path / "cmp").exists()
    with pytest.raises(PhaseprobeError, match="at least two"):
        compare_runs([a], tmp_path / "cmp")
    with pytest.raises(PhaseprobeError, match="is one of the compared runs"):
        compare_runs([a, b], a, convert=True)


def test_convert_shows_one_convention_side_by_side(runs, tmp_path):
    a, b = runs
    out = tmp_path / "cmp"
    r = invoke("compare", str(a), str(b), "--out", str(out), "--convert", columns=80)
    assert r.exit_code == 0, r.output
    assert max(len(ln.rstrip()) for ln in r.stdout.splitlines()) <= 80 and "nan" not in r.stdout
    for f in ("compare.png", "compare_transitions.csv", "report.html"):
        assert (out / f).exists(), f
    long = pd.read_csv(out / "compare_transitions.csv")
    assert set(long["convention"]) == {"l2"}
    own_b = pd.read_csv(b / "transitions.csv")  # the wd run's own table: strength = beta = 2 alpha
    assert set(long["run"]) <= {"tiny/run", "tiny_wd/run"}  # two folders named "run": labelled with their parent
    got_b = long[long["run"] == "tiny_wd/run"]
    assert len(got_b) == len(own_b)
    if len(own_b):
        np.testing.assert_allclose(np.sort(got_b["strength_c"]), np.sort(own_b["alpha_c"]))
        np.testing.assert_allclose(np.sort(got_b["strength_c"]) * 2, np.sort(own_b["strength_c"]))
    page = (out / "report.html").read_text()
    assert "transitions side by side" in page and "Plotly.newPlot" in page and "compare.png" in page
    # shown as beta instead: the l2 run's strengths double
    out2 = tmp_path / "cmp_wd"
    r = invoke("compare", str(a), str(b), "--out", str(out2), "--convert", "--convention", "wd", columns=80)
    assert r.exit_code == 0, r.output
    l2 = pd.read_csv(out2 / "compare_transitions.csv")
    assert set(l2["convention"]) == {"wd"} and len(l2) == len(long)
    np.testing.assert_allclose(np.sort(l2["strength_c"]), np.sort(long["strength_c"]) * 2)


def test_overlay_has_a_curve_per_run_and_branch(runs):
    from phaseprobe.runs import open_run

    a, b = runs
    recs = []
    for label, d in (("a", a), ("b", b)):
        df = open_run(d).records.copy()
        df["strength"] = df["alpha"]
        recs.append((label, df))
    fig = compare_figure(recs, "test_acc", "l2")
    names = sorted(t.name for t in fig.data)
    assert names == ["a: down", "a: up", "b: down", "b: up"]
    assert fig.layout.xaxis.type == "log"
    # the two runs share the canonical grid: the converted curves lie on the same strengths
    xs = {t.name: tuple(np.round(t.x, 12)) for t in fig.data}
    assert xs["a: up"] == xs["b: up"]
