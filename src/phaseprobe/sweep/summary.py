"""After a sweep: analysis tables, figures and the report section, from the store alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from phaseprobe import conventions
from phaseprobe.store import RunStore
from phaseprobe.sweep.analysis import analyze, transitions_frame


def summarize(run_dir: str | Path, figures: bool = True, n_boot: int = 200) -> dict:
    """Analyse a sweep run folder; write transitions.csv, plateaus.csv, figures and the report."""
    from phaseprobe.plots.report import add_section
    from phaseprobe.plots.sweep_plots import plot_class_heatmap, plot_sweep

    run_dir = Path(run_dir)
    store = RunStore(run_dir)
    meta = store.meta()
    spec = meta["spec"]
    df = store.load_records()
    if df.empty:
        return {"records": df, "transitions": pd.DataFrame(), "plateaus": pd.DataFrame()}
    res = analyze(df, learned=float(spec.get("learned_class_acc", 0.5)), n_boot=n_boot)
    tr = transitions_frame(res["transitions"])
    conv = spec.get("convention", "l2")
    if not tr.empty:
        for c in ("alpha_c", "alpha_lo", "alpha_hi", "alpha_kink", "spinodal_up", "spinodal_down", "maxwell"):
            tr[c.replace("alpha", "strength") if c.startswith("alpha") else c + "_strength"] = conventions.from_alpha(tr[c].to_numpy(), conv)
    pl = pd.DataFrame([p.as_dict() for p in res["plateaus"]])
    if not pl.empty:
        pl["strength_from"] = conventions.from_alpha(pl["alpha_from"].to_numpy(), conv)
        pl["strength_to"] = conventions.from_alpha(pl["alpha_to"].to_numpy(), conv)
    tr.to_csv(run_dir / "transitions.csv", index=False)
    pl.to_csv(run_dir / "plateaus.csv", index=False)
    figs = []
    if figures:
        title = f"{spec.get('name', 'sweep')}: {spec.get('dataset')} {spec.get('model')} depth {spec.get('depth')} width {spec.get('width')}, {spec.get('optimizer')}"
        figs.append(plot_sweep(df, tr.to_dict(orient="records"), run_dir / "sweep.png", title=title))
        h = plot_class_heatmap(df, run_dir / "classes.png", title=title)
        if h is not None:
            figs.append(h)
    fin = df[df["final"]]
    n_div = int(fin["diverged"].sum())
    n_conv = int(fin["converged"].sum())
    text = (
        f"{len(fin)} trainings ({fin['branch'].nunique()} branch(es), {fin['seed'].nunique()} seed(s), "
        f"{fin['alpha'].nunique()} strengths). Convention: {conventions.DESCRIPTION.get(conv, conv)}. "
        f"Converged: {n_conv}/{len(fin)}; diverged: {n_div}."
        "\n\nTransitions: alpha_c at the largest step of each event; interval = bootstrap over seeds; "
        "order 'first' = a jump on the grid with a hysteresis loop of positive area, 'continuous' = spread over "
        "several grid steps; spinodals = where each branch jumps; Maxwell = where the branches' regularised losses cross."
    )
    show_tr = tr[[c for c in ("observable", "branch", "strength_c", "strength_lo", "strength_hi", "order", "jump",
                              "jump_fraction", "level_before", "level_after", "seeds_agree", "spinodal_up_strength",
                              "spinodal_down_strength", "maxwell_strength", "hysteresis_area") if c in tr.columns]] if not tr.empty else tr
    show_pl = pl[[c for c in ("branch", "strength_from", "strength_to", "level", "classes") if c in pl.columns]] if not pl.empty else pl
    if figures:
        add_section(run_dir, "sweep", "Sweep: accuracy phases against the L2 strength", text, figs,
                    {"transitions": show_tr, "plateaus (classes with per-class test accuracy >= threshold)": show_pl}, order=10)
    return {"records": df, "transitions": tr, "plateaus": pl, "figures": figs}
