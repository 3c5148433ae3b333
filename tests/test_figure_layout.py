"""Every figure kind draws what its caption says and no two of its texts overlap.

Each figure function is fed a small result built here (a loop sweep analysed by the project's
own analysis, a probe with a bisected, a grid-bracketed and an unconfirmed jump, paths with and
without a refined saddle, a basin graph with a saddle edge, grokking tables with members that did
not grok, a real tiny deep-linear integration, escape records with a temperature where no replica
escaped). For each figure the test checks, with matplotlib's own text extents, that no two visible
text boxes overlap, that legends lie outside every axes (they cover no data), that no text is
smaller than 8 pt, and that each element the caption, title or legend names exists as an artist
(by its gid or its legend entry) -- and, the other way round, that a caption does not name an
element the result does not hold ("x = saddle" without a refined saddle).
"""

from __future__ import annotations

import itertools

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.text import Text

from test_figures import loop_records, transitions as sweep_transitions

MIN_PT = 8.0


# ---- checks ------------------------------------------------------------------------------------

def _undrawn_tick_labels(fig) -> set:
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


def visible_texts(fig) -> list[Text]:
    """Every text matplotlib draws (tick labels outside the view left out)."""
    fig.canvas.draw()
    hidden = _undrawn_tick_labels(fig)
    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip() and id(t) not in hidden
            and (t.axes is None or t.axes.get_visible())]


def check_layout(fig, min_pt: float = MIN_PT) -> None:
    """No two text boxes overlap, no text under ``min_pt``, no axes legend covers an axes."""
    texts = visible_texts(fig)
    r = fig.canvas.get_renderer()
    small = [(t.get_text(), t.get_fontsize()) for t in texts if t.get_fontsize() < min_pt - 1e-9]
    assert not small, f"text under {min_pt} pt: {small[:5]}"
    boxes = [(t.get_text(), t.get_window_extent(r).shrunk(0.98, 0.9)) for t in texts]
    bad = [(a, b) for (a, ba), (b, bb) in itertools.combinations(boxes, 2) if ba.overlaps(bb)]
    assert not bad, f"overlapping text: {bad[:5]}"
    axes = [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]
    for ax in fig.axes:
        leg = ax.get_legend()
        if leg is None:
            continue
        lb = leg.get_window_extent(r)
        for other in axes:
            assert not lb.overlaps(other.get_window_extent(r).shrunk(0.999, 0.999)), \
                f"the legend of '{ax.get_title()}' covers an axes"


def legend_texts(fig) -> list[str]:
    legs = [ax.get_legend() for ax in fig.axes if ax.get_legend()] + list(fig.legends)
    return [t.get_text() for leg in legs for t in leg.get_texts()]


def gids(fig) -> list[str]:
    return [a.get_gid() for a in fig.findobj() if a.get_gid()]


def all_text(fig) -> str:
    return "\n".join(t.get_text() for t in visible_texts(fig))


def colorbars(fig) -> list:
    """The colour bars' axes (also those inset in an axes)."""
    axes = list(fig.axes) + [c for ax in fig.axes for c in ax.child_axes]
    return [ax for ax in axes if hasattr(ax, "_colorbar") or ax.get_label() == "<colorbar>"]


def has_colorbar(fig) -> bool:
    return bool(colorbars(fig))


def done(fig) -> None:
    plt.close(fig)


# ---- sweep ---------------------------------------------------------------------------------------

def test_sweep_figures_layout():
    from phaseprobe.plots.sweep_plots import class_figure, sweep_figure

    df = loop_records()
    tr = sweep_transitions(df)
    fig = sweep_figure(df, tr, title="a loop")
    check_layout(fig)
    joined = "\n".join(legend_texts(fig))
    assert "upper spinodal" in joined and "Maxwell point" in joined and "T1:" in joined
    done(fig)
    fig = class_figure(df, title="classes")
    check_layout(fig)
    assert has_colorbar(fig)
    done(fig)


# ---- connect / basins ----------------------------------------------------------------------------

def probe_result(convention: str = "l2"):
    """Two members on 9 strengths: member 0 jumps after index 4 (bisected in 3 steps), member 1
    after index 6 (grid bracket only) and once more, unconfirmed, after index 1."""
    from phaseprobe.paths.probe_types import ProbeResult, ProbeTransition

    strengths = np.linspace(0.0, 0.08, 9)
    rows = []
    for m, jump in ((0, 4), (1, 6)):
        for i, s in enumerate(strengths):
            after = i > jump
            e = (1.5 if after else 0.1) + 0.01 * m
            r = {"phase": "probe", "member": m, "index": i, "strength": s, "train_error": e, "train_error_running": e * 1.02,
                 "loss": e + s * 3.0, "dist": 2.0 - 0.1 * i - (1.0 if after else 0.0), "test_acc": 0.5 if after else 0.9}
            for c in range(10):
                r[f"class_acc_{c}"] = 0.9 if (c < 5 or not after) else 0.0
            rows.append(r)
    rec = pd.DataFrame(rows)

    def tr(member, index, steps, confirmed):
        lo, hi = strengths[index], strengths[index + 1]
        if steps:
            lo, hi = lo + 0.4 * (hi - lo), lo + 0.5 * (hi - lo)
        side = {"train_error": 0.1, "loss": 0.2, "dist": 1.0}
        return ProbeTransition(member=member, index=index, strength_lo=lo, strength_hi=hi, alpha_lo=lo, alpha_hi=hi,
                               x_lo=np.zeros(2), x_hi=np.ones(2), lo=side, hi=side, basin_lo=tuple(range(10)),
                               basin_hi=tuple(range(5)), bisect_steps=steps, confirmed=confirmed)

    trans = [tr(0, 4, 3, True), tr(1, 6, 0, None), tr(1, 1, 0, False)]
    return ProbeResult(records=rec, checkpoints=np.zeros((9, 2, 2)), strengths=strengths, alphas=strengths,
                       convention=convention, start=np.zeros((2, 2)), ref=np.zeros((2, 2)), transitions=trans,
                       basins=[], grad_evals=np.zeros(2), seconds=0.0, labels=["m0", "m1"])


CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


@pytest.mark.parametrize("convention", ["l2", "wd"])
def test_probe_figure_draws_every_bisection_bracket(convention):
    from phaseprobe.paths.plots import probe_figure

    res = probe_result(convention)
    fig = probe_figure(res, title="digits: L2 probe toward w_ref = 0", class_names=CLASS_NAMES)
    check_layout(fig)
    g = gids(fig)
    assert "bisected transition" in g and "grid-bracketed jump" in g and "unconfirmed jump" in g
    legend = "\n".join(legend_texts(fig))
    s = "alpha" if convention == "l2" else "beta"
    assert f"{s}_c = " in legend and "bisected, 3 steps" in legend and "grid bracket, not bisected" in legend
    assert "not confirmed by retraining" in legend
    tags = sorted(t.get_text() for t in visible_texts(fig) if t.get_text() in ("J1", "J2", "J3"))
    assert tags == ["J1", "J2", "J3"]
    assert any(ax.get_xlabel().startswith(f"{s}  (L = E + {s}") for ax in fig.axes)
    assert has_colorbar(fig) and "Ankle boot" in all_text(fig)
    # the band of the bisected jump spans its bracket
    t0 = res.transitions[0]
    spans = [p for p in fig.axes[0].patches if p.get_gid() == "bisected transition"]
    assert spans and np.allclose([spans[0].get_x(), spans[0].get_x() + spans[0].get_width()], [t0.strength_lo, t0.strength_hi])
    done(fig)


def path_evals(saddle: bool):
    from phaseprobe.paths.metrics import PathEval

    t = np.linspace(0, 1, 41)
    out = []
    for m, h in (("linear", 1.0), ("bezier", 0.4), ("probe", 0.3)) + ((("probe+saddle", 0.25),) if saddle else ()):
        err = 0.1 + h * np.sin(np.pi * t) ** 2
        ca = np.clip(0.9 - h * np.sin(np.pi * t)[:, None] * np.linspace(0.5, 1.5, 10)[None], 0, 1)
        marks = {"saddle@0.05": 0.5} if m == "probe+saddle" else {}
        out.append(PathEval(method=m, t=t, metrics={"train_error": err, "test_acc": 0.9 - 0.5 * err, "test_class_acc": ca},
                            length=1.0, grad_evals=1000.0, marks=marks, pair="0-1"))
    return out


@pytest.mark.parametrize("saddle", [True, False])
def test_paths_figure_marks_saddles_only_where_refined(saddle):
    from phaseprobe.paths.plots import paths_figure

    fig = paths_figure(path_evals(saddle), title="digits: error along the paths", class_names=CLASS_NAMES)
    check_layout(fig)
    title = fig.axes[0].get_title()
    legend = "\n".join(legend_texts(fig))
    if saddle:
        assert "x = saddle" in title and "saddle" in gids(fig) and "x: saddle refined at a probe jump" in legend
    else:
        assert "x = saddle" not in title and "no saddle refined" in title
        assert "saddle" not in gids(fig) and "saddle" not in legend
    assert has_colorbar(fig)
    done(fig)


def basin_graph(saddle: bool):
    from phaseprobe.paths.basins import BasinEdge, BasinGraph, BasinNode

    a, b, c = tuple(range(10)), tuple(range(6)), (0, 1)
    nodes = {a: BasinNode(a, accuracy=0.92, error=0.1, n_seen=5), b: BasinNode(b, accuracy=0.6, error=0.8, n_seen=3),
             c: BasinNode(c, accuracy=0.2, error=1.9, n_seen=2)}
    edges = [BasinEdge(a, b, "saddle" if saddle else "jump", strength_c=0.031, saddle_error=1.2 if saddle else np.nan,
                       index=1),
             BasinEdge(b, c, "jump", strength_c=0.055), BasinEdge(a, b, "drift", strength_c=0.02)]
    return BasinGraph(nodes=nodes, edges=edges, convention="l2")


@pytest.mark.parametrize("saddle", [True, False])
def test_basin_graph_draws_its_saddles_or_says_there_are_none(saddle):
    from phaseprobe.paths.plots import basin_graph_figure

    fig = basin_graph_figure(basin_graph(saddle), title="digits: accuracy basins and the jumps between them")
    check_layout(fig)
    title = fig.axes[0].get_title()
    if saddle:
        assert "saddle" in gids(fig) and "x = saddle" in title and "E_s=1.2, index 1" in all_text(fig)
        assert any("saddle of E" in s for s in legend_texts(fig))
    else:
        assert "saddle" not in gids(fig) and "no saddle refined" in title
    assert "alpha=0.031" in all_text(fig) and "alpha = strength" in fig.axes[0].get_legend().get_title().get_text()
    done(fig)


# ---- grok ------------------------------------------------------------------------------------------

WDS, SCALES, STEPS = [0.0, 0.3, 1.0, 3.0], [1.0, 3.0], 2000


def grok_tables():
    """Grid records, per-member summary and delay table: weight decay 0 and init scale 3 at
    weight decay 0.3 never grok (delay missing)."""
    rows, summ = [], []
    steps = np.unique(np.geomspace(1, STEPS, 20).astype(int))
    for wd in WDS:
        for sc in SCALES:
            t_train = 50.0 * sc
            groks = wd > 0 and not (wd == 0.3 and sc == 3.0)
            t_test = t_train + 2000.0 / (1 + 10 * wd) / 2 if groks else np.nan
            for st in steps:
                rows.append({"seed": 0, "step": int(st), "weight_decay": wd, "init_scale": sc,
                             "train_acc": float(st >= t_train), "test_acc": float(groks and st >= t_test) * 0.95 + 0.02,
                             "w_sq": 100.0 * sc / (1 + wd * st / 100)})
            phase = "grokking" if groks else "memorising"
            summ.append({"seed": 0, "weight_decay": wd, "init_scale": sc, "t_train": t_train, "t_test": t_test,
                         "delay": t_test - t_train, "final_phase": phase, "final_test_acc": 0.97 if groks else 0.05})
    summary = pd.DataFrame(summ)
    delays = summary[["weight_decay", "init_scale", "delay"]].assign(delay_std=np.nan)
    return pd.DataFrame(rows), summary, delays


def test_grok_curves_and_phase_map_layout():
    from phaseprobe.grokking.plots import curves_figure, phase_map_figure

    df, summary, _ = grok_tables()
    fig = curves_figure(df, summary, title="grokking: (a + b) mod 11")
    check_layout(fig)
    assert any(ax.get_title() == "weight decay beta = 0.3" for ax in fig.axes)
    assert "memorising (train fit, test not)" in legend_texts(fig)
    done(fig)
    fig = phase_map_figure(summary, STEPS)
    check_layout(fig)
    assert {"grokking", "memorising", "generalising", "underfit"} <= set(legend_texts(fig))
    done(fig)


def test_grok_delay_draws_did_not_grok_as_censored_at_the_budget():
    from phaseprobe.grokking.plots import delay_figure

    _, _, delays = grok_tables()
    fig = delay_figure(delays, STEPS, title="grokking delay")
    check_layout(fig)
    censored = [a for a in fig.findobj() if a.get_gid() == "did not grok"]
    # init scale 3 at weight decay 0.3: one marker in each panel's strip, none on a delay axis
    xs = sorted(float(x) for a in censored for x in a.get_xdata())
    assert xs == [0.3, 3.0]
    for a in censored:
        assert a.axes.get_yscale() == "linear" and not a.axes.get_yticks().size
    assert any(f"did not grok within {STEPS} steps" in s for s in legend_texts(fig))
    delay_axes = [ax for ax in fig.axes if ax.get_ylabel().startswith("grokking delay")]
    assert len(delay_axes) == 2
    for ax in delay_axes:  # every point drawn on a delay axis is a measured delay
        ys = [float(y) for ln in ax.get_lines() for y in ln.get_ydata()]
        assert ys and np.all(np.isfinite(ys)) and max(ys) < STEPS
    assert "beta" in delay_axes[0].get_xlabel()
    done(fig)


def test_grok_hysteresis_names_the_strength_beta():
    from phaseprobe.grokking.plots import hysteresis_figure

    wds = np.geomspace(0.1, 3.0, 6)
    rows = []
    for b, order in (("up", wds), ("down", wds[::-1])):
        for i, wd in enumerate(order):
            gen = wd < 1.0 if b == "up" else wd < 0.3
            rows.append({"loop": "top 6", "branch": b, "step_index": i, "weight_decay": wd, "test_acc": 0.97 if gen else 0.1,
                         "train_acc": 1.0 if gen else 0.2, "w_sq": 50.0 / wd, "phase": "generalising" if gen else "underfit"})
    cold = pd.DataFrame({"weight_decay": wds, "final_test_acc": np.where(wds < 1.0, 0.97, 0.1)})
    fig = hysteresis_figure(pd.DataFrame(rows), 200, cold, 2000, title="warm-started weight-decay sweep")
    check_layout(fig)
    legend = "\n".join(legend_texts(fig))
    assert "beta up (warm start): test" in legend and "beta down (warm start): test" in legend
    assert "wd up" not in legend and "cold start, 2000 steps: test" in legend
    assert "phase: generalising" in legend
    done(fig)


def geometry_table(n_points: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for i, (name, wd, step) in enumerate([("memorising plateau", 1.0, 300), ("grokked solution", 1.0, 3000),
                                          ("no decay", 0.0, 3000)][:n_points]):
        n = 40
        ev_e = np.sort(rng.normal(0, 1, n))
        ev_l = ev_e + 0.5
        rows.append({"point": name, "weight_decay": wd, "step": step, "n_params": n, "method": "exact Hessian",
                     "top_E": ev_e[::-1][:5], "bottom_E": ev_e, "top_L": ev_l[::-1][:5], "bottom_L": ev_l,
                     "R_E": 1.5, "R_E_se": 0.0, "R_L": -3.2, "R_L_se": 0.0, "neg_eigs_E_tol": 1e-5, "neg_eigs_E_label": "12",
                     "grad_norm_E": 1e-3, "test_acc": 0.4 + 0.2 * i, "tol": 1e-5, "saddle_index_L_label": ">= 3",
                     "grad_norm_L": 2e-4, "alpha": wd / 2})
    return pd.DataFrame(rows)


def test_grok_geometry_column_titles_are_readable():
    from phaseprobe.grokking.plots import geometry_figure

    fig = geometry_figure(geometry_table(), title="grokking geometry")
    check_layout(fig)
    heads = [t for t in visible_texts(fig) if t.get_text().startswith("saddle index")]
    assert len(heads) == 3 and all(t.get_fontsize() >= 8 for t in heads)
    assert any("bottom eigenvalues of H_L" in s for s in legend_texts(fig))
    done(fig)


# ---- dln -------------------------------------------------------------------------------------------

def test_dln_run_figure_layout():
    from phaseprobe.dynamics.figures import run_figure
    from phaseprobe.dynamics.plateaus import analyze_member
    from phaseprobe.dynamics.run import IntegrateConfig, dln_ensemble, integrate
    from phaseprobe.dynamics.teacher import make_teacher
    import jax

    teacher = make_teacher([3.0, 1.0], 3, 3, seed=0)
    model = dln_ensemble(3, 3, 3, 6, [3e-3], jax.random.split(jax.random.PRNGKey(1), 1))
    run = integrate(model, teacher, IntegrateConfig(t_max=60.0, distance_every=0))
    plats = analyze_member(run, 0)
    assert plats, "the tiny depth-3 run has plateaus"
    fig = run_figure(run, plats)
    check_layout(fig)
    assert "plateau" in gids(fig) and "plateau (saddle visited)" in legend_texts(fig)
    assert "teacher's singular values s_i" in legend_texts(fig)
    done(fig)


def dln_phase_inputs():
    gammas, widths = [0.5, 1.0, 1.5, 2.0], [4, 8, 16, 32]
    rows = []
    for g in gammas:
        for w in widths:
            for seed in (0, 1):
                rows.append({"gamma": g, "width": w, "seed": seed, "disp_abs": w ** (min(0.0, g - 1.0)) * (1 + 0.01 * seed),
                             "disp_rel": w ** (g / 2 - 0.5), "n_plateaus": 1.0 + (g > 1) + 0.5 * seed,
                             "t_escape_1": 3.0 * w ** max(0.0, g - 1.0)})
    summary = pd.DataFrame(rows)
    located = {}
    for col, gc in (("disp_abs", 0.98), ("t_escape_1", 1.04)):
        slopes = pd.DataFrame({"gamma": gammas, "slope": [g - gc for g in gammas]})
        pairs = pd.DataFrame({"w_lo": widths[:-1], "w_hi": widths[1:], "gamma_c": [gc - 0.02, gc, gc + 0.02]})
        located[col] = {"gamma_c": gc, "slopes": slopes, "pairs": pairs}
    return summary, located


def test_dln_phase_diagram_text_is_readable():
    from phaseprobe.dynamics.figures import phase_figure

    summary, located = dln_phase_inputs()
    fig = phase_figure(summary, located, depth=2)
    check_layout(fig)  # every text >= 8 pt, none overlapping
    assert len(colorbars(fig)) == 4  # one colour bar per heat map
    assert "gamma = 1" in gids(fig)
    legend = "\n".join(legend_texts(fig))
    assert "zero at gamma_c = 0.980" in legend and "gamma_c per width pair" in legend
    done(fig)


def test_dln_escape_scaling_layout():
    from phaseprobe.dynamics.figures import escape_scaling_figure

    rows = []
    for L in (2, 3):
        for k, s in ((1, 4.0), (2, 1.0)):
            for sigma in (1e-2, 1e-3, 1e-4):
                t = np.log(1 / sigma) / s if L == 2 else sigma ** -(L - 2) / s * 1e-3
                rows.append({"depth": L, "sigma": sigma, "k": k, "t_escape": t})
    fig = escape_scaling_figure(pd.DataFrame(rows), singular_values=[4.0, 1.0])
    check_layout(fig)
    legend = "\n".join(legend_texts(fig))
    assert "fit 1: slope/decade" in legend and "fit 2: log-log slope" in legend
    done(fig)


# ---- escape ----------------------------------------------------------------------------------------

def test_escape_figures_layout():
    from phaseprobe.escape.figures import arrhenius_plot, survival_plot

    rng = np.random.default_rng(0)
    rows = []
    temps = [0.05, 0.08, 0.12]
    for j, T in enumerate(temps):
        for r in range(16):
            fp = rng.exponential(4000 / (j + 1) ** 2)
            esc = j > 0 and fp < 3000
            rows.append({"temperature_index": j, "temperature": T, "barrier_ratio": 0.3 / T, "replica": r, "escaped": esc,
                         "first_passage_step": fp if esc else np.nan, "steps_done": 3000})
    rec = pd.DataFrame(rows)
    fig = survival_plot(rec)
    check_layout(fig)
    assert any("budget: 3000 steps" in s for s in legend_texts(fig))
    done(fig)
    times = pd.DataFrame({"inv_temperature": [1 / T for T in temps], "tau_steps": [np.nan, 9000.0, 2500.0],
                          "tau_lo": [40000.0, 5000.0, 1500.0], "tau_hi": [np.inf, 20000.0, 5000.0]})
    fit = {"dF": 0.28, "dF_lo": 0.2, "dF_hi": 0.35, "c": 3.0}
    fig = arrhenius_plot(times, fit, 0.3, measured=0.31)
    check_layout(fig)
    legend = "\n".join(legend_texts(fig))
    assert "no escape within the budget" in legend and "censored ML fit" in legend and "barrier prediction" in legend
    done(fig)
