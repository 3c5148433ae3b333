"""The phase view of grokking: the (weight decay x init scale x seed) grid as ONE ensemble.

Every member starts from the init of its seed (the same draw for every weight decay and
init scale of that seed) multiplied by its init scale, and is trained by the foundation
trainer with AdamW (decoupled decay ``beta`` = the member's weight decay, canonical
``alpha = beta / 2``), full batch unless the spec gives a batch size, recorded at
log-spaced steps. The grid is cut into chunks of at most ``chunk_size`` members; each chunk
is one vectorised program and one piece of the run store (so an interrupted run resumes).

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
from typing import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from phaseprobe import __version__
from phaseprobe.grokking.spec import GrokSpec
from phaseprobe.models import build_model
from phaseprobe.train import TrainConfig, Trainer, log_epochs

PHASES = ("underfit", "memorising", "grokking", "generalising")


def init_key(seed: int):
    """The init key of a seed (the sweep's convention, so a seed means the same init everywhere)."""
    return jax.random.fold_in(jax.random.PRNGKey(int(seed)), 0)


def shuffle_key(seed: int):
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


class GrokContext:
    """Dataset, model builder and compiled trainer for one grokking spec (built once)."""

    def __init__(self, spec: GrokSpec, dataset=None):
        from phaseprobe.data.modular import load_modular

        self.spec = spec
        self.dataset = dataset if dataset is not None else load_modular(
            p=spec.p, op=spec.op, train_frac=spec.train_frac, seed=spec.data_seed)
        self.config = TrainConfig(loss="ce", optimizer="adamw", lr=spec.lr, b1=spec.b1, b2=spec.b2,
                                  batch_size=spec.batch_size, epochs=1)
        self.trainer = Trainer(self.members([0], [1.0]), self.dataset, self.config)
        spe = self.trainer.steps_per_epoch
        self.epochs = int(math.ceil(spec.steps / spe))

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

    def record_epochs(self, epochs: int | None = None) -> list[int]:
        e = self.epochs if epochs is None else int(epochs)
        return log_epochs(e, self.spec.n_records)

    # ---- parameters <-> arrays (the run store keeps stacked leaves) -----------------------
    @staticmethod
    def params_to_arrays(model) -> dict[str, np.ndarray]:
        leaves = jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array))
        return {f"p{i:03d}": np.asarray(x) for i, x in enumerate(leaves)}

    def arrays_to_model(self, arrays: dict[str, np.ndarray], index: int | None = None):
        """The stacked model stored in ``arrays`` (or its member ``index``, unstacked)."""
        n = int(next(iter(arrays.values())).shape[0])
        skel = self.members([0] * n, [1.0] * n)
        params, static = eqx.partition(skel, eqx.is_inexact_array)
        leaves, treedef = jax.tree_util.tree_flatten(params)
        new = [jnp.asarray(arrays[f"p{i:03d}"]) for i in range(len(leaves))]
        model = eqx.combine(jax.tree_util.tree_unflatten(treedef, new), static)
        if index is None:
            return model
        return jax.tree_util.tree_map(lambda x: x[index] if eqx.is_array(x) else x, model)


def records_frame(ctx: GrokContext, result, members: pd.DataFrame, piece: str, seconds: float) -> pd.DataFrame:
    """One row per (member, record) of a finished training, with its phase."""
    spec = ctx.spec
    rows = []
    n_rec = len(result.records)
    for r_i, rec in enumerate(result.records):
        for m, mem in enumerate(members.itertuples(index=False)):
            rows.append({
                "spec_hash": spec.grid_hash(), "version": __version__, "name": spec.name, "setup": spec.setup,
                "p": spec.p, "op": spec.op, "train_frac": spec.train_frac, "model": spec.model, "piece": piece,
                "member": int(mem.member), "weight_decay": mem.weight_decay, "alpha": mem.alpha,
                "strength": mem.weight_decay, "convention": "decoupled", "init_scale": mem.init_scale,
                "seed": int(mem.seed), "epoch": int(rec["epoch"][m]), "step": int(rec["step"][m]),
                "final": r_i == n_rec - 1,
                "train_acc": float(rec["train_acc"][m]), "test_acc": float(rec["test_acc"][m]),
                "train_error": float(rec["train_error"][m]), "test_error": float(rec["test_error"][m]),
                "w_sq": float(rec["w_sq"][m]), "grad_norm_E": float(rec["grad_norm_E"][m]),
                "diverged": bool(rec["diverged"][m]), "seconds": float(seconds),
            })
    df = pd.DataFrame(rows)
    df["phase"] = phase_label(df["train_acc"], df["test_acc"], spec)
    return df


def run_grid(
    ctx: GrokContext,
    store=None,
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[pd.DataFrame, dict[str, dict]]:
    """Train the grid (chunk by chunk, resuming from ``store``); return (records, params by piece).

    ``on_progress(member_steps_done, member_steps_total)`` is called as training advances.
    """
    spec = ctx.spec
    members = grid_members(spec)
    cs = spec.chunk_size
    chunks = [members.iloc[j:j + cs].reset_index(drop=True) for j in range(0, len(members), cs)]
    spe = ctx.trainer.steps_per_epoch
    total = len(members) * ctx.epochs * spe
    done_steps = 0
    done = store.done_pieces() if store is not None else set()
    frames, params = [], {}
    for c_i, chunk in enumerate(chunks):
        piece = f"grid-c{c_i:04d}"
        k = len(chunk)
        if piece in done:
            frames.append(pd.read_parquet(store.records_dir / f"{piece}.parquet"))
            params[piece] = store.load_params(piece)
            done_steps += k * ctx.epochs * spe
            if on_progress:
                on_progress(done_steps, total)
            continue
        model = ctx.members(chunk["seed"].tolist(), chunk["init_scale"].tolist())
        keys = jnp.stack([shuffle_key(s) for s in chunk["seed"]])
        base = done_steps

        def progress(e_done, e_total, n_active, base=base, k=k):
            if on_progress:
                on_progress(base + k * e_done * spe, total)

        t0 = time.perf_counter()
        res = ctx.trainer.train(model, jnp.asarray(chunk["alpha"].to_numpy(), jnp.float32), key=keys,
                                epochs=ctx.epochs, record_at=ctx.record_epochs(),
                                chunk_epochs=max(1, ctx.epochs // 100), on_progress=progress)
        df = records_frame(ctx, res, chunk, piece, time.perf_counter() - t0)
        arrays = ctx.params_to_arrays(res.model)
        if store is not None:
            store.write_piece(piece, df, arrays)
        frames.append(df)
        params[piece] = arrays
        done_steps += k * ctx.epochs * spe
    return pd.concat(frames, ignore_index=True), params


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
