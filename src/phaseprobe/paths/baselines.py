"""Baselines on the same pair of minima: linear interpolation and a quadratic Bezier curve.

**Linear interpolation** ``w(t) = (1 - t) a + t b`` costs nothing to build
(:func:`phaseprobe.paths.metrics.evaluate_linear`).

**Quadratic Bezier** (Garipov et al. 2018): ``w(t) = (1-t)^2 a + 2t(1-t) c + t^2 b`` with the
end points fixed and the control point ``c`` trained on the expected error along the curve,
``E_{t ~ U(0,1)} E(w(t))``, drawing one ``t`` per minibatch. ``c`` starts at the midpoint
``(a + b) / 2`` (the straight line).

For networks the curve is trained by THE trainer (:class:`phaseprobe.train.Trainer`; same
optimiser, minibatches, early stopping and ensemble over pairs as every other training): the
trained "model" is the curve (``a``, ``c``, ``b``, with ``a`` and ``b`` frozen by a stopped
gradient, so Adam never moves them), and the trainer's minibatch-loss hook
(:func:`curve_batch_loss`) draws ``t`` per minibatch and evaluates the network at ``w(t)``.
``t`` comes from the member's shuffle key, the epoch and the first example of the minibatch
(its row in the training set), so every minibatch of every epoch gets its own ``t``.

For a :class:`~phaseprobe.paths.landscape.FunctionLandscape` there are no minibatches: each
step uses ``n_t`` stratified ``t`` values (one per stratum of ``[0, 1]``) and Adam.

Cost: per-sample gradient evaluations, ``epochs x n_train`` (networks) or ``steps x n_t`` (toys).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from phaseprobe.paths.landscape import FunctionLandscape, NetworkLandscape, PathError, _as_stack

# salt folded into a member's shuffle key for the curve's t (one t per minibatch)
CURVE_T_SALT = 0x5EED


@dataclass
class BezierResult:
    """Trained control points ``(K, P)``, the cost, and the chunk-by-chunk history."""

    control: np.ndarray
    grad_evals: np.ndarray
    epochs: np.ndarray
    seconds: float
    history: list[dict] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# networks
# ---------------------------------------------------------------------------------------------
class CurveModel(eqx.Module):
    """A quadratic Bezier curve of networks; called on one example it is the network at t = 1/2."""

    a: Any
    c: Any
    b: Any
    net_static: Any = eqx.field(static=True)
    in_shape: tuple = eqx.field(static=True)

    def at(self, t):
        """The network at ``w(t)``; the end points carry no gradient."""
        a = jax.lax.stop_gradient(self.a)
        b = jax.lax.stop_gradient(self.b)
        p = jax.tree_util.tree_map(lambda u, c, v: (1 - t) ** 2 * u + 2 * t * (1 - t) * c + t ** 2 * v, a, self.c, b)
        return eqx.combine(p, self.net_static)

    def __call__(self, x):
        return self.at(0.5)(x)


def curve_t(batch):
    """The ``t ~ U(0, 1)`` of one minibatch: from the member's key, the epoch and the batch's first row."""
    key = jax.random.fold_in(jax.random.fold_in(batch.key, CURVE_T_SALT), batch.epoch)
    return jax.random.uniform(jax.random.fold_in(key, batch.index[0]), dtype=batch.x.dtype)


def curve_batch_loss(*, loss: str, classification: bool):
    """The trainer's minibatch-loss hook for a :class:`CurveModel`: the data error at ``w(t)``.

    **Arguments:** ``loss``, ``classification`` -- the data error's form (as the trainer's).

    **Returns:** ``fn(curve, batch, alpha, ref) -> (error, error)`` for ``Trainer(batch_loss=fn)``:
    the weighted mean error of the network at ``w(t)``, ``t = curve_t(batch)``, with no penalty.
    """
    from phaseprobe.train import example_errors

    def fn(curve, batch, alpha, ref):
        err_i, _ = example_errors(curve.at(curve_t(batch)), batch.x, batch.y, loss=loss, classification=classification)
        err = jnp.sum(batch.weight * err_i) / jnp.sum(batch.weight)
        return err, err

    return fn


class _NetBezier:
    """Compiled curve training for one NetworkLandscape (built once, reused across calls)."""

    def __init__(self, land: NetworkLandscape, config=None):
        from phaseprobe.train import Trainer

        cfg = land.config if config is None else config
        self.land = land
        self.config = cfg
        params, static = eqx.partition(land.model, eqx.is_inexact_array)
        self.in_shape = tuple(land.dataset.input_shape)
        one = jax.tree_util.tree_map(lambda p: p[None], params)
        skel = CurveModel(a=one, c=one, b=one, net_static=static, in_shape=self.in_shape)
        hook = curve_batch_loss(loss=cfg.loss, classification=land.dataset.task == "classification")
        self.trainer = Trainer(skel, land.dataset, cfg, batch_loss=hook)
        self.static = static

    def curve_model(self, a, c, b):
        p = self.land.params
        return CurveModel(a=p(a), c=p(c), b=p(b), net_static=self.static, in_shape=self.in_shape)


def _fit_bezier_net(land: NetworkLandscape, a, b, c0, *, epochs: int, chunk_epochs: int | None, seeds, config,
                    on_chunk) -> BezierResult:
    cache = land.__dict__.setdefault("_bezier_cache", {})
    ck = id(config)
    if ck not in cache:
        cache[ck] = _NetBezier(land, config)
    nb: _NetBezier = cache[ck]
    k = a.shape[0]
    seeds = list(range(k)) if seeds is None else list(seeds)
    model = nb.curve_model(a, c0, b)
    opt_state = None
    done = 0
    total_epochs = np.zeros(k, np.int64)
    hist = []
    t0 = time.perf_counter()
    chunk = int(chunk_epochs or epochs)
    c = c0
    while done < epochs:
        n = min(chunk, epochs - done)
        keys = jnp.stack([jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(s), 11), done) for s in seeds])
        res = nb.trainer.train(model, jnp.zeros(k), key=keys, opt_state=opt_state, epochs=n)
        model = res.model
        opt_state = res.state.opt_state
        ep = np.asarray(res.state.epochs).astype(np.int64)
        total_epochs += ep
        done += n
        c = np.asarray(land._ravel_many(eqx.filter(model.c, eqx.is_inexact_array)))
        entry = {"epochs": int(done), "grad_evals": (total_epochs * land.n_samples).astype(float),
                 "seconds": time.perf_counter() - t0, "stopped": bool(np.all(ep < n))}
        if on_chunk is not None:
            entry.update(on_chunk(c) or {})
        hist.append(entry)
        if entry["stopped"]:
            break
    return BezierResult(control=c, grad_evals=(total_epochs * land.n_samples).astype(float), epochs=total_epochs,
                        seconds=time.perf_counter() - t0, history=hist)


# ---------------------------------------------------------------------------------------------
# toy functions
# ---------------------------------------------------------------------------------------------
def _fit_bezier_fn(land: FunctionLandscape, a, b, c0, *, steps: int, n_t: int, lr: float, seeds, chunk, on_chunk) -> BezierResult:
    k = a.shape[0]
    seeds = list(range(k)) if seeds is None else list(seeds)
    t0 = time.perf_counter()
    opt = optax.adam(lr)
    with land.precision():
        dt = jnp.float64 if land.x64 else jnp.float32

        def expected(c, a_, b_, t):
            pts = (1 - t)[:, None] ** 2 * a_ + (2 * t * (1 - t))[:, None] * c + (t ** 2)[:, None] * b_
            return jnp.mean(jax.vmap(land.fn)(pts))

        def run(c, o, a_, b_, key, n):
            def body(i, s):
                c, o = s
                u = (jnp.arange(n_t) + jax.random.uniform(jax.random.fold_in(key, i), (n_t,), dtype=c.dtype)) / n_t
                g = jax.grad(expected)(c, a_, b_, u)
                up, o = opt.update(g, o, c)
                return optax.apply_updates(c, up), o
            return jax.lax.fori_loop(0, n, body, (c, o))

        runv = jax.jit(jax.vmap(run, in_axes=(0, 0, 0, 0, 0, None)), static_argnums=5)
        c = jnp.asarray(c0, dt)
        o = jax.vmap(opt.init)(c)
        aj, bj = jnp.asarray(a, dt), jnp.asarray(b, dt)
        done = 0
        hist = []
        chunk = int(chunk or steps)
        while done < steps:
            n = min(chunk, steps - done)
            keys = jnp.stack([jax.random.fold_in(jax.random.PRNGKey(s), done) for s in seeds])
            c, o = runv(c, o, aj, bj, keys, n)
            done += n
            entry = {"epochs": done, "grad_evals": np.full(k, float(done * n_t)), "seconds": time.perf_counter() - t0}
            if on_chunk is not None:
                entry.update(on_chunk(np.asarray(c)) or {})
            hist.append(entry)
        c = np.asarray(c)
    return BezierResult(control=c, grad_evals=np.full(k, float(steps * n_t)), epochs=np.full(k, steps),
                        seconds=time.perf_counter() - t0, history=hist)


def fit_bezier(land, a, b, *, control=None, epochs: int = 20, chunk_epochs: int | None = None, seeds=None, config=None,
               n_t: int = 8, lr: float = 0.01, on_chunk: Callable[[np.ndarray], dict] | None = None) -> BezierResult:
    """Train the control points of K Bezier curves from ``a[k]`` to ``b[k]`` (``(K, P)`` each) as one ensemble.

    Networks: ``epochs`` (an upper bound: the config's patience may stop earlier), ``config``
    a :class:`~phaseprobe.train.TrainConfig` (default: the landscape's). Toys: ``epochs`` are
    optimiser steps with ``n_t`` values of t each and Adam(``lr``). ``chunk_epochs`` trains in
    chunks (optimiser state carried) and calls ``on_chunk(control)`` after each one; what it
    returns is stored in ``history`` (e.g. the barrier reached so far).
    """
    a = _as_stack(a, land.dim, "a")
    b = _as_stack(b, land.dim, "b")
    if a.shape != b.shape:
        raise PathError(f"b: got {b.shape[0]} end points for {a.shape[0]} start points; pass one pair per curve")
    c0 = 0.5 * (a.astype(np.float64) + b.astype(np.float64)) if control is None else _as_stack(control, land.dim, "control")
    c0 = np.asarray(c0, land.np_dtype)
    if not (isinstance(epochs, (int, np.integer)) and epochs >= 1):
        raise PathError(f"bezier_epochs: must be a positive integer, got {epochs!r}")
    if isinstance(land, NetworkLandscape):
        return _fit_bezier_net(land, a, b, c0, epochs=int(epochs), chunk_epochs=chunk_epochs, seeds=seeds,
                               config=config, on_chunk=on_chunk)
    if isinstance(land, FunctionLandscape):
        return _fit_bezier_fn(land, a, b, c0, steps=int(epochs), n_t=int(n_t), lr=float(lr), seeds=seeds, chunk=chunk_epochs,
                              on_chunk=on_chunk)
    raise PathError(f"landscape: fit_bezier needs a NetworkLandscape or FunctionLandscape, got {type(land).__name__}")
