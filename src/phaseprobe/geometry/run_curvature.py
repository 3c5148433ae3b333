"""Geometry along a stored sweep: every (branch, alpha, seed) minimum of a run folder.

:func:`curvature_of_run` rebuilds the sweep's data and model from its spec, reads the stored
final parameters piece by piece (each piece a stacked ensemble), and runs
:func:`~phaseprobe.geometry.along_path.analyze_minima` on them: scalar curvature of the error
surface ``R(E)`` and of the loss surface ``R(L_alpha)``, extreme Hessian eigenvalues, trace and
saddle index. :func:`curvature_report` adds the change points of ``R`` along alpha, matches them
to the sweep's accuracy transitions, draws the figure and writes the report section.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from phaseprobe import conventions
from phaseprobe.geometry.along_path import analyze_minima, curvature_change_points, match_transitions
from phaseprobe.geometry.base import GeometryError


def _points(spec, store):
    """(piece, branch, [alpha_idx per member], [seed per member]) for every stored piece."""
    from phaseprobe.sweep.run import plan_units

    out = []
    done = store.done_pieces()
    for u in plan_units(spec):
        if u.kind == "cold":
            if u.uid in done:
                out.append((u.uid, "cold", list(u.alpha_idx), list(u.seeds)))
        else:
            for branch, ai, piece in u.steps:
                if piece in done:
                    out.append((piece, branch, [ai] * len(u.seeds), list(u.seeds)))
    return out


def curvature_of_run(
    run_dir: str | Path,
    *,
    exact: bool | None = None,
    n_probes: int = 32,
    lanczos_k: int = 2,
    branches: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    max_params: int | None = None,
    key: int = 0,
    on_point: Callable[[int], None] | None = None,
    on_plan: Callable[[int], None] | None = None,
    resume: bool = True,
    model_file: str | None = None,
    data_file: str | None = None,
) -> pd.DataFrame:
    """Geometry of every stored minimum of a sweep run folder (one row per branch x alpha x seed).

    ``model_file`` (``FILE.py:FUNCTION``) and ``data_file`` (an ``.npz``) find a run's own model
    and data files where they moved; their content must match the hashes the run recorded.

    With ``resume`` (default) every analysed piece is written through a run store of its own,
    ``RUN/curvature/<options hash>/`` (atomic pieces, a writer lock): an interrupted analysis
    resumes where it stopped, and a rerun with the same options computes nothing again.
    """
    import jax

    from phaseprobe.store import RunStore
    from phaseprobe.sweep.run import SweepContext
    from phaseprobe.sweep.spec import make_spec

    store = RunStore(run_dir)
    meta = store.meta()
    if meta.get("kind") != "sweep":
        raise GeometryError(f"run: '{run_dir}' was made by `{meta.get('kind')}`, not `phaseprobe sweep`; give a sweep run folder")
    if not store.has_params():
        raise GeometryError(f"run: '{run_dir}' has no stored parameters; run `phaseprobe sweep --out {run_dir}` (it stores them) first")
    spec_d = dict(meta["spec"]) if model_file is None else {**meta["spec"], "model_file": model_file}
    if data_file is not None:
        if spec_d.get("dataset") != "npz":
            raise GeometryError(f"data: '{run_dir}' was trained on {spec_d.get('dataset')}, not an .npz file; drop --data")
        spec_d["data_options"] = {**spec_d.get("data_options", {}), "path": str(Path(data_file).expanduser().resolve())}
    spec = make_spec(spec_d)
    store.done_pieces()  # reads every piece back; a damaged one is moved aside as *.corrupt
    damaged = sorted({p.name.split(".")[0] for d in (store.records_dir, store.params_dir) if d.exists()
                      for p in d.glob("*.corrupt")})
    if damaged:
        raise GeometryError(f"run: piece {damaged[0]} of '{run_dir}' is damaged ({len(damaged)} in all, moved aside as "
                            f"*.corrupt); rerun the sweep (same spec, --out {run_dir}) to redo it, then curvature")
    ctx = SweepContext(spec)
    pts = _points(spec, store)
    if branches:
        pts = [p for p in pts if p[1] in set(branches)]
    total = sum(len(p[3]) if not seeds else sum(s in set(seeds) for s in p[3]) for p in pts)
    if on_plan:
        on_plan(total)
    cache = None
    if resume:
        import hashlib
        import json

        opts = {"run": meta.get("run_hash") or meta.get("spec_hash"), "exact": exact, "n_probes": n_probes,
                "lanczos_k": lanczos_k, "branches": sorted(branches) if branches else None,
                "seeds": sorted(int(s) for s in seeds) if seeds else None, "max_params": max_params, "key": key}
        h = hashlib.sha256(json.dumps(opts, sort_keys=True, default=str).encode()).hexdigest()[:16]
        cache = RunStore(Path(run_dir) / "curvature" / h)
        cache.init(opts, h, kind="curvature")
        cache.lock()
    done = cache.done_pieces(need_params=False) if cache is not None else set()
    frames = []
    for n, (piece, branch, aidx, sds) in enumerate(pts):
        if piece in done:
            frames.append(cache.load_piece_records(piece))
            if on_point:
                on_point(len(frames[-1]))
            continue
        arrays = store.load_params(piece)
        model = ctx.arrays_to_model(arrays, len(sds))
        keep = [m for m, s in enumerate(sds) if seeds is None or s in set(seeds)]
        if not keep:
            continue
        if len(keep) < len(sds):
            idx = np.asarray(keep)
            model = jax.tree_util.tree_map(lambda x: x[idx] if hasattr(x, "shape") and np.ndim(x) and x.shape[0] == len(sds) else x, model)
        alphas = ctx.alphas[np.asarray(aidx)[keep]]
        df = analyze_minima(model, ctx.dataset, spec.loss, alphas, penalty_on=spec.penalty_on, exact=exact,
                            n_probes=n_probes, lanczos_k=lanczos_k, key=key + n, max_params=max_params)
        df["branch"] = branch
        df["seed"] = [sds[m] for m in keep]
        df["alpha_index"] = [aidx[m] for m in keep]
        df["strength"] = conventions.from_alpha(df["alpha"].to_numpy(), spec.convention)
        df["convention"] = spec.convention
        df["piece"] = piece
        for c in ("top_E", "bottom_E", "top_L", "bottom_L", "bottom_E_residuals", "bottom_L_residuals"):
            if c in df.columns:
                df[c] = df[c].apply(lambda v: list(np.asarray(v, float).ravel()))
        if cache is not None:
            cache.write_piece(piece, df, None)
        frames.append(df)
        if on_point:
            on_point(len(keep))
    if cache is not None:
        cache.unlock()
    if not frames:
        raise GeometryError(f"run: '{run_dir}' has no finished pieces to analyse; rerun `phaseprobe sweep --out {run_dir}` to finish it")
    out = pd.concat(frames, ignore_index=True)
    for c in ("top_E", "bottom_E", "top_L", "bottom_L", "bottom_E_residuals", "bottom_L_residuals"):
        if c in out.columns:
            out[c] = out[c].apply(lambda v: list(np.asarray(v, float).ravel()))
    return out


def saddle_table(geo: pd.DataFrame) -> pd.DataFrame:
    """One row per (branch, strength): each seed's saddle index label (``"2"`` or ``">= 2"``) and
    the smallest eigenvalue of ``H_L``; counts are listed per seed, never averaged.

    **Arguments:**

    - ``geo``: the table of :func:`curvature_of_run`.

    **Returns:** a DataFrame with ``branch, strength, saddle index L per seed, exact, lambda_min_L (min)``.
    """
    g = geo.sort_values(["branch", "strength", "seed"]).groupby(["branch", "strength"], sort=True)
    return pd.DataFrame({
        "saddle index L per seed": g["saddle_index_L_label"].agg(lambda v: ", ".join(map(str, v))),
        "exact": g["saddle_index_L_exact"].agg(lambda v: f"{int(np.sum(v))} of {len(v)}"),
        "lambda_min_L (min)": g["lambda_min_L"].min(),
    }).reset_index()


def curvature_report(run_dir: str | Path, geo: pd.DataFrame, figure: bool = True) -> dict:
    """Change points of R(alpha) per branch, matched to the sweep's transitions; figure; report."""
    from phaseprobe.plots.report import add_section
    from phaseprobe.store import RunStore
    from phaseprobe.sweep.analysis import find_transitions

    run_dir = Path(run_dir)
    store = RunStore(run_dir)
    spec = store.meta()["spec"]
    recs = store.load_records()
    trans = find_transitions(recs, "test_acc") if "test_acc" in recs.columns else []
    cps, matches = [], []
    for branch, g in geo.groupby("branch"):
        m = g.groupby("alpha")[["R_E", "R_L", "R_E_se", "R_L_se"]].mean().sort_index()
        for which in ("R_E", "R_L"):
            # R spans decades along the path and may change sign: look for change points in
            # asinh(R / s) (s = the smallest nonzero |R|), which is log-like on both sides of 0,
            # so a jump from 1e3 to 1 counts as large as the one from 1 to 1e-3
            r = m[which].to_numpy()
            nz = np.abs(r[np.isfinite(r) & (r != 0)])
            s = float(nz.min()) if nz.size else 1.0
            se_raw = m[f"{which}_se"].to_numpy() if m[f"{which}_se"].notna().any() else None
            se = None if se_raw is None else np.abs(np.arcsinh((r + se_raw) / s) - np.arcsinh(r / s))
            cp = curvature_change_points(m.index.to_numpy(), np.arcsinh(r / s), se)
            cp.insert(0, "curvature", which)
            cp.insert(0, "branch", branch)
            cps.append(cp)
            t_alphas = [t.alpha_c for t in trans if t.branch == branch]
            if t_alphas:
                mt = match_transitions(t_alphas, cp, max_log10_distance=0.25)
                mt.insert(0, "curvature", which)
                mt.insert(0, "branch", branch)
                matches.append(mt)
    cp_df = pd.concat(cps, ignore_index=True) if cps else pd.DataFrame()
    mt_df = pd.concat(matches, ignore_index=True) if matches else pd.DataFrame()
    conv = spec.get("convention", "l2")
    for df_ in (cp_df, mt_df):
        for c in ("alpha", "transition_alpha", "change_alpha"):
            if c in df_.columns:
                df_[c.replace("alpha", "strength")] = conventions.from_alpha(df_[c].to_numpy(), conv)
    cp_df.to_csv(run_dir / "curvature_change_points.csv", index=False)
    mt_df.to_csv(run_dir / "curvature_matches.csv", index=False)
    figs = []
    if figure:
        from phaseprobe.plots.curvature_plots import plot_curvature

        figs.append(plot_curvature(geo, recs, [t.as_dict() for t in trans], run_dir / "curvature.png",
                                   title=f"{spec.get('name')}: curvature along the L2 path"))
        text = (
            "Scalar curvature of the error surface {(w, E(w))} (R_E) and of the loss surface {(w, L_alpha(w))} (R_L) "
            "at each stored minimum (seed mean; E is the mean over the training set, so R carries that scale). "
            f"Method: {', '.join(sorted(set(geo['method'].astype(str))))}. Change points of R along log alpha: sign changes, "
            "jumps (first-order transitions: R jumps, e.g. to R_E = 0 at w = 0) and kinks. "
            "The match table pairs each accuracy transition with its nearest change point (matched = within 0.25 decade). "
            f"Saddle index of L_alpha: eigenvalues of its Hessian below -{float(geo['saddle_rel_tol'].max()):.2g} max|lambda| "
            "(exact spectrum), or converged Lanczos Ritz values whose residual interval lies below that threshold; "
            "'>= n' marks a lower bound (the count is not closed by a converged non-negative Ritz value; raise --k)."
        )
        show_cp = cp_df[[c for c in ("branch", "curvature", "kind", "strength", "size", "score", "significant") if c in cp_df.columns]] if len(cp_df) else cp_df
        show_mt = mt_df[[c for c in ("branch", "curvature", "transition_strength", "change_strength", "kind", "log10_distance", "matched") if c in mt_df.columns]] if len(mt_df) else mt_df
        add_section(run_dir, "curvature", "Curvature along the L2 path", text, figs,
                    {"accuracy transitions vs curvature change points": show_mt, "curvature change points": show_cp,
                     "saddle index of L_alpha per stored minimum": saddle_table(geo)}, order=20)
    return {"change_points": cp_df, "matches": mt_df, "figures": figs}
