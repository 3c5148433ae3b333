"""Feature counting on an L2 loop of a deep linear network (issue 16, item 5).

For data ``y = A x`` with whitened inputs and ``A``'s distinct singular values ``s_1 > ... > s_k``,
the modes decouple; each is a one-dimensional problem ``V(a) = 1/2 (a^L - s_i)^2 + alpha L a^2``
(:mod:`phaseprobe.escape.theory`), so an L2 loop shows ``k`` first-order transitions, one feature
(one singular value of the end-to-end map) each: on the upward branch mode ``i`` is lost at its
upper spinodal ``alpha_c(s_i)`` (:func:`~phaseprobe.escape.theory.critical_alpha`). Here the
features of every stored minimum of a ``phaseprobe sweep`` (model ``linear``) are counted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from phaseprobe.escape.theory import critical_alpha, maxwell_alpha


def feature_table(run_dir, rel_tol: float = 0.05) -> pd.DataFrame:
    """Singular values of the end-to-end map of every stored minimum of a linear-model sweep.

    **Arguments:**

    - `run_dir`: a ``phaseprobe sweep`` run folder (``model = "linear"``).
    - `rel_tol`: a singular value counts as a learned feature when it exceeds ``rel_tol`` times
      the teacher's smallest singular value.

    **Returns:** one row per (branch, alpha, seed): ``alpha``, ``branch``, ``seed``, ``features``
    and ``sv_1 ... sv_d`` (descending).
    """
    import jax

    from phaseprobe.runs import open_run
    from phaseprobe.sweep.spec import make_spec

    run = open_run(run_dir)
    spec = make_spec(dict(run.spec))
    s_teacher = np.asarray(spec.data_options.get("singular_values"), np.float64)
    cut = rel_tol * float(s_teacher.min())
    alphas = spec.alpha_grid()
    branches = ["cold"] if spec.mode == "cold" else (["up", "down"] if spec.mode == "loop" else [spec.mode])
    rows = []
    for br in branches:
        for ai, alpha in enumerate(alphas):
            for seed in spec.seed_list():
                m = run.model(seed=seed, branch=br, alpha_index=ai)
                sv = np.linalg.svd(np.asarray(jax.device_get(m.end_to_end()), np.float64), compute_uv=False)
                row = {"branch": br, "alpha_index": ai, "alpha": float(alpha), "seed": seed, "features": int(np.sum(sv > cut))}
                row.update({f"sv_{j + 1}": float(v) for j, v in enumerate(sv)})
                rows.append(row)
    return pd.DataFrame(rows)


def feature_transitions(table: pd.DataFrame, branch: str = "up") -> pd.DataFrame:
    """Where the feature count changes along ``branch`` (in sweep order): one row per change, with
    the bracketing strengths and the number of features gained or lost."""
    rows = []
    for seed, g in table[table["branch"] == branch].groupby("seed"):
        g = g.sort_values("alpha", ascending=(branch != "down"))
        f, a = g["features"].to_numpy(), g["alpha"].to_numpy()
        for j in np.nonzero(np.diff(f))[0]:
            rows.append({"seed": seed, "branch": branch, "alpha_before": a[j], "alpha_after": a[j + 1],
                         "features_before": int(f[j]), "features_after": int(f[j + 1]), "change": int(f[j + 1] - f[j])})
    return pd.DataFrame(rows)


def feature_count_figure(table: pd.DataFrame, singular_values, depth: int, path, alpha_label: str | None = None):
    """End-to-end singular values against alpha on both branches, the closed-form spinodals
    ``alpha_c(s_i)`` (dashed) and equal-loss points ``alpha*(s_i)`` (dotted) of every mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from phaseprobe.conventions import strength_label
    from phaseprobe.store import save_figure

    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(6.6, 6.2), sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    svc = sorted([c for c in table.columns if c.startswith("sv_")])
    for br, style in (("up", "-"), ("down", "--")):
        g = table[(table["branch"] == br) & (table["seed"] == table["seed"].min())].sort_values("alpha")
        if g.empty:
            continue
        for j, c in enumerate(svc):
            label = f"up branch, singular value {j + 1}" if br == "up" else ("down branch (all)" if j == 0 else None)
            ax.plot(g["alpha"], g[c], style, marker="o" if br == "up" else None, ms=3,
                    color=f"C{j}" if br == "up" else "0.5", label=label)
        ax2.step(g["alpha"], g["features"], where="mid", linestyle=style, color="k" if br == "up" else "0.5",
                 label=f"{br} branch")
    for j, s in enumerate(sorted(np.asarray(singular_values, float), reverse=True)):
        for a2 in (ax, ax2):
            a2.axvline(critical_alpha(s, depth), color=f"C{j}", ls="--", lw=0.8)
            a2.axvline(maxwell_alpha(s, depth), color=f"C{j}", ls=":", lw=0.8)
    ax.set_xscale("log")
    ax.set_ylabel("singular values of W_L...W_1")
    ax.set_title(f"depth-{depth} linear net, teacher singular values {list(singular_values)}:\n"
                 "one feature per first-order transition (dashed: alpha_c(s_i), dotted: alpha*(s_i))", fontsize=9)
    ax.legend(fontsize=7, loc="lower left", bbox_to_anchor=(0.0, 0.08))
    ax2.set_ylabel("features learned")
    ax2.set_xlabel(alpha_label or strength_label("l2"))
    ax2.legend(fontsize=7)
    return save_figure(fig, Path(path))
