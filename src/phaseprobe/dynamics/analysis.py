"""The analyses of the deep linear kinds, from the store: plateaus and saddle certificates of one
run, order parameters and the located transition of the phase diagram, escape-time fits.

Each writes its tables (Parquet and CSV, atomically) and, with ``figures``, its figure and report
section into the run folder; each reads only what the store holds (widths or depths not yet
computed are left out).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from phaseprobe.dynamics.observe import linear_stats
from phaseprobe.dynamics.phase import escape_fits, escape_rows, locate_transition, width_order_parameters
from phaseprobe.dynamics.plateaus import analyze_member, certify_saddle, oracle_escape_times
from phaseprobe.dynamics.spec import DLNEscapeSpec, DLNPhaseGridSpec, DLNSpec
from phaseprobe.dynamics.units import RUN_PIECE, depth_piece, stored_ensemble, width_piece
from phaseprobe.store import save_frame_parquet


TRANSITION_COLUMNS = ("disp_abs", "t_escape_1")


def _spec_of(run_dir, spec_type):
    from phaseprobe.store import RunStore

    store = RunStore(run_dir)
    return store, spec_type(**store.meta()["spec"])


def _missing(store, pieces) -> list[str]:
    done = store.done_pieces()
    return [p for p in pieces if p not in done]


# ---- analysis: one run ----------------------------------------------------------------------------------

def analyse_dln_run(run_dir, figures: bool = True, progress=None) -> dict:
    """Plateaus, saddle certificates and escape times of a stored ``dln`` run.

    Writes ``records.parquet`` (the trajectory), ``plateaus.parquet`` and ``plateaus.csv``,
    ``summary.json`` and, with ``figures``, ``dln_saddle_to_saddle.png`` and its report section.

    **Arguments:**

    - `run_dir`: the run folder.
    - `figures`: also draw the figure and the report section.
    - `progress`: a :class:`phaseprobe.progress.ProgressReporter` (phase ``saddle certificates``).

    **Returns:** a dict with ``records``, ``plateaus`` (the :class:`~phaseprobe.dynamics.plateaus.LossPlateau`
    objects), ``plateau_table``, ``escape_times``, ``summary`` and ``figures``.
    """
    from phaseprobe.store import atomic_write_text, save_frame_csv

    out = Path(run_dir)
    store, spec = _spec_of(out, DLNSpec)
    if _missing(store, [RUN_PIECE]):
        return {"records": store.load_records(), "plateaus": [], "plateau_table": pd.DataFrame(), "figures": []}
    rec = store.load_records()
    stats = linear_stats(spec.data())
    run = stored_ensemble(store, RUN_PIECE, rec, stats, spec.depth, spec.width)
    pl = spec.plateaus
    plats = analyze_member(run, 0, slope_tol=pl["slope_tol"], min_decades=pl["min_decades"])
    if pl["certify"]:
        task = progress.phase("saddle certificates", len(plats), unit="plateaus") if progress is not None else None
        for p in plats:
            _, w = run.weights_at(0, p.i_saddle)
            p.certificate = certify_saddle(w, stats, hess_rel_tol=pl["hess_rel_tol"])
            if task is not None:
                task.advance(1)
        if task is not None:
            task.finish()
    table = pd.DataFrame([p.as_row() for p in plats])
    df = run.member(0)
    esc = oracle_escape_times(df["t"].to_numpy(), np.maximum(df["excess_loss"].to_numpy(), 0), stats.levels() - stats.e_min)
    save_frame_parquet(rec, out / "records.parquet")
    tab = table.copy()
    if "learned_sv" in tab:
        tab["learned_sv"] = tab["learned_sv"].apply(lambda v: json.dumps([float(x) for x in v]))
    save_frame_parquet(tab, out / "plateaus.parquet")
    save_frame_csv(tab, out / "plateaus.csv")
    summary = {
        "depth": spec.depth, "width": spec.width, "sigma": spec.sigma, "gamma": spec.gamma,
        "singular_values": spec.teacher["singular_values"], "oracle_levels": [float(x) for x in stats.levels()],
        "escape_times": [float(x) for x in esc], "t_end": float(df["t"].iloc[-1]), "steps": int(df["step"].iloc[-1]),
        "final_loss": float(df["loss"].iloc[-1]), "disp_abs": float(df["disp_abs"].iloc[-1]),
        "disp_rel": float(df["disp_rel"].iloc[-1]), "n_plateaus": len(plats),
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    figs = []
    if figures:
        from phaseprobe.dynamics.figures import plot_run
        from phaseprobe.plots.report import add_section

        title = (f"deep linear net, depth {spec.depth}, width {spec.width}, sigma = {spec.sigma:.3g}"
                 + (f" (gamma = {spec.gamma:g})" if spec.gamma is not None else "") + ": saddle-to-saddle")
        f = plot_run(run, plats, out / "dln_saddle_to_saddle.png", title=title)
        figs.append(f)
        cols = [c for c in ["index", "t_start", "t_end", "level", "oracle_level", "rank", "learned_sv", "t_escape",
                            "cert_kind", "cert_index", "cert_min_eig", "cert_escape_order", "cert_escape_coef",
                            "cert_predicted_coef", "grad_norm"] if c in table.columns]
        text = (f"Whitened low-rank teacher with singular values {spec.teacher['singular_values']}; loss E = mean 1/2||f(x)-y||^2 "
                f"= 1/2||A - W_L...W_1||_F^2; time t = lr x steps ({spec.integrate.step} step). Plateaus: |d log E / d log t| < "
                f"{pl['slope_tol']} for at least {pl['min_decades']} decades. Oracle: plateau k at 1/2 sum_(i>k) s_i^2, singular values "
                f"learned largest first. Saddle certificate: Hessian index (eigenvalues below -{pl['hess_rel_tol']} sigma_1(grad)) and the "
                f"escape order of E(theta + eps V) - E(theta) along the rank-one escape direction (2: strict saddle; L: higher-order).")
        tables = {"plateaus": table[cols]} if len(table) else {}
        add_section(out, "dln_run", "Deep linear network: one run", text, figures=[f.name], tables=tables, order=10)
    return {"records": rec, "run": run, "plateaus": plats, "plateau_table": table, "escape_times": esc,
            "summary": summary, "figures": figs}


# ---- analysis: the phase diagram ------------------------------------------------------------------------

def analyse_dln_phase_grid(run_dir, figures: bool = True, progress=None) -> dict:
    """Order parameters per member and the located transition of a stored ``dln-grid`` run.

    Writes ``grid_summary.parquet`` / ``.csv`` (one row per gamma x width x seed),
    ``grid_records.parquet``, ``transition.json``, ``transitions.csv`` (gamma_c per order
    parameter), ``transition_pairs.csv`` and ``width_exponents.csv``; with ``figures``
    ``dln_phase_diagram.png`` and its report section. Widths not yet in the store are left out.

    **Returns:** a dict with ``summary``, ``records``, ``transitions`` (a frame), ``located``
    (per order parameter: gamma_c, slopes, pairs) and ``figures``.
    """
    from phaseprobe.store import atomic_write_text, save_frame_csv

    out = Path(run_dir)
    store, spec = _spec_of(out, DLNPhaseGridSpec)
    g = spec.grid
    stats = linear_stats(spec.data())
    done = store.done_pieces()
    allrec = store.load_records()
    rows, recs = [], []
    for w in g.widths:
        if width_piece(w) not in done:
            continue
        sub = allrec[allrec["width"] == int(w)].reset_index(drop=True)
        run = stored_ensemble(store, width_piece(w), sub, stats, g.depth, int(w))
        rows.extend(width_order_parameters(g, run, int(w)))
        recs.append(sub)
    summary = pd.DataFrame(rows)
    records = pd.concat(recs, ignore_index=True) if recs else pd.DataFrame()
    if summary.empty:
        return {"summary": summary, "records": records, "transitions": pd.DataFrame(), "located": {}, "figures": []}
    located = {c: locate_transition(summary, c) for c in TRANSITION_COLUMNS}
    s = summary.copy()
    for c in ("plateau_ranks", "plateau_levels"):
        if c in s:
            s[c] = s[c].apply(lambda v: json.dumps([float(x) for x in v]))
    save_frame_parquet(s, out / "grid_summary.parquet")
    save_frame_csv(s, out / "grid_summary.csv")
    save_frame_parquet(records, out / "grid_records.parquet")
    tj = {c: {"gamma_c": tr["gamma_c"], "slopes": tr["slopes"].to_dict(orient="list"),
              "pairs": tr["pairs"].to_dict(orient="list")} for c, tr in located.items()}
    atomic_write_text(out / "transition.json", json.dumps(tj, indent=2, default=float))
    trans = pd.DataFrame([{"observable": c, "gamma_c": tr["gamma_c"], "depth": g.depth,
                           "widths": ",".join(str(int(w)) for w in sorted(summary["width"].unique()))}
                          for c, tr in located.items()])
    save_frame_csv(trans, out / "transitions.csv")
    save_frame_csv(pd.concat([tr["pairs"].assign(observable=c) for c, tr in located.items()], ignore_index=True),
                   out / "transition_pairs.csv")
    save_frame_csv(pd.concat([tr["slopes"].assign(observable=c) for c, tr in located.items()], ignore_index=True),
                   out / "width_exponents.csv")
    figs = []
    if figures:
        from phaseprobe.dynamics.figures import plot_phase
        from phaseprobe.plots.report import add_section

        f = plot_phase(summary, located, out / "dln_phase_diagram.png", depth=g.depth)
        figs.append(f)
        tabs = {f"width exponent of {c} (transition at gamma_c = {tr['gamma_c']:.3f})": tr["slopes"] for c, tr in located.items()}
        tabs.update({f"gamma_c per width pair ({c})": tr["pairs"] for c, tr in located.items()})
        tabs["order parameters (seed means)"] = seed_means(summary)
        text = (f"Grid gamma x width at depth {g.depth} ({len(g.seeds)} seeds), init variance sigma^2 = width^-gamma on "
                f"every layer, teacher singular values {spec.teacher['singular_values']}. The transition is located where the width "
                f"exponent of the absolute displacement ||theta_end - theta_0|| (negative in the lazy phase) and of the first escape time "
                f"cross zero.")
        add_section(out, "dln_grid", "Deep linear networks: the gamma x width phase diagram", text, figures=[f.name], tables=tabs,
                    order=20)
    return {"summary": summary, "records": records, "transitions": trans, "located": located, "figures": figs}


def seed_means(summary: pd.DataFrame) -> pd.DataFrame:
    """The phase diagram's order parameters averaged over seeds, one row per (gamma, width)."""
    return summary.groupby(["gamma", "width"], as_index=False)[["disp_abs", "disp_rel", "n_plateaus", "t_escape_1"]].mean()


# ---- analysis: escape times ------------------------------------------------------------------------------

def analyse_dln_escape(run_dir, figures: bool = True, progress=None) -> dict:
    """Escape times per (depth, sigma, k) and their scaling fits of a stored ``dln-escape`` run.

    Writes ``escape_times.parquet`` / ``.csv``, ``escape_fits.parquet`` / ``.csv`` and, with
    ``figures``, ``dln_escape_times.png`` and its report section.

    **Returns:** a dict with ``table``, ``fits``, ``records`` and ``figures``.
    """
    from phaseprobe.store import save_frame_csv

    out = Path(run_dir)
    store, spec = _spec_of(out, DLNEscapeSpec)
    es = spec.escape
    stats = linear_stats(spec.data())
    done = store.done_pieces()
    allrec = store.load_records()
    rows = []
    for L in es["depths"]:
        if depth_piece(L) not in done:
            continue
        sub = allrec[allrec["depth"] == int(L)].reset_index(drop=True)
        run = stored_ensemble(store, depth_piece(L), sub, stats, int(L), es["width"])
        rows.extend(escape_rows(run, int(L), es["width"], spec.escape_sigmas(L)))
    tab = pd.DataFrame(rows)
    if tab.empty:
        return {"table": tab, "fits": pd.DataFrame(), "records": allrec, "figures": []}
    fits = escape_fits(tab)
    save_frame_parquet(tab, out / "escape_times.parquet")
    save_frame_parquet(fits, out / "escape_fits.parquet")
    save_frame_csv(tab, out / "escape_times.csv")
    save_frame_csv(fits, out / "escape_fits.csv")
    figs = []
    if figures:
        from phaseprobe.dynamics.figures import plot_escape_scaling
        from phaseprobe.plots.report import add_section

        f = plot_escape_scaling(tab, out / "dln_escape_times.png", singular_values=spec.teacher["singular_values"])
        figs.append(f)
        text = (f"Escape time k: the loss first halfway between the rank-(k-1) and rank-k saddle levels; width {es['width']}, one "
                f"seed, so theta_0 = sigma x theta_bar. Two layers: t_k = ln(1/sigma)/s_k + const; three or more: "
                f"t_k ~ sigma^-(L-2).")
        add_section(out, "dln_escape", "Deep linear networks: escape times vs the init scale", text, figures=[f.name],
                    tables={"fits": fits}, order=30)
    return {"table": tab, "fits": fits, "records": allrec, "figures": figs}
