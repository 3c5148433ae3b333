"""The L2 probe ("pathfinder"): continuation in an anchored L2 strength, transitions, saddles.

**The published protocol** (arXiv 2512.11866, read from the authors' public code): minimise

    L_beta(w) = E(w) + beta * ||w - w_ref||^2        (explicit penalty = phaseprobe's "l2")

from a start model while beta rises on a fixed, increasing linear grid; the parameters are
warm-started from one strength to the next and the optimiser is re-created at every strength
(networks: Adam lr 1.5e-3, batch 64, at most 50 epochs, early stopping with patience 5 on the
epoch-mean training error; see :class:`~phaseprobe.paths.landscape.NetworkLandscape`).
``w_ref`` is 0 (the ordinary L2 sweep), another trained minimum (a path between minima) or a
model saved at a transition (nesting). Every strength logs the error (clean full pass and the
epoch-mean running value), the regularised loss, test loss and accuracy, per-class accuracy,
the distance ``||w - w_ref||`` and a checkpoint. Transition models are located by bisection in
beta between the last point before and the first point after a jump, and saved.

Strengths are given in a penalty convention (:mod:`phaseprobe.conventions`): ``"l2"`` is the
paper's explicit ``beta*||w - w_ref||^2``; ``"wd"`` is ``beta/2*||w - w_ref||^2``. Internally
everything uses the canonical alpha (``= beta`` in "l2", ``beta/2`` in "wd"); records carry both.

**phaseprobe's additions (not in the paper; labelled so in records and reports):**

* jump detection by the envelope theorem (along a branch of minima ``dL/dalpha = ||w - w_ref||^2``;
  a step where L falls below that is a jump to another branch, see :func:`branch_defect`), and
  *confirmation* by bisection: a fold keeps a finite gap between the two sides as the bracket
  shrinks, a smooth but steep change does not;
* the fold check: the bottom eigenvalue of grad^2 E at the last pre-jump model next to the
  fold condition ``lambda_min(grad^2 E) = -2 alpha`` (where the minimum of L merges with an
  index-1 saddle);
* saddle refinement on E at every confirmed jump (:mod:`phaseprobe.paths.saddles`): from the
  highest-error point of the jump segment, index and negative eigenvalues;
* the **excursion**: from the post-jump model raise beta a few grid steps further, then lower
  it back down the grid (warm-started) and record the basin the model returns to;
* Hessian spectra of the unregularised E along the path (both ends, bottom computed directly).

Several probes (seeds, pairs of minima) run as ONE vectorised ensemble: the members share the
strength grid and each has its own start and reference.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from phaseprobe import conventions
from phaseprobe.paths.landscape import PathError, _as_stack
from phaseprobe.paths.probe_types import Excursion, ProbeConfig, ProbeResult, ProbeTransition, basin_str
from phaseprobe.paths.saddles import bottom_eigs, path_spectra, refine_saddle

__all__ = ["Excursion", "ProbeConfig", "ProbeResult", "ProbeTransition", "basin_str", "bisect_finish", "bisect_start",
           "bisect_step", "branch_defect", "detect_transitions", "excursion_finish", "excursion_schedule", "excursion_step",
           "find_jumps", "fold_check", "member_spectra", "merge_spectra", "run_probe"]


# ---------------------------------------------------------------------------------------------
# jump detection
# ---------------------------------------------------------------------------------------------
def branch_defect(alphas: np.ndarray, loss: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """``L_{i+1} - L_i - (alpha_{i+1} - alpha_i) (r_i^2 + r_{i+1}^2) / 2`` for every grid step.

    Along one branch of minima the envelope theorem gives ``dL*/dalpha = ||w* - w_ref||^2``, so
    the defect is zero up to the trapezoid's error (third order in the step). Where the model
    leaves its branch for a lower one (a fold) it is negative by the drop in L.
    """
    a = np.asarray(alphas, np.float64)
    L = np.asarray(loss, np.float64)
    p = np.square(np.asarray(dist, np.float64))
    return np.diff(L) - np.diff(a) * 0.5 * (p[:-1] + p[1:])


def find_jumps(alphas: np.ndarray, loss: np.ndarray, dist: np.ndarray, *, min_jump: float = 0.02,
               k_sigma: float = 3.0) -> list[int]:
    """Grid indices ``i`` of jumps between points ``i`` and ``i + 1`` (canonical ``alphas``).

    The *corrected loss* ``C_i = L_i - sum_{j < i} defect-free rise`` (the cumulative sum of
    :func:`branch_defect`) is flat along a branch of minima and drops where the model leaves
    its branch for a lower one. Jumps are the drops found by
    :func:`phaseprobe.sweep.analysis.detect_events` on ``C`` (one step or a short run of steps
    whose total falls below ``-max(min_jump, k_sigma * spread)``; the median step is
    subtracted first, which absorbs the bias of inexact per-strength minimisation: the
    published stopping rule watches E, which rises while the penalty pulls, so each strength
    stops after a few epochs), over which the regularised loss itself fell by more than
    ``min_jump / 2`` (on a branch it can only rise). The bracket is the event's largest step.
    (The error curve steepens like ``1/sqrt(beta_c - beta)`` before a fold, so a jump in E
    alone is a poor detector on a grid.)
    """
    from phaseprobe.sweep.analysis import detect_events

    d = branch_defect(alphas, loss, dist)
    if d.size == 0 or not np.isfinite(d).any():
        return []
    c = np.concatenate([[0.0], np.cumsum(np.where(np.isfinite(d), d, 0.0))])
    L = np.asarray(loss, np.float64)
    out = []
    for ev in detect_events(c, min_jump=min_jump, k_sigma=k_sigma):
        if ev.total >= 0:
            continue
        if not (L[ev.i1] - L[ev.i0] < -0.5 * float(min_jump) or L[ev.i_max + 1] - L[ev.i_max] < -0.5 * float(min_jump)):
            continue
        out.append(int(ev.i_max))
    return sorted(set(out))


def _sig_distance(m: dict, a: dict, b: dict) -> tuple[float, float]:
    """Distances of point ``m`` to ``a`` and ``b`` in (error, dist), each normalised by |b - a|."""
    da = db = 0.0
    for key in ("train_error", "dist"):
        scale = abs(b[key] - a[key])
        if not (scale > 0 and math.isfinite(scale)):
            continue
        da += abs(m[key] - a[key]) / scale
        db += abs(m[key] - b[key]) / scale
    return da, db


def _point(met: dict, k: int, extra: dict | None = None) -> dict:
    out = {}
    for key, v in met.items():
        v = np.asarray(v)
        out[key] = float(v[k]) if v.ndim == 1 else v[k].copy()
    if extra:
        out.update(extra)
    return out


# ---------------------------------------------------------------------------------------------
# the probe
# ---------------------------------------------------------------------------------------------
class _Recorder:
    def __init__(self, land, config: ProbeConfig, labels, seeds, on_step):
        self.land = land
        self.config = config
        self.labels = labels
        self.seeds = seeds
        self.on_step = on_step
        self.frames: list[pd.DataFrame] = []

    def rows(self, phase: str, step: int, idx: Sequence[int] | None, strengths, alphas, members, res, x, ref,
             basins, extra: dict | None = None) -> pd.DataFrame:
        met = res.metrics
        dist = np.linalg.norm(x.astype(np.float64) - ref.astype(np.float64), axis=1)
        r0 = np.linalg.norm(x.astype(np.float64), axis=1)
        rows = []
        for j, k in enumerate(members):
            row = {
                "phase": phase, "step": int(step), "member": int(k), "label": self.labels[k], "seed": int(self.seeds[k]),
                "index": int(idx[j]) if idx is not None else -1,
                "strength": float(strengths[j]), "alpha": float(alphas[j]), "convention": self.config.convention,
                "penalty": "E + alpha*||w - w_ref||^2",
                "train_error": float(met["train_error"][j]), "train_error_running": float(met["last_epoch_error"][j]),
                "loss": float(met["loss"][j]), "test_error": float(met.get("test_error", [np.nan] * len(members))[j]),
                "train_acc": float(met.get("train_acc", [np.nan] * len(members))[j]),
                "test_acc": float(met.get("test_acc", [np.nan] * len(members))[j]),
                "dist": float(dist[j]), "r0": float(r0[j]), "grad_norm": float(met.get("grad_norm", [np.nan] * len(members))[j]),
                "steps": int(res.steps[j]), "grad_evals": float(res.grad_evals[j]), "stop": res.stop[j] if res.stop else "",
                "basin": basin_str(basins[j]),
            }
            if "test_class_acc" in met:
                for c, v in enumerate(np.asarray(met["test_class_acc"][j])):
                    row[f"class_acc_{c}"] = float(v)
                for c, v in enumerate(np.asarray(met["test_class_prec"][j])):
                    row[f"class_prec_{c}"] = float(v)
            if extra:
                for key, v in extra.items():
                    row[key] = v[j] if isinstance(v, (list, np.ndarray)) else v
            rows.append(row)
        df = pd.DataFrame(rows)
        self.frames.append(df)
        if self.on_step is not None:
            self.on_step(phase, step, df, x)
        return df


def run_probe(land, start, ref=None, config: ProbeConfig | None = None, *, strengths: Sequence[float] | None = None,
              seeds: Sequence[int] | None = None, labels: Sequence[str] | None = None,
              on_step: Callable[[str, int, pd.DataFrame, np.ndarray], None] | None = None,
              progress: Callable[[str, int, int], None] | None = None) -> ProbeResult:
    """Run the L2 probe for every member of ``start`` (``(K, P)`` flat vectors) toward ``ref``.

    ``ref`` ``(K, P)`` (default 0: the ordinary L2 sweep). ``config`` (or just ``strengths``)
    sets the grid and the extras. ``seeds`` (per member) derive the minibatch shuffles.
    ``on_step(phase, step, records, x)`` is called after every strength (``x`` the members'
    parameters: the checkpoint); ``progress(stage, done, total)`` reports progress.
    """
    if config is None:
        if strengths is None:
            raise PathError("strengths: give the probe's strength grid (config=ProbeConfig(...) or strengths=[...])")
        config = ProbeConfig(strengths=strengths)
    config.validate()
    t0 = time.perf_counter()
    start = _as_stack(start, land.dim, "start")
    k = start.shape[0]
    ref = np.zeros_like(start) if ref is None else _as_stack(ref, land.dim, "ref")
    if ref.shape[0] != k:
        if ref.shape[0] == 1:
            ref = np.repeat(ref, k, 0)
        else:
            raise PathError(f"ref: got {ref.shape[0]} references for {k} start points; give one per member (or one for all)")
    seeds = list(range(k)) if seeds is None else [int(s) for s in seeds]
    if len(seeds) != k:
        raise PathError(f"seeds: got {len(seeds)} seeds for {k} members")
    labels = [str(i) for i in range(k)] if labels is None else [str(s) for s in labels]
    strengths = np.asarray(config.strengths, np.float64).reshape(-1)
    alphas = config.alphas
    n = len(strengths)
    rec = _Recorder(land, config, labels, seeds, on_step)
    members = list(range(k))

    # ---- the outer loop: beta up the grid, warm-started, fresh optimiser per beta ----------------
    x = start.astype(land.np_dtype)
    cps = np.zeros((n, k, land.dim), land.np_dtype)
    basins: list[list[tuple]] = []
    mets: list[dict] = []
    gevals = np.zeros(k)
    for i in range(n):
        res = land.minimise(x, np.full(k, alphas[i]), ref, step=i, seeds=seeds)
        x = res.x
        cps[i] = x
        gevals += res.grad_evals
        b = land.basins(x, res.metrics)
        basins.append(b)
        res.metrics["dist"] = np.linalg.norm(x.astype(np.float64) - ref.astype(np.float64), axis=1)
        mets.append(res.metrics)
        rec.rows("probe", i, [i] * k, np.full(k, strengths[i]), np.full(k, alphas[i]), members, res, x, ref, b)
        if progress:
            progress("probe", i + 1, n)

    # ---- jumps -----------------------------------------------------------------------------------
    transitions = detect_transitions(strengths, alphas, cps, mets, basins, config)
    if transitions and config.bisect:
        _bisect(land, transitions, ref, seeds, config, rec, progress)
    live = [t for t in transitions if t.confirmed is not False]
    if live and config.fold_check:
        for t in live:
            fold_check(land, t, config)
    if live and config.saddles:
        for j, t in enumerate(live):
            _saddle_at(land, t, config)
            if progress:
                progress("saddles", j + 1, len(live))
    if live and config.excursion:
        _excursions(land, live, ref, seeds, config, rec, basins, strengths, alphas, progress)

    spectra = None
    if config.hessian_k > 0:
        spectra = pd.concat([member_spectra(land, cps[:, kk], kk, strengths, config) for kk in members], ignore_index=True)
    records = merge_spectra(pd.concat(rec.frames, ignore_index=True), spectra)
    return ProbeResult(records=records, checkpoints=cps, strengths=strengths, alphas=alphas, convention=config.convention,
                       start=start, ref=ref, transitions=transitions, basins=basins, grad_evals=gevals,
                       seconds=time.perf_counter() - t0, labels=labels, spectra=spectra)


def detect_transitions(strengths, alphas, cps: np.ndarray, mets: list[dict], basins: list[list[tuple]],
                       config: ProbeConfig) -> list[ProbeTransition]:
    """The jumps of every member along the grid (:func:`find_jumps`), as unbisected transitions.

    **Arguments:**

    - `strengths`, `alphas`: the grid (``config.convention`` and canonical).
    - `cps`: the checkpoints ``(n, K, P)``.
    - `mets`: per grid point, the members' metrics (with ``dist``).
    - `basins`: per grid point, the members' basins.
    - `config`: the probe's settings (``min_jump``, ``k_sigma``).

    **Returns:** the transitions, by member then grid index.
    """
    dist = np.stack([m["dist"] for m in mets])
    loss = np.stack([m["loss"] for m in mets])
    out: list[ProbeTransition] = []
    for kk in range(cps.shape[1]):
        for i in find_jumps(alphas, loss[:, kk], dist[:, kk], min_jump=config.min_jump, k_sigma=config.k_sigma):
            out.append(ProbeTransition(
                member=kk, index=i, strength_lo=float(strengths[i]), strength_hi=float(strengths[i + 1]),
                alpha_lo=float(alphas[i]), alpha_hi=float(alphas[i + 1]), x_lo=cps[i, kk].copy(), x_hi=cps[i + 1, kk].copy(),
                lo=_point(mets[i], kk), hi=_point(mets[i + 1], kk), basin_lo=basins[i][kk], basin_hi=basins[i + 1][kk]))
    return out


def fold_check(land, t: ProbeTransition, config: ProbeConfig) -> None:
    """The bottom eigenvalue of grad^2 E at the pre-jump model (``t.fold_min_eig``), to set next
    to the fold condition ``-2 alpha``."""
    lo, _ = bottom_eigs(land, t.x_lo, k=1, subset=config.hessian_subset, num_iter=config.hessian_iter)
    t.fold_min_eig = float(lo[0])


def member_spectra(land, cps_member: np.ndarray, member: int, strengths, config: ProbeConfig) -> pd.DataFrame:
    """Hessian spectra of E at every ``hessian_every``-th checkpoint of one member (``(n, P)``)."""
    n = len(cps_member)
    idx = list(range(0, n, config.hessian_every))
    sp = path_spectra(land, cps_member[idx], k=config.hessian_k, num_iter=config.hessian_iter, subset=config.hessian_subset)
    sp["member"] = member
    sp["index"] = idx
    sp["strength"] = np.asarray(strengths)[idx]
    return sp.drop(columns=["point"])


def merge_spectra(records: pd.DataFrame, spectra: pd.DataFrame | None) -> pd.DataFrame:
    """The probe records with the spectra's ``hess_*`` columns on the probe rows (NaN elsewhere)."""
    if spectra is None:
        return records
    records = records.merge(spectra.drop(columns=["strength"]), on=["member", "index"], how="left")
    records.loc[records["phase"] != "probe", [c for c in spectra.columns if c.startswith("hess_")]] = np.nan
    return records


def _float_floor(land) -> type:
    return np.float64 if land.np_dtype == np.float64 else np.float32


@dataclass
class BisectWork:
    """The bisection of a set of brackets (one ensemble of all jumps), between steps.

    ``jobs`` are the transitions being refined in place; ``active`` the ones still bisected;
    ``updated`` / ``jumped`` say, for the last step, which jobs got a new midpoint and on which
    side of the jump it fell. The rest is fixed at the start.
    """

    jobs: list
    n_steps: int
    widths: np.ndarray
    init_gap: list
    init_lo: list
    active: np.ndarray
    jref: np.ndarray
    jseeds: list
    tol_alpha: float
    updated: np.ndarray = None
    jumped: np.ndarray = None


def bisect_start(transitions: list[ProbeTransition], ref, seeds, config: ProbeConfig) -> BisectWork:
    """The bisection of every bracket of ``transitions`` before its first step.

    **Arguments:**

    - `transitions`: the unbisected transitions (refined in place by :func:`bisect_step`).
    - `ref`: the members' references ``(K, P)``; `seeds`: the members' seeds.
    - `config`: the probe's settings (``bisect_tol``, ``bisect_max_steps``).

    **Returns:** a :class:`BisectWork` whose ``n_steps`` is the most steps the bisection takes.
    """
    jobs = transitions
    tol_alpha = float(conventions.to_alpha(config.bisect_tol, config.convention))
    widths = np.array([t.alpha_hi - t.alpha_lo for t in jobs])
    n_steps = int(min(config.bisect_max_steps, max(0, math.ceil(math.log2(max(widths.max(), tol_alpha) / tol_alpha)))))
    init_gap = [(abs(t.hi["train_error"] - t.lo["train_error"]), abs(t.hi["dist"] - t.lo["dist"])) for t in jobs]
    init_lo = [(t.alpha_lo, t.x_lo, t.lo) for t in jobs]  # the grid point before the jump (a regular point)
    J = len(jobs)
    return BisectWork(jobs=jobs, n_steps=n_steps, widths=widths, init_gap=init_gap, init_lo=init_lo, active=np.ones(J, bool),
                      jref=np.stack([ref[t.member] for t in jobs]), jseeds=[seeds[t.member] for t in jobs], tol_alpha=tol_alpha,
                      updated=np.zeros(J, bool), jumped=np.zeros(J, bool))


def bisect_step(land, work: BisectWork, s: int, config: ProbeConfig, rec: _Recorder) -> bool:
    """Step ``s`` of the bisection: every active bracket halved at once (one ensemble).

    **Returns:** False when no bracket was left to halve (nothing was trained), else True.
    """
    jobs, J = work.jobs, len(work.jobs)
    to_strength = (lambda a: conventions.from_alpha(a, config.convention))
    fdt = _float_floor(land)
    active, widths, jref = work.active, work.widths, work.jref
    lo_a = np.array([t.alpha_lo for t in jobs])
    hi_a = np.array([t.alpha_hi for t in jobs])
    mid = 0.5 * (lo_a + hi_a)
    # stop a job when its bracket is below tolerance or the midpoint is no longer representable
    distinct = (fdt(mid) != fdt(lo_a)) & (fdt(mid) != fdt(hi_a))
    active &= ((hi_a - lo_a) > work.tol_alpha) & distinct
    work.updated = active.copy()
    work.jumped = np.zeros(J, bool)
    if not active.any():
        return False
    xs = np.stack([t.x_lo for t in jobs])
    res = land.minimise(xs, mid, jref, step=100000 + s, seeds=work.jseeds)
    res.metrics["dist"] = np.linalg.norm(res.x.astype(np.float64) - jref.astype(np.float64), axis=1)
    b = land.basins(res.x, res.metrics)
    jumped = work.jumped
    for j, t in enumerate(jobs):
        if not active[j]:
            continue
        t.grad_evals += float(res.grad_evals[j])
        t.bisect_steps += 1
        p = _point(res.metrics, j)
        da, db = _sig_distance(p, t.lo, t.hi)
        jumped[j] = db < da
        if jumped[j]:
            t.hi_models.append((t.alpha_hi, t.x_hi))
            t.alpha_hi, t.x_hi, t.hi, t.basin_hi = float(mid[j]), res.x[j].copy(), p, b[j]
        else:
            t.lo_models.append((t.alpha_lo, t.x_lo))
            t.alpha_lo, t.x_lo, t.lo, t.basin_lo = float(mid[j]), res.x[j].copy(), p, b[j]
        if t.bisect_steps >= 4 and not _gap_kept(t, *work.init_gap[j], keep=4.0 * (t.alpha_hi - t.alpha_lo) / widths[j]):
            active[j] = False  # the gap closes like the bracket: a steep but continuous change, not a fold
    sel = np.flatnonzero(active)
    if len(sel):
        sub = type(res)(x=res.x[sel], metrics={kk: np.asarray(v)[sel] for kk, v in res.metrics.items()},
                        grad_evals=res.grad_evals[sel], steps=res.steps[sel], stop=[res.stop[j] for j in sel] if res.stop else [])
        rec.rows("bisect", s, [jobs[j].index for j in sel], to_strength(mid[sel]) * np.ones(len(sel)), mid[sel],
                 [jobs[j].member for j in sel], sub, res.x[sel], jref[sel], [b[j] for j in sel],
                 extra={"jumped": [bool(jumped[j]) for j in sel]})
    return True


def bisect_finish(land, work: BisectWork, config: ProbeConfig) -> None:
    """The noise floor and the verdict: retrain the grid's pre-jump model (a regular point, away
    from the fold where convergence slows down) at its own strength with another minibatch
    order, then confirm each jump whose gap outlived the bracket and the noise."""
    to_strength = (lambda a: conventions.from_alpha(a, config.convention))
    jobs, init_lo, jref = work.jobs, work.init_lo, work.jref
    xs = np.stack([x for _, x, _ in init_lo])
    res = land.minimise(xs, np.array([a for a, _, _ in init_lo]), jref, step=300000, seeds=work.jseeds)
    dn = np.linalg.norm(res.x.astype(np.float64) - jref.astype(np.float64), axis=1)
    for j, (t, (ge, gr)) in enumerate(zip(jobs, work.init_gap)):
        t.grad_evals += float(res.grad_evals[j])
        t.noise_error = abs(float(res.metrics["train_error"][j]) - init_lo[j][2]["train_error"])
        t.noise_dist = abs(float(dn[j]) - init_lo[j][2]["dist"])
        t.strength_lo = float(to_strength(t.alpha_lo))
        t.strength_hi = float(to_strength(t.alpha_hi))
        keep = max(0.05, 4.0 * (t.alpha_hi - t.alpha_lo) / work.widths[j])
        t.confirmed = _gap_kept(t, ge, gr, keep=keep, noise=(t.noise_error, t.noise_dist))


def _bisect(land, transitions: list[ProbeTransition], ref, seeds, config: ProbeConfig, rec: _Recorder, progress) -> None:
    """Bisection of every bracket at once (one ensemble of all jumps): lo/hi models refined in place."""
    work = bisect_start(transitions, ref, seeds, config)
    for s in range(work.n_steps):
        if not bisect_step(land, work, s, config, rec):
            break
        if progress:
            progress("bisect", s + 1, work.n_steps)
    bisect_finish(land, work, config)


def _gap_kept(t: ProbeTransition, ge: float, gr: float, keep: float, noise=(0.0, 0.0)) -> bool:
    """A fold keeps a finite gap (in E or in the distance to w_ref) while its bracket shrinks:
    at least ``keep`` of the grid step's gap (four times the bracket's shrink factor, and at least
    5 %; a continuous change shrinks like the bracket) and three times the retraining noise."""
    fe = abs(t.hi["train_error"] - t.lo["train_error"])
    fr = abs(t.hi["dist"] - t.lo["dist"])
    ok_e = ge > 0 and fe >= keep * ge and fe > 3.0 * noise[0]
    ok_r = gr > 0 and fr >= keep * gr and fr > 3.0 * noise[1]
    return bool(ok_e or ok_r)


def _saddle_at(land, t: ProbeTransition, config: ProbeConfig) -> None:
    """Refine the saddle of E from the highest-error point of the jump segment x_lo -> x_hi."""
    w = np.linspace(0.0, 1.0, max(int(config.saddle_points), 3))
    seg = ((1 - w)[:, None] * t.x_lo.astype(np.float64) + w[:, None] * t.x_hi.astype(np.float64)).astype(land.np_dtype)
    e = land.evaluate(seg, 0.0, None)["train_error"]
    x0 = seg[int(np.nanargmax(e))]
    max_step = config.saddle_max_step
    if max_step is None:
        max_step = 0.1 * float(np.linalg.norm(t.x_hi.astype(np.float64) - t.x_lo.astype(np.float64))) or None
    t.saddle = refine_saddle(land, x0, method=config.saddle_method, steps=config.saddle_steps, subset=config.saddle_subset,
                             max_step=max_step)


def excursion_schedule(live: list[ProbeTransition], config: ProbeConfig, alphas) -> tuple[np.ndarray, list[int]]:
    """The excursions' walks: ``excursion_up`` grid steps up past each jump, then back down to
    the grid's start. **Returns:** ``(sched (L, J) canonical alphas, lengths)`` (a shorter walk
    repeats its last strength; ``L`` is 0 when there is nothing to walk)."""
    scheds = []
    for t in live:
        i_hi = t.index + 1
        top = min(len(alphas) - 1, i_hi + int(config.excursion_up))
        up = list(range(i_hi + 1, top + 1))
        down = list(range(top - 1, -1, -1))
        scheds.append([float(alphas[i]) for i in up + down])
    L = max((len(s) for s in scheds), default=0)
    if L == 0:
        return np.zeros((0, len(live))), [len(s) for s in scheds]
    sched = np.array([s + [s[-1]] * (L - len(s)) for s in scheds]).T  # (L, J)
    return sched, [len(s) for s in scheds]


def excursion_step(land, x: np.ndarray, s: int, sched: np.ndarray, lengths: Sequence[int], live: list[ProbeTransition], ref, seeds,
                   config: ProbeConfig, rec: _Recorder):
    """Step ``s`` of every excursion at once (warm-started from ``x``, ``(J, P)``).

    **Returns:** ``(x, train_error (J,), basins, grad_evals (J,) of the walks still going)``.
    """
    J = len(live)
    jref = np.stack([ref[t.member] for t in live])
    jseeds = [seeds[t.member] for t in live]
    res = land.minimise(x, sched[s], jref, step=200000 + s, seeds=jseeds)
    x = res.x
    res.metrics["dist"] = np.linalg.norm(x.astype(np.float64) - jref.astype(np.float64), axis=1)
    b = land.basins(x, res.metrics)
    live_now = np.array([s < n for n in lengths])
    st = conventions.from_alpha(sched[s], config.convention) * np.ones(J)
    rec.rows("excursion", s, [t.index for t in live], st, sched[s], [t.member for t in live], res, x, jref, b)
    return x, np.asarray(res.metrics["train_error"]), b, np.where(live_now, res.grad_evals, 0)


def excursion_finish(live: list[ProbeTransition], sched: np.ndarray, lengths: Sequence[int], errs: np.ndarray, labs: list,
                     ge: np.ndarray, start_basins: Sequence, config: ProbeConfig) -> None:
    """Where every walk ended: each transition's :class:`Excursion` (``errs`` ``(L, J)``, ``labs``
    the basins per step, ``ge`` the walks' gradient evaluations, ``start_basins`` per member)."""
    for j, t in enumerate(live):
        m = lengths[j]
        seq = [labs[s][j] for s in range(m)]
        end = seq[-1] if seq else t.basin_hi
        ret = float("nan")
        for s in range(m):
            if seq[s] != t.basin_hi and sched[s, j] < t.alpha_lo:
                ret = float(conventions.from_alpha(sched[s, j], config.convention))
                break
        t.excursion = Excursion(
            strengths=np.asarray(conventions.from_alpha(sched[:m, j], config.convention), np.float64).reshape(-1),
            errors=errs[:m, j], basins=seq, end_basin=end, start_basin=start_basins[t.member], pre_basin=t.basin_lo,
            returned=bool(end == t.basin_lo), return_strength=ret, grad_evals=float(ge[j]))


def _excursions(land, live: list[ProbeTransition], ref, seeds, config: ProbeConfig, rec: _Recorder, basins, strengths, alphas,
                progress) -> None:
    """Raise beta ``excursion_up`` grid steps past each jump, then walk back down to the grid's start."""
    sched, lengths = excursion_schedule(live, config, alphas)
    L, J = sched.shape
    if L == 0:
        return
    x = np.stack([t.x_hi for t in live])
    errs = np.zeros((L, J))
    labs: list[list] = []
    ge = np.zeros(J)
    for s in range(L):
        x, e, b, g = excursion_step(land, x, s, sched, lengths, live, ref, seeds, config, rec)
        ge += g
        errs[s] = e
        labs.append(b)
        if progress:
            progress("excursion", s + 1, L)
    excursion_finish(live, sched, lengths, errs, labs, ge, basins[0], config)
