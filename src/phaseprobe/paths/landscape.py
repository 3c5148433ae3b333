"""The two landscapes the L2 probe walks on, behind one interface.

Every path tool in :mod:`phaseprobe.paths` (the probe's outer loop, bisection, excursion,
barriers, Bezier curves, saddle refinement) sees parameters as **flat vectors**, an ensemble of
K of them as a ``(K, P)`` numpy array, and asks a *landscape* for four things:

* :meth:`minimise` -- the probe's core step: minimise ``L_alpha(w) = E(w) + alpha*||w - w_ref||^2``
  (canonical convention, :mod:`phaseprobe.conventions`) from a warm start with a **fresh**
  optimiser, for every member at once (each with its own alpha and reference);
* :meth:`evaluate` -- full-pass metrics of any stack of points (dense path evaluation);
* :meth:`error_fn` -- the unregularised error ``E`` as a JAX function of one flat vector (for
  Hessians and saddle searches);
* :meth:`basins` -- which basin each point belongs to.

:class:`NetworkLandscape` runs networks through THE trainer (:class:`phaseprobe.train.Trainer`):
minibatch Adam, early stopping on the epoch-mean training error; by default the published
probe settings (Adam lr 1.5e-3, batch 64, at most 50 epochs per strength, patience 5). Its
basin is the set of classes a model encodes (test recall and precision both >= ``learned``).

:class:`FunctionLandscape` runs a plain differentiable function of a parameter vector (2-D and
1-D toy landscapes): full-batch gradient descent (or Adam) until the gradient norm of ``L``
falls below ``grad_tol``, vectorised over members. Its basin is the minimum of ``E`` that
gradient descent on ``E`` alone reaches from the point, rounded.

Gradient evaluations are counted per sample and the same way everywhere: one minibatch step
on b samples costs b; a network epoch costs ``n_train``; a toy step costs 1. Evaluations for
reporting (full passes without a parameter update) are not counted.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from phaseprobe.errors import PhaseprobeError


class PathError(PhaseprobeError):
    """Bad input to a path tool; the message is one line naming the field and the fix."""


# the published probe settings (Adam lr 1.5e-3, batch 64, <= 50 epochs per strength, patience 5)
PAPER_TRAIN = dict(loss="ce", optimizer="adam", lr=1.5e-3, batch_size=64, epochs=50, patience=5, penalty_on="all")


@dataclass
class MinResult:
    """One probe step for K members: new points, metrics (per-member arrays), per-sample grad evals."""

    x: np.ndarray
    metrics: dict[str, np.ndarray]
    grad_evals: np.ndarray
    steps: np.ndarray  # epochs (networks) or iterations (functions) per member
    stop: list[str] = field(default_factory=list)


def _as_stack(x, dim: int, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2 or a.shape[1] != dim:
        raise PathError(f"{name}: expected flat parameter vectors of length {dim} (shape (K, {dim})), got shape {np.shape(x)}; "
                        "pass points of the same landscape/architecture")
    if not np.all(np.isfinite(a)):
        raise PathError(f"{name}: contains NaN or inf; pass finite parameters")
    return a


# =============================================================================================
# toy landscapes: a plain differentiable function of a flat vector
# =============================================================================================
class FunctionLandscape:
    """A differentiable ``E(x)`` of a flat vector ``x`` (shape ``(dim,)``), e.g. a 2-D toy.

    ``optimizer`` "gd" (plain gradient descent, the default: deterministic, no optimiser state
    to reset) or "adam"; ``lr`` its step; each :meth:`minimise` runs at most ``max_steps``
    steps and stops when ``||grad L|| <= grad_tol``. ``x64=True`` runs everything in float64
    (inside a local ``jax.enable_x64`` context; the global setting is untouched).
    ``basin_decimals`` rounds the E-minimum that labels a basin.
    """

    kind = "function"

    def __init__(self, fn: Callable, dim: int, *, optimizer: str = "gd", lr: float = 0.05, max_steps: int = 20000,
                 grad_tol: float = 1e-6, x64: bool = False, basin_decimals: int = 2, name: str = "toy"):
        if optimizer not in ("gd", "adam"):
            raise PathError(f"optimizer: unknown '{optimizer}'; use 'gd' or 'adam'")
        if not (isinstance(dim, (int, np.integer)) and dim >= 1):
            raise PathError(f"dim: must be a positive integer, got {dim!r}")
        if not (lr > 0 and math.isfinite(lr)):
            raise PathError(f"lr: must be a positive number, got {lr}")
        if not (isinstance(max_steps, (int, np.integer)) and max_steps >= 1):
            raise PathError(f"max_steps: must be a positive integer, got {max_steps!r}")
        self.fn = fn
        self.dim = int(dim)
        self.optimizer = optimizer
        self.lr = float(lr)
        self.max_steps = int(max_steps)
        self.grad_tol = float(grad_tol)
        self.x64 = bool(x64)
        self.basin_decimals = int(basin_decimals)
        self.name = name
        self.n_samples = 1
        self.n_classes = 0
        self.np_dtype = np.float64 if x64 else np.float32
        self._min = jax.jit(jax.vmap(self._minimise_one))
        self._eval = jax.jit(jax.vmap(self._eval_one))

    def precision(self):
        """Context in which this landscape's arrays live (float64 when ``x64``)."""
        return jax.enable_x64(True) if self.x64 else contextlib.nullcontext()

    def _loss(self, x, alpha, ref):
        return self.fn(x) + alpha * jnp.sum(jnp.square(x - ref))

    def _minimise_one(self, x0, alpha, ref):
        opt = optax.sgd(self.lr) if self.optimizer == "gd" else optax.adam(self.lr)
        grad = jax.grad(self._loss)
        tol = self.grad_tol

        def cond(s):
            _, _, it, gn = s
            return (it < self.max_steps) & (gn > tol)

        def body(s):
            x, o, it, _ = s
            g = grad(x, alpha, ref)
            gn = jnp.sqrt(jnp.sum(jnp.square(g)))
            u, o2 = opt.update(g, o, x)
            move = gn > tol
            x = jnp.where(move, optax.apply_updates(x, u), x)
            o = jax.tree_util.tree_map(lambda a, b: jnp.where(move, a, b), o2, o)
            return x, o, it + 1, gn

        s0 = (x0, opt.init(x0), jnp.zeros((), jnp.int32), jnp.asarray(jnp.inf, x0.dtype))
        x, _, it, gn = jax.lax.while_loop(cond, body, s0)
        return x, it, gn

    def _eval_one(self, x, alpha, ref):
        e, g = jax.value_and_grad(self.fn)(x)
        pen = jnp.sum(jnp.square(x - ref))
        return e, e + alpha * pen, pen, jnp.sqrt(jnp.sum(jnp.square(g + 2 * alpha * (x - ref)))), jnp.sqrt(jnp.sum(jnp.square(g)))

    def minimise(self, x, alpha, ref, *, step: int = 0, seeds: Sequence[int] | None = None) -> MinResult:
        x = _as_stack(x, self.dim, "start")
        k = x.shape[0]
        ref = np.zeros_like(x) if ref is None else _as_stack(ref, self.dim, "ref")
        alpha = np.broadcast_to(np.asarray(alpha, np.float64), (k,))
        with self.precision():
            dt = jnp.float64 if self.x64 else jnp.float32
            xn, it, gn = self._min(jnp.asarray(x, dt), jnp.asarray(alpha, dt), jnp.asarray(ref, dt))
            xn = np.asarray(xn)
            it = np.asarray(it)
            gn = np.asarray(gn)
        met = self.evaluate(xn, alpha, ref)
        met["last_epoch_error"] = met["train_error"].copy()
        stop = ["grad_tol" if g <= self.grad_tol else "max_steps" for g in gn]
        return MinResult(x=xn, metrics=met, grad_evals=it.astype(np.int64) * self.n_samples, steps=it, stop=stop)

    def evaluate(self, x, alpha=0.0, ref=None, *, grad: bool = True) -> dict[str, np.ndarray]:
        x = _as_stack(x, self.dim, "points")
        k = x.shape[0]
        ref = np.zeros_like(x) if ref is None else _as_stack(ref, self.dim, "ref")
        alpha = np.broadcast_to(np.asarray(alpha, np.float64), (k,))
        with self.precision():
            dt = jnp.float64 if self.x64 else jnp.float32
            e, l, pen, gl, ge = (np.asarray(v, np.float64) for v in self._eval(jnp.asarray(x, dt), jnp.asarray(alpha, dt), jnp.asarray(ref, dt)))
        nan = np.full(k, np.nan)
        return {"train_error": e, "loss": l, "penalty_sq": pen, "grad_norm": gl, "grad_norm_E": ge,
                "test_error": nan.copy(), "train_acc": nan.copy(), "test_acc": nan.copy(),
                "w_sq": np.sum(np.square(x.astype(np.float64)), axis=1)}

    def error_fn(self, subset: int | None = None):
        """``(E, dtype)``: E as a JAX function of one flat vector (call it inside :meth:`precision`)."""
        return self.fn, (jnp.float64 if self.x64 else jnp.float32)

    def basins(self, x, metrics: dict | None = None) -> list[tuple]:
        """Label of each point: the E-minimum gradient descent on E reaches from it, rounded."""
        x = _as_stack(x, self.dim, "points")
        res = self.minimise(x, np.zeros(x.shape[0]), None)
        return [tuple(float(v) for v in np.round(row, self.basin_decimals) + 0.0) for row in res.x]

    def describe(self) -> dict:
        return {"landscape": "function", "name": self.name, "dim": self.dim, "optimizer": self.optimizer, "lr": self.lr,
                "max_steps": self.max_steps, "grad_tol": self.grad_tol, "x64": self.x64}


# =============================================================================================
# networks: THE trainer
# =============================================================================================
class NetworkLandscape:
    """A network architecture on a dataset, trained by :class:`phaseprobe.train.Trainer`.

    ``model`` is one (unstacked) Equinox model: it fixes the architecture and the flattening
    order (``jax.flatten_util.ravel_pytree`` of its parameters). ``config`` is a
    :class:`~phaseprobe.train.TrainConfig`; the default is the published probe setting
    (:data:`PAPER_TRAIN`). ``learned`` is the per-class test recall and precision a class needs
    to count as encoded. ``eval_chunk`` points are evaluated per compiled call.
    """

    kind = "network"

    def __init__(self, model, dataset, config=None, *, learned: float = 0.5, eval_chunk: int = 16, name: str | None = None):
        from phaseprobe.train import TrainConfig, Trainer

        if config is None:
            config = TrainConfig(**PAPER_TRAIN)
        if config.optimizer == "adamw":
            raise PathError("optimizer: the probe's penalty is explicit (E + beta*||w - w_ref||^2 in the gradient); use 'adam', not 'adamw'")
        params, static = eqx.partition(model, eqx.is_inexact_array)
        flat, unravel = ravel_pytree(params)
        self.model = model
        self.static = static
        self.unravel = unravel
        self.dim = int(flat.shape[0])
        self.dataset = dataset
        self.config = config
        self.learned = float(learned)
        self.eval_chunk = int(eval_chunk)
        self.name = name or getattr(dataset, "name", "network")
        stacked = eqx.combine(jax.tree_util.tree_map(lambda a: a[None], params), static)
        self.trainer = Trainer(stacked, dataset, config)
        self.n_samples = int(self.trainer.n_train)
        self.n_classes = int(self.trainer.n_classes)
        self.np_dtype = np.asarray(flat).dtype
        self._ravel_many = jax.jit(jax.vmap(lambda p: ravel_pytree(p)[0]))
        self._unravel_many = jax.jit(jax.vmap(unravel))
        self._efn_cache: dict = {}

    # ---- conversions --------------------------------------------------------------------------
    def flatten_model(self, stacked_model) -> np.ndarray:
        """``(K, P)`` flat vectors of a stacked model (leading member axis)."""
        params = eqx.filter(stacked_model, eqx.is_inexact_array)
        ref_struct = jax.tree_util.tree_structure(eqx.filter(self.model, eqx.is_inexact_array))
        if jax.tree_util.tree_structure(params) != ref_struct:
            raise PathError("model: its parameter tree differs from the landscape's architecture; pass minima of the same architecture")
        shapes = [a.shape[1:] for a in jax.tree_util.tree_leaves(params)]
        want = [a.shape for a in jax.tree_util.tree_leaves(eqx.filter(self.model, eqx.is_inexact_array))]
        if shapes != want:
            raise PathError(f"model: parameter shapes {shapes} differ from the architecture's {want}; pass minima of the same architecture")
        return np.asarray(self._ravel_many(params))

    def params(self, x):
        """Stacked parameter pytree of the flat vectors ``x`` (K, P)."""
        return self._unravel_many(jnp.asarray(x))

    def stacked_model(self, x):
        return eqx.combine(self.params(x), self.static)

    def single_model(self, v):
        return eqx.combine(self.unravel(jnp.asarray(v)), self.static)

    def precision(self):
        return contextlib.nullcontext()

    # ---- the probe step -------------------------------------------------------------------------
    def minimise(self, x, alpha, ref, *, step: int = 0, seeds: Sequence[int] | None = None) -> MinResult:
        """Train every member from ``x`` at its ``alpha`` toward ``ref`` with a fresh optimiser."""
        from phaseprobe.train import STOP_NAMES

        x = _as_stack(x, self.dim, "start")
        k = x.shape[0]
        ref = np.zeros_like(x) if ref is None else _as_stack(ref, self.dim, "ref")
        alpha = np.broadcast_to(np.asarray(alpha, np.float64), (k,)).astype(np.float32)
        seeds = list(range(k)) if seeds is None else [int(s) for s in seeds]
        keys = jnp.stack([jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(s), 7), int(step)) for s in seeds])
        res = self.trainer.train(self.stacked_model(x), jnp.asarray(alpha), key=keys, ref=self.params(ref), opt_state=None)
        xn = np.asarray(self._ravel_many(res.params))
        rec = res.records[-1]
        met = self._metrics(rec)
        met["last_epoch_error"] = np.asarray(rec["last_epoch_error"], np.float64)
        epochs = np.asarray(res.state.epochs).astype(np.int64)
        stop = [STOP_NAMES[int(r)] for r in np.asarray(res.state.reason)]
        return MinResult(x=xn, metrics=met, grad_evals=epochs * self.n_samples, steps=epochs, stop=stop)

    @staticmethod
    def _metrics(rec: dict) -> dict[str, np.ndarray]:
        out = {}
        for key in ("train_error", "test_error", "loss", "penalty_sq", "w_sq", "grad_norm", "grad_norm_E", "train_acc", "test_acc"):
            if key in rec:
                out[key] = np.asarray(rec[key], np.float64)
        for key in ("test_class_acc", "test_class_prec", "train_class_acc"):
            if key in rec:
                out[key] = np.asarray(rec[key], np.float64)
        return out

    def evaluate(self, x, alpha=0.0, ref=None, *, grad: bool = False) -> dict[str, np.ndarray]:
        """Full-pass metrics of every point (chunks of ``eval_chunk``, padded: one compilation)."""
        x = _as_stack(x, self.dim, "points")
        k = x.shape[0]
        alpha = np.broadcast_to(np.asarray(alpha, np.float64), (k,)).astype(np.float32)
        refa = None if ref is None else _as_stack(ref, self.dim, "ref")
        c = self.eval_chunk
        parts: list[dict] = []
        for s in range(0, k, c):
            xs = x[s:s + c]
            m = xs.shape[0]
            al = alpha[s:s + c]
            rs = None if refa is None else refa[s:s + c]
            if m < c:
                pad = c - m
                xs = np.concatenate([xs, np.repeat(xs[-1:], pad, 0)])
                al = np.concatenate([al, np.repeat(al[-1:], pad)])
                rs = None if rs is None else np.concatenate([rs, np.repeat(rs[-1:], pad, 0)])
            rec = self.trainer.evaluate(self.params(xs), jnp.asarray(al), None if rs is None else self.params(rs), grad=grad)
            parts.append({kk: np.asarray(v)[:m] for kk, v in self._metrics(rec).items()})
        return {kk: np.concatenate([p[kk] for p in parts]) for kk in parts[0]}

    def error_fn(self, subset: int | None = None):
        """``(E, dtype)``: the mean training error of one flat vector (``subset``: first n samples)."""
        key = subset
        if key not in self._efn_cache:
            from phaseprobe.geometry import make_error_fn

            x, y = np.asarray(self.dataset.x_train), np.asarray(self.dataset.y_train)
            if subset is not None:
                x, y = x[:subset], y[:subset]
            efn = make_error_fn(self.model, (x, y), self.config.loss)
            unravel = self.unravel

            def E(v):
                return efn(unravel(v))

            self._efn_cache[key] = E
        return self._efn_cache[key], jnp.float32

    def classes_of(self, metrics: dict) -> list[tuple[int, ...]]:
        """Class set encoded by each point: test recall AND precision >= ``learned``."""
        ca = np.asarray(metrics["test_class_acc"])
        cp = np.asarray(metrics["test_class_prec"])
        ok = (ca >= self.learned) & (cp >= self.learned)
        return [tuple(int(c) for c in np.flatnonzero(row)) for row in ok]

    def basins(self, x, metrics: dict | None = None) -> list[tuple]:
        if metrics is None or "test_class_acc" not in metrics:
            metrics = self.evaluate(x)
        return self.classes_of(metrics)

    def describe(self) -> dict:
        c = self.config
        return {"landscape": "network", "dataset": self.name, "n_train": self.n_samples, "params": self.dim,
                "optimizer": c.optimizer, "lr": c.lr, "batch_size": c.batch_size, "max_epochs": c.epochs,
                "patience": c.patience, "fresh_optimizer_per_strength": True}
