"""``phaseprobe escape`` as an experiment kind (:mod:`phaseprobe.experiment`).

One unit, one chain of pieces: ``prepare`` (the trapped state: one network trained noise-free
above the upper spinodal, stored as arrays) then ``t00``, ``t01``, ... (stretches of the time
budget). Each stretch carries every replica's weights and first-passage step from the previous
piece; the Langevin noise of check ``c`` is keyed by ``fold_in(fold_in(PRNGKey(seed), 1), c)``
(split over the members), so a resumed run equals an uninterrupted one. Every piece's records
hold, per replica, the first-passage step so far (censored at the piece's end if none): any
piece is a complete, shorter-budget experiment.
"""

from __future__ import annotations


import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from phaseprobe.data.base import Dataset
from phaseprobe.errors import PhaseprobeError
from phaseprobe.escape.spec import EscapeSpec, make_escape_spec
from phaseprobe.escape.theory import critical_alpha
from phaseprobe.experiment import ExperimentKind, Phase, PlainUnit
from phaseprobe.models.nets import DeepLinear, init_members
from phaseprobe.train import TrainConfig, Trainer

PREPARE = "prepare"


def time_piece(i: int) -> str:
    return f"t{i:02d}"


def criterion_text(spec: EscapeSpec) -> str:
    """The escape criterion, as recorded with every row."""
    return (f"end-to-end W_L..W_1 > {spec.escape_threshold():.6g} at a check every {spec.check_every} steps "
            f"(midway between saddle and learned minimum)" if spec.threshold is None else
            f"end-to-end W_L..W_1 > {spec.threshold:.6g} at a check every {spec.check_every} steps")


def teacher_dataset(s: float) -> Dataset:
    """Two whitened points ``x = +-1`` with ``y = s x``: ``E = 1/2 (u - s)^2`` exactly (mean over samples)."""
    x = np.array([[1.0], [-1.0]], np.float32)
    y = (np.float32(s) * x).astype(np.float32)
    return Dataset("scalar-teacher", x, y, x.copy(), y.copy(), 0, task="regression", meta={"singular_value": s})


class EscapeContext:
    """The data (a scalar teacher), the model skeleton and the compiled Langevin trainer."""

    def __init__(self, spec: EscapeSpec, dataset=None):
        self.spec = spec
        self.dataset = dataset if dataset is not None else teacher_dataset(spec.singular_value)
        self.config = TrainConfig(loss="mse", optimizer="gd", lr=spec.lr, batch_size=None, epochs=1,
                                  noise="langevin", penalty_on="all")
        self.trainer = Trainer(self.members(1), self.dataset, self.config)
        self.temperatures = spec.temperature_grid()
        self.member_temperature = np.repeat(self.temperatures, spec.replicas).astype(np.float32)

    def make_one(self, key):
        return DeepLinear(1, 1, self.spec.depth, self.spec.width, sigma=self.spec.init_sigma, key=key)

    def members(self, k: int):
        return init_members(self.make_one, jax.random.split(jax.random.PRNGKey(self.spec.seed), k))

    def skeleton(self, k: int):
        return jax.eval_shape(lambda: self.members(k))

    def from_arrays(self, arrays: dict, k: int):
        like = self.members(k)
        params, static = eqx.partition(like, eqx.is_inexact_array)
        leaves, tree = jax.tree_util.tree_flatten(params)
        new = [jnp.asarray(arrays[f"w{i}"]) for i in range(len(leaves))]
        return eqx.combine(jax.tree_util.tree_unflatten(tree, new), static)

    @staticmethod
    def to_arrays(model) -> dict:
        leaves = jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array))
        return {f"w{i}": np.asarray(x) for i, x in enumerate(leaves)}

    @staticmethod
    def end_to_end(model) -> np.ndarray:
        return np.asarray(eqx.filter_vmap(lambda m: m.end_to_end()[0, 0])(model))


def make_escape_context(spec: EscapeSpec, dataset=None) -> EscapeContext:
    return EscapeContext(spec, dataset=dataset)


def plan_escape(spec: EscapeSpec) -> list[Phase]:
    """One phase, one chained unit: ``prepare`` then one piece per stretch of the time budget."""
    k = len(spec.temperature_grid()) * spec.replicas
    pieces = (PREPARE,) + tuple(time_piece(i) for i in range(spec.n_pieces))
    return [Phase("escape", [PlainUnit("escape", pieces, chain=True, runs_per_piece=k)])]


def _prepare(ctx: EscapeContext):
    spec = ctx.spec
    alpha_prep = spec.prepare_factor * critical_alpha(spec.singular_value, spec.depth)
    model = ctx.members(1)
    model, _, div = ctx.trainer.advance(model, spec.prepare_steps, lr=spec.lr, alpha=alpha_prep,
                                        key=jax.random.fold_in(jax.random.PRNGKey(spec.seed), 0), temperature=0.0)
    if div[0]:
        raise PhaseprobeError("lr: the preparation diverged; lower lr")
    u = float(ctx.end_to_end(model)[0])
    rec = pd.DataFrame({"piece": [PREPARE], "alpha_prepare": [alpha_prep], "prepare_steps": [spec.prepare_steps],
                        "end_to_end": [u], "weight_norm2": [float(sum(np.sum(np.asarray(w) ** 2) for w in model.weights))]})
    rec = rec.assign(**measure_barrier(ctx))
    return model, rec


def measure_barrier(ctx: EscapeContext, n_path: int = 2001) -> dict:
    """The barrier measured with the trainer's own regularised loss, independently of the closed form.

    The learned minimum at ``alpha`` is found by noise-free gradient descent from all weights 1
    (balanced, so it stays balanced); the trapped minimum is the origin. Both lie on the ray
    ``t W_on`` (balanced, rank one), which passes through the saddle between them, so the largest
    loss along the straight path from the origin to ``W_on`` minus the loss at the origin is the
    barrier ``V(a_s) - V(0)``.
    """
    spec = ctx.spec
    one = jax.tree_util.tree_map(lambda x: jnp.ones_like(x) if eqx.is_inexact_array(x) else x, ctx.members(1))
    learned, _, _ = ctx.trainer.advance(one, spec.prepare_steps, lr=spec.lr, alpha=spec.alpha,
                                        key=jax.random.PRNGKey(0), temperature=0.0)
    t = np.linspace(0.0, 1.0, n_path, dtype=np.float32)
    params = eqx.filter(learned, eqx.is_inexact_array)
    path = jax.tree_util.tree_map(lambda x: jnp.asarray(t).reshape((-1,) + (1,) * (x.ndim - 1)) * x, params)
    loss = np.asarray(ctx.trainer.evaluate(path, jnp.full((n_path,), spec.alpha, jnp.float32), grad=False)["loss"], np.float64)
    j = int(np.argmax(loss))
    return {"barrier_path_max": float(loss[j] - loss[0]), "saddle_end_to_end_path": float(t[j] ** spec.depth * ctx.end_to_end(learned)[0]),
            "learned_end_to_end": float(ctx.end_to_end(learned)[0]), "learned_minus_trapped_loss": float(loss[-1] - loss[0])}


def run_escape_unit(ctx: EscapeContext, unit: PlainUnit, done, emit, load_params, on_work=None) -> None:
    """Prepare the trap, then run every stretch of the budget still missing (see the module doc)."""
    spec = ctx.spec
    k = unit.runs_per_piece
    ends = spec.piece_steps()
    thr = spec.escape_threshold()
    crit = criterion_text(spec)
    ratios = spec.barrier().barrier / ctx.temperatures
    if PREPARE in done:
        prep = ctx.from_arrays(load_params(PREPARE), 1)
    else:
        prep, rec = _prepare(ctx)
        emit(PREPARE, rec, ctx.to_arrays(prep))
    noise_key = jax.random.fold_in(jax.random.PRNGKey(spec.seed), 1)
    model = fp = None
    for i, end in enumerate(ends):
        piece = time_piece(i)
        if piece in done:
            continue
        start = 0 if i == 0 else ends[i - 1]
        if model is None:
            if i == 0:
                model = jax.tree_util.tree_map(lambda x: jnp.repeat(x, k, axis=0) if eqx.is_inexact_array(x) else x, prep)
                fp = np.full(k, -1, np.int64)
            else:
                arr = load_params(time_piece(i - 1))
                model = ctx.from_arrays(arr, k)
                fp = np.asarray(arr["first_passage_step"]).astype(np.int64)
        for c in range(start // spec.check_every, end // spec.check_every):
            model, _, div = ctx.trainer.advance(model, spec.check_every, lr=spec.lr, alpha=spec.alpha,
                                                key=jax.random.fold_in(noise_key, c), temperature=ctx.member_temperature)
            u = ctx.end_to_end(model)
            new = (fp < 0) & (u > thr)
            fp[new] = (c + 1) * spec.check_every
        escaped = fp >= 0
        exposure = np.where(escaped, fp, end)
        rec = pd.DataFrame({
            "piece": piece, "member": np.arange(k), "temperature": ctx.member_temperature.astype(np.float64),
            "barrier_ratio": np.repeat(ratios, spec.replicas), "replica": np.tile(np.arange(spec.replicas), len(ctx.temperatures)),
            "temperature_index": np.repeat(np.arange(len(ctx.temperatures)), spec.replicas),
            "steps_done": end, "escaped": escaped, "first_passage_step": np.where(escaped, fp, -1),
            "exposure_steps": exposure, "exposure_time": exposure * spec.lr, "end_to_end": u.astype(np.float64),
            "alpha": spec.alpha, "lr": spec.lr, "threshold": thr, "criterion": crit, "noise": "langevin",
        })
        arrays = ctx.to_arrays(model)
        arrays["first_passage_step"] = fp.copy()
        emit(piece, rec, arrays)


def analyse_escape(run_dir, figures: bool = True) -> dict:
    from phaseprobe.escape.analysis import summarize_escape

    return summarize_escape(run_dir, figures=figures)


def load_escape_model(run, *, temperature_index: int, replica: int, piece: str | None = None):
    """One replica's network at the end of a piece (default: the last one stored).

    **Arguments:** ``temperature_index`` and ``replica`` (the record's columns); ``piece``
    (``prepare``, ``t00``, ...).

    **Returns:** a :class:`phaseprobe.models.nets.DeepLinear` (one member).
    """
    spec = make_escape_spec(dict(run.spec))
    ctx = EscapeContext(spec)
    done = run.store.done_pieces()
    stored = [time_piece(i) for i in range(spec.n_pieces) if time_piece(i) in done]
    piece = piece or (stored[-1] if stored else PREPARE)
    if piece not in done:
        raise PhaseprobeError(f"model: piece {piece} is not in the store; rerun the escape command to finish it")
    n_t = len(ctx.temperatures)
    if not (0 <= temperature_index < n_t and 0 <= replica < spec.replicas):
        raise PhaseprobeError(f"model: temperature_index must be in 0..{n_t - 1} and replica in 0..{spec.replicas - 1}")
    k = 1 if piece == PREPARE else n_t * spec.replicas
    m = 0 if piece == PREPARE else temperature_index * spec.replicas + replica
    stacked = ctx.from_arrays(run.store.load_params(piece), k)
    params, static = eqx.partition(stacked, eqx.is_inexact_array)
    return eqx.combine(jax.tree_util.tree_map(lambda x: x[m], params), static)


def show_escape(run, con, wide: bool = False) -> None:
    """``phaseprobe show``: what is stored, the per-temperature escape table and the Arrhenius fit."""
    spec = make_escape_spec(dict(run.spec))
    show_escape_tables(run, con, wide, plan_escape(spec)[0].units[0].pieces, f"criterion: {criterion_text(spec)}",
                       analyse_escape, _SHOW_COLUMNS)


def show_escape_tables(run, con, wide: bool, pieces, header: str, analyse, columns: dict) -> None:
    """What every escape kind's ``show`` prints: the stored pieces, then its tables (analysed first
    when the store holds escapes but no tables yet), escape times shown as the bounds they are.

    **Arguments:**

    - `run`: the opened run; `con`: the rich console; `wide`: every column.
    - `pieces`: the pieces the run plans; `header`: what follows the piece count on the first line.
    - `analyse`: ``analyse(run_dir, figures=False)`` writes the tables.
    - `columns`: table name -> the columns shown without `wide`.

    **Returns:** nothing; prints.
    """
    from phaseprobe.commands.show import print_frame
    from phaseprobe.runs import open_run

    done = run.store.done_pieces()
    con.print(f"{sum(p in done for p in pieces)}/{len(pieces)} pieces in the store; {header}")
    tables = dict(run.tables)
    if any(p != PREPARE for p in done) and not {"escape_times", "arrhenius"} <= set(tables):
        analyse(run.path, figures=False)
        tables = dict(open_run(run.path).tables)
    if "escape_times" in tables:
        tables["escape_times"] = _bounded_taus(tables["escape_times"])
    for name, cols in columns.items():
        if name in tables:
            tab = tables[name] if wide else tables[name][[c for c in cols if c in tables[name].columns]]
            print_frame(con, tab, name, max_cols=len(tab.columns))


def _bounded_taus(times):
    """Escape times as a reader should see them: where no replica escaped only a lower bound is
    known (``>= tau_lo``), and an upper end with no escapes is unbounded, never ``inf``."""
    import numpy as np

    t = times.copy()
    if "escaped" not in t.columns or "tau_steps" not in t.columns:
        return t
    none = t["escaped"].to_numpy() == 0
    t["tau_steps"] = [f">= {lo:.3g}" if n else f"{v:.3g}"
                      for v, lo, n in zip(t["tau_steps"], t["tau_lo"], none)]
    if "tau_hi" in t.columns:
        t["tau_hi"] = ["unbounded" if not np.isfinite(v) else f"{v:.3g}" for v in t["tau_hi"].astype(float)]
    return t


_SHOW_COLUMNS = {
    "escape_times": ["temperature", "barrier_ratio", "escaped", "censored_frac", "tau_steps", "tau_lo", "tau_hi"],
    "arrhenius": ["dF_fit", "dF_lo", "dF_hi", "barrier_closed_form", "barrier_measured", "dF_over_barrier", "escapes",
                  "censored"],
}


ESCAPE = ExperimentKind(
    name="escape", spec_type=EscapeSpec, make_context=make_escape_context, plan=plan_escape,
    run_unit=run_escape_unit, analyse=analyse_escape, load_model=load_escape_model, show=show_escape,
    make_spec=make_escape_spec,
)
"""First-passage times out of the trapped rank-0 phase of a deep linear network (Langevin noise)."""
