"""Integrate deep-linear training (full-batch gradient descent) and record its observables.

Every step is taken by THE trainer (:class:`phaseprobe.train.Trainer`, full-batch GD, MSE). This
module only decides *how many* steps to run with *which* learning rate between record points,
and measures the network there (:mod:`phaseprobe.dynamics.observe`). Time is always reported as
``t = sum of lr x steps`` (the gradient-flow time of the loss ``mean 1/2 ||f(x) - y||^2``).

Two step modes:

* ``"fixed"``: one learning rate per member; records at log-spaced step counts.
* ``"adaptive"``: chunks of ``chunk`` GD steps with a per-member learning rate chosen from the
  state -- never above ``c / lambda_bound`` (an upper bound on the Hessian's norm, from the layer
  products; ``c < 2`` keeps GD stable), and grown by ``grow`` after each accepted chunk. A chunk is
  rejected (undone, the rate cut by 4) if it raised the loss, or changed ``log loss`` or the log of
  any visible singular value of ``W_L...W_1`` by more than ``delta``. The step thus follows the
  dynamics on log scales: tiny rates in the lazy regime, long strides on plateaus (the escape
  times grow like ``sigma^-(L-2)`` at depth ``L >= 3``), short ones during escapes. GD with rate
  ``lr`` integrates a mode of rate ``r`` with relative error about ``lr r / 2``: lower ``c`` and
  ``delta`` for more accurate times.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from phaseprobe.dynamics.observe import LinearStats, Observer, distance_to_global_min, linear_stats
from phaseprobe.dynamics.teacher import DynamicsError
from phaseprobe.models import DeepLinear
from phaseprobe.train import TrainConfig, Trainer

STEP_MODES = ("adaptive", "fixed")


@dataclass(frozen=True)
class IntegrateConfig:
    """How to integrate (see the module docstring)."""

    t_max: float = 100.0
    step: str = "adaptive"
    lr: float | None = None  # fixed: the learning rate; adaptive: an optional cap
    chunk: int = 16
    c: float = 0.5
    delta: float = 0.01
    grow: float = 1.5
    n_records: int = 200
    loss_tol: float = 1e-6
    rank_tol: float | None = None
    max_steps: int = 5_000_000
    keep_params: bool = False
    snapshot_mb: float = 256.0  # memory budget of the kept parameters (thinned by halves beyond it)
    max_chunks: int = 200_000
    distance_every: float = 0.25

    def validate(self) -> "IntegrateConfig":
        if self.step not in STEP_MODES:
            raise DynamicsError(f"step: unknown '{self.step}'; use one of {', '.join(STEP_MODES)}")
        if not (self.t_max > 0 and math.isfinite(self.t_max)):
            raise DynamicsError(f"t_max: must be a positive time (lr x steps), got {self.t_max}")
        if self.step == "fixed" and (self.lr is None or not self.lr > 0):
            raise DynamicsError("lr: the fixed step needs a learning rate lr > 0; pass lr=... or use step='adaptive'")
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            raise DynamicsError(f"lr: must be a positive number, got {self.lr}")
        if self.chunk < 1:
            raise DynamicsError(f"chunk: must be >= 1 step, got {self.chunk}")
        if not (0 < self.c < 2):
            raise DynamicsError(f"c: the step fraction of 1/lambda_bound must lie in (0, 2) for stability, got {self.c}")
        if not self.delta > 0:
            raise DynamicsError(f"delta: must be > 0, got {self.delta}")
        if not self.grow > 1:
            raise DynamicsError(f"grow: must be > 1, got {self.grow}")
        if self.n_records < 2:
            raise DynamicsError(f"n_records: must be >= 2, got {self.n_records}")
        if not self.snapshot_mb > 0:
            raise DynamicsError(f"snapshot_mb: must be > 0, got {self.snapshot_mb}")
        if self.max_chunks < 1:
            raise DynamicsError(f"max_chunks: must be >= 1, got {self.max_chunks}")
        if self.rank_tol is not None and not self.rank_tol > 0:
            raise DynamicsError(f"rank_tol: must be > 0, got {self.rank_tol}")
        return self


@dataclass
class DLNRun:
    """The outcome of :func:`integrate` for an ensemble of K members."""

    records: pd.DataFrame
    stats: LinearStats
    depth: int
    width: int
    final_weights: tuple
    initial_weights: tuple
    lr_final: np.ndarray
    diverged: np.ndarray
    snapshots: dict[int, dict] = field(default_factory=dict)  # member -> {record index: (t, weights tuple)}
    rank_tol: float = 0.0
    meta: dict = field(default_factory=dict)

    @property
    def n_members(self) -> int:
        return int(self.final_weights[0].shape[0])

    def member(self, m: int) -> pd.DataFrame:
        return self.records[self.records["member"] == m].reset_index(drop=True)

    def sv(self, m: int) -> np.ndarray:
        """Singular values of ``W_L...W_1`` over the records of member ``m`` (n_rec x min(out, in))."""
        df = self.member(m)
        cols = [c for c in df.columns if c.startswith("sv_")]
        return df[cols].to_numpy()

    def weights_at(self, m: int, i: int):
        """Parameters of member ``m`` at its record ``i`` (needs ``keep_params=True``): ``(t, weights)``.

        When the snapshots were thinned to fit ``snapshot_mb``, the nearest kept record is used.
        """
        if m not in self.snapshots or not self.snapshots[m]:
            raise DynamicsError("keep_params: parameters were not kept; rerun with keep_params=True")
        snaps = self.snapshots[m]
        j = i if i in snaps else min(snaps, key=lambda k: abs(k - i))
        return snaps[j]


def default_rank_tol(stats: LinearStats) -> float:
    """A tenth of the smallest nonzero singular value the loss sees (between init and learned scales)."""
    s = stats.s_eff[: max(stats.rank, 1)]
    return float(0.1 * s[-1]) if s.size and s[-1] > 0 else 1e-3


def stack_weights(list_of_tuples) -> tuple:
    return tuple(jnp.stack([jnp.asarray(t[l], jnp.float32) for t in list_of_tuples]) for l in range(len(list_of_tuples[0])))


def dln_ensemble(in_dim: int, out_dim: int, depth: int, width: int, sigmas: Sequence[float], keys) -> DeepLinear:
    """K deep linear nets with i.i.d. ``N(0, sigma_k^2)`` entries, stacked along a leading member axis."""
    if width < 1:
        raise DynamicsError(f"width: must be a positive integer, got {width}")
    if depth < 1:
        raise DynamicsError(f"depth: must be >= 1 weight matrices, got {depth}")
    sig = np.asarray(sigmas, dtype=np.float64)
    if sig.size == 0 or not np.all(np.isfinite(sig)) or np.any(sig <= 0):
        raise DynamicsError(f"sigma: every init scale must be finite and > 0, got {list(map(float, sig))}")
    keys = jnp.asarray(keys)
    # unit-variance draws, then each member scaled by its sigma: W = sigma * N(0, 1) entrywise
    unit = eqx.filter_vmap(lambda k: DeepLinear(in_dim, out_dim, depth=depth, width=width, sigma=1.0, key=k))(keys)
    sj = jnp.asarray(sig, jnp.float32)
    return with_weights(unit, tuple(w * sj.reshape((-1,) + (1,) * (w.ndim - 1)) for w in unit.weights))


def with_weights(model_like, weights) -> DeepLinear:
    return eqx.tree_at(lambda m: m.weights, model_like, tuple(weights))


_TRAINERS: dict = {}


def _trainer_for(model, data) -> Trainer:
    """One full-batch GD trainer per (data set, member count and shapes): its compiled steps are reused."""
    key = (id(data), tuple((tuple(w.shape), str(w.dtype)) for w in model.weights))
    hit = _TRAINERS.get(key)
    if hit is not None and hit[0] is data:
        return hit[1]
    tr = Trainer(model, data, TrainConfig(loss="mse", optimizer="gd", lr=1.0, batch_size=None, epochs=1))
    if len(_TRAINERS) >= 8:
        _TRAINERS.pop(next(iter(_TRAINERS)))
    _TRAINERS[key] = (data, tr)
    return tr


@jax.jit
def _select(mask, new, old):
    """Per member: ``new`` where ``mask`` else ``old`` (tuples of stacked arrays)."""
    return tuple(jnp.where(mask.reshape((-1,) + (1,) * (a.ndim - 1)), a, b) for a, b in zip(new, old))


def _sv_cols(k: int) -> list[str]:
    return [f"sv_{i}" for i in range(k)]


def integrate(
    model,
    data,
    config: IntegrateConfig,
    *,
    lr=None,
    progress: Callable[[float, float, int], None] | None = None,
    stats: LinearStats | None = None,
) -> DLNRun:
    """Train every member of the stacked deep linear ``model`` on ``data`` up to time ``t_max``.

    ``lr`` (per member or scalar) overrides ``config.lr`` in the fixed mode and sets the initial
    rate in the adaptive mode (default: ``0.01 c / lambda_bound`` at init). ``progress(t_min,
    t_max, n_active)`` is called after every chunk. Returns a :class:`DLNRun` whose ``records``
    have one row per member and record point.
    """
    config = config.validate()
    stats = linear_stats(data) if stats is None else stats
    weights0 = tuple(model.weights)
    K = int(weights0[0].shape[0])
    depth = len(weights0)
    width = int(weights0[0].shape[1]) if depth > 1 else 0
    if depth > 1 and width < stats.rank:
        raise DynamicsError(f"width: {width} is below the teacher's rank {stats.rank}; the net cannot fit it -- use width >= {stats.rank}")
    if weights0[0].shape[-1] != stats.in_dim or weights0[-1].shape[-2] != stats.out_dim:
        raise DynamicsError(
            f"model: maps {weights0[0].shape[-1]} -> {weights0[-1].shape[-2]} but the data are {stats.in_dim} -> {stats.out_dim}; match in_dim/out_dim"
        )
    rank_tol = default_rank_tol(stats) if config.rank_tol is None else float(config.rank_tol)
    level0 = float(stats.levels()[0] - stats.e_min) if stats.rank else 1.0
    trainer = _trainer_for(model, data)
    key = jax.random.PRNGKey(0)
    alpha = np.zeros(K, np.float32)

    params = weights0
    observe_ = Observer(stats, rank_tol, weights0[0].dtype)
    observe = lambda p, p0, *_: observe_(p, p0)
    obs = observe(params, weights0)
    t = np.zeros(K)
    steps = np.zeros(K, dtype=np.int64)
    diverged = np.zeros(K, bool)
    n_sv = obs["sv"].shape[1]
    rows: list[dict] = []
    snaps: dict[int, dict] = {m: {} for m in range(K)} if config.keep_params else {}
    n_rec = np.zeros(K, dtype=np.int64)  # member-local record counter
    snap_bytes = 4 * sum(int(np.prod(w.shape[1:])) for w in weights0)
    stride = [1]
    next_dist = np.full(K, -np.inf)  # log10 t at which the next distance is due

    def record(mask, obs, params, lr_now):
        due = np.zeros(K, bool)
        if config.distance_every > 0:
            lt = np.log10(np.maximum(t, 1e-300))
            due = mask & ((lt >= next_dist) | (t == 0))
        dist_u = np.full(K, np.nan)
        dist_l = np.full(K, np.nan)
        if np.any(due):
            u, l_ = distance_to_global_min(params, stats)
            dist_u = np.where(due, u, np.nan)
            dist_l = np.where(due, l_, np.nan)
            lt = np.log10(np.maximum(t, 1e-300))
            next_dist[due] = np.where(t[due] > 0, lt[due] + config.distance_every, -np.inf)
        host = [np.asarray(w) for w in params] if config.keep_params else None
        for m in np.flatnonzero(mask):
            row = {
                "member": int(m), "t": float(t[m]), "step": int(steps[m]), "lr": float(lr_now[m]),
                "loss": float(obs["loss"][m]), "excess_loss": float(obs["loss"][m] - stats.e_min),
                "rank": int(obs["rank"][m]), "stable_rank": float(obs["stable_rank"][m]),
                "disp_abs": float(obs["disp_abs"][m]), "disp_rel": float(obs["disp_rel"][m]),
                "param_norm": float(obs["param_norm"][m]), "grad_norm": float(obs["grad_norm"][m]),
                "lam_gn": float(obs["lam_gn"][m]), "lam_bound": float(obs["lam_bound"][m]),
                "dist_global_min": float(dist_u[m]), "dist_global_min_lower": float(dist_l[m]),
                "diverged": bool(diverged[m]),
            }
            for i in range(n_sv):
                row[f"sv_{i}"] = float(obs["sv"][m, i])
            rows.append(row)
            i_rec = int(n_rec[m])
            n_rec[m] += 1
            if host is not None and i_rec % stride[0] == 0:
                snaps[int(m)][i_rec] = (float(t[m]), tuple(h[m].copy() for h in host))
        if host is not None and sum(len(v) for v in snaps.values()) * snap_bytes > config.snapshot_mb * 2 ** 20:
            stride[0] *= 2  # over budget: keep every other snapshot from now on, and thin the past
            for m in snaps:
                snaps[m] = {k: v for k, v in snaps[m].items() if k % stride[0] == 0}

    def done_mask(obs):
        ex = obs["loss"] - stats.e_min
        return diverged | (t >= config.t_max * (1 - 1e-9)) | (ex <= config.loss_tol * level0) | (steps >= config.max_steps)

    lam0 = np.maximum(obs["lam_bound"], 1e-30)
    if config.step == "fixed":
        lr_m = np.broadcast_to(np.asarray(config.lr if lr is None else lr, np.float64), (K,)).copy()
    else:
        lr_m = (0.01 * config.c / lam0) if lr is None else np.broadcast_to(np.asarray(lr, np.float64), (K,)).copy()
        if config.lr is not None:
            lr_m = np.minimum(lr_m, config.lr)
    record(np.ones(K, bool), obs, params, lr_m)

    def run_chunk(params, lr_run, n):
        mdl = with_weights(model, params)
        if hasattr(trainer, "advance"):
            new, _, div = trainer.advance(mdl, int(n), lr=lr_run.astype(np.float32), alpha=alpha, key=key)
            return tuple(new.weights), div
        # lr 0 marks a frozen member; the record-keeping entry wants lr > 0, so freeze by selection
        res = trainer.train(mdl, alpha, key=key, lr=np.where(lr_run > 0, lr_run, 1e-30).astype(np.float32),
                            epochs=int(n), record_at=[])
        new = _select(jnp.asarray(lr_run > 0), tuple(res.model.weights), tuple(params))
        return new, np.asarray(res.state.diverged)

    if config.step == "fixed":
        # log-spaced record steps, per member the same step counts
        total = int(np.ceil(config.t_max / np.min(lr_m)))
        total = min(total, config.max_steps)
        marks = np.unique(np.round(np.geomspace(1, max(total, 1), config.n_records)).astype(np.int64))
        done_steps = 0
        for mk in marks:
            n = int(mk - done_steps)
            if n <= 0:
                continue
            active = ~done_mask(obs)
            if not np.any(active):
                break
            lr_run = np.where(active, lr_m, 0.0)
            params, div = run_chunk(params, lr_run, n)
            diverged |= div & active
            t += lr_run * n
            steps += np.where(active, n, 0)
            done_steps = int(mk)
            obs = observe(params, weights0)
            record(active, obs, params, lr_m)
            if progress is not None:
                progress(float(np.min(np.where(active, t, np.inf))), config.t_max, int(np.sum(~done_mask(obs))))
    else:
        n = config.chunk
        vis_floor = 1e-4
        n_chunks = 0
        while True:
            active = ~done_mask(obs)
            if not np.any(active) or n_chunks >= config.max_chunks:
                break
            n_chunks += 1
            lr_try = np.minimum(lr_m, (config.t_max - t) / n)
            lr_run = np.where(active, lr_try, 0.0)
            new_params, div = run_chunk(params, lr_run, n)
            new_obs = observe(new_params, weights0)
            finite = np.isfinite(new_obs["loss"]) & ~div
            l_old = np.maximum(obs["loss"] - stats.e_min, 1e-30)
            l_new = np.maximum(new_obs["loss"] - stats.e_min, 1e-30)
            dlog_loss = np.abs(np.log(l_new) - np.log(l_old))
            floor = vis_floor * np.maximum(obs["sv"][:, :1], new_obs["sv"][:, :1])
            dlog_sv = np.max(np.abs(np.log(new_obs["sv"] + floor) - np.log(obs["sv"] + floor)), axis=1)
            up = new_obs["loss"] > obs["loss"] * (1 + 1e-6) + 1e-12 * level0
            stable = lr_run * new_obs["lam_bound"] <= 2.0 * config.c
            change = np.maximum(dlog_loss, dlog_sv)
            target = n * config.delta
            ok = active & finite & ~up & (change <= 2.0 * target) & stable
            acc = ok
            rej = active & ~acc
            params = _select(jnp.asarray(acc), tuple(new_params), tuple(params))
            obs = {k: np.where(acc.reshape((-1,) + (1,) * (v.ndim - 1)), new_obs[k], v) for k, v in obs.items()}
            t = t + np.where(acc, lr_run * n, 0.0)
            steps = steps + np.where(acc, n, 0)
            factor = np.clip(0.8 * target / np.maximum(change, 1e-12), 0.1, config.grow)
            factor = np.where(finite & ~up & stable, factor, 0.25)
            cap = config.c / np.maximum(obs["lam_bound"], 1e-30)
            lr_m = np.where(active, np.minimum(lr_try * factor, cap), lr_m)
            if config.lr is not None:
                lr_m = np.minimum(lr_m, config.lr)
            # a member that cannot make progress even at a vanishing rate has diverged numerically
            stuck = rej & (lr_m * n < 1e-12 * np.maximum(t, 1e-30))
            diverged |= stuck | (active & ~finite & (lr_m < 1e-30))
            if np.any(acc):
                record(acc, obs, params, lr_run)
            if progress is not None:
                act = ~done_mask(obs)
                progress(float(np.min(np.where(act, t, config.t_max))) if np.any(act) else config.t_max, config.t_max, int(np.sum(act)))
    records = pd.DataFrame(rows)
    return DLNRun(
        records=records, stats=stats, depth=depth, width=width,
        final_weights=tuple(np.asarray(w) for w in params), initial_weights=tuple(np.asarray(w) for w in weights0),
        lr_final=np.asarray(lr_m), diverged=diverged, snapshots=snaps, rank_tol=rank_tol,
        meta={"step": config.step, "t_max": config.t_max, "c": config.c, "delta": config.delta, "chunk": config.chunk},
    )
