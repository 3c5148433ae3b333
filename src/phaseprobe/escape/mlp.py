"""Escape of an MLP on data from its trapped low-accuracy phase (``phaseprobe escape --system mlp``).

The network (``depth`` hidden layers of ``width`` units, cross-entropy, canonical L2 ``alpha
||w||^2`` on every parameter) is trapped the way a loop's down branch traps it: trained
noise-free (full-batch Adam) at ``prepare_alpha``, above the upper spinodal, where it collapses to
the trivial phase (chance accuracy, ``w ~ 0``), then held at ``alpha``, below the equal-loss
point, where the trivial phase is metastable (with two or more hidden layers ``w = 0`` is a local
minimum of ``L_alpha`` for every ``alpha > 0``) and the learned phase the stable one. A
``phaseprobe sweep --mode loop`` on the same model finds the window (the README names the one
used by the default).

Two kinds of noise drive the escape, each a grid of replicas in one ensemble:

* ``noise = "langevin"``: full-batch gradient descent plus ``sqrt(2 lr T) xi`` at every
  temperature of ``temperatures`` (or ``barrier / barrier_ratios`` with the barrier measured in
  the preparation), plus ``control_replicas`` noise-free replicas (``T = 0``: the trap holds);
* ``noise = "sgd"``: plain minibatch SGD (no Langevin term) at every learning rate of ``lrs``
  with batch ``batch_size``; the control variable is ``T = lr / batch`` (the minibatch noise's
  temperature is ``lr tr(Sigma_g) / (2 B D)`` per direction, proportional to ``lr / B`` at a fixed
  state; :func:`phaseprobe.escape.sgd.sgd_stationary_variance` is the quadratic-well check).

A replica has escaped at the first check (every ``check_every`` epochs; an epoch is one step at
full batch) at which its training accuracy exceeds ``threshold`` (default: midway between the
trapped and the learned minimum's training accuracy). First-passage times are fitted with the
censored maximum-likelihood Arrhenius fit of :mod:`phaseprobe.escape.analysis` in time units
``lr x steps`` (the SDE's time: a 1/lr prefactor is then no part of the slope). The barrier is
measured independently in the preparation: the regularised loss along the straight path from the
trapped to the learned minimum (its maximum bounds the lowest saddle from above) and at the saddle
refined from that maximum by gentlest ascent on ``L_alpha`` (:func:`phaseprobe.paths.saddles.refine_saddle`),
each minus the loss at the trapped minimum.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError

from phaseprobe.errors import PhaseprobeError, SpecError
from phaseprobe.escape.kind import PREPARE
from phaseprobe.experiment import ExperimentKind, Phase, PlainUnit

NOISES = ("langevin", "sgd")


class MLPEscapeSpec(BaseModel):
    """First-passage times of an MLP out of its trapped trivial phase (see the module doc)."""

    model_config = ConfigDict(extra="forbid")

    name: str = "escape-mlp"
    dataset: str = "digits"
    data_dir: Optional[str] = None
    n_train: Optional[int] = 200
    n_test: Optional[int] = None
    depth: int = 2
    width: int = 8
    activation: str = "relu"
    alpha: float = 0.02
    """Canonical strength (``L = E + alpha ||w||^2``) at which the trap is held."""
    prepare_alpha: float = 0.1
    prepare_steps: int = 1500
    prepare_lr: float = 0.01
    noise: str = "langevin"
    temperatures: Optional[list[float]] = None
    barrier_ratios: list[float] = [1.0, 2.0, 3.0, 4.0]
    """Langevin temperatures ``T = barrier / ratio`` (barrier at the refined saddle) unless ``temperatures``."""
    control_replicas: int = 4
    lr: float = 0.1
    """Langevin step size (full-batch gradient descent)."""
    lrs: list[float] = [0.4, 0.2, 0.1, 0.05]
    """SGD learning rates (``noise = "sgd"``)."""
    batch_size: int = 8
    replicas: int = 12
    steps: int = 600
    """Budget in epochs (one step each at full batch); replicas still trapped are censored."""
    check_every: int = 25
    n_pieces: int = 2
    threshold: Optional[float] = None
    saddle_steps: int = 10
    seed: int = 0

    def hash(self) -> str:
        d = self.model_dump()
        d.pop("name", None)
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def piece_epochs(self) -> list[int]:
        """Cumulative epochs at the end of each piece (multiples of ``check_every``)."""
        checks = self.steps // self.check_every
        ends = np.linspace(0, checks, self.n_pieces + 1).round().astype(int)[1:]
        return [int(e) * self.check_every for e in ends]

    def n_levels(self) -> int:
        if self.noise == "sgd":
            return len(self.lrs)
        return len(self.temperatures) if self.temperatures is not None else len(self.barrier_ratios)

    def n_members(self) -> int:
        return self.n_levels() * self.replicas + (self.control_replicas if self.noise == "langevin" else 0)

    def check(self) -> "MLPEscapeSpec":
        """Validate everything before any compute (one-line errors)."""
        for f in ("depth", "width", "replicas", "steps", "check_every", "n_pieces", "prepare_steps", "batch_size"):
            if getattr(self, f) < 1:
                raise SpecError(f"{f}: must be a positive integer, got {getattr(self, f)}")
        for f in ("control_replicas", "saddle_steps"):
            if getattr(self, f) < 0:
                raise SpecError(f"{f}: must be an integer >= 0, got {getattr(self, f)}")
        if self.depth < 2:
            raise SpecError(f"depth: the trivial phase is metastable only with >= 2 hidden layers, got {self.depth}; use depth >= 2")
        if self.noise not in NOISES:
            raise SpecError(f"noise: unknown '{self.noise}'; use one of {', '.join(NOISES)}")
        for f in ("alpha", "prepare_alpha", "prepare_lr", "lr"):
            v = getattr(self, f)
            if not (math.isfinite(v) and v > 0):
                raise SpecError(f"{f}: must be a positive number, got {v}")
        if not self.prepare_alpha > self.alpha:
            raise SpecError(f"prepare_alpha: the trap is prepared above the operating alpha ({self.alpha}), got "
                            f"{self.prepare_alpha}; raise prepare_alpha above the upper spinodal")
        if self.steps < self.check_every * self.n_pieces:
            raise SpecError(f"steps: {self.steps} is fewer than check_every x n_pieces = {self.check_every * self.n_pieces}; raise steps")
        levels = self.lrs if self.noise == "sgd" else (self.temperatures if self.temperatures is not None else self.barrier_ratios)
        name = "lrs" if self.noise == "sgd" else ("temperatures" if self.temperatures is not None else "barrier_ratios")
        v = np.asarray(levels, np.float64)
        if len(v) < 2 or not np.all(np.isfinite(v)) or np.any(v <= 0):
            raise SpecError(f"{name}: give at least two positive values")
        if len(set(np.round(v, 15))) != len(v):
            raise SpecError(f"{name}: duplicate values; give distinct values")
        if self.threshold is not None and not (0 < self.threshold < 1):
            raise SpecError(f"threshold: a training accuracy in (0, 1), got {self.threshold}")
        return self


def make_mlp_escape_spec(data: dict) -> MLPEscapeSpec:
    """A validated :class:`MLPEscapeSpec` from a dict, with one-line errors."""
    try:
        spec = MLPEscapeSpec.model_validate(dict(data))
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "spec"
        raise SpecError(f"{field}: {err['msg']}; fix the value (see `phaseprobe escape --help`)") from None
    return spec.check()


def time_piece(i: int) -> str:
    return f"t{i:02d}"


class MLPEscapeContext:
    """Data on the device, the model skeleton, the preparation trainer (Adam, noise-free) and the
    escape trainer (Langevin full batch, or minibatch SGD)."""

    def __init__(self, spec: MLPEscapeSpec, dataset=None):
        from phaseprobe.data.registry import load_dataset
        from phaseprobe.train import TrainConfig, Trainer

        self.spec = spec
        if dataset is None:
            opts = {"n_train": spec.n_train, "n_test": spec.n_test}
            if spec.data_dir is not None:
                opts["data_dir"] = spec.data_dir
            dataset = load_dataset(spec.dataset, **opts)
        if dataset.task != "classification":
            raise PhaseprobeError(f"dataset: '{spec.dataset}' is not a classification task; use digits or fashion-mnist")
        if spec.noise == "sgd" and spec.batch_size >= dataset.n_train:
            raise SpecError(f"batch_size: {spec.batch_size} is not below the {dataset.n_train} training samples, so SGD "
                            f"has no minibatch noise; lower batch_size")
        self.dataset = dataset
        one = self.members(1)
        self.prep_trainer = Trainer(one, dataset, TrainConfig(loss="ce", optimizer="adam", lr=spec.prepare_lr,
                                                              batch_size=None, epochs=1))
        if spec.noise == "langevin":
            cfg = TrainConfig(loss="ce", optimizer="gd", lr=spec.lr, batch_size=None, epochs=1, noise="langevin")
        else:
            cfg = TrainConfig(loss="ce", optimizer="sgd", lr=spec.lrs[0], batch_size=spec.batch_size, epochs=1)
        self.trainer = Trainer(one, dataset, cfg)
        self.steps_per_epoch = self.trainer.steps_per_epoch

    def make_one(self, key):
        from phaseprobe.models.nets import MLP

        s = self.spec
        return MLP(int(np.prod(self.dataset.x_train.shape[1:])), int(self.dataset.n_classes), depth=s.depth,
                   width=s.width, activation=s.activation, key=key)

    def members(self, k: int):
        from phaseprobe.models.nets import init_members

        return init_members(self.make_one, jax.random.split(jax.random.PRNGKey(self.spec.seed), k))

    def from_arrays(self, arrays: dict, k: int):
        like = jax.eval_shape(lambda: self.members(k))
        params, static = eqx.partition(like, eqx.is_inexact_array)
        leaves, tree = jax.tree_util.tree_flatten(params)
        new = [jnp.asarray(arrays[f"w{i}"]) for i in range(len(leaves))]
        return eqx.combine(jax.tree_util.tree_unflatten(tree, new), static)

    @staticmethod
    def to_arrays(model) -> dict:
        leaves = jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array))
        return {f"w{i}": np.asarray(x) for i, x in enumerate(leaves)}

    def levels(self, barrier: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per member: (noise level index, temperature T, learning rate); index -1 is the noise-free control.

        Langevin: ``T`` as given (or ``barrier / ratio``), the spec's ``lr``; SGD: ``T = lr / batch``.
        """
        s = self.spec
        if s.noise == "sgd":
            lrs = np.asarray(s.lrs, np.float64)
            idx = np.repeat(np.arange(len(lrs)), s.replicas)
            return idx, lrs[idx] / s.batch_size, lrs[idx]
        temps = (np.asarray(s.temperatures, np.float64) if s.temperatures is not None
                 else barrier / np.asarray(s.barrier_ratios, np.float64))
        idx = np.concatenate([np.repeat(np.arange(len(temps)), s.replicas), np.full(s.control_replicas, -1)])
        t = np.where(idx >= 0, temps[np.maximum(idx, 0)], 0.0)
        return idx, t, np.full(len(idx), s.lr)


def make_mlp_escape_context(spec: MLPEscapeSpec, dataset=None) -> MLPEscapeContext:
    return MLPEscapeContext(spec, dataset=dataset)


def plan_mlp_escape(spec: MLPEscapeSpec) -> list[Phase]:
    """One phase, one chained unit: ``prepare`` then one piece per stretch of the budget."""
    pieces = (PREPARE,) + tuple(time_piece(i) for i in range(spec.n_pieces))
    return [Phase("escape", [PlainUnit("escape-mlp", pieces, chain=True, runs_per_piece=spec.n_members())])]


def _flat(trainer, model_one):
    """(flat parameter vector, unflatten) of a one-member model."""
    from jax.flatten_util import ravel_pytree

    params, static = eqx.partition(model_one, eqx.is_inexact_array)
    one = jax.tree_util.tree_map(lambda x: x[0], params)
    flat, unravel = ravel_pytree(one)
    return np.asarray(flat), unravel, static


def regularised_loss_fn(trainer, static, unravel, alpha: float):
    """``L_alpha(x) = E(x) + alpha ||x||^2`` of a flat parameter vector (mean cross-entropy over the
    training set, every parameter penalised: the trainer's convention)."""
    x_tr, y_tr = trainer.x_train, trainer.y_train

    def L(x):
        m = eqx.combine(unravel(x), jax.tree_util.tree_map(lambda s: s, static))
        logits = jax.vmap(m)(x_tr)
        e = jnp.mean(jax.nn.logsumexp(logits, axis=-1) - jnp.take_along_axis(logits, y_tr[:, None], axis=-1)[:, 0])
        return e + alpha * jnp.sum(x * x)

    return L


def prepare_trap(ctx: MLPEscapeContext) -> tuple[object, dict]:
    """The trapped and the learned minimum at ``alpha`` and the barrier between them (module doc).

    **Returns:** ``(trapped model (one member), record dict)``.
    """
    from phaseprobe.paths.landscape import FunctionLandscape
    from phaseprobe.paths.saddles import refine_saddle

    s = ctx.spec
    tr = ctx.prep_trainer
    start = ctx.members(1)
    key = jax.random.fold_in(jax.random.PRNGKey(s.seed), 0)
    # down branch: collapse above the spinodal, then hold at alpha (noise-free)
    trapped, _, d1 = tr.advance(start, s.prepare_steps, lr=s.prepare_lr, alpha=s.prepare_alpha, key=key)
    trapped, _, d2 = tr.advance(trapped, s.prepare_steps, lr=s.prepare_lr, alpha=s.alpha, key=key)
    # up branch: the learned minimum at alpha from the same initialisation
    learned, _, d3 = tr.advance(start, s.prepare_steps, lr=s.prepare_lr, alpha=s.alpha, key=key)
    if d1[0] or d2[0] or d3[0]:
        raise PhaseprobeError("prepare_lr: the preparation diverged; lower prepare_lr")
    pt = eqx.filter(trapped, eqx.is_inexact_array)
    pl = eqx.filter(learned, eqx.is_inexact_array)
    ev = tr.evaluate(jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), pt, pl), np.full(2, s.alpha, np.float32))
    rec = {"alpha": s.alpha, "prepare_alpha": s.prepare_alpha, "prepare_steps": s.prepare_steps,
           "trapped_train_acc": float(ev["train_acc"][0]), "trapped_test_acc": float(ev["test_acc"][0]),
           "learned_train_acc": float(ev["train_acc"][1]), "learned_test_acc": float(ev["test_acc"][1]),
           "trapped_loss": float(ev["loss"][0]), "learned_loss": float(ev["loss"][1]),
           "trapped_grad_norm": float(ev["grad_norm"][0]), "learned_grad_norm": float(ev["grad_norm"][1]),
           "trapped_w_sq": float(ev["w_sq"][0]), "learned_w_sq": float(ev["w_sq"][1])}
    if rec["learned_train_acc"] <= rec["trapped_train_acc"] + 0.1:
        raise PhaseprobeError(f"alpha: at {s.alpha} the model trained from its initialisation does not learn (train accuracy "
                              f"{rec['learned_train_acc']:.3f} vs trapped {rec['trapped_train_acc']:.3f}); lower alpha")
    # barrier: the straight path, then the saddle refined from its highest point
    xt, unravel, static = _flat(tr, trapped)
    xl, _, _ = _flat(tr, learned)
    L = regularised_loss_fn(tr, static, unravel, s.alpha)
    ts = np.linspace(0.0, 1.0, 201)
    lv = np.asarray(jax.jit(jax.vmap(L))(jnp.asarray(xt[None] + ts[:, None] * (xl - xt)[None], jnp.float32)), np.float64)
    j = int(np.argmax(lv))
    rec.update(barrier_path_max=float(lv[j] - lv[0]), path_t_max=float(ts[j]), learned_minus_trapped_loss=float(lv[-1] - lv[0]))
    if s.saddle_steps > 0 and 0 < j < len(ts) - 1:
        land = FunctionLandscape(L, int(xt.size))
        x0 = xt + ts[j] * (xl - xt)
        sad = refine_saddle(land, x0, steps=s.saddle_steps, newton_steps=3, key=s.seed)
        rec.update(barrier_saddle=float(sad.error - lv[0]), saddle_grad_norm=float(sad.grad_norm), saddle_index=int(sad.index),
                   saddle_index_lower_bound=bool(sad.index_lower_bound))
        sad_ok = sad.index == 1 and sad.grad_norm < 1e-2 * max(1.0, float(np.abs(lv).max()))
        rec["barrier_saddle_refined"] = bool(sad_ok)
    else:
        rec.update(barrier_saddle=math.nan, saddle_grad_norm=math.nan, saddle_index=-1, saddle_index_lower_bound=False,
                   barrier_saddle_refined=False)
    b = rec["barrier_saddle"] if rec["barrier_saddle_refined"] else rec["barrier_path_max"]
    rec["barrier"] = float(b)
    rec["barrier_source"] = "refined saddle" if rec["barrier_saddle_refined"] else "path maximum"
    thr = s.threshold if s.threshold is not None else 0.5 * (rec["trapped_train_acc"] + rec["learned_train_acc"])
    rec["threshold"] = float(thr)
    return trapped, rec


def criterion_text(threshold: float, spec: MLPEscapeSpec) -> str:
    return (f"training accuracy > {threshold:.4g} at a check every {spec.check_every} epochs"
            + (" (midway between the trapped and the learned minimum)" if spec.threshold is None else ""))


def run_mlp_escape_unit(ctx: MLPEscapeContext, unit: PlainUnit, done, emit, load_params, on_work=None) -> None:
    """Prepare the trap (once), then run every stretch of the budget still missing."""
    s = ctx.spec
    if PREPARE in done:
        prep = ctx.from_arrays(load_params(PREPARE), 1)
        info = {k: v[()] if np.ndim(v) == 0 else v for k, v in load_params(PREPARE).items() if k.startswith("info_")}
        barrier, thr = float(info["info_barrier"]), float(info["info_threshold"])
    else:
        prep, rec = prepare_trap(ctx)
        arrays = ctx.to_arrays(prep)
        arrays["info_barrier"] = np.asarray(rec["barrier"])
        arrays["info_threshold"] = np.asarray(rec["threshold"])
        emit(PREPARE, pd.DataFrame([{"piece": PREPARE, **rec}]), arrays)
        barrier, thr = rec["barrier"], rec["threshold"]
    idx, temp, lr = ctx.levels(barrier)
    k = len(idx)
    crit = criterion_text(thr, s)
    ends = s.piece_epochs()
    spe = ctx.steps_per_epoch
    noise_key = jax.random.fold_in(jax.random.PRNGKey(s.seed), 1)
    tr = ctx.trainer
    temp_arg = temp.astype(np.float32) if s.noise == "langevin" else None
    rep = np.concatenate([np.tile(np.arange(s.replicas), s.n_levels()),
                          np.arange(k - s.n_levels() * s.replicas)])
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
                fp = np.asarray(arr["first_passage_epoch"]).astype(np.int64)
        for c in range(start // s.check_every, end // s.check_every):
            model, _, div = tr.advance(model, s.check_every, lr=lr.astype(np.float32), alpha=s.alpha,
                                       key=jax.random.fold_in(noise_key, c), temperature=temp_arg)
            acc = tr.evaluate(eqx.filter(model, eqx.is_inexact_array), np.full(k, s.alpha, np.float32), grad=False)["train_acc"]
            new = (fp < 0) & (np.asarray(acc) > thr)
            fp[new] = (c + 1) * s.check_every
        ev = tr.evaluate(eqx.filter(model, eqx.is_inexact_array), np.full(k, s.alpha, np.float32), grad=False)
        escaped = fp >= 0
        expo = np.where(escaped, fp, end)
        rec = pd.DataFrame({
            "piece": piece, "member": np.arange(k), "temperature_index": idx, "replica": rep,
            "temperature": temp, "lr": lr, "batch_size": (s.batch_size if s.noise == "sgd" else ctx.dataset.n_train),
            "barrier_ratio": np.where(temp > 0, barrier / np.where(temp > 0, temp, 1.0), np.inf),
            "steps_done": end * spe, "epochs_done": end, "escaped": escaped,
            "first_passage_step": np.where(escaped, fp * spe, -1), "first_passage_epoch": np.where(escaped, fp, -1),
            "exposure_steps": expo * spe, "exposure_time": expo * spe * lr,
            "train_acc": np.asarray(ev["train_acc"], np.float64), "test_acc": np.asarray(ev["test_acc"], np.float64),
            "loss": np.asarray(ev["loss"], np.float64), "w_sq": np.asarray(ev["w_sq"], np.float64),
            "diverged": np.asarray(div, bool), "alpha": s.alpha, "threshold": thr, "criterion": crit, "noise": s.noise,
        })
        arrays = ctx.to_arrays(model)
        arrays["first_passage_epoch"] = fp.copy()
        emit(piece, rec, arrays)


def mlp_budget_records(records: pd.DataFrame, piece: str | None = None) -> pd.DataFrame:
    """The replica rows at the end of ``piece`` (default: the longest budget stored)."""
    rec = records[records["piece"].astype(str).str.startswith("t")]
    if piece is None:
        piece = sorted(rec["piece"].unique())[-1]
    out = rec[rec["piece"] == piece].sort_values("member").reset_index(drop=True)
    return out.astype({"escaped": bool, "first_passage_step": np.int64, "exposure_steps": np.int64, "member": np.int64,
                       "temperature_index": np.int64, "replica": np.int64, "steps_done": np.int64})


def summarize_mlp_escape(run_dir, figures: bool = True) -> dict:
    """``escape_times.csv`` (per noise level; times in steps and in ``lr x steps``), ``arrhenius.csv``
    (the censored fit in ``lr x steps``, the measured barriers, the noise-free control) and figures."""
    from phaseprobe.escape.analysis import escape_time_table, fit_arrhenius
    from phaseprobe.store import RunStore, save_frame_csv

    run_dir = Path(run_dir)
    spec = make_mlp_escape_spec(json.loads((run_dir / "spec.json").read_text())["spec"])
    records = RunStore(run_dir).load_records()
    prep = records[records["piece"] == PREPARE].iloc[0]
    allrec = mlp_budget_records(records)
    rec = allrec[allrec["temperature_index"] >= 0].reset_index(drop=True)
    ctrl = allrec[allrec["temperature_index"] < 0]
    times = escape_time_table(rec)
    lrs = times["temperature_index"].map(rec.groupby("temperature_index")["lr"].first())
    for c in ("tau_steps", "tau_lo", "tau_hi"):
        times[c.replace("steps", "time") if c == "tau_steps" else c + "_time"] = times[c] * lrs
    times["lr"] = lrs.to_numpy()
    try:
        fit = fit_arrhenius(rec["temperature"], rec["exposure_time"], rec["escaped"])
    except ValueError:
        fit = {"dF": math.nan, "dF_lo": math.nan, "dF_hi": math.nan, "c": math.nan, "log_likelihood": math.nan,
               "events": int(rec["escaped"].sum()), "censored": int((~rec["escaped"]).sum()), "level": 0.95}
    barrier = float(prep["barrier"])
    arr = pd.DataFrame([{
        "noise": spec.noise, "temperature_meaning": ("T = lr / batch (minibatch SGD, proportional to its temperature)"
                                                     if spec.noise == "sgd" else "Langevin T"),
        "dF_fit": fit["dF"], "dF_lo": fit["dF_lo"], "dF_hi": fit["dF_hi"], "c_ln_time": fit["c"],
        "barrier": barrier, "barrier_source": prep["barrier_source"], "barrier_path_max": float(prep["barrier_path_max"]),
        "barrier_saddle": float(prep["barrier_saddle"]), "saddle_index": int(prep["saddle_index"]),
        "saddle_grad_norm": float(prep["saddle_grad_norm"]),
        "dF_over_barrier": fit["dF"] / barrier if barrier > 0 else math.nan,
        "learned_minus_trapped_loss": float(prep["learned_minus_trapped_loss"]),
        "trapped_train_acc": float(prep["trapped_train_acc"]), "learned_train_acc": float(prep["learned_train_acc"]),
        "escapes": fit["events"], "censored": fit["censored"], "budget_steps": int(rec["steps_done"].max()),
        "control_replicas": len(ctrl), "control_escaped": int(ctrl["escaped"].sum()) if len(ctrl) else 0,
        "control_max_train_acc": float(ctrl["train_acc"].max()) if len(ctrl) else math.nan,
        "alpha": spec.alpha, "dataset": spec.dataset, "depth": spec.depth, "width": spec.width,
        "criterion": str(rec["criterion"].iloc[0]),
    }])
    save_frame_csv(times, run_dir / "escape_times.csv", index=False)
    save_frame_csv(arr, run_dir / "arrhenius.csv", index=False)
    out = {"escape_times": times, "arrhenius": arr, "fit": fit, "records": rec}
    if figures:
        from phaseprobe.escape.mlp_figures import level_arrhenius_plot, level_survival_plot, save

        sgd = spec.noise == "sgd"
        title = (f"MLP {spec.depth}x{spec.width} {spec.activation} on {spec.dataset}, alpha {spec.alpha:g}, "
                 + (f"SGD batch {spec.batch_size}" if sgd else f"Langevin lr {spec.lr:g}"))
        level = "T = lr/B" if sgd else "T"
        rec_t = rec.assign(first_passage_time=rec["first_passage_step"] * rec["lr"], budget_time=rec["steps_done"] * rec["lr"])
        tt = times.assign(tau=times["tau_time"], tau_lo=times["tau_lo_time"], tau_hi=times["tau_hi_time"])
        out["figures"] = [
            save(level_survival_plot(rec_t, title=(f"survival in the trapped trivial phase: {title}" + (
                f"\nnoise-free control (T = 0): {int(ctrl['escaped'].sum())}/{len(ctrl)} escaped" if len(ctrl) else "")),
                level_label=level,
                                     time_col="first_passage_time", budget_col="budget_time", xlabel="time  lr x steps",
                                     ylabel="fraction still trapped (train acc below threshold)"),
                 run_dir / "escape_survival.png"),
            save(level_arrhenius_plot(tt, fit, title=f"Arrhenius: {title}",
                                      xlabel=("1 / T,   T = lr / batch (SGD)" if sgd else "1 / T   (Langevin temperature)"),
                                      ylabel="ln tau   (tau in lr x steps)", barrier=barrier,
                                      barrier_label=f"measured barrier ({prep['barrier_source']}) {barrier:.4g}"),
                 run_dir / "escape_arrhenius.png"),
        ]
    return out


def show_mlp_escape(run, con, wide: bool = False) -> None:
    """``phaseprobe show``: what is stored, the per-level escape table and the fit."""
    from phaseprobe.escape.kind import show_escape_tables

    spec = make_mlp_escape_spec(dict(run.spec))
    cols = {"escape_times": ["temperature", "lr", "escaped", "censored_frac", "tau_steps", "tau_lo", "tau_hi", "tau_time"],
            "arrhenius": ["noise", "dF_fit", "dF_lo", "dF_hi", "barrier", "barrier_source", "barrier_path_max",
                          "dF_over_barrier", "escapes", "censored", "control_escaped"]}
    show_escape_tables(run, con, wide, plan_mlp_escape(spec)[0].units[0].pieces, f"noise {spec.noise}",
                       summarize_mlp_escape, cols)


def analyse_mlp_escape(run_dir, figures: bool = True) -> dict:
    return summarize_mlp_escape(run_dir, figures=figures)


def load_mlp_escape_model(run, *, member: int = 0, piece: str | None = None):
    """One replica's network at the end of a piece (default: the last stored); ``member`` indexes the records."""
    spec = make_mlp_escape_spec(dict(run.spec))
    ctx = MLPEscapeContext(spec)
    done = run.store.done_pieces()
    stored = [time_piece(i) for i in range(spec.n_pieces) if time_piece(i) in done]
    piece = piece or (stored[-1] if stored else PREPARE)
    if piece not in done:
        raise PhaseprobeError(f"model: piece {piece} is not in the store; rerun the escape command to finish it")
    k = 1 if piece == PREPARE else spec.n_members()
    if not 0 <= member < k:
        raise PhaseprobeError(f"model: member must be in 0..{k - 1}")
    stacked = ctx.from_arrays(run.store.load_params(piece), k)
    params, static = eqx.partition(stacked, eqx.is_inexact_array)
    return eqx.combine(jax.tree_util.tree_map(lambda x: x[member if piece != PREPARE else 0], params), static)


ESCAPE_MLP = ExperimentKind(
    name="escape-mlp", spec_type=MLPEscapeSpec, make_context=make_mlp_escape_context, plan=plan_mlp_escape,
    run_unit=run_mlp_escape_unit, analyse=analyse_mlp_escape, load_model=load_mlp_escape_model, show=show_mlp_escape,
    make_spec=make_mlp_escape_spec,
)
"""First-passage times of an MLP on data out of its trapped trivial phase (Langevin or SGD noise)."""
