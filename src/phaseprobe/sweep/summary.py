"""After a sweep: analysis tables, figures and the report section, from the store alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from phaseprobe import conventions
from phaseprobe.store import RunStore
from phaseprobe.sweep.analysis import NOT_RUN, analyze, excluded, is_refined, transitions_frame


def convergence_counts(df: pd.DataFrame, tol: float | None = None) -> dict:
    """How many trainings converged, how they stopped, how many diverged (final records only).

    ``converged`` is the criterion |grad L| < tol on the full-batch regularised-gradient norm. Records
    that carry ``converged_tol`` are counted as recorded; older records (without it) are recounted
    from ``grad_norm`` with ``tol`` (the spec's ``converged_grad_tol``).

    **Arguments:**

    - `df`: a sweep's records.
    - `tol`: the tolerance for records without ``converged_tol`` (default 1e-3, the spec default).

    **Returns:** ``{"trainings", "converged", "tol", "diverged", "not_run", "stop_reasons"}``: integer
    counts (``trainings`` includes diverged and not-run ones), the tolerance, and a dict of the stop
    reasons' counts.
    """
    fin = df[df["final"]] if "final" in df.columns else df
    if "converged_tol" in fin.columns and fin["converged_tol"].notna().all() and len(fin):
        tols = fin["converged_tol"].unique()
        tol_used = float(tols[0]) if len(tols) == 1 else float("nan")
        conv = fin["converged"].astype(bool)
    else:
        tol_used = 1e-3 if tol is None else float(tol)
        g = fin["grad_norm"].astype(float) if "grad_norm" in fin.columns else pd.Series(np.nan, index=fin.index)
        conv = (g < tol_used) & ~excluded(fin)
    not_run = (fin["stop_reason"].astype(str) == NOT_RUN) if "stop_reason" in fin.columns else pd.Series(False, index=fin.index)
    div = excluded(fin) & ~not_run
    reasons = fin["stop_reason"].astype(str).value_counts() if "stop_reason" in fin.columns else pd.Series(dtype=int)
    return {"trainings": int(len(fin)), "converged": int((conv & ~excluded(fin)).sum()), "tol": tol_used,
            "diverged": int(div.sum()), "not_run": int(not_run.sum()),
            "stop_reasons": {str(k): int(v) for k, v in reasons.items()}}


def convergence_line(c: dict) -> str:
    """One line from :func:`convergence_counts`.

    **Returns:** e.g. "12/75 converged (|grad L| < 0.001); 63 stopped by patience" (then the trainings
    that ran to the epoch limit, diverged, or were not run after a divergence, when there are any).
    """
    tol = f"{c['tol']:g}" if np.isfinite(c["tol"]) else "per-record tolerance"
    parts = [f"{c['converged']}/{c['trainings']} converged (|grad L| < {tol})"]
    names = {"patience": "stopped by patience", "grad_tol": "stopped by the trainer's gradient tolerance",
             "max_epochs": "ran to the epoch limit"}
    for k in ("patience", "grad_tol", "max_epochs"):
        if c["stop_reasons"].get(k):
            parts.append(f"{c['stop_reasons'][k]} {names[k]}")
    if c["diverged"]:
        parts.append(f"{c['diverged']} diverged")
    if c["not_run"]:
        parts.append(f"{c['not_run']} not run (diverged earlier in their chain)")
    return "; ".join(parts)


def summarize(run_dir: str | Path, figures: bool = True, n_boot: int = 200) -> dict:
    """Analyse a sweep run folder; write transitions.csv, plateaus.csv, figures and the report.

    **Arguments:**

    - `run_dir`: a sweep run folder (finished or not: what is stored is analysed).
    - `figures`: write ``sweep.png``, ``classes.png`` and the report section.
    - `n_boot`: bootstrap resamples over seeds for the transitions' intervals.

    **Returns:** a dict with ``records`` (every record), ``transitions`` and ``plateaus``
    (frames, strengths also in the run's convention), ``figures``, ``counts`` (convergence
    counts) and ``notes``.
    """
    from phaseprobe.plots.report import add_section

    run_dir = Path(run_dir)
    store = RunStore(run_dir)
    meta = store.meta()
    spec = meta["spec"]
    df = store.load_records()
    if df.empty:
        return {"records": df, "transitions": pd.DataFrame(), "plateaus": pd.DataFrame(),
                "counts": convergence_counts(df), "notes": []}
    res = analyze(df, learned=float(spec.get("learned_class_acc", 0.5)), n_boot=n_boot)
    counts = convergence_counts(df, tol=spec.get("converged_grad_tol"))
    notes = list(res["notes"])
    grid_n = _planned_strengths(spec)
    if grid_n is not None:  # partial branches measured against the spec's grid, not the strengths seen
        notes = [n for n in notes if "strengths finished" not in n]
        fin_ = df[df["final"] & ~is_refined(df)]  # grid strengths only (refined ones are extra)
        for b, g in fin_.groupby("branch"):
            n_a = g["alpha"].nunique()
            if n_a < grid_n:
                notes.insert(0, f"{b} branch: {n_a} of {grid_n} strengths finished; analysed on what exists")
    tr = transitions_frame(res["transitions"])
    conv = spec.get("convention", "l2")
    if not tr.empty:
        for c in ("alpha_c", "alpha_lo", "alpha_hi", "alpha_kink", "spinodal_up", "spinodal_down", "maxwell"):
            tr[c.replace("alpha", "strength") if c.startswith("alpha") else c + "_strength"] = conventions.from_alpha(tr[c].to_numpy(), conv)
        if "alpha_bracket_lo" in tr.columns:  # the measured points around the step (refined or grid), in strength
            tr["bracket_lo"] = conventions.from_alpha(tr["alpha_bracket_lo"].to_numpy(float), conv)
            tr["bracket_hi"] = conventions.from_alpha(tr["alpha_bracket_hi"].to_numpy(float), conv)
            tr["bracket_width"] = tr["bracket_hi"] - tr["bracket_lo"]
            tr["maxwell_width"] = conventions.from_alpha((tr["maxwell_hi"] - tr["maxwell_lo"]).to_numpy(float), conv)
    pl = pd.DataFrame([p.as_dict() for p in res["plateaus"]])
    if not pl.empty:
        pl["strength_from"] = conventions.from_alpha(pl["alpha_from"].to_numpy(), conv)
        pl["strength_to"] = conventions.from_alpha(pl["alpha_to"].to_numpy(), conv)
    tr.to_csv(run_dir / "transitions.csv", index=False)
    pl.to_csv(run_dir / "plateaus.csv", index=False)
    figs = []
    if figures:
        from phaseprobe.plots.sweep_plots import plot_class_heatmap, plot_sweep  # matplotlib: only for figures

        title = f"{spec.get('name', 'sweep')}: {spec.get('dataset')} {spec.get('model')} depth {spec.get('depth')} width {spec.get('width')}, {spec.get('optimizer')}"
        figs.append(plot_sweep(df, tr.to_dict(orient="records"), run_dir / "sweep.png", title=title))
        h = plot_class_heatmap(df, run_dir / "classes.png", title=title)
        if h is not None:
            figs.append(h)
        from phaseprobe.plots.staircase import plot_staircase

        st = plot_staircase(df, tr.to_dict(orient="records"), run_dir / "staircase.png", title=title)
        if st is not None:
            figs.append(st)
    fin = df[df["final"]]
    text = (
        f"{len(fin)} trainings ({fin['branch'].nunique()} branch(es), {fin['seed'].nunique()} seed(s), "
        f"{fin['alpha'].nunique()} strengths). Convention: {conventions.DESCRIPTION.get(conv, conv)}. "
        f"{convergence_line(counts)}. 'Converged' = the full-batch gradient norm of the regularised loss below "
        "the tolerance at the final record, whatever stopped the training; diverged and not-run trainings are "
        "excluded from every mean, detection and plateau and counted in the tables."
        + ("".join(f"\n\nNote: {n}." for n in notes))
        + "\n\nTransitions: alpha_c at the seed mean's largest step; interval = the grid cell of that step, widened "
        "by a bootstrap over seeds (detect = fraction of resamples that find it). Order judged per seed (a seed "
        "'jumps' when one grid step carries >= 0.6 of its change, above its own noise): 'first (loop)' = most seeds "
        "jump and the up and down branches differ around it (hysteresis loop); 'first (jump)' = most seeds jump, "
        "no loop measured; 'jump-no-loop' = most seeds jump, both branches measured and they coincide; "
        "'continuous' = most seeds change over several grid steps; 'undetermined' = no majority. seeds agree = the "
        "most seeds whose jumps lie within one grid step of each other. Spinodals = where each branch jumps; "
        "Maxwell = where the branches' regularised losses cross (one per loop, whatever the observable). "
        "bracket = the two measured strengths around the largest step (bracket width = their distance); "
        "refined steps = strengths added inside that grid cell by bisection (spec 'refine'), each trained with "
        "the branch's own protocol; maxwell width = the distance of the strengths measured on both branches "
        "around the Maxwell crossing."
        + (f" {int(is_refined(fin).sum())} of the trainings are refinement steps." if is_refined(fin).any() else "")
    )
    show_tr = tr[[c for c in ("observable", "branch", "strength_c", "strength_lo", "strength_hi", "detect_fraction",
                              "bracket_lo", "bracket_hi", "bracket_width", "refined_steps",
                              "order", "order_seeds", "seeds_agree", "n_seeds", "jump", "jump_fraction", "level_before",
                              "level_after", "spinodal_up_strength", "spinodal_down_strength", "maxwell_strength",
                              "maxwell_width", "hysteresis_area", "diverged", "not_run") if c in tr.columns]] if not tr.empty else tr
    show_pl = pl[[c for c in ("branch", "strength_from", "strength_to", "level", "classes", "n_classes_learned",
                              "n_seeds", "diverged") if c in pl.columns]] if not pl.empty else pl
    if figures:
        add_section(run_dir, "sweep", "Sweep: accuracy phases against the L2 strength", text, figs,
                    {"transitions": show_tr, "plateaus (classes with per-class test accuracy >= threshold)": show_pl}, order=10)
    return {"records": df, "transitions": tr, "plateaus": pl, "figures": figs, "counts": counts, "notes": notes}


def _planned_strengths(spec: dict) -> int | None:
    """The number of strengths the run's spec asks for (None when the stored spec cannot say)."""
    try:
        from phaseprobe.sweep.spec import parse_strength_grid

        return int(len(parse_strength_grid(spec["alphas"])))
    except Exception:  # an older or foreign spec: the analysis still notes what it sees
        return None
