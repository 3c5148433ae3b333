"""Running a sweep: the grid is cut into independent *units*, each unit into *pieces*.

* ``cold``: every (alpha, seed) cell from a fresh init; the cells are packed into units of at
  most ``chunk_size`` members, each unit ONE vectorised ensemble (one piece).
* ``up`` / ``down`` / ``loop``: continuation. A unit is a chunk of seeds (the ensemble) walking
  the alpha grid: the solution at alpha_i is the start at alpha_i+1 (parameters warm-started,
  optimiser state fresh unless ``fresh_opt = false``). Each alpha step is one piece, so an
  interrupted chain resumes from its last finished step. ``loop`` walks up, then back down from
  where the up branch ended.

Units are plain data (:class:`Unit`); :func:`execute_unit` runs one and hands every finished
piece to ``emit(piece, records_frame, params_dict)``. The local engine writes each piece to
the store as it comes; the Ray engine runs units on workers and writes on the driver. Either
way the numbers depend only on the spec (keys are derived from seeds and grid indices).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from phaseprobe import __version__, conventions
from phaseprobe.models import build_model, init_members
from phaseprobe.store.arrays import arrays_to_model, arrays_to_tree, model_to_arrays, tree_to_arrays
from phaseprobe.sweep.spec import SweepSpec
from phaseprobe.train import STOP_NAMES, TrainConfig, Trainer


@dataclass(frozen=True)
class Unit:
    """An independent piece of a sweep. ``steps`` is a list of (branch, alpha_index, piece)."""

    kind: str  # "cold" or "chain"
    uid: str
    seeds: tuple[int, ...]
    alpha_idx: tuple[int, ...] = ()  # cold: one entry per member
    steps: tuple[tuple[str, int, str], ...] = ()

    @property
    def pieces(self) -> list[str]:
        if self.kind == "cold":
            return [self.uid]
        return [p for _, _, p in self.steps]

    @property
    def chain(self) -> bool:
        """Each piece starts from the previous piece's parameters (a continuation chain)."""
        return self.kind == "chain"

    @property
    def runs_per_piece(self) -> int:
        return len(self.seeds)

    @property
    def n_runs(self) -> int:
        if self.kind == "cold":
            return len(self.seeds)
        return len(self.seeds) * len(self.steps)


def plan_units(spec: SweepSpec) -> list[Unit]:
    """Cut the spec's grid into units (deterministic: the same spec gives the same units)."""
    alphas = spec.alpha_grid()
    seeds = spec.seed_list()
    n = len(alphas)
    cs = spec.chunk_size
    units: list[Unit] = []
    if spec.mode == "cold":
        cells = [(i, s) for s in seeds for i in range(n)]
        for j in range(0, len(cells), cs):
            chunk = cells[j:j + cs]
            units.append(Unit("cold", f"cold-c{j // cs:04d}", tuple(s for _, s in chunk), tuple(i for i, _ in chunk)))
        return units
    for j in range(0, len(seeds), cs):
        sub = tuple(seeds[j:j + cs])
        steps: list[tuple[str, int, str]] = []
        if spec.mode in ("up", "loop"):
            steps += [("up", i, f"up-s{j // cs:03d}-a{i:04d}") for i in range(n)]
        if spec.mode in ("down", "loop"):
            steps += [("down", i, f"down-s{j // cs:03d}-a{i:04d}") for i in reversed(range(n))]
        units.append(Unit("chain", f"chain-s{j // cs:03d}", sub, (), tuple(steps)))
    return units


class SweepContext:
    """Data, model skeleton and compiled trainer for one spec (built once per process)."""

    def __init__(self, spec: SweepSpec, dataset=None):
        from phaseprobe.data import load_dataset

        self.spec = spec
        self.alphas = spec.alpha_grid()
        self.strengths = spec.strengths()
        if dataset is None:
            opts = dict(spec.data_options)
            for k in ("classes", "n_train", "n_test", "normalize", "data_dir"):
                v = getattr(spec, k)
                if v is not None:
                    opts[k] = v
            opts.setdefault("seed", spec.data_seed)
            dataset = load_dataset(spec.dataset, **opts)
        self.dataset = dataset
        self.out_dim = dataset.output_dim
        spec.check_with_data(dataset, self.make_one)  # batch vs data, memory estimate: before any allocation
        self.config = TrainConfig(
            loss=spec.loss, optimizer=spec.optimizer, lr=spec.lr, momentum=spec.momentum,
            b1=spec.b1, b2=spec.b2, eps=spec.eps, schedule=spec.schedule, warmup_steps=spec.warmup_steps,
            decay_steps=spec.decay_steps, end_lr_factor=spec.end_lr_factor,
            batch_size=spec.batch_size, epochs=spec.epochs, penalty_on=spec.penalty_on,
            patience=spec.patience, min_delta=spec.min_delta, grad_tol=spec.grad_tol,
        )
        self.trainer = Trainer(self.members([0]), dataset, self.config)

    def make_one(self, key):
        s = self.spec
        if s.model_file is not None:  # a researcher's own model (phaseprobe.models.user)
            from phaseprobe.models.user import build_user_model

            return build_user_model(s.model_file, self.dataset.input_shape, self.out_dim, key=key,
                                    expected_hash=s.model_file_hash)
        return build_model(
            s.model, self.dataset.input_shape, self.out_dim, key=key, depth=s.depth, width=s.width,
            activation=s.activation, bias=s.bias, init=s.init, sigma=s.sigma, gamma=s.gamma,
            init_scale=s.init_scale, **s.model_options,
        )

    def members(self, seeds: Sequence[int]):
        """Fresh stacked models, member m initialised from ``seeds[m]``."""
        keys = jnp.stack([init_key(s) for s in seeds])
        return init_members(self.make_one, keys)

    def initial_members(self, seeds: Sequence[int]):
        """The models a unit starts from: fresh ones, or the spec's ``start_from`` run's stored ones."""
        if self.spec.start_from is None:
            return self.members(seeds)
        from phaseprobe.sweep.start import start_members

        return start_members(self.members, self.spec.start_from, seeds)

    def params_to_arrays(self, model) -> dict[str, np.ndarray]:
        return model_to_arrays(model)

    def arrays_to_opt_state(self, arrays: dict[str, np.ndarray], model, alpha: float):
        """The optimiser state stored with a piece (``o000``, ``o001``, ...) for ``model``'s members."""
        k = int(jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array))[0].shape[0])
        like = self.trainer.init_opt_state(eqx.filter(model, eqx.is_inexact_array),
                                           jnp.full((k,), self.config.lr, jnp.float32), jnp.full((k,), alpha, jnp.float32))
        return arrays_to_tree(arrays, like, prefix="o")  # None for an older piece without it

    def arrays_to_model(self, arrays: dict[str, np.ndarray], n_members: int):
        return arrays_to_model(arrays, self.members(list(range(n_members))))


def opt_state_to_arrays(opt_state) -> dict[str, np.ndarray]:
    """An optimiser state's leaves as ``o000``, ``o001``, ... (stored with a chain's piece)."""
    return tree_to_arrays(opt_state, prefix="o")


def init_key(seed: int):
    return jax.random.fold_in(jax.random.PRNGKey(int(seed)), 0)


def shuffle_key(seed: int, step: int):
    return jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(int(seed)), 1), int(step))


# stop_reason of a chain member's steps after its first divergence (its rows carry no measurement)
NOT_RUN = "not run (diverged earlier)"
# the per-member flag stored with a chain's piece parameters: the member has diverged, its chain stopped
CHAIN_STOPPED_KEY = "chain_stopped"
# observables of a record that must be finite for the member to be usable
_MEASURED = ("train_error", "test_error", "loss", "w_sq", "penalty_sq", "grad_norm", "grad_norm_E",
             "last_epoch_error", "window_change", "train_acc", "test_acc")


def _where_members(mask, new, old, k: int | None = None):
    """Member-wise select on stacked pytrees: member m from ``new`` where ``mask[m]``, else from ``old``.

    Models: their inexact arrays; other pytrees (an optimiser state): leaves whose leading axis is
    the ``k`` members (other leaves are taken from ``old``).
    """
    m = jnp.asarray(np.asarray(mask, bool))

    def sel(a, b):
        if not hasattr(b, "shape") or b.ndim == 0 or (k is not None and b.shape[0] != k):
            return b
        return jnp.where(m.reshape((-1,) + (1,) * (b.ndim - 1)), a, b)

    if k is None:
        pn, static = eqx.partition(new, eqx.is_inexact_array)
        po, _ = eqx.partition(old, eqx.is_inexact_array)
        return eqx.combine(jax.tree_util.tree_map(sel, pn, po), static)
    return jax.tree_util.tree_map(sel, new, old)


def _rows(ctx: SweepContext, result, branch: str, alpha_idx: Sequence[int], seeds: Sequence[int],
          step_index: int, elapsed: float, not_run: Sequence[bool] | None = None) -> pd.DataFrame:
    """One row per (member, record) of a finished training.

    ``converged`` is the one convergence criterion: the full-batch gradient norm of the regularised
    loss (``grad_norm``) below ``spec.converged_grad_tol`` (recorded as ``converged_tol``) at that
    record, and the member has not diverged; ``stop_reason`` (what ended the training) is separate.
    A member is ``diverged`` when the trainer flagged it or its record is not finite. Members in
    ``not_run`` (a chain member after its divergence) get ``stop_reason = NOT_RUN``,
    ``diverged = True``, ``converged = False`` and NaN for every measurement.
    """
    spec = ctx.spec
    st = result.state
    best = np.asarray(st.best)
    tol = float(spec.converged_grad_tol)
    skip = np.zeros(len(seeds), bool) if not_run is None else np.asarray(not_run, bool)
    rows = []
    n_rec = len(result.records)
    for r_i, rec in enumerate(result.records):
        final = r_i == n_rec - 1
        for m, (ai, seed) in enumerate(zip(alpha_idx, seeds)):
            row = {
                "spec_hash": spec.hash(), "version": __version__, "name": spec.name,
                "dataset": ctx.dataset.name, "mode": spec.mode, "branch": branch,
                "alpha_index": int(ai), "alpha": float(ctx.alphas[ai]),
                "strength": float(ctx.strengths[ai]), "convention": spec.convention,
                "seed": int(seed), "step_index": int(step_index),
                "record_epoch": int(rec["record_epoch"]), "epoch": int(rec["epoch"][m]),
                "step": int(rec["step"][m]), "final": bool(final),
                "train_error": float(rec["train_error"][m]), "test_error": float(rec.get("test_error", [np.nan] * (m + 1))[m]),
                "loss": float(rec["loss"][m]), "w_sq": float(rec["w_sq"][m]),
                "penalty_sq": float(rec["penalty_sq"][m]),
                "grad_norm": float(rec["grad_norm"][m]), "grad_norm_E": float(rec["grad_norm_E"][m]),
                "diverged": bool(rec["diverged"][m]),
                "stop_reason": STOP_NAMES[int(rec["reason"][m])] if final else "running",
                "last_epoch_error": float(rec["last_epoch_error"][m]),
                "window_change": float(rec["last_epoch_error"][m] - best[m]) if final else np.nan,
                "seconds": float(elapsed),
            }
            if "train_acc" in rec:
                row["train_acc"] = float(rec["train_acc"][m])
                row["test_acc"] = float(rec["test_acc"][m])
                ca = np.asarray(rec["test_class_acc"][m])
                cp = np.asarray(rec["test_class_prec"][m])
                for c, v in enumerate(ca):
                    row[f"class_acc_{c}"] = float(v)
                for c, v in enumerate(cp):
                    row[f"class_prec_{c}"] = float(v)
                # a class is learned when its test recall AND precision reach the threshold (a model
                # predicting one class for every input has recall 1 on it, but precision 1/C)
                # ... and the precision must also beat chance (1/C) by 0.1: with 2 classes a constant
                # predictor has precision 0.5 on its class
                p_min = max(spec.learned_class_acc, 1.0 / len(cp) + 0.1)
                row["n_classes_learned"] = int(np.sum((ca >= spec.learned_class_acc) & (cp >= p_min)))
            if skip[m]:
                for c in row:
                    if c in _MEASURED or c.startswith(("class_acc_", "class_prec_")) or c == "n_classes_learned":
                        row[c] = np.nan
                row.update(epoch=0, step=0, diverged=True, stop_reason=NOT_RUN)
            elif not all(np.isfinite(row[c]) for c in ("loss", "w_sq", "grad_norm")):
                row["diverged"] = True  # a record that overflowed is a divergence, flagged or not
            row["converged_tol"] = tol
            row["converged"] = bool(not row["diverged"] and row["grad_norm"] < tol)
            rows.append(row)
    return pd.DataFrame(rows)


def _record_at(spec: SweepSpec) -> list[int] | None:
    if not spec.record_every:
        return None
    return list(range(spec.record_every, spec.epochs, spec.record_every))


def execute_unit(
    ctx: SweepContext,
    unit: Unit,
    done: set[str],
    emit: Callable[[str, pd.DataFrame, dict], None],
    load_params: Callable[[str], dict] | None = None,
    on_runs: Callable[[int], None] | None = None,
) -> None:
    """Run the pieces of ``unit`` not in ``done``; hand each finished piece to ``emit``.

    ``load_params(piece)`` reads a finished piece's parameters (to resume a chain).
    ``on_runs(n)`` reports n finished trainings (alpha x seed) for progress.
    """
    spec = ctx.spec
    tr = ctx.trainer
    if unit.kind == "cold":
        if unit.uid in done:
            return
        t0 = time.perf_counter()
        model = ctx.initial_members(unit.seeds)
        alpha = jnp.asarray(ctx.alphas[list(unit.alpha_idx)], jnp.float32)
        keys = jnp.stack([shuffle_key(s, i) for s, i in zip(unit.seeds, unit.alpha_idx)])
        res = tr.train(model, alpha, key=keys, record_at=_record_at(spec))
        df = _rows(ctx, res, "cold", unit.alpha_idx, unit.seeds, 0, time.perf_counter() - t0)
        emit(unit.uid, df, ctx.params_to_arrays(res.model))
        if on_runs:
            on_runs(unit.n_runs)
        return

    k = len(unit.seeds)
    # resume: the longest finished prefix of the chain
    start = 0
    while start < len(unit.steps) and unit.steps[start][2] in done:
        start += 1
    if start == len(unit.steps):
        return
    stopped = np.zeros(k, bool)  # members whose chain stopped at a divergence
    if start == 0:
        model = ctx.initial_members(unit.seeds)
    else:
        if load_params is None:
            raise RuntimeError("resuming a chain needs load_params")
        arrays = load_params(unit.steps[start - 1][2])
        model = ctx.arrays_to_model(arrays, k)
        stopped = np.asarray(arrays.get(CHAIN_STOPPED_KEY, stopped), bool).copy()
        # a carried optimiser state was stored with the piece: resume it (bit-identical)
        opt_state = None if spec.fresh_opt else ctx.arrays_to_opt_state(arrays, model, ctx.alphas[unit.steps[start - 1][1]])
    if start == 0:
        opt_state = None
    fresh = None
    for s_i in range(start, len(unit.steps)):
        branch, ai, piece = unit.steps[s_i]
        t0 = time.perf_counter()
        alpha = jnp.full((k,), ctx.alphas[ai], jnp.float32)
        keys = jnp.stack([shuffle_key(s, s_i) for s in unit.seeds])
        start_model, start_opt = model, None if spec.fresh_opt else opt_state
        if stopped.any():
            # a member whose chain stopped never trains from its diverged (non-finite or overflowing)
            # weights: the ensemble trains as one program, so it runs from its fresh initialisation
            # and a fresh optimiser state, and its results are discarded (rows marked not run)
            fresh = ctx.members(unit.seeds) if fresh is None else fresh
            start_model = _where_members(stopped, fresh, model)
            if start_opt is not None:
                start_opt = _where_members(stopped, jax.tree_util.tree_map(jnp.zeros_like, start_opt), start_opt, k)
        res = tr.train(start_model, alpha, key=keys, opt_state=start_opt, record_at=_record_at(spec))
        model = _where_members(stopped, model, res.model) if stopped.any() else res.model  # a stopped member keeps its weights
        opt_state = res.state.opt_state
        df = _rows(ctx, res, branch, [ai] * k, unit.seeds, s_i, time.perf_counter() - t0, not_run=stopped)
        # the chain of a member stops at its first divergence: its later steps are not run
        stopped = stopped | df["diverged"].to_numpy(bool)[-k:]  # the final record's rows, in member order
        arrays = ctx.params_to_arrays(model)
        arrays[CHAIN_STOPPED_KEY] = stopped.copy()
        if not spec.fresh_opt:
            arrays.update(opt_state_to_arrays(opt_state))
        emit(piece, df, arrays)
        if on_runs:
            on_runs(k)
