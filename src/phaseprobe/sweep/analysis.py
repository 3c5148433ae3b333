"""Analysis of a sweep's records: transitions, their order, spinodals, Maxwell points, plateaus.

Definitions (all on the *final* record of every (branch, alpha, seed) training):

* **Usable record.** A final record that did not diverge: ``diverged`` is False and its
  ``stop_reason`` is not ``"not run (diverged earlier)"`` (a chain member's steps after its first
  divergence, see :mod:`phaseprobe.sweep.run`). Diverged and not-run records are excluded from
  every mean, from detection and from plateaus, and counted (``diverged``, ``not_run`` columns
  and the ``notes``). A grid point where no seed of a branch is usable is left out of that branch.
* **Partial runs.** Each branch is analysed on the strengths it has (an interrupted loop has a
  shorter down branch); the two branches of a loop are compared where both exist. Every such
  gap is a line of ``notes``.
* **Curve.** For a branch and an observable (test accuracy; or ||w||^2, analysed as
  ``log10(||w||^2 + floor)`` with the floor four decades below the run's largest ||w||^2), the
  seed-mean over the alpha grid, in the branch's direction of travel. The seed mean *locates*
  transitions; their order is judged per seed (below).
* **Within-phase spread** ``sigma``: 1.4826 x the median absolute deviation of a curve's
  consecutive differences (robust: transitions are rare steps).
* **Event.** A maximal run of consecutive steps moving the same way, each by more than
  ``max(2 sigma, min_jump / 5)``, whose total change exceeds ``max(min_jump, k sigma)``.
  ``alpha_c`` is the geometric midpoint of the seed mean's largest single step; ``alpha_kink``
  the strength where the event starts. ``jump_fraction`` = the seed mean's largest single step
  over its total change.
* **Interval** ``[alpha_lo, alpha_hi]``: always contains the grid cell of the largest step (the
  two grid points around ``alpha_c``). A bootstrap over seeds (resample seeds, recompute the
  mean curve, re-detect; a resample detects the transition when it has an event of the same
  sign overlapping the original event's window widened by one grid step, the largest such
  event if several) can only widen it: ``alpha_lo`` = min(cell's lower point, 2.5 % quantile of
  the resamples' cell lower points), ``alpha_hi`` likewise with the 97.5 % quantile of their upper
  points. ``detect_fraction``: the fraction of resamples that detect it (resamples that detect
  nothing are counted, never dropped). With one seed the interval is the cell and
  ``detect_fraction`` is NaN.
* **Per-seed order.** Each seed's own curve (its own ``sigma``) is searched for an event of the
  same sign overlapping the transition's window (widened by one grid step). The seed *jumps*
  when that event's largest single step is at least 0.6 of its total change (a discontinuity on
  the grid, larger than the seed's within-phase noise by construction of an event); it *ramps*
  when the event is spread over several steps; it shows *nothing* when it has no such event.
  For ||w||^2 the fraction is read on the linear scale (in log10 a continuously vanishing order
  parameter also ends in a steep drop); a jump by decades (log-scale fraction >= 0.6) inside a
  measured hysteresis loop counts as a jump. Columns: ``first_seeds`` (seeds that jump),
  ``continuous_seeds`` (seeds that ramp), ``n_seeds`` (seeds with usable data on both sides of
  the step), ``seed_jump_fraction`` (median of the seeds' fractions), ``order_seeds`` (e.g.
  "first in 3/3 seeds").
* **Order label** (``order``): when more than half of ``n_seeds`` jump, ``"first (loop)"`` if both
  branches (up and down) were measured and differ around it (hysteresis area over the loop
  larger than half a grid cell of ``min_jump``), ``"jump-no-loop"`` if both were measured and
  coincide, ``"first (jump)"`` if no loop was measured (a cold or one-way sweep); when more than
  half ramp, ``"continuous"``; otherwise ``"undetermined"``.
* **Seed agreement** ``seeds_agree``: the largest number of seeds whose jumps (the largest step of
  each seed's curve in the transition's direction, inside its window) lie within one grid step of
  each other -- no per-seed noise threshold.
* **Spinodals.** Where each branch of a loop jumps: the up branch's event (upper spinodal) and
  the down branch's opposite event nearest to it (lower spinodal; NaN when the down branch
  never comes back inside the grid).
* **Maxwell point.** One per transition, whatever the observable: where the seed-mean
  regularised losses ``L = E + alpha ||w||^2`` of the two branches cross (interpolated in log
  alpha), on the grid points where both branches exist. Only crossings between points where the
  losses differ significantly (``|L_up - L_down| > max(3 standard errors over seeds, 1e-3 x the
  typical |L|)``, at most two insignificant points between them) count; such points form
  *loop regions*, each with at most one Maxwell point (its most pronounced crossing), shared by
  every transition whose grid cell touches the region. Distinct from the spinodals; it does
  not depend on the optimiser's ability to escape.
* **Hysteresis area.** ``int |up - down| d(log10 alpha)`` over the loop (trapezoid, where both
  branches exist).
* **Refined strengths** (spec ``refine``, :mod:`phaseprobe.sweep.refine`): rows with
  ``refined = True`` lie strictly inside grid cells. Detection, ``sigma``, order, seed views, the
  bootstrap's cells, loop areas and notes use the spec's grid only; the refined points then
  narrow each cell: ``alpha_bracket_lo/hi`` = the two neighbouring measured points (grid or
  refined) inside the cell with the seed mean's largest step in the event's direction (each
  bootstrap resample's cell narrowed the same way), ``alpha_c`` their midpoint,
  ``refined_steps`` the refined strengths inside the cell. Maxwell crossings are read on every
  strength measured on both branches (refined ones included; gaps between significant points
  counted in grid points); ``maxwell_lo/hi`` = the strengths measured on both branches around it.
* **Plateaus.** The stretches between events; each has a level (mean accuracy over usable
  records), the classes it has learned (seed- and alpha-mean per-class test recall >= the
  spec's threshold AND precision >= max(threshold, 1/C + 0.1): a trivial model predicting one
  class everywhere has recall 1 on it and precision 1/C), the range of the per-record class
  counts (``n_classes_learned``, e.g. "9-10": integers, never a mean), and the diverged
  trainings in its stretch.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from functools import partial

import numpy as np
import pandas as pd

FIRST_LOOP = "first (loop)"  # jumps per seed, inside a measured hysteresis loop
FIRST_JUMP = "first (jump)"  # jumps per seed; no loop was measured (cold or one-way sweep)
JUMP_NO_LOOP = "jump-no-loop"  # jumps per seed; both branches measured and they coincide
CONTINUOUS = "continuous"  # spread over several grid steps in most seeds
UNDETERMINED = "undetermined"  # no majority of seeds either way
FIRST_ORDER = FIRST_LOOP  # first order shown by a hysteresis loop
NOT_RUN = "not run (diverged earlier)"  # stop_reason of a chain member's steps after its divergence


@dataclass
class Event:
    i0: int  # index (in travel order) of the first point of the event
    i1: int  # index of the last point
    i_max: int  # index of the left point of the largest step
    total: float
    max_step: float

    @property
    def jump_fraction(self) -> float:
        return abs(self.max_step) / max(abs(self.total), 1e-12)


def robust_sigma(y: np.ndarray) -> float:
    d = np.diff(np.asarray(y, dtype=float))
    d = d[np.isfinite(d)]
    if d.size < 3:
        return 0.0
    return float(1.4826 * np.median(np.abs(d - np.median(d))))


def detect_events(y: np.ndarray, min_jump: float = 0.05, k_sigma: float = 5.0, sigma: float | None = None) -> list[Event]:
    """Events (steps and ramps) along a curve given in travel order. See the module docstring."""
    y = np.asarray(y, dtype=float)
    if y.size < 2:
        return []
    d = np.diff(y)
    s = robust_sigma(y) if sigma is None else sigma
    step_thr = max(2.0 * s, min_jump / 5.0)
    total_thr = max(min_jump, k_sigma * s)
    events: list[Event] = []
    i = 0
    med = float(np.median(d[np.isfinite(d)])) if np.isfinite(d).any() else 0.0
    e_ = d - med  # steps in excess of the curve's steady trend (a smooth within-phase drift is no event)
    while i < d.size:
        if not np.isfinite(e_[i]) or abs(e_[i]) <= step_thr:
            i += 1
            continue
        sign = np.sign(e_[i])
        j = i
        while j + 1 < d.size and np.isfinite(e_[j + 1]) and np.sign(e_[j + 1]) == sign and abs(e_[j + 1]) > step_thr:
            j += 1
        seg = e_[i:j + 1]
        total = float(np.sum(d[i:j + 1]))
        if abs(float(np.sum(seg))) >= total_thr:
            k = i + int(np.argmax(np.abs(seg)))
            events.append(Event(i0=i, i1=j + 1, i_max=k, total=total, max_step=float(d[k])))
        i = j + 1
    return events


def _final(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["final"]] if "final" in df.columns else df


def excluded(df: pd.DataFrame) -> pd.Series:
    """Rows that are not usable: diverged, or not run because their chain member diverged earlier."""
    out = pd.Series(False, index=df.index)
    if "diverged" in df.columns:
        out |= df["diverged"].fillna(False).astype(bool)
    if "stop_reason" in df.columns:
        out |= df["stop_reason"].astype(str) == NOT_RUN
    return out


def _nanmean(a: np.ndarray, axis=0) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(a, axis=axis)


def branch_table(df: pd.DataFrame, branch: str, col: str, alphas: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(alphas ascending, values [seed, alpha], seeds) of one branch's final records.

    Diverged and not-run records are NaN. ``alphas`` (optional) reindexes the columns onto that
    grid (NaN where the branch has no record).
    """
    d = _final(df)
    d = d[d["branch"] == branch]
    v = d[col].astype(float).where(~excluded(d))
    piv = pd.DataFrame({"seed": d["seed"].to_numpy(), "alpha": d["alpha"].to_numpy(float), "v": v.to_numpy()})
    piv = piv.groupby(["seed", "alpha"])["v"].mean().unstack("alpha").sort_index(axis=1)
    if alphas is not None:
        piv = piv.reindex(columns=np.asarray(alphas, float))
    return piv.columns.to_numpy(float), piv.to_numpy(float), list(piv.index)


def _travel(branch: str) -> int:
    return -1 if branch == "down" else 1


def _alpha_mid(alphas: np.ndarray, i: int, j: int) -> float:
    a, b = alphas[i], alphas[j]
    if a > 0 and b > 0:
        return float(np.sqrt(a * b))
    return float(0.5 * (a + b))


def hysteresis_area(alphas: np.ndarray, up: np.ndarray, down: np.ndarray, lo: int = 0, hi: int | None = None) -> float:
    """``int |up - down| d(log10 alpha)`` between grid indices lo..hi (ascending alpha)."""
    hi = len(alphas) - 1 if hi is None else hi
    a = alphas[lo:hi + 1]
    g = np.abs(up[lo:hi + 1] - down[lo:hi + 1])
    if a.size < 2:
        return 0.0
    x = np.log10(np.where(a > 0, a, np.nan))
    ok = np.isfinite(x) & np.isfinite(g)
    if ok.sum() < 2:
        return 0.0
    x, g = x[ok], g[ok]
    return float(np.sum(0.5 * (g[1:] + g[:-1]) * np.diff(x)))


def crossing(alphas: np.ndarray, f: np.ndarray, lo: int, hi: int) -> float | None:
    """First sign change of ``f`` on [lo, hi], interpolated in log alpha."""
    for i in range(max(lo, 0), min(hi, len(alphas) - 1)):
        a, b = f[i], f[i + 1]
        if not (np.isfinite(a) and np.isfinite(b)):
            continue
        if a == 0:
            return float(alphas[i])
        if np.sign(a) != np.sign(b):
            t = a / (a - b)
            la, lb = np.log(alphas[i]), np.log(alphas[i + 1])
            return float(np.exp(la + t * (lb - la)))
    return None


@dataclass
class Transition:
    observable: str
    branch: str
    alpha_c: float
    alpha_lo: float  # interval: contains the grid cell of the largest step, widened by the seed bootstrap
    alpha_hi: float
    order: str  # FIRST_LOOP, FIRST_JUMP, JUMP_NO_LOOP, CONTINUOUS or UNDETERMINED
    jump: float
    jump_fraction: float  # of the seed-mean curve
    alpha_kink: float
    level_before: float
    level_after: float
    seeds_agree: int  # largest number of seeds whose jumps lie within one grid step of each other
    n_seeds: int = 0  # seeds with usable data on both sides of the step
    first_seeds: int = 0  # seeds whose own curve jumps (at one grid step)
    continuous_seeds: int = 0  # seeds whose own curve ramps over several steps
    order_seeds: str = ""  # e.g. "first in 3/3 seeds"
    seed_jump_fraction: float = float("nan")  # median over the seeds with an event
    detect_fraction: float = float("nan")  # fraction of seed-bootstrap resamples that detect it
    diverged: int = 0  # diverged trainings of this branch (excluded)
    not_run: int = 0  # trainings of this branch not run after a divergence (excluded)
    spinodal_up: float = float("nan")
    spinodal_down: float = float("nan")
    maxwell: float = float("nan")
    hysteresis_area: float = float("nan")
    alpha_bracket_lo: float = float("nan")  # the measured points around the largest step (grid or refined)
    alpha_bracket_hi: float = float("nan")
    refined_steps: int = 0  # refined strengths of this branch inside the grid cell of the step
    maxwell_lo: float = float("nan")  # the strengths measured on both branches around the Maxwell crossing
    maxwell_hi: float = float("nan")

    def as_dict(self) -> dict:
        return asdict(self)


def _events_for(alphas_asc: np.ndarray, mean_asc: np.ndarray, branch: str, min_jump: float, k_sigma: float,
                sigma: float | None = None):
    order = np.arange(len(alphas_asc))[:: _travel(branch)]
    ev = detect_events(mean_asc[order], min_jump, k_sigma, sigma)
    return order, ev


def _matching(ev: list[Event], sign: float, w0: int, w1: int) -> Event | None:
    """The largest event of ``sign`` overlapping the travel-order window [w0, w1]."""
    hits = [e for e in ev if np.sign(e.total) == sign and e.i0 <= w1 and e.i1 >= w0]
    return max(hits, key=lambda e: abs(e.total)) if hits else None


def _bootstrap(alphas, vals, order, sign, w0, w1, min_jump, k_sigma, n_boot, rng, narrow=None):
    """Cell bounds (lo, hi) of every resample that detects the event, and the number of resamples."""
    n_seeds = vals.shape[0]
    lows, highs = [], []
    if n_seeds < 2 or n_boot <= 0:
        return lows, highs, 0
    for _ in range(n_boot):
        pick = rng.integers(0, n_seeds, n_seeds)
        m = _nanmean(vals[pick])[order]
        e = _matching(detect_events(m, min_jump, k_sigma), sign, w0, w1)
        if e is None:
            continue
        a, b = sorted((alphas[order[e.i_max]], alphas[order[e.i_max + 1]]))
        if narrow is not None:
            a, b = narrow(pick, a, b)
        lows.append(a)
        highs.append(b)
    return lows, highs, n_boot


@dataclass
class _SeedView:
    kind: str  # "jump", "ramp", "none" or "" (no usable data around the step)
    pos: int | None  # travel-order position of the left point of the seed's largest step in the window
    jf: float = float("nan")  # jump fraction (linear scale for ||w||^2)
    jf_log: float = float("nan")  # jump fraction in the detection scale


def _seed_view(y, y_lin, sign, e: Event, w0, w1, min_jump, k_sigma) -> _SeedView:
    """One seed's curve (travel order, detection scale ``y`` and linear scale ``y_lin``) at event ``e``.

    Grid points where the seed has no usable record are skipped (its neighbours bracket the step).
    """
    ok = np.flatnonzero(np.isfinite(y))
    if not ((ok <= e.i_max) & (ok >= w0)).any() or not ((ok >= e.i_max + 1) & (ok <= w1)).any():
        return _SeedView("", None)
    # the seed's largest step in the event's direction inside the window
    inside = ok[(ok >= w0) & (ok <= w1)]
    steps = np.diff(y[inside]) * sign
    pos = int(inside[int(np.argmax(steps))]) if steps.size else None
    # the seed's own events (its own noise), on its usable points; positions mapped back to the grid
    own = detect_events(y[ok], min_jump, k_sigma)
    on_grid = [Event(int(ok[x.i0]), int(ok[x.i1]), int(ok[x.i_max]), x.total, x.max_step) for x in own]
    hit = _matching(on_grid, sign, w0, w1)
    if hit is None:
        return _SeedView("none", pos)
    if y_lin is y:
        jf = hit.jump_fraction
    else:
        seg = y_lin[ok[(ok >= hit.i0) & (ok <= hit.i1)]]
        jf = float(np.nanmax(np.abs(np.diff(seg))) / max(abs(seg[-1] - seg[0]), 1e-12)) if seg.size > 1 else 1.0
    return _SeedView("jump" if jf >= 0.6 else "ramp", pos, jf, hit.jump_fraction)


def _agree(positions: list[int]) -> int:
    """Largest number of positions within one grid step of each other."""
    if not positions:
        return 0
    p = np.asarray(positions)
    return int(max(np.sum((p >= k) & (p <= k + 1)) for k in np.unique(p)))


def _order_label(views: list[_SeedView], loop: bool | None, with_log_jumps: bool = False) -> tuple[str, int, int, int, str]:
    """(order, first_seeds, continuous_seeds, n_seeds, order_seeds). ``loop``: None = no loop measured."""
    have = [v for v in views if v.kind]
    kinds = [("jump" if (v.kind == "ramp" and with_log_jumps and loop and v.jf_log >= 0.6) else v.kind) for v in have]
    n = len(have)
    nj, nr = kinds.count("jump"), kinds.count("ramp")
    if n and 2 * nj > n:
        order = FIRST_JUMP if loop is None else (FIRST_LOOP if loop else JUMP_NO_LOOP)
        text = f"first in {nj}/{n} seeds"
    elif n and 2 * nr > n:
        order, text = CONTINUOUS, f"continuous in {nr}/{n} seeds"
    else:
        order = UNDETERMINED
        text = f"{nj} jump, {nr} ramp, {n - nj - nr} none of {n} seeds"
    return order, nj, nr, n, text


def _loss_regions(alphas, l_up, l_dn, on_grid=None):
    """Loop regions of the regularised-loss difference and each region's Maxwell crossing.

    ``on_grid`` (optional) marks the spec's grid points: gaps between significant points are
    counted in grid points (refined strengths cluster at the crossing). Returns
    ``[(first_index, last_index, maxwell_alpha or nan)]`` on the ascending strengths given.
    """
    gcount = np.cumsum(np.ones(len(alphas), int) if on_grid is None else np.asarray(on_grid, int))
    mu, md = _nanmean(l_up), _nanmean(l_dn)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        nu, nd = np.sum(np.isfinite(l_up), axis=0), np.sum(np.isfinite(l_dn), axis=0)
        vu = np.where(nu > 1, np.nanvar(l_up, axis=0, ddof=1) / np.maximum(nu, 1), 0.0)
        vd = np.where(nd > 1, np.nanvar(l_dn, axis=0, ddof=1) / np.maximum(nd, 1), 0.0)
    dl = mu - md
    both = np.isfinite(dl)
    if not both.any():
        return []
    scale = float(np.nanmedian(np.abs(np.r_[mu[both], md[both]])))
    thr = np.maximum(3.0 * np.sqrt(vu + vd), 1e-3 * max(scale, 1e-12))
    sig = np.flatnonzero(both & (np.abs(dl) > thr))
    regions, cur = [], []
    for i in sig:
        if cur and (gcount[i - 1] - gcount[cur[-1]] > 2 or not both[cur[-1]:i + 1].all()):
            regions.append(cur)
            cur = []
        cur.append(int(i))
    if cur:
        regions.append(cur)
    out = []
    for r in regions:
        best, best_size = float("nan"), -1.0
        for p, q in zip(r[:-1], r[1:]):
            if np.sign(dl[p]) != np.sign(dl[q]):
                m = crossing(alphas, dl, p, q)
                size = abs(dl[q] - dl[p])
                if m is not None and size > best_size:
                    best, best_size = m, size
        out.append((r[0], r[-1], best))
    return out


def _branch_notes(df: pd.DataFrame, branches: list[str], grid: np.ndarray) -> list[str]:
    d = _final(df)
    notes = []
    n_grid = len(grid)
    for b in branches:
        sub = d[d["branch"] == b]
        bad = excluded(sub)
        n_div, n_nr = _counts(df, b)
        n_alpha = sub.loc[~is_refined(sub), "alpha"].nunique()  # grid strengths (refined ones are extra)
        if n_alpha < n_grid:
            notes.append(f"{b} branch: {n_alpha} of {n_grid} strengths finished; analysed on what exists")
        per_a = sub.groupby("alpha")["seed"].nunique()
        n_seeds = sub["seed"].nunique()
        short = int((per_a < n_seeds).sum())
        if short:
            notes.append(f"{b} branch: {short} strength(s) have fewer than {n_seeds} seeds finished")
        if n_div or n_nr:
            txt = f"{b} branch: {n_div} diverged"
            if n_nr:
                txt += f", {n_nr} not run after a divergence"
            notes.append(txt + f" of {len(sub)} trainings (excluded from means, detection and plateaus)")
        usable = sub[~bad].groupby("alpha").size().reindex(sorted(sub["alpha"].unique()), fill_value=0)
        gone = int((usable == 0).sum())
        if gone:
            notes.append(f"{b} branch: {gone} strength(s) with no usable seed left out")
    return notes


def is_refined(df: pd.DataFrame) -> pd.Series:
    """Rows written by a refinement (:mod:`phaseprobe.sweep.refine`): strengths not on the spec's grid."""
    if "refined" not in df.columns:
        return pd.Series(False, index=df.index)
    return df["refined"].fillna(False).astype(bool)


def _refined_inside(rows: pd.DataFrame, a_lo: float, a_hi: float) -> int:
    """Refined strengths among ``rows`` strictly inside ``(a_lo, a_hi)``."""
    a = rows["alpha"].astype(float)
    return int(a[(a > a_lo) & (a < a_hi)].nunique())


def _narrow(alphas: np.ndarray, mean: np.ndarray, a_lo: float, a_hi: float, sign: float, travel: int) -> tuple[float, float]:
    """The two neighbouring measured strengths in ``[a_lo, a_hi]`` with the largest step of ``mean``
    in direction ``sign`` along the direction of travel (the cell itself when nothing lies inside)."""
    inside = np.flatnonzero((alphas >= a_lo) & (alphas <= a_hi) & np.isfinite(mean))
    if inside.size < 3:
        return float(a_lo), float(a_hi)
    steps = np.diff(mean[inside]) * sign * travel
    k = int(np.argmax(steps))
    return float(alphas[inside[k]]), float(alphas[inside[k + 1]])


def _narrow_rows(alphas: np.ndarray, table: np.ndarray, sign: float, travel: int, pick, a_lo: float, a_hi: float):
    """:func:`_narrow` on the seed mean of ``table`` (rows ``pick`` of it, all when None)."""
    return _narrow(alphas, _nanmean(table if pick is None else table[pick]), a_lo, a_hi, sign, travel)


def _counts(df: pd.DataFrame, branch: str) -> tuple[int, int]:
    d = _final(df)
    sub = d[d["branch"] == branch]
    nr = (sub["stop_reason"].astype(str) == NOT_RUN) if "stop_reason" in sub.columns else pd.Series(False, index=sub.index)
    div = sub["diverged"].fillna(False).astype(bool) if "diverged" in sub.columns else pd.Series(False, index=sub.index)
    return int((div & ~nr).sum()), int(nr.sum())


def find_transitions(
    df: pd.DataFrame,
    observable: str = "test_acc",
    min_jump: float | None = None,
    k_sigma: float = 5.0,
    n_boot: int = 200,
    seed: int = 0,
    notes: list[str] | None = None,
) -> list[Transition]:
    """Transitions of ``observable`` ("test_acc", "train_acc" or "w_sq") on every branch present.

    **Arguments:**

    - `df`: a sweep's records (the store's frame; only final records are read).
    - `observable`: the column to analyse. ``w_sq`` is analysed as ``log10(||w||^2 + floor)`` (jumps
      and levels in decades; default ``min_jump`` 0.5 decade); accuracies in absolute units
      (default ``min_jump`` 0.05).
    - `k_sigma`: an event's total change must exceed ``k_sigma`` within-phase spreads.
    - `n_boot`: seed-bootstrap resamples for the interval and ``detect_fraction``.
    - `seed`: the bootstrap's random seed.
    - `notes`: a list to which lines about partial branches and diverged members are appended.

    **Returns:** a list of :class:`Transition`, definitions in the module docstring. For a loop run
    each up-branch transition is paired with the nearest opposite down-branch event (spinodals,
    hysteresis area); Maxwell points come from the regularised losses, one per loop region.
    """
    rng = np.random.default_rng(seed)
    fin = _final(df)
    branches = [b for b in ("cold", "up", "down") if b in set(fin["branch"])]
    if not branches:
        return []
    if min_jump is None:
        min_jump = 0.5 if observable == "w_sq" else 0.05
    grid_all = np.sort(fin["alpha"].astype(float).unique())
    refined = is_refined(fin)
    grid = np.sort(fin.loc[~refined, "alpha"].astype(float).unique())  # the spec's grid (refined strengths left out)
    gcols = np.isin(grid_all, grid)
    if notes is not None:
        notes.extend(n for n in _branch_notes(df, branches, grid) if n not in notes)
    raw_all = {b: branch_table(df, b, observable, grid_all)[1] for b in branches}
    raw = {b: v[:, gcols] for b, v in raw_all.items()}
    tables, tables_all = raw, raw_all
    if observable == "w_sq":  # ||w||^2 spans decades (the trivial phase is ~0): detect in log10
        # floored four decades below the largest usable ||w||^2 of the run: the optimiser's jitter
        # around w = 0 (factors of a few, 1e-6 to 1e-4 of the learned ||w||^2 with Adam) is no transition
        top = max([float(np.nanmax(v)) for v in raw.values() if np.isfinite(v).any()] + [0.0])
        floor = max(1e-4 * top, 1e-12)
        tables = {b: np.log10(np.maximum(v, 0) + floor) for b, v in raw.items()}
        tables_all = {b: np.log10(np.maximum(v, 0) + floor) for b, v in raw_all.items()}
    loop_run = "up" in branches and "down" in branches
    found: list[Transition] = []
    views: dict[int, list[_SeedView]] = {}
    cells: dict[int, tuple[int, int]] = {}  # ascending grid indices of each transition's cell
    events: dict[int, tuple[Event, np.ndarray]] = {}
    for b in branches:
        vals_full = tables[b]
        keep = np.isfinite(vals_full).any(axis=0)  # grid points with a usable seed on this branch
        alphas, vals, lin = grid[keep], vals_full[:, keep], raw[b][:, keep]
        idx_full = np.flatnonzero(keep)
        if alphas.size < 2:
            continue
        mean = _nanmean(vals)
        order, ev = _events_for(alphas, mean, b, min_jump, k_sigma)
        n_div, n_nr = _counts(df, b)
        for e in ev:
            i, j = order[e.i_max], order[e.i_max + 1]
            sign = float(np.sign(e.total))
            w0, w1 = max(e.i0 - 1, 0), min(e.i1 + 1, len(order) - 1)
            cell_lo, cell_hi = sorted((float(alphas[i]), float(alphas[j])))
            # refined strengths narrow the cell (grid detection unchanged); a resample's cell likewise
            narrow = (partial(_narrow_rows, grid_all, tables_all[b], sign, _travel(b)) if refined.any() else None)
            b_lo, b_hi = narrow(None, cell_lo, cell_hi) if narrow is not None else (cell_lo, cell_hi)
            lows, highs, nb = _bootstrap(alphas, vals, order, sign, w0, w1, min_jump, k_sigma, n_boot, rng, narrow)
            lo = min([b_lo] + ([float(np.percentile(lows, 2.5))] if lows else []))
            hi = max([b_hi] + ([float(np.percentile(highs, 97.5))] if highs else []))
            sv = []
            for s in range(vals.shape[0]):
                y = vals[s][order]  # detection scale; ||w||^2's order is read on the linear scale
                sv.append(_seed_view(y, lin[s][order] if observable == "w_sq" else y, sign, e, w0, w1, min_jump, k_sigma))
            seq = mean[order]
            before = float(np.nanmean(seq[max(0, e.i0 - 2): e.i0 + 1]))
            after = float(np.nanmean(seq[e.i1: e.i1 + 3]))
            jf = e.jump_fraction
            if observable == "w_sq":
                # the seed mean's order-parameter fraction on the linear scale (see the module docstring)
                linm = _nanmean(lin)[order][e.i0:e.i1 + 1]
                jf = float(np.nanmax(np.abs(np.diff(linm))) / max(abs(linm[-1] - linm[0]), 1e-12))
            order_kind, nj, nr, ns, text = _order_label(sv, None if not loop_run else True)
            fracs = [v.jf for v in sv if np.isfinite(v.jf)]
            t = Transition(
                observable=observable, branch=b, alpha_c=_alpha_mid(np.asarray([b_lo, b_hi]), 0, 1), alpha_lo=lo, alpha_hi=hi,
                alpha_bracket_lo=b_lo, alpha_bracket_hi=b_hi,
                refined_steps=_refined_inside(fin[refined & (fin["branch"] == b)], cell_lo, cell_hi),
                order=order_kind, jump=float(e.total), jump_fraction=jf, alpha_kink=float(alphas[order[e.i0]]),
                level_before=before, level_after=after,
                seeds_agree=_agree([v.pos for v in sv if v.kind and v.pos is not None]),
                n_seeds=ns, first_seeds=nj, continuous_seeds=nr, order_seeds=text,
                seed_jump_fraction=float(np.median(fracs)) if fracs else float("nan"),
                detect_fraction=(len(lows) / nb) if nb else float("nan"), diverged=n_div, not_run=n_nr,
            )
            views[id(t)] = sv
            cells[id(t)] = (int(idx_full[min(i, j)]), int(idx_full[max(i, j)]))
            events[id(t)] = (e, order)
            found.append(t)
    if not loop_run:
        return found
    # ---- a loop: spinodals, hysteresis area, loop-aware order, Maxwell points ----------------
    up_m, dn_m = _nanmean(tables["up"]), _nanmean(tables["down"])
    lu_all, ld_all = branch_table(df, "up", "loss", grid_all)[1], branch_table(df, "down", "loss", grid_all)[1]
    both_all = np.isfinite(_nanmean(lu_all)) & np.isfinite(_nanmean(ld_all))
    cols = gcols | both_all  # the grid, and refined strengths measured on both branches
    g_cols = grid_all[cols]
    both_alphas = grid_all[both_all]
    regions = [(int(np.searchsorted(grid, g_cols[r0], "right") - 1), int(np.searchsorted(grid, g_cols[r1], "right") - 1), m)
               for r0, r1, m in _loss_regions(g_cols, lu_all[:, cols], ld_all[:, cols], gcols[cols])]
    dlog = float(np.median(np.diff(np.log10(grid[grid > 0])))) if np.sum(grid > 0) > 1 else 1.0
    loop_thr = 0.5 * min_jump * dlog
    downs = [t for t in found if t.branch == "down"]
    paired: set[int] = set()

    def area_between(a_lo, a_hi):
        lo_i = max(int(np.searchsorted(grid, a_lo) - 1), 0)
        hi_i = min(int(np.searchsorted(grid, a_hi)), len(grid) - 1)
        return hysteresis_area(grid, up_m, dn_m, lo_i, hi_i)

    def maxwell_of(t):
        c0, c1 = cells[id(t)]
        found_m = [m for r0, r1, m in regions if c1 >= r0 and c0 <= r1 + 1 and np.isfinite(m)]
        m = found_m[0] if found_m else float("nan")
        if np.isfinite(m):  # the strengths measured on both branches around the crossing
            t.maxwell_lo = float(both_alphas[both_alphas <= m].max()) if (both_alphas <= m).any() else float("nan")
            t.maxwell_hi = float(both_alphas[both_alphas >= m].min()) if (both_alphas >= m).any() else float("nan")
        return m

    def relabel(t, loop):
        t.order, t.first_seeds, t.continuous_seeds, t.n_seeds, t.order_seeds = _order_label(
            views[id(t)], loop, with_log_jumps=observable == "w_sq")

    for t in found:
        if t.branch != "up":
            continue
        cands = [d for d in downs if np.sign(d.jump) == -np.sign(t.jump)]
        t.spinodal_up = t.alpha_c
        d = min(cands, key=lambda d: abs(np.log(d.alpha_c) - np.log(t.alpha_c))) if cands else None
        if d is not None:
            t.spinodal_down = d.alpha_c
            area = area_between(*sorted([t.alpha_c, d.alpha_c]))
        else:
            # the down branch never comes back inside the grid: the lower spinodal lies below the
            # grid's start (spinodal_down stays NaN); the loop spans the grid up to the upper spinodal
            area = area_between(float(grid[0]), t.alpha_c)
        t.hysteresis_area = area
        t.maxwell = maxwell_of(t)
        loop = area > loop_thr
        relabel(t, loop)
        if d is not None:
            paired.add(id(d))
            d.hysteresis_area, d.spinodal_up, d.spinodal_down = area, t.alpha_c, d.alpha_c
            d.maxwell = t.maxwell if np.isfinite(t.maxwell) else maxwell_of(d)
            relabel(d, loop)
    for d in downs:
        if id(d) in paired:
            continue
        c0, c1 = cells[id(d)]
        area = hysteresis_area(grid, up_m, dn_m, max(c0 - 1, 0), min(c1 + 1, len(grid) - 1))
        d.hysteresis_area = area
        d.spinodal_down = d.alpha_c
        d.maxwell = maxwell_of(d)
        relabel(d, area > loop_thr)
    return found


def transitions_frame(transitions: list[Transition]) -> pd.DataFrame:
    return pd.DataFrame([t.as_dict() for t in transitions])


@dataclass
class Plateau:
    branch: str
    alpha_from: float
    alpha_to: float
    level: float
    classes: list = field(default_factory=list)
    n_classes_learned: str = ""  # range of the per-record counts, e.g. "9-10" (integers, never a mean)
    n_seeds: int = 0
    diverged: int = 0  # diverged or not-run trainings in the plateau's stretch (excluded)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["classes"] = ",".join(str(c) for c in self.classes)
        return d


def _int_range(v: pd.Series) -> str:
    v = v.dropna()
    if v.empty:
        return ""
    lo, hi = int(v.min()), int(v.max())
    return str(lo) if lo == hi else f"{lo}-{hi}"


def plateaus(df: pd.DataFrame, transitions: list[Transition], branch: str | None = None,
             learned: float = 0.5, class_names: list | None = None) -> list[Plateau]:
    """Accuracy plateaus of one branch (default: cold, else up) between its test-accuracy events.

    **Returns:** a list of :class:`Plateau` (usable records only; diverged ones counted).
    """
    d = _final(df)
    present = set(d["branch"])
    if branch is None:
        branch = "cold" if "cold" in present else ("up" if "up" in present else "down")
    grid, vals, _ = branch_table(df, branch, "test_acc")
    has = np.isfinite(vals).any(axis=0)
    cuts = sorted(t.alpha_c for t in transitions if t.branch == branch and t.observable == "test_acc")
    edges = [grid[0]] + cuts + [grid[-1]]
    cls_cols = sorted((c for c in d.columns if c.startswith("class_acc_")), key=lambda c: int(c.split("_")[-1]))
    sub = d[d["branch"] == branch]
    bad = excluded(sub)
    ok_rows = sub[~bad]
    out = []
    for a0, a1 in zip(edges[:-1], edges[1:]):
        span = (grid >= a0) & (grid <= a1)
        if a0 != edges[0]:
            span &= grid > a0
        inside = span & has
        if not inside.any():
            continue
        lvl = float(np.nanmean(vals[:, inside]))
        lo_a, hi_a = grid[inside].min(), grid[inside].max()
        rows = ok_rows[(ok_rows["alpha"] >= lo_a) & (ok_rows["alpha"] <= hi_a)]
        ca = rows[cls_cols].mean().to_numpy() if cls_cols else np.array([])
        prec_cols = [c.replace("class_acc_", "class_prec_") for c in cls_cols]
        cp = rows[prec_cols].mean().to_numpy() if cls_cols and all(c in rows for c in prec_cols) else np.ones_like(ca)
        p_min = max(learned, 1.0 / max(len(cls_cols), 1) + 0.1)  # precision above chance, see run._rows
        learned_ids = [int(c.split("_")[-1]) for c, v, p in zip(cls_cols, ca, cp) if v >= learned and p >= p_min]
        if class_names is not None:
            learned_ids = [class_names[i] for i in learned_ids]
        span_a = grid[span]
        in_span = (sub["alpha"] >= span_a.min()) & (sub["alpha"] <= span_a.max())
        out.append(Plateau(
            branch, float(lo_a), float(hi_a), lvl, learned_ids,
            n_classes_learned=_int_range(rows["n_classes_learned"]) if "n_classes_learned" in rows else "",
            n_seeds=int(rows["seed"].nunique()), diverged=int((bad & in_span).sum()),
        ))
    return out


def analyze(df: pd.DataFrame, learned: float = 0.5, class_names: list | None = None, n_boot: int = 200) -> dict:
    """Everything the report shows: transitions of test accuracy and of ||w||^2, plateaus, notes.

    **Returns:** ``{"transitions": [...], "plateaus": [...], "notes": [lines]}``; the notes say
    which branches are partial and how many trainings diverged or were not run.
    """
    notes: list[str] = []
    tr_acc = find_transitions(df, "test_acc", n_boot=n_boot, notes=notes) if "test_acc" in df.columns else []
    tr_w = find_transitions(df, "w_sq", n_boot=n_boot, notes=notes)
    pl = plateaus(df, tr_acc, learned=learned, class_names=class_names) if "test_acc" in df.columns else []
    return {"transitions": tr_acc + tr_w, "plateaus": pl, "notes": notes}
