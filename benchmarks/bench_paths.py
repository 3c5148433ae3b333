"""Benchmark: the L2 probe vs a trained Bezier curve on the same pair of minima.

Two minima (fresh seeds, trained at strength 0 with the probe's optimiser) of a sigmoid MLP
on a Fashion-MNIST subset (or MNIST with --data-dir). On that pair:

* the L2 probe (published settings: explicit penalty toward the other minimum, a linear grid
  of strengths, warm starts, fresh Adam lr 1.5e-3 / batch 64 per strength, <= 50 epochs with
  patience 5 on the epoch-mean error), bisection of its jumps, saddles at the jumps;
* a quadratic Bezier curve (Garipov et al.), trained by the same trainer (Adam lr 1.5e-3,
  batch 64, t ~ U(0,1) per minibatch), in chunks of epochs; after each chunk its barrier is
  measured, so the gradient evaluations and wall time it needs to reach the probe's barrier
  can be read off;
* linear interpolation (no training).

Barrier = max training error along the path minus the mean of the two ends, on dense points.
Gradient evaluations are per sample (an epoch costs n_train). The table is printed and written
to --out (CSV) with a figure of the Bezier barrier against its gradient evaluations.

    .venv/bin/python benchmarks/bench_paths.py                     # Fashion-MNIST, 5000 samples
    .venv/bin/python benchmarks/bench_paths.py --n-train 2000 --bezier-epochs 40
    .venv/bin/python benchmarks/bench_paths.py --toy               # the 2-D curved double well
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--n-train", type=int, default=5000)
    ap.add_argument("--n-test", type=int, default=2000)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--activation", default="sigmoid")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--start-epochs", type=int, default=100)
    ap.add_argument("--n-strengths", type=int, default=16)
    ap.add_argument("--auto-scale", type=float, default=20.0)
    ap.add_argument("--bisect-tol", type=float, default=1e-10)
    ap.add_argument("--saddle-steps", type=int, default=10)
    ap.add_argument("--bezier-epochs", type=int, default=100)
    ap.add_argument("--chunk", type=int, default=5)
    ap.add_argument("--n-points", type=int, default=41)
    ap.add_argument("--out", default="runs/bench_paths")
    ap.add_argument("--toy", action="store_true", help="the 2-D curved double well instead of a network")
    ap.add_argument("--no-paper-grid", dest="paper_grid", action="store_false",
                    help="skip the probe on the published connectivity grid (beta <= 5e-6)")
    args = ap.parse_args()
    if args.toy:
        return toy(Path(args.out))

    from phaseprobe.paths import evaluate_bezier, evaluate_linear, evaluate_polyline, fit_bezier, run_probe
    from phaseprobe.paths.plots import plot_bezier_progress, plot_paths
    from phaseprobe.paths.workflow import auto_strengths, get_minima, make_path_spec, probe_config

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    spec = make_path_spec(dict(name="bench", dataset=args.dataset, data_dir=args.data_dir, n_train=args.n_train,
                               n_test=args.n_test, width=args.width, depth=args.depth, activation=args.activation,
                               seeds=seeds, start_epochs=args.start_epochs, n_strengths=args.n_strengths,
                               auto_scale=args.auto_scale, bisect_tol=args.bisect_tol, saddle_steps=args.saddle_steps,
                               saddle_subset=1000, n_points=args.n_points), "connect")
    t0 = time.perf_counter()
    ctx, land, x, labels, info = get_minima(spec, 2)
    t_min = time.perf_counter() - t0
    print(f"minima: {labels}, train error {np.round(info['train_error'], 4)}, test acc {np.round(info['test_acc'], 4)}, "
          f"{t_min:.0f} s, params {land.dim}, n_train {land.n_samples}", flush=True)
    a, b = x[:1], x[1:2]

    # ---- the probe ------------------------------------------------------------------------
    strengths = auto_strengths(spec, a, b)
    t0 = time.perf_counter()
    cfg = probe_config(spec, strengths)
    cfg.saddles = False
    cfg.fold_check = False
    res = run_probe(land, a, b, cfg, seeds=[0], labels=["pair"])
    t_probe_bisect = time.perf_counter() - t0
    t0 = time.perf_counter()
    from phaseprobe.paths.probe import _saddle_at

    for t in res.transitions:
        if t.confirmed is not False:
            _saddle_at(land, t, cfg)
    t_saddle = time.perf_counter() - t0
    raw, _ = res.path_vertices(0, saddles=False, to_ref=True)
    withs, marks = res.path_vertices(0, saddles=True, to_ref=True)
    pe_raw = evaluate_polyline(land, raw, "probe", n_points=args.n_points, grad_evals=res.total_grad_evals(0, saddles=False),
                               seconds=t_probe_bisect)
    pe_sad = evaluate_polyline(land, withs, "probe+saddle", n_points=args.n_points, grad_evals=res.total_grad_evals(0),
                               seconds=t_probe_bisect + t_saddle, marks=marks)
    # the probe without bisection: checkpoints only
    cps = np.concatenate([a, res.checkpoints[:, 0], b])
    pe_grid = evaluate_polyline(land, cps, "probe (grid only)", n_points=args.n_points,
                                grad_evals=res.total_grad_evals(0, bisect=False, saddles=False))
    lin = evaluate_linear(land, a[0], b[0], n_points=args.n_points)
    print(f"probe: {len(strengths)} strengths, {len(res.transitions)} jumps, barrier {pe_raw.barrier:.4f} "
          f"(+saddle {pe_sad.barrier:.4f}, grid only {pe_grid.barrier:.4f}), {t_probe_bisect:.0f} s", flush=True)

    # ---- the published connectivity grid: beta = i * 2e-7, i = 0..25 (their i * 1e-8 up to 5e-6) -----
    paper = None
    if args.paper_grid:
        pcfg = probe_config(spec, np.linspace(0.0, 5e-6, 26))
        pcfg.bisect, pcfg.saddles, pcfg.fold_check = False, False, False
        t0 = time.perf_counter()
        pr = run_probe(land, a, b, pcfg, seeds=[0], labels=["pair"])
        d0 = float(np.linalg.norm(a[0].astype(np.float64) - b[0].astype(np.float64)))
        rec = pr.records[pr.records["phase"] == "probe"].sort_values("index")
        rec.to_csv(out / "bench_paths_paper_grid_records.csv", index=False)
        paper = {"strength_max": 5e-6, "covered": 1.0 - float(rec["dist"].iloc[-1]) / d0,
                 "error_range": (float(rec["train_error"].min()), float(rec["train_error"].max())),
                 "grad_evals": float(pr.grad_evals[0]), "seconds": time.perf_counter() - t0}
        print(f"probe on the published connectivity grid (beta <= 5e-6, 26 steps): covers {paper['covered']:.1%} of "
              f"||a - b||, training error stays in [{paper['error_range'][0]:.4f}, {paper['error_range'][1]:.4f}] "
              f"({paper['grad_evals']:.3g} grad evals)", flush=True)

    # ---- Bezier, in chunks ------------------------------------------------------------------
    from dataclasses import replace

    bcfg = replace(land.config, epochs=args.bezier_epochs, patience=None)
    t0 = time.perf_counter()
    evals_time = [0.0]

    def on_chunk(c):
        te = time.perf_counter()
        train_s = te - t0 - evals_time[0]  # wall time of training so far, without these evaluations
        br = evaluate_bezier(land, a[0], c[0], b[0], n_points=args.n_points).barrier
        evals_time[0] += time.perf_counter() - te
        return {"barrier": br, "train_seconds": train_s}

    bz = fit_bezier(land, a, b, epochs=args.bezier_epochs, config=bcfg, seeds=[0], chunk_epochs=args.chunk, on_chunk=on_chunk)
    t_bez = time.perf_counter() - t0 - evals_time[0]
    hist = pd.DataFrame([{"epochs": h["epochs"], "grad_evals": float(np.ravel(h["grad_evals"])[0]), "barrier": h["barrier"],
                          "seconds": h["train_seconds"]} for h in bz.history])
    pe_bez = evaluate_bezier(land, a[0], bz.control[0], b[0], n_points=args.n_points, grad_evals=float(bz.grad_evals[0]),
                             seconds=t_bez)

    # ---- the table --------------------------------------------------------------------------
    def reach(target):
        hit = hist[hist["barrier"] <= target]
        if hit.empty:
            return np.nan, np.nan, np.nan
        r = hit.iloc[0]
        return r["grad_evals"], r["seconds"], r["epochs"]

    rows = []
    for pe, secs in ((pe_grid, np.nan), (pe_raw, t_probe_bisect), (pe_sad, t_probe_bisect + t_saddle), (pe_bez, t_bez), (lin, 0.0)):
        g_reach, s_reach, e_reach = reach(pe.barrier) if pe.method.startswith("probe") else (np.nan, np.nan, np.nan)
        rows.append({"method": pe.method, "barrier": pe.barrier, "test_barrier": pe.test_barrier, "grad_evals": pe.grad_evals,
                     "wall_s": secs, "length": pe.length,
                     "bezier_grad_evals_to_match": g_reach, "bezier_wall_s_to_match": s_reach,
                     "grad_eval_ratio_probe/bezier_match": pe.grad_evals / g_reach if np.isfinite(g_reach) else np.nan})
    table = pd.DataFrame(rows)
    pd.set_option("display.width", 250)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print("\nBezier barrier by chunk:")
    print(hist.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    target = table[table["method"] == "probe"].iloc[0]
    bez_final = pe_bez.barrier
    ok = target["barrier"] <= bez_final and target["grad_evals"] <= pe_bez.grad_evals / 5
    print(f"\ntarget (probe barrier <= Bezier's final barrier at <= 1/5 of its gradient evaluations): "
          f"{'met' if ok else 'NOT met'} -- probe {target['barrier']:.4f} with {target['grad_evals']:.3g} evals vs "
          f"Bezier {bez_final:.4f} with {pe_bez.grad_evals:.3g} evals (ratio {target['grad_evals'] / pe_bez.grad_evals:.2f})")
    table.to_csv(out / "bench_paths.csv", index=False)
    hist.to_csv(out / "bench_paths_bezier_history.csv", index=False)
    res.transitions_frame().to_csv(out / "bench_paths_transitions.csv", index=False)
    res.records.to_csv(out / "bench_paths_probe_records.csv", index=False)
    (out / "bench_paths.json").write_text(json.dumps({"args": vars(args), "minima": info.get("test_acc"), "t_minima": t_min, "paper_grid": paper,
                                                      "strengths": list(map(float, strengths))}, default=str))
    plot_bezier_progress(hist.to_dict("records"), pe_sad.barrier, pe_sad.grad_evals, out / "bench_paths.png",
                         title=f"{ctx.dataset.name} ({land.n_samples} samples): barrier vs gradient evaluations")
    names = ctx.dataset.meta.get("class_names")
    plot_paths([pe_raw, pe_sad, lin, pe_bez], out / "bench_paths_error.png",
               title=f"{ctx.dataset.name}: error along the paths of one pair of minima", class_names=names)
    print(f"wrote {out}/bench_paths.csv, bench_paths.png, bench_paths_error.png")


def toy(out: Path) -> None:
    """The 2-D toy E = (x^2-1)^2 + 5 (y - (1-x^2)/2)^2: minima (+-1, 0), saddle (0, 1/2) at E = 1."""
    import jax.numpy as jnp

    from phaseprobe.paths import (FunctionLandscape, ProbeConfig, bezier_points, evaluate_bezier, evaluate_linear,
                                  evaluate_polyline, fit_bezier, run_probe)
    from phaseprobe.paths.plots import plot_toy_landscape

    out.mkdir(parents=True, exist_ok=True)
    kappa, s = 5.0, 0.5

    def E(v):
        return (v[0] ** 2 - 1) ** 2 + kappa * (v[1] - s * (1 - v[0] ** 2)) ** 2

    land = FunctionLandscape(E, 2, lr=0.02, max_steps=200000, grad_tol=1e-9, x64=True)
    a, b = np.array([-1.0, 0.0]), np.array([1.0, 0.0])
    t0 = time.perf_counter()
    res = run_probe(land, a[None], b[None], ProbeConfig(strengths=np.linspace(0, 3, 61), bisect_tol=1e-8))
    t_probe = time.perf_counter() - t0
    v, marks = res.path_vertices(0, saddles=True, to_ref=True)
    v0, _ = res.path_vertices(0, saddles=False, to_ref=True)
    grid = np.concatenate([a[None], res.checkpoints[:, 0], b[None]])
    pe_grid = evaluate_polyline(land, grid, "probe (grid only)", n_points=401, grad_evals=res.total_grad_evals(0, bisect=False, saddles=False))
    pe = evaluate_polyline(land, v0, "probe", n_points=401, grad_evals=res.total_grad_evals(0, saddles=False), seconds=t_probe)
    pes = evaluate_polyline(land, v, "probe+saddle", n_points=401, grad_evals=res.total_grad_evals(0), marks=marks)
    lin = evaluate_linear(land, a, b, n_points=401)
    t0 = time.perf_counter()
    bz = fit_bezier(land, a[None], b[None], epochs=2000, n_t=8, lr=0.01)
    be = evaluate_bezier(land, a, bz.control[0], b, n_points=401, grad_evals=bz.grad_evals[0], seconds=time.perf_counter() - t0)
    table = pd.DataFrame([e.summary() for e in (pe_grid, pe, pes, lin, be)])[["method", "barrier", "length", "grad_evals", "seconds"]]
    print("2-D toy (analytic saddle height above the minima: 1; straight line: 1 + 5/4 = 2.25)")
    print(table.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    t = res.transitions[0]
    print(f"fold at beta in [{t.strength_lo:.8f}, {t.strength_hi:.8f}], saddle {t.saddle.x}, index {t.saddle.index}, "
          f"negative eigenvalues {t.saddle.negative_eigs}")
    fn = lambda x, y: (x ** 2 - 1) ** 2 + kappa * (y - s * (1 - x ** 2)) ** 2  # noqa: E731
    curve = bezier_points(a, bz.control[0], b, np.linspace(0, 1, 101))
    plot_toy_landscape(fn, {"linear": np.stack([a, b]), "bezier": curve, "probe+saddle": v}, out / "paths_toy2d.png",
                       marks={"saddle (index 1)": t.saddle.x, "fold (pre-jump)": t.x_lo},
                       title="2-D toy: E = (x^2-1)^2 + 5(y - (1-x^2)/2)^2, probe from (-1,0) toward w_ref = (1,0)",
                       side_panel=[pes, pe, lin, be])
    table.to_csv(out / "bench_paths_toy.csv", index=False)
    print(f"wrote {out}/paths_toy2d.png")


if __name__ == "__main__":
    main()
