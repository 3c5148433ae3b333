"""sweep.png and classes.png draw what they say: on a loop with a known hysteresis (records built
with the up branch jumping at grid point 9 and the down branch returning at 4, analysed by the
project's own analysis) every element the caption and legend name exists (each transition's line,
tag and interval, both spinodals, the Maxwell point, chance level); the strength axis is named by
the convention and is linear on a linear grid; legends sit outside the axes; classes follow the
project's learned rule (recall AND precision), carry names, span real strengths, have a colour
bar; and no two text boxes overlap (matplotlib's own extents) -- also on a real tiny sweep."""

from __future__ import annotations

import itertools

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import QuadMesh
from matplotlib.text import Text

from phaseprobe import conventions
from phaseprobe.plots.sweep_plots import class_figure, learned_matrix, sweep_figure
from phaseprobe.sweep.analysis import analyze, transitions_frame

from tiny_runs import tiny_sweep


def loop_records(convention="l2", linear=False, n_cls=10, dataset="digits") -> pd.DataFrame:
    """A loop whose up branch jumps to w = 0 after grid point 8 and whose down branch comes back
    below grid point 4; in the trivial phase the model predicts class 3 for every input (recall 1,
    precision 1/C)."""
    rng = np.random.default_rng(0)
    alphas = np.linspace(0.02, 0.6, 12) if linear else np.geomspace(1e-3, 1, 12)
    rows = []
    for b in ("up", "down"):
        for i, a in enumerate(alphas):
            learned = i < 9 if b == "up" else i < 4
            for seed in range(3):
                acc = (0.9 if learned else 0.1) + 0.005 * rng.standard_normal()
                w = (30.0 if learned else 1e-4) * (1 + 0.01 * rng.standard_normal())
                e = 0.3 if learned else np.log(n_cls)
                r = {"final": True, "branch": b, "alpha_index": i, "alpha": a, "seed": seed,
                     "strength": conventions.from_alpha(a, convention), "convention": convention, "dataset": dataset,
                     "diverged": False, "stop_reason": "patience", "test_acc": acc, "train_acc": acc, "w_sq": w,
                     "train_error": e, "loss": e + a * w, "penalty_sq": w, "grad_norm": 1e-4, "step_index": 0,
                     "record_epoch": 10, "n_classes_learned": n_cls if learned else 0}
                for c in range(n_cls):
                    r[f"class_acc_{c}"] = 0.9 if learned else (1.0 if c == 3 else 0.0)
                    r[f"class_prec_{c}"] = 0.9 if learned else (1.0 / n_cls if c == 3 else 0.0)
                rows.append(r)
    return pd.DataFrame(rows)


def transitions(df: pd.DataFrame, convention="l2") -> list[dict]:
    tr = transitions_frame(analyze(df, n_boot=50)["transitions"])
    for c in ("alpha_c", "alpha_lo", "alpha_hi", "spinodal_up", "spinodal_down", "maxwell"):
        name = c.replace("alpha", "strength") if c.startswith("alpha") else c + "_strength"
        tr[name] = conventions.from_alpha(tr[c].to_numpy(), convention)
    return tr.to_dict(orient="records")


def _undrawn_tick_labels(fig) -> set:
    """Tick labels matplotlib keeps but does not draw (their tick lies outside the view)."""
    out = set()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            for ticks, locs in ((axis.get_major_ticks(), axis.get_majorticklocs()),
                                (axis.get_minor_ticks(), axis.get_minorticklocs())):
                for tick, loc in zip(ticks, locs):
                    if not (lo - 1e-12 * abs(lo) <= loc <= hi + 1e-12 * abs(hi)):
                        out |= {id(tick.label1), id(tick.label2)}
    return out


def texts(fig) -> list[Text]:
    fig.canvas.draw()
    hidden = _undrawn_tick_labels(fig)
    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip() and id(t) not in hidden
            and (t.axes is None or t.axes.get_visible())]


def assert_no_text_overlap(fig):
    r = fig.canvas.get_renderer()
    boxes = [(t.get_text(), t.get_window_extent(r).shrunk(0.98, 0.9)) for t in texts(fig)]
    bad = [(a, b) for (a, ba), (b, bb) in itertools.combinations(boxes, 2) if ba.overlaps(bb)]
    assert not bad, f"overlapping text: {bad[:5]}"


def legend_texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]


def assert_legends_outside_axes(fig):
    r = fig.canvas.get_renderer()
    for ax in fig.axes:
        leg = ax.get_legend()
        if leg is None:
            continue
        lb = leg.get_window_extent(r)
        for other in fig.axes:
            assert not lb.overlaps(other.get_window_extent(r).shrunk(0.999, 0.999)), "a legend covers an axes"


@pytest.fixture(scope="module")
def loop():
    df = loop_records()
    return df, transitions(df)


def test_sweep_figure_draws_every_named_element(loop):
    df, tr = loop
    accs = [t for t in tr if t["observable"] == "test_acc"]
    assert {t["branch"] for t in accs} == {"up", "down"} and np.isfinite(accs[0]["maxwell"])
    fig = sweep_figure(df, tr, title="a loop")
    legend = legend_texts(fig)
    joined = "\n".join(legend)
    for t in accs:  # each accuracy transition: a labelled line with its value and order, and its interval
        assert any(f"{t['branch']} branch, alpha_c = {t['strength_c']:.3g}" in s and t["order"] in s for s in legend), joined
    assert sum("interval: grid cell + seed bootstrap" in s for s in legend) == len(tr)
    up = [t for t in accs if t["branch"] == "up"][0]
    assert f"upper spinodal (up branch jumps): alpha = {up['spinodal_up_strength']:.3g}" in joined
    assert f"lower spinodal (down branch returns): alpha = {up['spinodal_down_strength']:.3g}" in joined
    assert f"Maxwell point (equal regularised loss): alpha = {up['maxwell_strength']:.3g}" in joined
    assert "chance level 1/C = 0.1" in joined
    assert "alpha up (warm start): seed mean" in joined and "alpha down (warm start): seed mean" in joined
    tags = [t.get_text() for t in texts(fig) if t.get_text().startswith("T") and len(t.get_text()) <= 3]
    assert sorted(tags) == [f"T{i}" for i in range(1, len(tr) + 1)]
    # every vertical line the legend names is drawn at its strength
    xs = {round(float(ln.get_xdata()[0]), 9) for ax in fig.axes for ln in ax.get_lines()
          if len(ln.get_xdata()) == 2 and ln.get_xdata()[0] == ln.get_xdata()[1]}
    for v in (up["strength_c"], up["spinodal_up_strength"], up["spinodal_down_strength"], up["maxwell_strength"]):
        assert round(float(v), 9) in xs
    ax = fig.axes[1]
    assert ax.get_xscale() == "log" and ax.get_xlabel().startswith("alpha") and ax.get_yscale() == "log"
    caption = [t.get_text() for t in fig.texts]
    assert any("T1, T2, ...: transitions" in c and "intervals" in c for c in caption)
    assert_legends_outside_axes(fig)
    assert_no_text_overlap(fig)
    plt.close(fig)


def test_beta_convention_and_linear_grid_name_and_scale_the_axis():
    df = loop_records(convention="wd", linear=True)
    tr = transitions(df, "wd")
    fig = sweep_figure(df, tr)
    assert fig.axes[1].get_xscale() == "linear" and fig.axes[1].get_xlabel().startswith("beta")
    joined = "\n".join(legend_texts(fig))
    assert "beta up (warm start)" in joined and "alpha up" not in joined and "beta_c = " in joined
    assert_no_text_overlap(fig)
    plt.close(fig)
    fig = class_figure(df)
    meshes = [c for ax in fig.axes for c in ax.collections if isinstance(c, QuadMesh)]
    assert fig.axes[0].get_xscale() == "linear"
    x = np.sort(df["strength"].unique())
    edges = meshes[0].get_coordinates()[0, :, 0]
    np.testing.assert_allclose(edges[1:-1], (x[1:] + x[:-1]) / 2)  # cells span the real strengths
    plt.close(fig)


def test_classes_follow_the_learned_rule_with_names_and_a_colour_bar(loop):
    df, _ = loop
    m, has_prec = learned_matrix(df[df["branch"] == "down"])
    assert has_prec and m.iloc[-1]["class_acc_3"] == 0.0  # recall 1 on class 3, precision 0.1: not learned
    assert m.iloc[0].min() == 1.0  # the learned phase: every class
    fig = class_figure(df, dataset="fashion-mnist", title="classes")
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels[0] == "T-shirt/top" and labels[9] == "Ankle boot"
    cbar = [ax for ax in fig.axes if "fraction of seeds that learned" in ax.get_ylabel()]
    assert cbar and "precision" in cbar[0].get_ylabel()
    panels = [ax for ax in fig.axes if ax not in cbar]
    meshes = [c for ax in panels for c in ax.collections if isinstance(c, QuadMesh)]
    assert len(panels) == 2 and len(meshes) == 2  # one panel per branch, drawn on strength edges
    x = np.sort(df["strength"].unique())
    edges = meshes[0].get_coordinates()[0, :, 0]
    np.testing.assert_allclose(edges[1:-1], np.sqrt(x[1:] * x[:-1]))  # geometric midpoints on a log grid
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] != [str(i) for i in range(10)]
    assert_no_text_overlap(fig)
    plt.close(fig)
    fig = class_figure(df)  # digits: 0-9
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == [str(i) for i in range(10)]
    plt.close(fig)


def test_real_tiny_sweep_figures_have_no_overlapping_text(tmp_path_factory):
    from phaseprobe.runs import open_run

    run, _ = tiny_sweep(tmp_path_factory.getbasetemp() / "views")
    r = open_run(run)
    for name in ("sweep.png", "classes.png"):
        assert (run / name).stat().st_size > 10_000
    tr = r.tables["transitions"].to_dict(orient="records")
    for fig in (sweep_figure(r.records, tr), class_figure(r.records)):
        assert_no_text_overlap(fig)
        assert_legends_outside_axes(fig)
        plt.close(fig)


def test_a_bisected_transition_draws_its_bracket(loop):
    df, tr = loop
    up = dict([t for t in tr if t["observable"] == "test_acc" and t["branch"] == "up"][0])
    lo, hi = up["strength_c"] * 0.97, up["strength_c"] * 1.02  # as a refined run reports it
    up.update(refined_steps=3, bracket_lo=lo, bracket_hi=hi)
    fig = sweep_figure(df, [up])
    legend = legend_texts(fig)
    assert "T1 interval: bisection bracket (3 steps)" in legend
    assert any(f"in [{lo:.3g}, {hi:.3g}]" in s for s in legend)
    bars = [ln for ln in fig.axes[0].get_lines() if ln.get_label().startswith("T1 interval")]
    np.testing.assert_allclose(bars[0].get_xdata(), [lo, hi])
    plt.close(fig)


def test_exact_zeros_of_w_are_drawn_and_named_on_the_log_axis(loop):
    df, tr = loop
    df = df.copy()
    df.loc[df["w_sq"] < 1e-3, "w_sq"] = 0.0  # the trivial phase at exactly w = 0
    fig = sweep_figure(df, tr)
    joined = "\n".join(legend_texts(fig))
    assert "up branch: ||w||^2 = 0 (drawn at" in joined and "down branch: ||w||^2 = 0 (drawn at" in joined
    lo, hi = fig.axes[1].get_ylim()
    zeros = [ln for ln in fig.axes[1].get_lines() if "= 0 (drawn at" in ln.get_label()]
    assert zeros and all(lo < y < hi for ln in zeros for y in ln.get_ydata())  # inside the panel, not clipped
    assert_no_text_overlap(fig)
    plt.close(fig)


def test_bisection_steps_do_not_turn_a_linear_grid_into_a_log_axis():
    df = loop_records(linear=True)
    extra = df[df["alpha_index"] == 8].copy()
    extra["alpha"] = extra["strength"] = extra["alpha"] * 1.013
    extra["refined"] = True
    df = pd.concat([df.assign(refined=False), extra], ignore_index=True)
    fig = sweep_figure(df, transitions(df[~df["refined"]]))
    assert fig.axes[1].get_xscale() == "linear"
    assert any("bisection steps" in s for s in legend_texts(fig))
    plt.close(fig)


def test_strength_zero_in_a_log_grid_gets_a_symlog_axis_and_is_drawn():
    df = loop_records()
    grid = np.sort(df["alpha"].unique())
    df.loc[df["alpha"] == grid[0], ["alpha", "strength"]] = 0.0  # the first grid point: no penalty
    fig = sweep_figure(df, [])
    assert fig.axes[1].get_xscale() == "symlog"
    lines = [ln for ln in fig.axes[0].get_lines() if ln.get_label().endswith("seed mean")]
    assert all(0.0 in ln.get_xdata() for ln in lines)
    plt.close(fig)
    fig = class_figure(df)
    assert fig.axes[0].get_xscale() == "symlog" and fig.axes[0].get_xlim()[0] <= 0.0
    assert_no_text_overlap(fig)
    plt.close(fig)
