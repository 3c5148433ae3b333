"""Adaptive strength refinement: bisect every transition the grid found until its bracket is narrow.

After the grid (phase ``trainings``), phase ``refinement`` is planned from the store
(:func:`plan_refinement`, grid records only, so a resumed run plans the same units):

* **Transitions.** Every transition the detector finds on a branch (test accuracy; ||w||^2 where
  no accuracy transition of that branch covers the same cell) is a bracket ``[alpha_lo, alpha_hi]``:
  the grid cell of the seed mean's largest step. Each bisection step trains all seeds at the
  bracket's midpoint with the branch's own per-strength protocol: the cold protocol from a fresh
  initialisation, or a warm start from the stored model at the grid point just before the jump
  (in the branch's direction of travel), with a fresh optimiser state or the one stored with that
  piece (``fresh_opt = false``). The seed mean of the detector's observable (test accuracy, or
  ``log10(||w||^2 + floor)``) decides which phase the midpoint landed in: the phase of the
  bracket end whose value it is nearer; that end moves to the midpoint (so the bracket keeps the
  larger part of the change: it follows the seed mean's largest step, where the analysis locates
  the transition; when seeds jump at different strengths the seed mean has one step per group of
  seeds and the bisection follows the largest). The bracket halves until its width is below
  ``refine_to`` (``"2%"``: 2 % of the bracket's lower end; a number: an absolute width in the
  spec's convention).
* **Maxwell points** (loops). Where the seed-mean regularised losses of the two branches cross
  (the grid cell of the analysis's Maxwell crossing), each step trains both branches at the
  midpoint -- the up branch warm-started from its model at the cell's lower end, the down branch
  from its model at the upper end -- and the sign of ``L_up - L_down`` decides.

* **Passes.** When seeds jump at different strengths the seed mean has one step per group of
  seeds, and a bisection narrows one of them. Pass ``p`` >= 2 (phase ``refinement p``; one pass
  per seed, at most three) is planned from the grid and the earlier passes' records: every bracket
  the analysis then reports (``alpha_bracket_lo/hi``) that is still wider than ``refine_to`` is
  bisected the same way, from the grid model at or before it.

Every step is one piece of a chain unit (``refine-<branch>-t<k>-b<j>``, ``refine-<branch>-t<k>p<p>-b<j>``
in pass ``p`` >= 2; ``branch`` = ``cold``, ``up``, ``down`` or ``maxwell``), written like any other
piece: records with ``refined = True``, ``refine_pass``,
``alpha_index = -1``, the strength trained, the bracket after the step (``refine_lo``,
``refine_hi``, canonical alpha) and where the midpoint landed (``refine_side``); arrays with the
trained members and the bracket with its ends' decision values (``refine_bracket``), so an interrupted refinement resumes from its
last finished step and ends with the same numbers. A Maxwell piece holds both branches' members
(up first). Keys derive from the seeds, the unit and the step, so the numbers depend only on the spec.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from phaseprobe import conventions
from phaseprobe.sweep.analysis import is_refined
from phaseprobe.sweep.run import (
    CHAIN_STOPPED_KEY,
    SweepContext,
    _record_at,
    _rows,
    _where_members,
    plan_units,
    shuffle_key,
)

REFINE_PREFIX = "refine-"
BRACKET_KEY = "refine_bracket"
MAX_STEPS = 40


@dataclass(frozen=True)
class RefineUnit:
    """The bisection of one transition (or Maxwell point): a chain of ``n_steps`` pieces.

    ``lo``/``hi`` are the starting bracket (canonical alpha, ascending); ``before_is_lo`` says which
    end is in the phase before the jump (the end the branch comes from); ``y_before``/``y_after`` the
    decision values at the two ends (seed means, in ``observable``'s detection scale; for
    ``maxwell`` the seed-mean ``L_up - L_down``); ``starts[b]`` the pieces holding branch ``b``'s
    start models (one per seed chunk, none for a cold start) at strength ``start_alpha[b]``.
    """

    uid: str
    branch: str  # "cold", "up", "down" or "maxwell"
    seeds: tuple[int, ...]
    lo: float
    hi: float
    before_is_lo: bool
    n_steps: int
    observable: str  # "test_acc", "w_sq" or "loss_gap"
    y_before: float
    y_after: float
    floor: float = 0.0  # ||w||^2 floor of the log scale
    starts: tuple[tuple[str, ...], ...] = ()
    start_alpha: tuple[float, ...] = ()
    tag: int = 0
    pass_no: int = 1

    @property
    def pieces(self) -> list[str]:
        return [f"{self.uid}-b{j:02d}" for j in range(self.n_steps)]

    @property
    def chain(self) -> bool:
        return True

    @property
    def runs_per_piece(self) -> int:
        return len(self.seeds) * len(self.branches)

    @property
    def needs(self) -> tuple[str, ...]:
        return tuple(p for ps in self.starts for p in ps)

    @property
    def branches(self) -> tuple[str, ...]:
        return ("up", "down") if self.branch == "maxwell" else (self.branch,)


def grid_records(df: pd.DataFrame) -> pd.DataFrame:
    """The records of the spec's grid only (refined rows left out)."""
    return df[~is_refined(df)]


def n_bisections(width: float, lo: float, target: tuple[str, float], convention: str) -> int:
    """Bisection steps that bring a bracket of ``width`` (alpha) starting at ``lo`` below the target.

    **Arguments:**

    - `width`: the bracket's width (canonical alpha).
    - `lo`: its lower end (a relative target is a fraction of it; of the width when ``lo`` is 0).
    - `target`: :meth:`~phaseprobe.sweep.spec.SweepSpec.refine_target`.
    - `convention`: the spec's convention (an absolute target is a strength width).

    **Returns:** the number of halvings (0 when the bracket is already narrow enough).
    """
    kind, x = target
    if kind == "relative":
        goal = x * (lo if lo > 0 else width)
    else:
        goal = float(conventions.to_alpha(x, convention))
    if width <= goal or goal <= 0:
        return 0
    return min(int(math.ceil(math.log2(width / goal))), MAX_STEPS)


def _w_floor(df: pd.DataFrame) -> float:
    from phaseprobe.sweep.analysis import excluded

    fin = df[df["final"]]
    w = fin["w_sq"].astype(float).where(~excluded(fin)).to_numpy()
    top = float(np.nanmax(w)) if np.isfinite(w).any() else 0.0
    return max(1e-4 * top, 1e-12)


def _scale(values, observable: str, floor: float):
    v = np.asarray(values, float)
    return np.log10(np.maximum(v, 0) + floor) if observable == "w_sq" else v


def plan_refinement(spec, store, pass_no: int = 1) -> list[RefineUnit]:
    """The refinement units of one pass (deterministic: computed from earlier passes' records only).

    Pass 1 bisects the grid cell of every transition the grid shows, and every Maxwell crossing of a
    loop. A later pass bisects the bracket the analysis reports on the records so far (grid and
    earlier passes) where it is still wider than ``refine_to``: when seeds jump at different
    strengths, the seed mean has one step per group of seeds and one bisection narrows only one.

    **Arguments:**

    - `spec`: the :class:`~phaseprobe.sweep.spec.SweepSpec` (``refine`` on).
    - `store`: the run's :class:`~phaseprobe.store.RunStore`.
    - `pass_no`: 1, 2, ... (see :func:`refine_passes`).

    **Returns:** a list of :class:`RefineUnit` (empty when nothing is left to narrow).
    """
    from phaseprobe.sweep.analysis import _loss_regions, branch_table, find_transitions

    recs = store.load_records()
    if recs.empty:
        return []
    grid_df = grid_records(recs)
    passes = recs["refine_pass"].fillna(0).astype(int) if "refine_pass" in recs.columns else pd.Series(0, index=recs.index)
    df = grid_df if pass_no == 1 else recs[~is_refined(recs) | (passes < pass_no)]
    alphas = spec.alpha_grid()
    seeds = tuple(spec.seed_list())
    target = spec.refine_target()
    floor = _w_floor(grid_df)
    piece_at: dict[tuple[str, int], list[str]] = {}
    for u in plan_units(spec):
        for b, ai, piece in u.steps:
            piece_at.setdefault((b, ai), []).append(piece)
    done = store.done_pieces()
    units: list[RefineUnit] = []
    taken: list[tuple[str, float, float]] = []
    suffix = "" if pass_no == 1 else f"p{pass_no}"

    obs_list = (["test_acc"] if "test_acc" in df.columns else []) + ["w_sq"]
    for obs in obs_list:
        for t in find_transitions(df, obs, n_boot=0):
            lo, hi = float(t.alpha_bracket_lo), float(t.alpha_bracket_hi)
            if any(b == t.branch and lo < h and hi > l_ for b, l_, h in taken):
                continue  # the same cell is refined once (by test accuracy when it has a transition there)
            n = n_bisections(hi - lo, lo, target, spec.convention)
            if n == 0:
                continue
            before_is_lo = t.branch != "down"
            tab = branch_table(df, t.branch, obs)
            y = _scale(tab[1], obs, floor)
            with np.errstate(all="ignore"):
                y_lo = float(np.nanmean(y[:, int(np.argmin(np.abs(tab[0] - lo)))]))
                y_hi = float(np.nanmean(y[:, int(np.argmin(np.abs(tab[0] - hi)))]))
            # the start: the grid point at or before the bracket in the branch's direction of travel
            i_start = int(np.searchsorted(alphas, lo, "right") - 1) if before_is_lo else int(np.searchsorted(alphas, hi, "left"))
            i_start = int(np.clip(i_start, 0, len(alphas) - 1))
            starts: tuple = ()
            if t.branch != "cold":
                ps = tuple(piece_at.get((t.branch, i_start), ()))
                if not ps or any(p not in done for p in ps):
                    continue  # the start model is not stored (a partial grid): nothing to refine from
                starts = (ps,)
            k = sum(1 for u in units if u.branch == t.branch)
            units.append(RefineUnit(
                uid=f"{REFINE_PREFIX}{t.branch}-t{k}{suffix}", branch=t.branch, seeds=seeds, lo=lo, hi=hi,
                before_is_lo=before_is_lo, n_steps=n, observable=obs,
                y_before=y_lo if before_is_lo else y_hi, y_after=y_hi if before_is_lo else y_lo, floor=floor,
                starts=starts, start_alpha=((float(alphas[i_start]),) if starts else ()),
                tag=1000 * (pass_no - 1) + len(units), pass_no=pass_no,
            ))
            taken.append((t.branch, lo, hi))
    if pass_no == 1 and {"up", "down"} <= set(df["branch"]):
        l_up = branch_table(df, "up", "loss", alphas)[1]
        l_dn = branch_table(df, "down", "loss", alphas)[1]
        with np.errstate(all="ignore"):
            dl = np.nanmean(l_up, axis=0) - np.nanmean(l_dn, axis=0)
        k = 0
        for _, _, m in _loss_regions(alphas, l_up, l_dn):
            if not np.isfinite(m):
                continue
            i = int(np.clip(np.searchsorted(alphas, m) - 1, 0, len(alphas) - 2))
            if not (np.isfinite(dl[i]) and np.isfinite(dl[i + 1]) and np.sign(dl[i]) != np.sign(dl[i + 1])):
                continue
            lo, hi = float(alphas[i]), float(alphas[i + 1])
            n = n_bisections(hi - lo, lo, target, spec.convention)
            ups, dns = tuple(piece_at.get(("up", i), ())), tuple(piece_at.get(("down", i + 1), ()))
            if n == 0 or not ups or not dns or any(p not in done for p in ups + dns):
                continue
            units.append(RefineUnit(
                uid=f"{REFINE_PREFIX}maxwell-t{k}", branch="maxwell", seeds=seeds, lo=lo, hi=hi, before_is_lo=True,
                n_steps=n, observable="loss_gap", y_before=float(dl[i]), y_after=float(dl[i + 1]),
                starts=(ups, dns), start_alpha=(lo, hi), tag=len(units),
            ))
            k += 1
    return units


def refine_passes(spec) -> int:
    """How many refinement passes a spec's run gets: one per seed, at most three (seeds that jump
    at different strengths give the seed mean one step each; a pass narrows the largest left)."""
    return min(len(spec.seed_list()), 3)


def refine_key(seed: int, tag: int, step: int, branch_i: int):
    """The minibatch-order key of one member at one bisection step (derived from the seed only)."""
    return shuffle_key(seed, 1_000_000 + 10_000 * int(tag) + 10 * int(step) + int(branch_i))


def _concat_members(trees):
    if len(trees) == 1:
        return trees[0]
    return jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs, axis=0) if hasattr(xs[0], "ndim") and xs[0].ndim else xs[0],
                                  *trees)


def _take(tree, sl: slice, k: int):
    """Members ``sl`` of a stacked pytree (leaves whose leading axis is the ``k`` members)."""
    def take(x):
        return x[sl] if hasattr(x, "ndim") and x.ndim and x.shape[0] == k else x

    params, static = eqx.partition(tree, eqx.is_array)
    return eqx.combine(jax.tree_util.tree_map(take, params), static)


def _start(ctx: SweepContext, unit: RefineUnit, b: int, load_params):
    """(stacked start model, optimiser state or None, stopped mask) of branch ``b`` of ``unit``."""
    k = len(unit.seeds)
    if not unit.starts:  # the cold protocol: a fresh initialisation, a fresh optimiser
        return ctx.initial_members(unit.seeds), None, np.zeros(k, bool)
    models, opts, stopped = [], [], []
    for piece in unit.starts[b]:
        arrays = load_params(piece)
        n = int(np.asarray(arrays["p000"]).shape[0])
        m = ctx.arrays_to_model(arrays, n)
        models.append(m)
        stopped.append(np.asarray(arrays.get(CHAIN_STOPPED_KEY, np.zeros(n, bool)), bool))
        if not ctx.spec.fresh_opt:
            opts.append(ctx.arrays_to_opt_state(arrays, m, unit.start_alpha[b]))
    model = _concat_members(models)
    opt = None if ctx.spec.fresh_opt or any(o is None for o in opts) else _concat_members(opts)
    return model, opt, np.concatenate(stopped)


def _like_hi(value: float, y_lo: float, y_hi: float, observable: str) -> bool:
    """True when the midpoint resembles the bracket's upper end (the change lies below it).

    Transitions: the seed mean is nearer the upper end's value than the lower end's, i.e. the
    larger part of the change lies between the lower end and the midpoint (the bracket follows the
    seed mean's largest step, as the analysis locates it). Maxwell points: ``L_up - L_down`` has the
    upper end's sign. A midpoint without a usable member resembles the upper end.
    """
    if not np.isfinite(value):
        return True
    if observable == "loss_gap":
        return bool(np.sign(value) == np.sign(y_hi))
    return abs(value - y_hi) < abs(value - y_lo)


def execute_refine(ctx: SweepContext, unit: RefineUnit, done: set[str], emit, load_params, on_runs=None) -> None:
    """Run the bisection steps of ``unit`` not in ``done``; hand each finished piece to ``emit``.

    **Arguments:**

    - `ctx`: the sweep's context.
    - `unit`: a :class:`RefineUnit` from :func:`plan_refinement`.
    - `done`: finished pieces (the unit resumes after its longest finished prefix).
    - `emit`: ``emit(piece, records, arrays)``.
    - `load_params`: reads a stored piece's arrays (the start models, the last finished step).
    - `on_runs`: ``on_runs(n)`` after every piece (n trainings).
    """
    spec, tr = ctx.spec, ctx.trainer
    pieces = unit.pieces
    start = 0
    while start < len(pieces) and pieces[start] in done:
        start += 1
    if start == len(pieces):
        return
    # the bracket (ascending) and the seed-mean decision values at its two ends
    lo, hi = unit.lo, unit.hi
    y_lo, y_hi = (unit.y_before, unit.y_after) if unit.before_is_lo else (unit.y_after, unit.y_before)
    if start > 0:
        lo, hi, y_lo, y_hi = (float(v) for v in np.asarray(load_params(pieces[start - 1])[BRACKET_KEY], np.float64))
    k = len(unit.seeds)
    begin = [_start(ctx, unit, b, load_params) for b in range(len(unit.branches))]
    fresh = None
    for j in range(start, len(pieces)):
        t0 = time.perf_counter()
        mid = 0.5 * (lo + hi)
        frames, models, stops, means = [], [], [], []
        for b, branch in enumerate(unit.branches):
            model, opt, stopped = begin[b]
            if stopped.any():  # as in a chain: a member whose chain stopped trains from a fresh init, rows not run
                fresh = ctx.members(unit.seeds) if fresh is None else fresh
                model = _where_members(stopped, fresh, model)
                if opt is not None:
                    opt = _where_members(stopped, jax.tree_util.tree_map(jnp.zeros_like, opt), opt, k)
            # at most chunk_size members per program, as the grid's units (the decision waits for all seeds)
            parts, trained, div = [], [], []
            for c0 in range(0, k, spec.chunk_size):
                sl = slice(c0, min(c0 + spec.chunk_size, k))
                whole = k <= spec.chunk_size
                sub_model = model if whole else _take(model, sl, k)
                sub_opt = opt if (whole or opt is None) else _take(opt, sl, k)
                sds = unit.seeds[sl]
                keys = jnp.stack([refine_key(s, unit.tag, j, b) for s in sds])
                res = tr.train(sub_model, jnp.full((len(sds),), mid, jnp.float32), key=keys, opt_state=sub_opt,
                               record_at=_record_at(spec))
                parts.append(_rows(ctx, res, branch, [0] * len(sds), sds, j, time.perf_counter() - t0, not_run=stopped[sl]))
                trained.append(res.model)
                div.append(parts[-1]["diverged"].to_numpy(bool)[-len(sds):])  # the final record's rows, member order
            df = parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)  # chunk by chunk: members in order
            res_model = _concat_members(trained)
            df["alpha"] = float(mid)
            df["strength"] = float(conventions.from_alpha(mid, spec.convention))
            df["alpha_index"] = -1
            frames.append(df)
            models.append(res_model)
            stops.append(stopped | np.concatenate(div))
            fin = df[df["final"]]
            ok = ~fin["diverged"].to_numpy(bool)
            col = "loss" if unit.observable == "loss_gap" else unit.observable
            v = _scale(fin[col].to_numpy(float), unit.observable, unit.floor)[ok]
            means.append(float(np.mean(v)) if v.size else float("nan"))
        value = means[0] - means[1] if unit.observable == "loss_gap" else means[0]
        like_hi = _like_hi(value, y_lo, y_hi, unit.observable)
        after = like_hi == unit.before_is_lo  # landed in the phase after the jump (branch's direction of travel)
        if like_hi:
            hi, y_hi = mid, value
        else:
            lo, y_lo = mid, value
        records = pd.concat(frames, ignore_index=True)
        records["refined"] = True
        records["refine_id"] = unit.uid
        records["refine_pass"] = int(unit.pass_no)
        records["refine_observable"] = unit.observable
        records["refine_step"] = int(j)
        records["refine_side"] = "after" if after else "before"
        records["refine_value"] = float(value)
        records["refine_lo"] = float(lo)
        records["refine_hi"] = float(hi)
        arrays = ctx.params_to_arrays(_concat_members(models) if len(models) > 1 else models[0])
        arrays[CHAIN_STOPPED_KEY] = np.concatenate(stops)
        arrays[BRACKET_KEY] = np.asarray([lo, hi, y_lo, y_hi], np.float64)
        emit(pieces[j], records, arrays)
        if on_runs:
            on_runs(k * len(unit.branches))


def refine_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per refinement of a run: its branch, observable, steps and final bracket.

    **Arguments:**

    - `df`: a sweep's records.

    **Returns:** columns ``refine_id, branch, observable, refined_steps, alpha_lo, alpha_hi``
    (the last step's bracket; empty frame when nothing was refined).
    """
    r = df[is_refined(df) & df["final"]] if len(df) else df
    cols = ["refine_id", "branch", "observable", "refined_steps", "alpha_lo", "alpha_hi"]
    if r.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for rid, g in r.groupby("refine_id", sort=True):
        last = g[g["refine_step"] == g["refine_step"].max()].iloc[0]
        branch = "maxwell" if str(rid).startswith(f"{REFINE_PREFIX}maxwell") else str(last["branch"])
        rows.append({"refine_id": rid, "branch": branch, "observable": last["refine_observable"],
                     "refined_steps": int(g["refine_step"].nunique()), "alpha_lo": float(last["refine_lo"]),
                     "alpha_hi": float(last["refine_hi"])})
    return pd.DataFrame(rows, columns=cols)


__all__ = ["RefineUnit", "plan_refinement", "execute_refine", "refine_table", "is_refined", "grid_records",
           "n_bisections"]
