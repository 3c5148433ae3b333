"""The metastability view of grokking.

**Geometry.** The memorising plateau and the generalised solution of one training run are
compared on the landscape of ``L_alpha = E + alpha ||w||^2`` with the run's ``alpha = beta / 2``
(``beta`` the AdamW decay): saddle index, extreme Hessian eigenvalues of ``E`` and of
``L_alpha``, scalar curvature ``R`` of both graphs, gradient norms (AdamW's fixed points are
not critical points of ``L_alpha``: its preconditioner weighs the gradient, so the gradient
norm is reported next to every number), all by :func:`phaseprobe.geometry.analyze_minima`
(exact Hessians up to ``max_params`` parameters, Lanczos and Hutchinson beyond). The plateau
point is the same member re-trained to the geometric mean of its train-fit and test-fit steps.

**Hysteresis.** A warm-started weight-decay sweep with the sweep machinery's continuation
(mode ``loop`` by default): from a fresh init at the smallest weight decay up through the grid
and back down from where the up branch ended. In a ``grok`` run every loop's chains are units
of the run (:class:`HysteresisUnit`, the sweep's units under a ``hyst-l<ii>-`` prefix, stored
with the grid); :func:`run_hysteresis` runs the loops alone into sweep run folders.
:func:`hysteresis_summary` reads where each branch memorises, generalises or collapses, and
whether the memorising phase comes back on the way down.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from phaseprobe.errors import SpecError
from phaseprobe.experiment import OnePieceUnit
from phaseprobe.grokking.phase import GrokContext, grok_shuffle_key, member_of, phase_label
from phaseprobe.grokking.spec import GrokSpec


# ---------------------------------------------------------------------------------------------
# hysteresis: the sweep's continuation over weight decay
# ---------------------------------------------------------------------------------------------
def hysteresis_loops(spec: GrokSpec) -> list[tuple[str, list[float]]]:
    """(label, ascending weight decays) of every loop the hysteresis stage runs."""
    from phaseprobe.sweep import parse_strength_grid

    grid = np.sort(parse_strength_grid(spec.hysteresis.weight_decays))
    tops = spec.hysteresis.tops
    if not tops:
        return [(f"top {grid[-1]:g}", [float(v) for v in grid])]
    return [(f"top {t:g}", [float(v) for v in grid if v <= t * (1 + 1e-9)]) for t in tops]


def hysteresis_sweep_spec(spec: GrokSpec, weight_decays=None, steps_per_epoch: int = 1, label: str = ""):
    """The :class:`~phaseprobe.sweep.SweepSpec` of one hysteresis loop (default: the whole grid)."""
    from phaseprobe.sweep import make_spec

    h = spec.hysteresis
    return make_spec({
        "name": f"{spec.name}-hysteresis{('-' + label.replace(' ', '')) if label else ''}",
        "dataset": "modular",
        "data_options": {"p": spec.p, "op": spec.op, "train_frac": spec.train_frac},
        "data_seed": spec.data_seed,
        "model": spec.model, "depth": spec.depth, "width": spec.width, "activation": spec.activation,
        "bias": spec.bias, "init": spec.init, "init_scale": h.init_scale,
        "model_options": spec.model_options(),
        "alphas": h.weight_decays if weight_decays is None else list(weight_decays),
        "convention": "decoupled", "mode": h.mode, "seeds": h.seeds,
        "optimizer": "adamw", "lr": spec.lr, "batch_size": spec.batch_size,
        "epochs": int(math.ceil(h.steps_per_point / steps_per_epoch)), "fresh_opt": h.fresh_opt,
    })


def run_hysteresis(spec: GrokSpec, out: str | Path, ctx: GrokContext | None = None,
                   on_runs: Callable[[int], None] | None = None,
                   on_plan: Callable[[int, int], None] | None = None) -> pd.DataFrame:
    """Run (or resume) every hysteresis loop into ``out/<loop>``; return their records with phases.

    ``on_plan(total, done)`` is called once with the trainings of all loops together.
    """
    from phaseprobe.store import RunStore
    from phaseprobe.sweep import plan_units, run_sweep

    ctx = ctx or GrokContext(spec)
    loops = hysteresis_loops(spec)
    specs = [(label, hysteresis_sweep_spec(spec, wds, ctx.trainer.steps_per_epoch, label)) for label, wds in loops]
    total = sum(u.n_runs for _, s in specs for u in plan_units(s))
    already = 0
    for label, s in specs:
        done = RunStore(Path(out) / label.replace(" ", "-")).done_pieces()
        already += sum(len(u.seeds) * sum(1 for _, _, piece in u.steps if piece in done) for u in plan_units(s))
    if on_plan:
        on_plan(total, already)
    frames = []
    for label, s in specs:
        df = run_sweep(s, Path(out) / label.replace(" ", "-"), on_runs=on_runs, dataset=ctx.dataset).copy()
        df["loop"] = label
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    df["weight_decay"] = df["strength"]
    df["phase"] = phase_label(df["train_acc"], df["test_acc"], spec)
    return df


@dataclass(frozen=True)
class HysteresisUnit:
    """One chain of a hysteresis loop as a unit of a ``grok`` run: the sweep's unit ``inner``,
    its pieces named ``<prefix><sweep piece>``."""

    loop: str
    prefix: str
    inner: Any

    @property
    def uid(self) -> str:
        return self.prefix + self.inner.uid

    @property
    def pieces(self) -> list[str]:
        return [self.prefix + p for p in self.inner.pieces]

    @property
    def chain(self) -> bool:
        return self.inner.chain

    @property
    def runs_per_piece(self) -> int:
        return self.inner.runs_per_piece


def plan_hysteresis_units(spec: GrokSpec) -> list[HysteresisUnit]:
    """Every chain of every hysteresis loop (none when the stage is off)."""
    from phaseprobe.grokking.phase import grid_epochs
    from phaseprobe.sweep.run import plan_units

    if not spec.hysteresis.enabled:
        return []
    spe = grid_epochs(spec)[1]
    return [HysteresisUnit(label, f"hyst-l{i:02d}-", u)
            for i, (label, wds) in enumerate(hysteresis_loops(spec))
            for u in plan_units(hysteresis_sweep_spec(spec, wds, spe, label))]


def run_hysteresis_unit(ctx: GrokContext, unit: HysteresisUnit, done: set[str], emit, load_params=None) -> None:
    """Run one hysteresis chain with the sweep's unit runner; its records get the loop, the
    weight decay and the phase of every point."""
    from phaseprobe.sweep.run import execute_unit

    pre = unit.prefix

    def emit_loop(piece, df, arrays):
        df = df.copy()
        df.insert(0, "stage", "hysteresis")
        df["loop"] = unit.loop
        df["piece"] = pre + piece
        df["weight_decay"] = df["strength"]
        df["phase"] = phase_label(df["train_acc"], df["test_acc"], ctx.spec)
        emit(pre + piece, df, arrays)

    inner_done = {p[len(pre):] for p in done if p.startswith(pre)}
    execute_unit(ctx.hysteresis[unit.loop], unit.inner, inner_done, emit_loop,
                 (lambda piece: load_params(pre + piece)) if load_params is not None else None)


def hysteresis_curves(df: pd.DataFrame, spec: GrokSpec) -> pd.DataFrame:
    """Final accuracies per (loop, branch, weight decay), mean over seeds, in the order walked."""
    d = df[df["final"]]
    g = d.groupby(["loop", "branch", "weight_decay", "step_index"], as_index=False).agg(
        train_acc=("train_acc", "mean"), test_acc=("test_acc", "mean"), w_sq=("w_sq", "mean"),
        n_seeds=("seed", "count"))
    order = {lp: i for i, lp in enumerate(dict.fromkeys(d["loop"]))}  # the spec's order of loops
    g = g.assign(_o=g["loop"].map(order)).sort_values(["_o", "step_index"]).drop(columns="_o").reset_index(drop=True)
    g["phase"] = phase_label(g["train_acc"], g["test_acc"], spec)
    return g


def hysteresis_summaries(curves: pd.DataFrame) -> dict[str, dict]:
    """:func:`hysteresis_summary` of every loop, keyed by the loop's label."""
    return {loop: hysteresis_summary(g) for loop, g in curves.groupby("loop", sort=False)}


def hysteresis_summary(curves: pd.DataFrame) -> dict:
    """Where each branch changes phase, and whether memorising comes back on the way down.

    Keys: ``up_first_generalising`` (smallest weight decay at which the up branch generalises),
    ``up_collapse`` (first weight decay where it underfits after having fitted the training set),
    ``up_memorising_until`` (largest weight decay at which the up branch memorises), ``down_regain``
    (largest weight decay at which the down branch generalises again after a collapse, or its
    first point), ``down_lowest_generalising`` (smallest weight decay the down branch still
    generalises at), ``memorising_returns`` and ``down_memorising_at`` (the largest weight decay
    where the down branch is back in the memorising phase), and ``area_test_acc``
    (``int |up - down| d log10(wd)`` over the weight decays both branches visited).
    """
    from phaseprobe.sweep.analysis import hysteresis_area

    out: dict = {}
    up = curves[curves["branch"] == "up"].sort_values("step_index")
    down = curves[curves["branch"] == "down"].sort_values("step_index")
    if len(up):
        gen = up[up["phase"] == "generalising"]
        out["up_first_generalising"] = float(gen["weight_decay"].iloc[0]) if len(gen) else float("nan")
        fitted = up[up["phase"] != "underfit"]
        after = up[(up["step_index"] > fitted["step_index"].iloc[0]) & (up["phase"] == "underfit")] if len(fitted) else up.iloc[:0]
        out["up_collapse"] = float(after["weight_decay"].iloc[0]) if len(after) else float("nan")
        out["up_memorising_until"] = float(up[up["phase"] == "memorising"]["weight_decay"].max()) \
            if (up["phase"] == "memorising").any() else float("nan")
    if len(down):
        gen = down[down["phase"] == "generalising"]
        out["down_regain"] = float(gen["weight_decay"].iloc[0]) if len(gen) else float("nan")
        out["down_lowest_generalising"] = float(gen["weight_decay"].min()) if len(gen) else float("nan")
        mem = down[down["phase"] == "memorising"]
        out["memorising_returns"] = bool(len(mem))
        out["down_memorising_at"] = float(mem["weight_decay"].max()) if len(mem) else float("nan")
    if len(up) and len(down):
        common = sorted(set(up["weight_decay"]) & set(down["weight_decay"]))
        if len(common) >= 2:
            u = up.groupby("weight_decay")["test_acc"].mean().reindex(common).to_numpy()
            d = down.groupby("weight_decay")["test_acc"].mean().reindex(common).to_numpy()
            out["area_test_acc"] = hysteresis_area(np.asarray(common, float), u, d)
    return out


# ---------------------------------------------------------------------------------------------
# geometry: memorising plateau vs generalised solution
# ---------------------------------------------------------------------------------------------
def pick_member(summary: pd.DataFrame, spec: GrokSpec, geometry=None) -> pd.Series:
    """The grid member whose plateau and solution are compared (see :class:`GeometrySpec`)."""
    g = geometry or spec.geometry
    cand = summary
    for col, val in (("weight_decay", g.weight_decay), ("init_scale", g.init_scale), ("seed", g.seed)):
        if val is not None:
            cand = cand[np.isclose(cand[col], val)] if col != "seed" else cand[cand[col] == val]
            if cand.empty:
                raise SpecError(f"geometry.{col}: {val} is not on the grid; pick a value from the spec's grid")
    ok = cand[cand["grokked"] & np.isfinite(cand["delay"]) & (cand["delay"] > 0) & (cand["weight_decay"] > 0)]
    if ok.empty:
        raise SpecError("geometry: no chosen grid member memorised first and then grokked; "
                        "raise steps or pick a weight decay that groks (geometry.weight_decay)")
    return ok.sort_values("delay", ascending=False).iloc[0]


def geometry_points(ctx: GrokContext, summary: pd.DataFrame, grid_params: dict[str, dict],
                    members: pd.DataFrame, geometry=None) -> tuple[list, pd.DataFrame]:
    """(models, table) of the compared points: plateau, generalised, and the memoriser."""
    spec = ctx.spec
    geometry = geometry or spec.geometry
    row = pick_member(summary, spec, geometry)
    cs = spec.chunk_size
    spe = ctx.trainer.steps_per_epoch

    def final_member(m: int):
        return ctx.stored_model(grid_params[f"grid-c{m // cs:04d}"], m % cs)

    m = int(row["member"])
    t_plateau = float(np.sqrt(row["t_train"] * row["t_test"]))
    e_plateau = max(1, int(round(t_plateau / spe)))
    model = ctx.members([int(row["seed"])], [float(row["init_scale"])])
    res = ctx.trainer.train(model, jnp.asarray([row["alpha"]], jnp.float32),
                            key=jnp.stack([grok_shuffle_key(int(row["seed"]))]), epochs=e_plateau, record_at=[e_plateau])
    rec = res.records[-1]
    plateau = member_of(res.model, 0)
    models = [plateau, final_member(m)]
    rows = [
        {"point": "memorising plateau", "member": m, "weight_decay": row["weight_decay"], "alpha": row["alpha"],
         "init_scale": row["init_scale"], "seed": int(row["seed"]), "step": int(e_plateau * spe),
         "train_acc": float(rec["train_acc"][0]), "test_acc": float(rec["test_acc"][0]), "w_sq": float(rec["w_sq"][0])},
        {"point": "generalised solution", "member": m, "weight_decay": row["weight_decay"], "alpha": row["alpha"],
         "init_scale": row["init_scale"], "seed": int(row["seed"]), "step": int(row["final_step"]),
         "train_acc": float(row["final_train_acc"]), "test_acc": float(row["final_test_acc"]), "w_sq": float(row["final_w_sq"])},
    ]
    if geometry.include_memoriser:
        mem = summary[(summary["weight_decay"] == 0.0) & np.isclose(summary["init_scale"], row["init_scale"])
                      & (summary["seed"] == row["seed"])]
        if len(mem):
            r0 = mem.iloc[0]
            models.append(final_member(int(r0["member"])))
            rows.append({"point": "memoriser (wd 0, end)", "member": int(r0["member"]), "weight_decay": 0.0, "alpha": 0.0,
                         "init_scale": r0["init_scale"], "seed": int(r0["seed"]), "step": int(r0["final_step"]),
                         "train_acc": float(r0["final_train_acc"]), "test_acc": float(r0["final_test_acc"]),
                         "w_sq": float(r0["final_w_sq"])})
    return models, pd.DataFrame(rows)


def compare_geometry(ctx: GrokContext, summary: pd.DataFrame, grid_params: dict[str, dict],
                     members: pd.DataFrame, key: int = 0, geometry=None) -> pd.DataFrame:
    """One row per compared point: its accuracies and the geometry of ``E`` and ``L_alpha`` there.

    ``geometry`` (a :class:`~phaseprobe.grokking.spec.GeometrySpec`) defaults to the spec's.
    """
    g = geometry or ctx.spec.geometry
    models, table = geometry_points(ctx, summary, grid_params, members, g)
    return measure_geometry(ctx, models, table, key=key, geometry=g)


def measure_geometry(ctx: GrokContext, models: list, table: pd.DataFrame, key: int = 0, geometry=None) -> pd.DataFrame:
    """``table`` (one row per model, with its ``alpha``) joined with the geometry of ``E`` and
    ``L_alpha`` at each of ``models`` (see :func:`compare_geometry`)."""
    from phaseprobe.geometry import analyze_minima

    from phaseprobe.geometry.base import to_float64, x64

    g = geometry or ctx.spec.geometry

    def run(ms):
        return analyze_minima(ms, ctx.dataset, "ce", alphas=table["alpha"].to_numpy(float), exact=None,
                              max_params=g.max_params, n_probes=g.n_probes, lanczos_k=g.lanczos_k, key=key,
                              warm_start=False)

    if g.float64:
        with x64():
            geo = run([to_float64(m) for m in models])
    else:
        geo = run(models)
    geo["precision"] = "float64" if g.float64 else "float32"
    geo["neg_eigs_E_lower_bound"] = ~geo["neg_eigs_E_exact"].astype(bool)
    geo = geo.drop(columns=["member", "alpha"])
    out = pd.concat([table.reset_index(drop=True), geo.reset_index(drop=True)], axis=1)
    for c in ("top_E", "bottom_E", "top_L", "bottom_L"):
        out[c] = out[c].apply(lambda a: [float(v) for v in np.asarray(a).ravel()])
    return out


@dataclass(frozen=True)
class GeometryUnit(OnePieceUnit):
    """The geometry stage of a ``grok`` run as one unit (planned once the grid is stored).

    ``summary`` is the grid's per-member summary (it names the compared members); ``needs`` the
    grid pieces holding their final parameters.
    """

    uid: str
    needs: tuple[str, ...]
    summary: pd.DataFrame = field(compare=False, repr=False)

    @property
    def runs_per_piece(self) -> int:
        return 1


def plan_geometry_units(spec: GrokSpec, store) -> list[GeometryUnit]:
    """The geometry unit of a run whose grid is in ``store``; none when the stage is off or no
    member of the chosen cell memorised first and then grokked (the report says so)."""
    from phaseprobe.grokking.phase import grokking_summary, plan_grid_units

    if not spec.geometry.enabled:
        return []
    df = store.load_records()
    grid = df[df["stage"] == "grid"] if "stage" in df.columns else df.iloc[:0]
    if grid.empty:
        return []
    summary = grokking_summary(grid, spec)
    try:
        row = pick_member(summary, spec)
    except SpecError:
        return []
    members = [int(row["member"])]
    if spec.geometry.include_memoriser:
        mem = summary[(summary["weight_decay"] == 0.0) & np.isclose(summary["init_scale"], row["init_scale"])
                      & (summary["seed"] == row["seed"])]
        members += [int(m) for m in mem["member"][:1]]
    units = plan_grid_units(spec)
    needs = tuple(dict.fromkeys(u.pieces[-1] for u in units for m in members if m in u.members))
    return [GeometryUnit("geometry", needs, summary)]


def run_geometry_unit(ctx: GrokContext, unit: GeometryUnit, done: set[str], emit, load_params=None) -> None:
    """Retrain the plateau point, measure the compared points; emit the table (one row per
    point) with the plateau model's parameters (one member)."""
    import time

    from phaseprobe.store.arrays import model_to_arrays

    if unit.uid in done:
        return
    t0 = time.perf_counter()
    grid_params = {p.rsplit("-s", 1)[0]: load_params(p) for p in unit.needs}
    models, table = geometry_points(ctx, unit.summary, grid_params, ctx.members_table)
    geo = measure_geometry(ctx, models, table)
    geo.insert(0, "stage", "geometry")
    geo["piece"] = unit.uid
    geo["final"] = False
    geo["seconds"] = time.perf_counter() - t0
    plateau = jax.tree_util.tree_map(lambda x: x[None] if eqx.is_array(x) else x, models[0])
    emit(unit.uid, geo, model_to_arrays(plateau))
