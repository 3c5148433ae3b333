"""The phase view of grokking: the (weight decay x init scale x seed) grid as ONE ensemble.

Every member starts from the init of its seed (the same draw for every weight decay and
init scale of that seed) multiplied by its init scale, and is trained by the foundation
trainer with AdamW (decoupled decay ``beta`` = the member's weight decay, canonical
``alpha = beta / 2``), full batch unless the spec gives a batch size, recorded at
log-spaced steps. The grid is cut into chunks of at most ``chunk_size`` members, each chunk
one vectorised program (a :class:`GridUnit`); the training of a chunk is cut into
``pieces_per_chunk`` consecutive stretches of steps (cut at record steps), each one piece of the run store (the
parameters, AdamW's moments and the per-member stop flags are stored with it, so an
interrupted run resumes from the last finished stretch with the same numbers as one
uninterrupted training).

Phases of a record (thresholds from the spec):

* ``"underfit"``: train accuracy below ``train_threshold`` (early training, or collapsed);
* ``"memorising"``: train fitted, test accuracy below ``memorise_below``;
* ``"grokking"``: train fitted, test accuracy between ``memorise_below`` and ``test_threshold``;
* ``"generalising"``: train fitted and test accuracy at least ``test_threshold``.

The **grokking delay** of a member is ``t_test - t_train``: the steps at which train and test
accuracy first reach their thresholds, each interpolated linearly in log(step) between the two
records that bracket the crossing (records are log-spaced, so the resolution is relative).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from phaseprobe import __version__
from phaseprobe.grokking.spec import GrokSpec
from phaseprobe.models import build_model
from phaseprobe.store.arrays import arrays_to_model, arrays_to_tree, model_to_arrays, tree_to_arrays
from phaseprobe.sweep.run import init_key  # a seed means the same init in every command
from phaseprobe.train import TrainConfig, Trainer, log_epochs

PHASES = ("underfit", "memorising", "grokking", "generalising")
STOPPED_KEY = "stopped"
"""Per-member flag stored with a grid piece: the member diverged, its training stopped."""
STOP_EPOCH_KEY = "stop_epoch"
"""Per-member epoch count at which a stopped member stopped (stored with a grid piece)."""


def grok_shuffle_key(seed: int):
    """The minibatch-order key of a grid member (its seed's; epoch e shuffles with ``fold_in(key, e)``)."""
    return jax.random.fold_in(jax.random.PRNGKey(int(seed)), 1)


def grid_members(spec: GrokSpec) -> pd.DataFrame:
    """One row per ensemble member: ``member, weight_decay, alpha, init_scale, seed``."""
    rows = []
    for seed in spec.seed_list():
        for s in spec.init_scales:
            for wd in spec.weight_decays:
                rows.append({"weight_decay": float(wd), "alpha": float(wd) / 2.0, "init_scale": float(s), "seed": int(seed)})
    df = pd.DataFrame(rows)
    df.insert(0, "member", np.arange(len(df)))
    return df


def phase_label(train_acc, test_acc, spec: GrokSpec) -> np.ndarray:
    """The phase name of each (train_acc, test_acc) pair (see the module docstring)."""
    tr = np.asarray(train_acc, float)
    te = np.asarray(test_acc, float)
    out = np.where(tr < spec.train_threshold, "underfit",
                   np.where(te >= spec.test_threshold, "generalising",
                            np.where(te < spec.memorise_below, "memorising", "grokking")))
    return out


def scale_members(model, scales):
    """Multiply member m's parameters by ``scales[m]`` (the init-scale knob, per member)."""
    scales = jnp.asarray(scales, jnp.float32)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    params = jax.tree_util.tree_map(lambda x: x * scales.reshape((-1,) + (1,) * (x.ndim - 1)).astype(x.dtype), params)
    return eqx.combine(params, static)


def member_of(model, index: int):
    """Member ``index`` of a stacked model, unstacked (an ordinary Equinox module)."""
    return jax.tree_util.tree_map(lambda x: x[index] if eqx.is_array(x) else x, model)


# ---------------------------------------------------------------------------------------------
# the plan: chunks of members, each chunk's training cut into stretches of epochs
# ---------------------------------------------------------------------------------------------
def grid_epochs(spec: GrokSpec) -> tuple[int, int]:
    """``(epochs, steps_per_epoch)`` of every grid member (``steps`` rounded up to whole epochs).

    Read from the task's training-set size (the trainer's rule: one step per epoch for full
    batch, else ``ceil(n_train / batch_size)``).
    """
    from phaseprobe.data.modular import load_modular

    n = load_modular(p=spec.p, op=spec.op, train_frac=spec.train_frac, seed=spec.data_seed).n_train
    spe = 1 if spec.batch_size is None or spec.batch_size >= n else int(math.ceil(n / spec.batch_size))
    return int(math.ceil(spec.steps / spe)), spe


def grid_segments(epochs: int, n_records: int, n: int) -> list[tuple[int, int]]:
    """Cut ``epochs`` into at most ``n`` consecutive stretches ``(start, end)`` of about equal length.

    Every cut is a record epoch (``log_epochs(epochs, n_records)``), so each stretch ends with a
    record and the stretches record exactly what one uninterrupted training records.
    """
    marks = log_epochs(int(epochs), n_records)
    cuts = set()
    for j in range(1, n):
        target = j * epochs / n
        cuts.add(min(marks, key=lambda e: (abs(e - target), e)))
    cuts = sorted(c for c in cuts if 0 < c < epochs)
    bounds = [0] + cuts + [int(epochs)]
    return list(zip(bounds[:-1], bounds[1:]))


@dataclass(frozen=True)
class GridUnit:
    """One chunk of grid members trained as one ensemble, stored in consecutive stretches."""

    uid: str
    members: tuple[int, ...]
    n_pieces: int

    @property
    def pieces(self) -> list[str]:
        return [f"{self.uid}-s{j:02d}" for j in range(self.n_pieces)]

    @property
    def chain(self) -> bool:
        """Each stretch starts from the previous one's parameters and optimiser state."""
        return True

    @property
    def runs_per_piece(self) -> int:
        return len(self.members)


def plan_grid_units(spec: GrokSpec) -> list[GridUnit]:
    """The grid's units: chunks of at most ``chunk_size`` members, each cut into stretches."""
    epochs, _ = grid_epochs(spec)
    n_seg = len(grid_segments(epochs, spec.n_records, spec.pieces_per_chunk))
    n, cs = len(grid_members(spec)), spec.chunk_size
    return [GridUnit(f"grid-c{j // cs:04d}", tuple(range(j, min(j + cs, n))), n_seg) for j in range(0, n, cs)]


class GrokContext:
    """Dataset, model builder and compiled trainer for one grokking spec (built once).

    With the hysteresis stage on, ``hysteresis`` holds one sweep context per loop (label ->
    :class:`~phaseprobe.sweep.run.SweepContext`) on the same data.
    """

    def __init__(self, spec: GrokSpec, dataset=None):
        from phaseprobe.data.modular import load_modular

        self.spec = spec
        want = {"p": spec.p, "op": spec.op, "train_frac": float(spec.train_frac), "seed": int(spec.data_seed)}
        meta = getattr(dataset, "meta", None) or {}
        if dataset is None or any(meta.get(k) != v for k, v in want.items()):  # a grid cell's other task
            dataset = load_modular(p=spec.p, op=spec.op, train_frac=spec.train_frac, seed=spec.data_seed)
        self.dataset = dataset
        spec.check_with_data(dataset, self.make_one)  # memory estimate: before any model is built
        self.config = TrainConfig(loss="ce", optimizer="adamw", lr=spec.lr, b1=spec.b1, b2=spec.b2, eps=spec.eps,
                                  schedule=spec.schedule, warmup_steps=spec.warmup_steps,
                                  decay_steps=spec.decay_steps, end_lr_factor=spec.end_lr_factor,
                                  batch_size=spec.batch_size, epochs=1)
        self.trainer = Trainer(self.members([0], [1.0]), self.dataset, self.config)
        spe = self.trainer.steps_per_epoch
        self.epochs = int(math.ceil(spec.steps / spe))
        self.segments = grid_segments(self.epochs, spec.n_records, spec.pieces_per_chunk)
        self.members_table = grid_members(spec)
        self.hysteresis = {}
        if spec.hysteresis.enabled:
            from phaseprobe.grokking.metastable import hysteresis_loops, hysteresis_sweep_spec
            from phaseprobe.sweep.run import SweepContext

            for label, wds in hysteresis_loops(spec):
                self.hysteresis[label] = SweepContext(hysteresis_sweep_spec(spec, wds, spe, label), dataset=self.dataset)

    def make_one(self, key):
        s = self.spec
        return build_model(s.model, self.dataset.input_shape, self.dataset.output_dim, key=key, depth=s.depth,
                           width=s.width, activation=s.activation, bias=s.bias, init=s.init, init_scale=1.0,
                           **s.model_options())

    def members(self, seeds: Sequence[int], scales: Sequence[float]):
        """Stacked fresh models: member m from ``seeds[m]``'s init times ``scales[m]``.

        One eager build per distinct seed, stacked (the same numbers as ``init_members``'s
        vmapped build, without tracing the constructor for every grid shape).
        """
        built: dict[int, object] = {}
        for s in seeds:
            if int(s) not in built:
                built[int(s)] = self.make_one(init_key(int(s)))
        ms = [built[int(s)] for s in seeds]
        stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs) if eqx.is_array(xs[0]) else xs[0], *ms)
        return scale_members(stacked, scales)

    def skeleton(self, n_members: int):
        """A stacked model of ``n_members`` members: the shape stored arrays are put back into."""
        return self.members([0] * n_members, [1.0] * n_members)

    def stored_model(self, arrays: dict[str, np.ndarray], index: int | None = None):
        """The stacked model stored in ``arrays`` (or its member ``index``, unstacked)."""
        n = int(arrays["p000"].shape[0])
        model = arrays_to_model(arrays, self.skeleton(n))
        return model if index is None else member_of(model, index)

    def record_epochs(self, epochs: int | None = None) -> list[int]:
        e = self.epochs if epochs is None else int(epochs)
        return log_epochs(e, self.spec.n_records)


def records_frame(ctx: GrokContext, result, members: pd.DataFrame, piece: str, seconds: float,
                  epoch_offset: int = 0, last: bool = True, frozen: dict | None = None) -> pd.DataFrame:
    """One row per (member, record) of a finished stretch of training, with its phase.

    ``epoch_offset``: epochs trained before the stretch; ``last``: the stretch ends the
    training (its last record is ``final``). ``frozen`` (``{"mask", "metrics", "epoch"}``):
    members stopped in an earlier stretch, recorded at their stopped parameters (``metrics``,
    a full evaluation of them) and stop epoch, as one uninterrupted training records them.
    """
    spec = ctx.spec
    spe = ctx.trainer.steps_per_epoch
    cols = ("train_acc", "test_acc", "train_error", "test_error", "w_sq", "grad_norm_E")
    rows = []
    n_rec = len(result.records)
    for r_i, rec in enumerate(result.records):
        for m, mem in enumerate(members.itertuples(index=False)):
            src, epoch, div = rec, epoch_offset + int(rec["epoch"][m]), bool(rec["diverged"][m])
            if frozen is not None and frozen["mask"][m]:
                src, epoch, div = frozen["metrics"], int(frozen["epoch"][m]), True
            rows.append({
                "spec_hash": spec.grid_hash(), "version": __version__, "name": spec.name, "setup": spec.setup,
                "stage": "grid", "p": spec.p, "op": spec.op, "train_frac": spec.train_frac, "model": spec.model,
                "piece": piece, "member": int(mem.member), "weight_decay": mem.weight_decay, "alpha": mem.alpha,
                "strength": mem.weight_decay, "convention": "decoupled", "init_scale": mem.init_scale,
                "seed": int(mem.seed), "epoch": epoch, "step": epoch * spe,
                "final": bool(last and r_i == n_rec - 1),
                **{c: float(src[c][m]) for c in cols},
                "diverged": div, "seconds": float(seconds),
            })
    df = pd.DataFrame(rows)
    df["phase"] = phase_label(df["train_acc"], df["test_acc"], spec)
    return df


def run_grid_unit(ctx: GrokContext, unit: GridUnit, done: set[str],
                  emit: Callable[[str, pd.DataFrame, dict], None],
                  load_params: Callable[[str], dict] | None = None) -> None:
    """Train the stretches of ``unit`` not in ``done``; hand each to ``emit(piece, records, arrays)``.

    A chain: stretch j starts from stretch j-1's stored parameters and AdamW state
    (``load_params``), with the shuffle keys continuing at its first epoch, so a resumed
    training equals an uninterrupted one. A member that diverged keeps its last finite
    parameters and is recorded diverged in every later stretch.
    """
    from phaseprobe.experiment import resume_point

    tr = ctx.trainer
    pieces = unit.pieces
    start = resume_point(unit, done)
    if start >= len(pieces):
        return
    chunk = ctx.members_table.iloc[list(unit.members)].reset_index(drop=True)
    k = len(chunk)
    seeds, scales = chunk["seed"].tolist(), chunk["init_scale"].tolist()
    alpha = jnp.asarray(chunk["alpha"].to_numpy(), jnp.float32)
    keys = jnp.stack([grok_shuffle_key(s) for s in seeds])
    record_at = ctx.record_epochs()
    stopped, stop_epoch = np.zeros(k, bool), np.zeros(k, np.int64)
    if start == 0:
        model, opt_state = ctx.members(seeds, scales), None
    else:
        if load_params is None:
            raise RuntimeError("resuming a grid chunk needs load_params")
        arrays = load_params(pieces[start - 1])
        model = arrays_to_model(arrays, ctx.skeleton(k))
        like = tr.init_opt_state(eqx.filter(model, eqx.is_inexact_array), jnp.full((k,), tr.config.lr, jnp.float32), alpha)
        opt_state = arrays_to_tree(arrays, like, prefix="o")
        stopped = np.asarray(arrays[STOPPED_KEY], bool).copy()
        stop_epoch = np.asarray(arrays[STOP_EPOCH_KEY], np.int64).copy()
    for j in range(start, len(pieces)):
        a, b = ctx.segments[j]
        t0 = time.perf_counter()
        marks = [e - a for e in record_at if a < e <= b]
        res = tr.train(model, alpha, key=keys, opt_state=opt_state, epoch_offset=a, epochs=b - a, record_at=marks)
        frozen = None
        new_model, new_opt = res.model, res.state.opt_state
        if stopped.any():
            # a stopped member trains with the ensemble (one program) but keeps its stopped weights
            mask = jnp.asarray(stopped)
            pick = lambda new, old: jnp.where(mask.reshape((-1,) + (1,) * (new.ndim - 1)), old, new)  # noqa: E731
            new_model = eqx.combine(jax.tree_util.tree_map(pick, eqx.filter(res.model, eqx.is_inexact_array),
                                                           eqx.filter(model, eqx.is_inexact_array)),
                                    eqx.filter(res.model, eqx.is_inexact_array, inverse=True))
            new_opt = jax.tree_util.tree_map(
                lambda new, old: pick(new, old) if getattr(new, "ndim", 0) and new.shape[0] == k else new,
                res.state.opt_state, opt_state)
            frozen = {"mask": stopped, "epoch": stop_epoch,
                      "metrics": tr.evaluate(eqx.filter(model, eqx.is_inexact_array), alpha, grad=True)}
        df = records_frame(ctx, res, chunk, pieces[j], time.perf_counter() - t0, epoch_offset=a,
                           last=j == len(pieces) - 1, frozen=frozen)
        newly = np.asarray(res.state.diverged, bool) & ~stopped
        stop_epoch = np.where(newly, a + np.asarray(res.state.epochs, np.int64), stop_epoch)
        stopped = stopped | newly
        model, opt_state = new_model, new_opt
        arrays = model_to_arrays(model)
        arrays.update(tree_to_arrays(opt_state, prefix="o"))
        arrays[STOPPED_KEY] = stopped.copy()
        arrays[STOP_EPOCH_KEY] = stop_epoch.copy()
        emit(pieces[j], df, arrays)


def train_grok_grid(ctx: GrokContext) -> tuple[pd.DataFrame, dict[str, dict]]:
    """Train the whole grid in this process, nothing stored; return (records, final arrays by chunk).

    The same numbers as ``phaseprobe grok`` (which runs the same units through the run store);
    the arrays of chunk ``grid-c0000`` are its last stretch's (parameters ``p000``, ...).
    """
    frames, final = [], {}
    for unit in plan_grid_units(ctx.spec):
        got: dict[str, tuple] = {}
        run_grid_unit(ctx, unit, set(), lambda piece, df, arrays: got.__setitem__(piece, (df, arrays)),
                      lambda piece: got[piece][1])
        frames += [got[p][0] for p in unit.pieces]
        final[unit.uid] = got[unit.pieces[-1]][1]
    return pd.concat(frames, ignore_index=True), final


def crossing_step(steps: np.ndarray, acc: np.ndarray, threshold: float) -> float:
    """First step where ``acc`` reaches ``threshold``, interpolated in log(step); NaN if never."""
    steps = np.asarray(steps, float)
    acc = np.asarray(acc, float)
    hit = np.flatnonzero(acc >= threshold)
    if hit.size == 0:
        return float("nan")
    i = int(hit[0])
    if i == 0:
        return float(steps[0])
    s0, s1, a0, a1 = steps[i - 1], steps[i], acc[i - 1], acc[i]
    if a1 == a0 or s0 <= 0:
        return float(s1)
    f = (threshold - a0) / (a1 - a0)
    return float(np.exp(np.log(s0) + f * (np.log(s1) - np.log(s0))))


def grokking_summary(df: pd.DataFrame, spec: GrokSpec) -> pd.DataFrame:
    """Per member: train-fit and test-fit steps, the delay, the final phase and accuracies."""
    rows = []
    for m, g in df.sort_values("step").groupby("member"):
        g = g[g["step"] > 0]
        last = g.iloc[-1]
        t_train = crossing_step(g["step"], g["train_acc"], spec.train_threshold)
        t_test = crossing_step(g["step"], g["test_acc"], spec.test_threshold)
        rows.append({
            "member": int(m), "weight_decay": float(last["weight_decay"]), "alpha": float(last["alpha"]),
            "init_scale": float(last["init_scale"]), "seed": int(last["seed"]),
            "t_train": t_train, "t_test": t_test, "delay": t_test - t_train,
            "delay_ratio": t_test / t_train if t_train > 0 else float("nan"),
            "grokked": bool(np.isfinite(t_test)), "final_step": int(last["step"]),
            "final_train_acc": float(last["train_acc"]), "final_test_acc": float(last["test_acc"]),
            "final_w_sq": float(last["w_sq"]), "max_w_sq": float(g["w_sq"].max()),
            "final_phase": str(last["phase"]), "diverged": bool(last["diverged"]),
            "steps_memorising": _steps_in_phase(g, "memorising"),
        })
    return pd.DataFrame(rows)


def _steps_in_phase(g: pd.DataFrame, phase: str) -> float:
    """Approximate number of steps spent in ``phase`` (records weighted by the step gaps)."""
    s = g["step"].to_numpy(float)
    ph = g["phase"].to_numpy()
    if len(s) < 2:
        return 0.0
    gaps = np.diff(np.concatenate([[0.0], s]))
    return float(np.sum(gaps[ph == phase]))


def delay_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Delay (mean over seeds; NaN where a seed did not grok) by (init_scale, weight_decay)."""
    g = summary.groupby(["init_scale", "weight_decay"])
    out = g.agg(t_train=("t_train", "mean"), t_test=("t_test", "mean"), delay=("delay", "mean"),
                delay_std=("delay", "std"), grokked=("grokked", "mean"), final_test_acc=("final_test_acc", "mean"),
                final_train_acc=("final_train_acc", "mean"), n_seeds=("seed", "count")).reset_index()
    out.loc[out["grokked"] < 1.0, "delay"] = np.nan  # a cell counts only when every seed grokked
    return out
