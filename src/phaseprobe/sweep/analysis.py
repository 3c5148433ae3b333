"""Analysis of a sweep's records: transitions, their order, spinodals, Maxwell points, plateaus.

Definitions (all on the *final* record of every (branch, alpha, seed) training):

* **Curve.** For a branch and an observable (test accuracy, or ||w||^2 scaled to [0, 1] by its
  largest value), the seed-mean over the alpha grid, in the branch's direction of travel.
* **Within-phase spread** ``sigma``: 1.4826 x the median absolute deviation of the curve's
  consecutive differences (robust: transitions are rare steps).
* **Event.** A maximal run of consecutive steps moving the same way, each by more than
  ``max(2 sigma, min_jump / 5)``, whose total change exceeds ``max(min_jump, k sigma)``.
  ``alpha_c`` is the geometric midpoint of the event's largest single step.
* **Order.** ``jump_fraction`` = largest single step / total change. An event is *first order*
  when ``jump_fraction >= 0.6`` (a discontinuity on the grid) and, if a down branch exists,
  the hysteresis area over the event's window is positive (more than half a grid cell of
  ``min_jump``; a jump whose branches coincide is labelled ``jump-no-loop``); otherwise
  *continuous* (spread over several grid steps: a kink where it starts, ``alpha_kink``).
  ``||w||^2`` is detected in log10 (floored four decades below its largest value) but its jump
  fraction is read on the linear scale (in log10 an order parameter that vanishes continuously
  also ends in a steep drop); a jump by decades (log-scale fraction >= 0.6) inside a hysteresis
  loop of positive area is first order as well (the coexisting branches are the discontinuity).
* **Spinodals.** Where each branch of a loop jumps: the up branch's event (upper spinodal) and
  the down branch's opposite event nearest to it (lower spinodal).
* **Maxwell point.** Where the two branches' regularised losses ``L = E + alpha ||w||^2`` cross
  between the spinodals (interpolated in log alpha): which phase is the global minimum.
  Distinct from the spinodals; it does not depend on the optimiser's ability to escape.
* **Hysteresis area.** ``int |acc_up - acc_down| d(log10 alpha)`` over the grid (trapezoid).
* **Interval.** A bootstrap over seeds (resample seeds, recompute the mean curve, re-detect,
  take the event nearest the original): the 2.5-97.5 % range of ``alpha_c``.
* **Plateaus.** The stretches between events; each has a level (mean accuracy) and the classes
  it has learned: seed- and alpha-mean per-class test recall >= the spec's threshold AND
  precision >= max(threshold, 1/C + 0.1) (a trivial model predicting one class everywhere has
  recall 1 on it and precision 1/C -- 0.5 with two classes).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

FIRST_ORDER, CONTINUOUS, JUMP_NO_LOOP = "first", "continuous", "jump-no-loop"


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


def branch_table(df: pd.DataFrame, branch: str, col: str) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(alphas ascending, values [seed, alpha], seeds) of one branch's final records."""
    d = _final(df)
    d = d[d["branch"] == branch]
    piv = d.pivot_table(index="seed", columns="alpha", values=col, aggfunc="mean").sort_index(axis=1)
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
    alpha_lo: float
    alpha_hi: float
    order: str
    jump: float
    jump_fraction: float
    alpha_kink: float
    level_before: float
    level_after: float
    seeds_agree: float  # fraction of seeds whose own curve has an event within one grid step
    spinodal_up: float = float("nan")
    spinodal_down: float = float("nan")
    maxwell: float = float("nan")
    hysteresis_area: float = float("nan")

    def as_dict(self) -> dict:
        return asdict(self)


def _events_for(alphas_asc: np.ndarray, mean_asc: np.ndarray, branch: str, min_jump: float, k_sigma: float,
                sigma: float | None = None):
    order = np.arange(len(alphas_asc))[:: _travel(branch)]
    ev = detect_events(mean_asc[order], min_jump, k_sigma, sigma)
    return order, ev


def _bootstrap(alphas, vals, branch, ref_alpha, min_jump, k_sigma, n_boot, rng, sigma=None):
    n_seeds = vals.shape[0]
    if n_seeds < 2:
        return float("nan"), float("nan")
    out = []
    for _ in range(n_boot):
        pick = rng.integers(0, n_seeds, n_seeds)
        m = np.nanmean(vals[pick], axis=0)
        order, ev = _events_for(alphas, m, branch, min_jump, k_sigma, sigma)
        if not ev:
            continue
        cs = [_alpha_mid(alphas, order[e.i_max], order[e.i_max + 1]) for e in ev]
        out.append(min(cs, key=lambda c: abs(np.log(c) - np.log(ref_alpha)) if c > 0 and ref_alpha > 0 else abs(c - ref_alpha)))
    if not out:
        return float("nan"), float("nan")
    return float(np.percentile(out, 2.5)), float(np.percentile(out, 97.5))


def find_transitions(
    df: pd.DataFrame,
    observable: str = "test_acc",
    min_jump: float | None = None,
    k_sigma: float = 5.0,
    n_boot: int = 200,
    seed: int = 0,
) -> list[Transition]:
    """Transitions of ``observable`` ("test_acc", "train_acc" or "w_sq") on every branch present.

    ``w_sq`` is analysed as ``log10(||w||^2 + 1e-6)`` (jumps and levels in decades; default
    ``min_jump`` 0.5 decade); accuracies in absolute units (default ``min_jump`` 0.05).

    For a loop run, each up-branch transition is paired with the nearest opposite down-branch
    event: spinodals, Maxwell point and hysteresis area are filled in, and the order uses them.
    """
    rng = np.random.default_rng(seed)
    branches = [b for b in ("cold", "up", "down") if b in set(_final(df)["branch"])]
    col = observable
    scale = 1.0
    if min_jump is None:
        min_jump = 0.5 if observable == "w_sq" else 0.05
    tables = {b: branch_table(df, b, col) for b in branches}
    raw_tables = tables
    if observable == "w_sq":  # ||w||^2 spans decades (the trivial phase is ~0): detect in log10
        # floored four decades below the largest ||w||^2 of the run: the optimiser's jitter around
        # w = 0 (factors of a few, 1e-6 to 1e-4 of the learned ||w||^2 with Adam) is not a transition
        top = max([float(np.nanmax(v)) for _, v, _ in tables.values() if np.isfinite(v).any()] + [0.0])
        floor = max(1e-4 * top, 1e-12)
        tables = {b: (a, np.log10(np.maximum(v, 0) + floor), s) for b, (a, v, s) in tables.items()}
    loss_tables = {b: branch_table(df, b, "loss") for b in branches}
    found: list[Transition] = []
    per_branch_events: dict[str, list[tuple[float, Event, np.ndarray]]] = {}
    log_jump_fraction: dict[int, float] = {}
    # one noise scale for all seeds' curves of a branch (seed-mean curves are smoother)
    for b in branches:
        alphas, vals, seeds = tables[b]
        vals = vals / scale
        mean = np.nanmean(vals, axis=0)
        order, ev = _events_for(alphas, mean, b, min_jump, k_sigma)
        per_branch_events[b] = []
        for e in ev:
            i, j = order[e.i_max], order[e.i_max + 1]
            ac = _alpha_mid(alphas, i, j)
            kink = float(alphas[order[e.i0]])
            lo, hi = _bootstrap(alphas, vals, b, ac, min_jump, k_sigma, n_boot, rng)
            # seeds agreeing: their own curve has an event of the same sign whose largest step is within one grid step
            agree = 0
            for s in range(vals.shape[0]):
                o2, ev2 = _events_for(alphas, vals[s], b, min_jump, k_sigma)
                if any(np.sign(x.total) == np.sign(e.total) and abs(o2[x.i_max] - i) <= 1 for x in ev2):
                    agree += 1
            seq = mean[order]
            before = float(np.nanmean(seq[max(0, e.i0 - 2): e.i0 + 1]))
            after = float(np.nanmean(seq[e.i1: e.i1 + 3]))
            jf = e.jump_fraction
            if observable == "w_sq":
                # log10 makes every approach to ||w||^2 = 0 look steep (a continuous order parameter
                # vanishing at alpha_c has log -> -inf): the order is read on the linear scale, as the
                # largest linear step over the event's linear change (a loop can still make a log-scale
                # jump first order below)
                lin = np.nanmean(raw_tables[b][1], axis=0)[order][e.i0:e.i1 + 1]
                jf = float(np.nanmax(np.abs(np.diff(lin))) / max(abs(lin[-1] - lin[0]), 1e-12))
            order_kind = FIRST_ORDER if jf >= 0.6 else CONTINUOUS
            t = Transition(
                observable=observable, branch=b, alpha_c=ac, alpha_lo=lo, alpha_hi=hi, order=order_kind,
                jump=float(e.total * scale), jump_fraction=jf, alpha_kink=kink,
                level_before=before * scale, level_after=after * scale, seeds_agree=agree / max(vals.shape[0], 1),
            )
            per_branch_events[b].append((ac, e, order))
            log_jump_fraction[id(t)] = e.jump_fraction
            found.append(t)
    # pair up with down for loops
    if "up" in tables and "down" in tables:
        alphas, up_vals, _ = tables["up"]
        _, dn_vals, _ = tables["down"]
        up_m = np.nanmean(up_vals, axis=0)
        dn_m = np.nanmean(dn_vals, axis=0)
        _, l_up, _ = loss_tables["up"]
        _, l_dn, _ = loss_tables["down"]
        dl = np.nanmean(l_up, axis=0) - np.nanmean(l_dn, axis=0)
        downs = [t for t in found if t.branch == "down"]
        for t in found:
            if t.branch != "up":
                continue
            d = None
            cands = [d for d in downs if np.sign(d.jump) == -np.sign(t.jump)]
            t.spinodal_up = t.alpha_c
            if cands:
                d = min(cands, key=lambda d: abs(np.log(d.alpha_c) - np.log(t.alpha_c)))
                t.spinodal_down = d.alpha_c
                a_lo, a_hi = sorted([t.alpha_c, d.alpha_c])
            else:
                # the down branch never comes back inside the grid: the lower spinodal lies below
                # the grid's start (spinodal_down stays NaN); the loop spans the grid up to the upper
                # spinodal, whichever way the observable moves (the down branch always returns lower)
                d = None
                a_lo, a_hi = float(alphas[0]), t.alpha_c
            lo_i = int(np.searchsorted(alphas, a_lo) - 1)
            hi_i = int(np.searchsorted(alphas, a_hi))
            lo_i, hi_i = max(lo_i, 0), min(hi_i, len(alphas) - 1)
            area = hysteresis_area(alphas, up_m, dn_m, lo_i, hi_i) * scale
            t.hysteresis_area = area
            # the Maxwell point is sought only where the two branches are in different phases, strictly
            # between the spinodals (outside, both sit in one phase and their loss difference is noise)
            c_lo = int(np.searchsorted(alphas, a_lo)) if d is not None else 0
            c_hi = int(np.searchsorted(alphas, a_hi)) - 1
            m = crossing(alphas, dl, c_lo, c_hi) if c_hi > c_lo else None
            t.maxwell = float("nan") if m is None else m
            if d is not None:
                d.hysteresis_area = area
                d.spinodal_up, d.spinodal_down = t.alpha_c, d.alpha_c
                d.maxwell = t.maxwell
            dlog = float(np.median(np.diff(np.log10(alphas[alphas > 0])))) if np.sum(alphas > 0) > 1 else 1.0
            loop = area > 0.5 * min_jump * scale * dlog
            if observable == "w_sq" and t.order == CONTINUOUS and loop and log_jump_fraction[id(t)] >= 0.6:
                # a jump by decades with a hysteresis loop around it: the branches coexist, first order
                # (on the linear scale the learned phase's own steep decline can hide the jump)
                t.order = FIRST_ORDER
                if d is not None and d.order == CONTINUOUS and log_jump_fraction[id(d)] >= 0.6:
                    d.order = FIRST_ORDER
            if t.order == FIRST_ORDER and not loop:
                t.order = JUMP_NO_LOOP  # a discontinuity on the grid, but the branches agree
    return found


def transitions_frame(transitions: list[Transition]) -> pd.DataFrame:
    return pd.DataFrame([t.as_dict() for t in transitions])


@dataclass
class Plateau:
    branch: str
    alpha_from: float
    alpha_to: float
    level: float
    classes: list[int] = field(default_factory=list)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["classes"] = ",".join(str(c) for c in self.classes)
        return d


def plateaus(df: pd.DataFrame, transitions: list[Transition], branch: str | None = None,
             learned: float = 0.5, class_names: list | None = None) -> list[Plateau]:
    """Accuracy plateaus of one branch (default: cold, else up) between its test-accuracy events."""
    d = _final(df)
    present = set(d["branch"])
    if branch is None:
        branch = "cold" if "cold" in present else ("up" if "up" in present else "down")
    alphas, vals, _ = branch_table(df, branch, "test_acc")
    cuts = sorted(t.alpha_c for t in transitions if t.branch == branch and t.observable == "test_acc")
    edges = [alphas[0]] + cuts + [alphas[-1]]
    cls_cols = sorted((c for c in d.columns if c.startswith("class_acc_")), key=lambda c: int(c.split("_")[-1]))
    sub = d[d["branch"] == branch]
    out = []
    for a0, a1 in zip(edges[:-1], edges[1:]):
        inside = (alphas >= a0) & (alphas <= a1)
        if a0 != edges[0]:
            inside &= alphas > a0
        if not inside.any():
            continue
        lvl = float(np.nanmean(vals[:, inside]))
        rows = sub[(sub["alpha"] >= alphas[inside].min()) & (sub["alpha"] <= alphas[inside].max())]
        ca = rows[cls_cols].mean().to_numpy() if cls_cols else np.array([])
        prec_cols = [c.replace("class_acc_", "class_prec_") for c in cls_cols]
        cp = rows[prec_cols].mean().to_numpy() if cls_cols and all(c in rows for c in prec_cols) else np.ones_like(ca)
        p_min = max(learned, 1.0 / max(len(cls_cols), 1) + 0.1)  # precision above chance, see run._rows
        learned_ids = [int(c.split("_")[-1]) for c, v, p in zip(cls_cols, ca, cp) if v >= learned and p >= p_min]
        if class_names is not None:
            learned_ids = [class_names[i] for i in learned_ids]
        out.append(Plateau(branch, float(alphas[inside].min()), float(alphas[inside].max()), lvl, learned_ids))
    return out


def analyze(df: pd.DataFrame, learned: float = 0.5, class_names: list | None = None, n_boot: int = 200) -> dict:
    """Everything the report shows: transitions of test accuracy and of ||w||^2, plateaus."""
    tr_acc = find_transitions(df, "test_acc", n_boot=n_boot) if "test_acc" in df.columns else []
    tr_w = find_transitions(df, "w_sq", n_boot=n_boot)
    pl = plateaus(df, tr_acc, learned=learned, class_names=class_names) if tr_acc or "test_acc" in df.columns else []
    return {"transitions": tr_acc + tr_w, "plateaus": pl}
