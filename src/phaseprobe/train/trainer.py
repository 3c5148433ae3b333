"""The one vectorised trainer of phaseprobe.

An *ensemble* of K members -- same architecture, each with its own L2 strength ``alpha``
(canonical convention, see :mod:`phaseprobe.conventions`), learning rate, shuffling key, start
parameters and optional reference ``w_ref`` -- is trained as ONE jit-compiled program:
``vmap`` over members, ``lax.scan`` over the minibatch steps of an epoch, a ``fori_loop`` over
epochs with a *traced* count (so chunks of any length reuse one compilation). The data live on
the device once and are shared by every member; each member gathers only its own minibatch.

Per-member control, all vectorised (a stopped member is frozen with ``jnp.where`` while the
others go on):

* early stopping on the epoch-mean training error (``patience`` epochs without an improvement
  larger than ``min_delta``), the rule of the published protocols;
* a gradient-norm tolerance (norm of the regularised-loss gradient at the last step of the
  epoch: exact for full batch, a minibatch estimate otherwise);
* NaN/inf detection: the member keeps its last finite parameters and is flagged diverged.

Everything is recorded at chosen epochs (``record_at``) by a separate full-pass evaluation:
train/test data error, regularised loss, accuracy, per-class accuracy, ||w||^2 and the
full-batch gradient norm of the regularised loss.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from phaseprobe.errors import PhaseprobeError
from phaseprobe.models import penalty_mask

OPTIMIZERS = ("sgd", "momentum", "adam", "adamw", "gd")
LOSSES = ("ce", "mse")

# stop reasons (per member)
RUNNING, STOP_PATIENCE, STOP_GRAD, STOP_DIVERGED, STOP_MAX_EPOCHS = 0, 1, 2, 3, 4
STOP_NAMES = {RUNNING: "running", STOP_PATIENCE: "patience", STOP_GRAD: "grad_tol",
              STOP_DIVERGED: "diverged", STOP_MAX_EPOCHS: "max_epochs"}


class TrainError(PhaseprobeError):
    """A bad training request; the message names the field and the fix (one line)."""


@dataclass(frozen=True)
class TrainConfig:
    """Settings shared by all members of an ensemble (per-member values go to :func:`train`).

    ``batch_size=None`` (or ``optimizer="gd"``) is full-batch: one step per epoch.
    With ``optimizer="adamw"`` the decay is decoupled: ``w <- w - lr * 2 * alpha * w`` (that is,
    PyTorch's AdamW with ``weight_decay = beta = 2 alpha``) and no penalty enters the gradient.
    """

    loss: str = "ce"
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    batch_size: int | None = 64
    epochs: int = 10
    penalty_on: str = "all"
    patience: int | None = None
    min_delta: float = 0.0
    grad_tol: float | None = None
    eval_batch: int = 8192

    def validate(self) -> "TrainConfig":
        if self.loss not in LOSSES:
            raise TrainError(f"loss: unknown '{self.loss}'; use one of {', '.join(LOSSES)}")
        if self.optimizer not in OPTIMIZERS:
            raise TrainError(f"optimizer: unknown '{self.optimizer}'; use one of {', '.join(OPTIMIZERS)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise TrainError(f"lr: must be a positive number, got {self.lr}")
        if self.batch_size is not None and self.batch_size <= 0:
            raise TrainError(f"batch_size: must be a positive integer (or None for full batch), got {self.batch_size}")
        if self.epochs < 0:
            raise TrainError(f"epochs: must be >= 0, got {self.epochs}")
        if self.penalty_on not in ("all", "weights"):
            raise TrainError(f"penalty_on: unknown '{self.penalty_on}'; use 'all' or 'weights'")
        if self.patience is not None and self.patience < 1:
            raise TrainError(f"patience: must be >= 1 epoch (or None to disable), got {self.patience}")
        return self


class TrainState(eqx.Module):
    """Per-member state (a pytree), every array with a leading member axis K."""

    params: Any
    opt_state: Any
    key: jax.Array
    active: jax.Array
    diverged: jax.Array
    reason: jax.Array
    best: jax.Array
    bad: jax.Array
    epochs: jax.Array
    last_err: jax.Array
    last_gnorm: jax.Array


@dataclass
class TrainResult:
    """What :func:`train` returns: the final model (stacked), state, and the metric records."""

    model: Any
    state: TrainState
    records: list[dict] = field(default_factory=list)

    @property
    def params(self):
        return eqx.filter(self.model, eqx.is_inexact_array)

    def stop_reasons(self) -> list[str]:
        return [STOP_NAMES[int(r)] for r in np.asarray(self.state.reason)]


def _tree_where(cond, new, old):
    return jax.tree_util.tree_map(lambda a, b: jnp.where(cond, a, b), new, old)


def _sqnorm(tree, mask=None):
    leaves = jax.tree_util.tree_leaves(tree)
    if mask is None:
        return sum(jnp.sum(jnp.square(x)) for x in leaves)
    mleaves = jax.tree_util.tree_leaves(mask)
    return sum(m * jnp.sum(jnp.square(x)) for x, m in zip(leaves, mleaves))


def _all_finite(tree):
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]))


class Trainer:
    """Compiled training and evaluation for one architecture, one dataset and one config.

    Build once, call :meth:`train` many times (different alphas, starts, refs, keys): the
    per-member values are traced, so nothing recompiles while shapes stay the same.
    """

    def __init__(self, model_like, data, config: TrainConfig):
        self.config = config.validate()
        # the mask is one float per leaf: it does not depend on a member axis
        _, static = eqx.partition(model_like, eqx.is_inexact_array)
        self.static = static
        self.mask = penalty_mask(model_like, config.penalty_on)
        self.data = data
        self.classification = data.task == "classification"
        if self.classification and config.loss != "ce" and config.loss != "mse":
            raise TrainError(f"loss: unknown '{config.loss}'")
        self.n_classes = int(data.n_classes) if self.classification else 0
        self.x_train = jnp.asarray(data.x_train)
        self.y_train = jnp.asarray(data.y_train)
        self.x_test = jnp.asarray(data.x_test)
        self.y_test = jnp.asarray(data.y_test)
        n = int(self.x_train.shape[0])
        if n == 0:
            raise TrainError("data: the training set is empty; check the dataset options (classes, n_train)")
        full = config.batch_size is None or config.optimizer == "gd" or config.batch_size >= n
        self.batch = n if full else int(config.batch_size)
        self.steps_per_epoch = 1 if full else int(math.ceil(n / self.batch))
        self.full_batch = full
        self.n_train = n
        self._run = jax.jit(self._run_epochs)
        self._eval = jax.jit(self._eval_chunk)

    # ---- losses -------------------------------------------------------------------------
    def _model(self, params):
        return eqx.combine(params, self.static)

    def _per_example_error(self, params, x, y):
        out = jax.vmap(self._model(params))(x)
        if self.config.loss == "ce":
            return optax.softmax_cross_entropy_with_integer_labels(out, y), out
        target = jax.nn.one_hot(y, out.shape[-1]) if self.classification else y
        return 0.5 * jnp.sum(jnp.square(out - target), axis=-1), out

    def penalty(self, params, ref):
        diff = params if ref is None else jax.tree_util.tree_map(jnp.subtract, params, ref)
        return _sqnorm(diff, self.mask)

    def _batch_loss(self, params, x, y, w, alpha, ref):
        err_i, _ = self._per_example_error(params, x, y)
        err = jnp.sum(w * err_i) / jnp.sum(w)
        pen = 0.0 if self.config.optimizer == "adamw" else alpha * self.penalty(params, ref)
        return err + pen, err

    # ---- optimiser (built inside the traced function: lr and alpha are data) -------------
    def _optimizer(self, lr, alpha):
        c = self.config
        if c.optimizer in ("sgd", "gd"):
            return optax.sgd(lr)
        if c.optimizer == "momentum":
            return optax.sgd(lr, momentum=c.momentum)
        if c.optimizer == "adam":
            return optax.adam(lr, b1=c.b1, b2=c.b2, eps=c.eps)
        # adamw: decoupled decay beta = 2 alpha on the penalised leaves
        return optax.chain(
            optax.scale_by_adam(b1=c.b1, b2=c.b2, eps=c.eps),
            optax.add_decayed_weights(2.0 * alpha, mask=jax.tree_util.tree_map(lambda m: m > 0, self.mask)),
            optax.scale_by_learning_rate(lr),
        )

    def init_opt_state(self, params, lr, alpha):
        def one(p, l, a):
            return self._optimizer(l, a).init(p)
        return jax.vmap(one)(params, lr, alpha)

    # ---- one member, one epoch -------------------------------------------------------------
    def _member_epoch(self, params, opt_state, key, epoch, alpha, lr, ref, st):
        c = self.config
        opt = self._optimizer(lr, alpha)
        n, b, spe = self.n_train, self.batch, self.steps_per_epoch
        if self.full_batch:
            idx = jnp.arange(n)[None, :]
            wts = jnp.ones((1, n), jnp.float32)
        else:
            perm = jax.random.permutation(jax.random.fold_in(key, epoch), n)
            pad = spe * b - n
            idx = jnp.concatenate([perm, perm[:pad]]).reshape(spe, b)
            wts = jnp.concatenate([jnp.ones(n, jnp.float32), jnp.zeros(pad, jnp.float32)]).reshape(spe, b)

        active0, diverged0 = st
        grad_fn = jax.value_and_grad(self._batch_loss, has_aux=True)

        def step(carry, iw):
            p, o, active, diverged, err_sum, gsq = carry
            i, w = iw
            xb = self.x_train[i]
            yb = self.y_train[i]
            (loss, err), g = grad_fn(p, xb, yb, w, alpha, ref)
            upd, o_new = opt.update(g, o, p)
            p_new = optax.apply_updates(p, upd)
            finite = jnp.isfinite(loss) & _all_finite(p_new)
            ok = active & finite
            p = _tree_where(ok, p_new, p)
            o = _tree_where(ok, o_new, o)
            diverged = diverged | (active & ~finite)
            active = ok
            return (p, o, active, diverged, err_sum + err, _sqnorm(g)), None

        carry0 = (params, opt_state, active0, diverged0, jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32))
        (p, o, active, diverged, err_sum, gsq), _ = jax.lax.scan(step, carry0, (idx, wts))
        return p, o, active, diverged, err_sum / spe, jnp.sqrt(gsq)

    def _run_epochs(self, state: TrainState, n_epochs, max_epochs, alpha, lr, ref):
        c = self.config
        ref_axis = None if ref is None else 0

        def epoch_body(_, s: TrainState):
            p, o, active, diverged, err, gnorm = jax.vmap(
                self._member_epoch, in_axes=(0, 0, 0, 0, 0, 0, ref_axis, 0)
            )(s.params, s.opt_state, s.key, s.epochs, alpha, lr, ref, (s.active, s.diverged))
            ran = s.active
            epochs = s.epochs + ran.astype(s.epochs.dtype)
            improved = err < s.best - c.min_delta
            best = jnp.where(ran & improved, err, s.best)
            bad = jnp.where(ran, jnp.where(improved, 0, s.bad + 1), s.bad)
            reason = s.reason
            reason = jnp.where(ran & diverged & ~s.diverged, STOP_DIVERGED, reason)
            still = active
            if c.patience is not None:
                hit = still & (bad >= c.patience)
                reason = jnp.where(hit, STOP_PATIENCE, reason)
                still = still & ~hit
            if c.grad_tol is not None:
                hit = still & (gnorm < c.grad_tol)
                reason = jnp.where(hit, STOP_GRAD, reason)
                still = still & ~hit
            hit = still & (epochs >= max_epochs)
            reason = jnp.where(hit, STOP_MAX_EPOCHS, reason)
            still = still & ~hit
            return TrainState(
                params=p, opt_state=o, key=s.key, active=still, diverged=diverged, reason=reason,
                best=best, bad=bad, epochs=epochs,
                last_err=jnp.where(ran, err, s.last_err), last_gnorm=jnp.where(ran, gnorm, s.last_gnorm),
            )

        return jax.lax.fori_loop(0, n_epochs, epoch_body, state)

    # ---- evaluation ------------------------------------------------------------------------
    def _eval_chunk(self, params, alpha, ref, x, y, w):
        """Sums over one data chunk for every member: error, correct, per-class, grad of E."""

        def one(p, a, r):
            def err_sum(p):
                e, out = self._per_example_error(p, x, y)
                return jnp.sum(w * e), out
            (es, out), g = jax.value_and_grad(err_sum, has_aux=True)(p)
            if self.classification:
                correct = (jnp.argmax(out, -1) == y).astype(jnp.float32) * w
                onehot = jax.nn.one_hot(y, self.n_classes) * w[:, None]
                per_class = onehot.T @ correct
                counts = jnp.sum(onehot, 0)
            else:
                correct = jnp.zeros_like(w)
                per_class = jnp.zeros((1,))
                counts = jnp.zeros((1,))
            return es, jnp.sum(correct), per_class, counts, g

        ref_axis = None if ref is None else 0
        return jax.vmap(one, in_axes=(0, 0, ref_axis))(params, alpha, ref)

    def evaluate(self, params, alpha, ref=None, *, grad: bool = True) -> dict[str, np.ndarray]:
        """Full-pass metrics for every member (numpy arrays with a leading member axis)."""
        out = {}
        alpha = jnp.asarray(alpha, jnp.float32)
        for split, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            n = int(x.shape[0])
            if n == 0:
                continue
            cb = min(self.config.eval_batch, n)
            es = cor = 0.0
            pc = cnt = gsum = None
            for start in range(0, n, cb):
                xs, ys = x[start:start + cb], y[start:start + cb]
                m = xs.shape[0]
                w = jnp.ones((cb,), jnp.float32)
                if m < cb:  # pad to a fixed shape: one compilation
                    pad = cb - m
                    xs = jnp.concatenate([xs, jnp.zeros((pad,) + xs.shape[1:], xs.dtype)])
                    ys = jnp.concatenate([ys, jnp.zeros((pad,) + ys.shape[1:], ys.dtype)])
                    w = w.at[m:].set(0.0)
                e, c_, p_, n_, g = self._eval(params, alpha, ref, xs, ys, w)
                es = es + e
                cor = cor + c_
                pc = p_ if pc is None else pc + p_
                cnt = n_ if cnt is None else cnt + n_
                if split == "train":
                    gsum = g if gsum is None else jax.tree_util.tree_map(jnp.add, gsum, g)
            err = np.asarray(es) / n
            out[f"{split}_error"] = err
            if self.classification:
                out[f"{split}_acc"] = np.asarray(cor) / n
                out[f"{split}_class_acc"] = np.asarray(pc) / np.maximum(np.asarray(cnt), 1)
            if split == "train":
                ge = jax.tree_util.tree_map(lambda t: t / n, gsum)
                pen = jax.vmap(self.penalty, in_axes=(0, None if ref is None else 0))(params, ref)
                out["penalty_sq"] = np.asarray(pen)
                out["w_sq"] = np.asarray(jax.vmap(_sqnorm)(params))
                out["loss"] = err + np.asarray(alpha) * np.asarray(pen)
                out["grad_norm_E"] = np.asarray(jax.vmap(_sqnorm)(ge)) ** 0.5
                if self.config.optimizer != "adamw":
                    diff = params if ref is None else jax.tree_util.tree_map(jnp.subtract, params, ref)
                    gl = jax.tree_util.tree_map(
                        lambda a, b, m: a + 2.0 * alpha.reshape((-1,) + (1,) * (a.ndim - 1)) * m * b,
                        ge, diff, jax.tree_util.tree_map(lambda m: jnp.asarray(m), self.mask),
                    )
                    out["grad_norm"] = np.asarray(jax.vmap(_sqnorm)(gl)) ** 0.5
                else:
                    out["grad_norm"] = out["grad_norm_E"]
        return out

    # ---- the public entry -------------------------------------------------------------------
    def train(
        self,
        model,
        alpha,
        *,
        key,
        lr=None,
        ref=None,
        opt_state=None,
        epochs: int | None = None,
        record_at: Sequence[int] | None = None,
        chunk_epochs: int | None = None,
        on_record: Callable[[int, dict], None] | None = None,
        on_progress: Callable[[int, int, int], None] | None = None,
    ) -> TrainResult:
        """Train every member of the stacked ``model``.

        ``alpha`` (K,) canonical L2 strengths; ``key`` (K, 2) or one key split into K; ``lr``
        per member or the config's; ``ref`` a stacked parameter pytree (the penalty's centre,
        default 0); ``opt_state`` carried optimiser state (default: fresh). ``record_at`` lists
        epoch counts at which to evaluate (the final state is always recorded); records are
        dicts of per-member arrays with ``epoch`` added. ``on_progress(done, total, n_active)``
        is called after every chunk.
        """
        c = self.config
        params, static = eqx.partition(model, eqx.is_inexact_array)
        k = int(jax.tree_util.tree_leaves(params)[0].shape[0])
        alpha = jnp.broadcast_to(jnp.asarray(alpha, jnp.float32), (k,))
        if np.any(np.asarray(alpha) < 0) or not np.all(np.isfinite(np.asarray(alpha))):
            raise TrainError("alpha: every L2 strength must be finite and >= 0")
        lr = jnp.broadcast_to(jnp.asarray(c.lr if lr is None else lr, jnp.float32), (k,))
        key = jnp.asarray(key)
        if key.ndim == 1 or (jnp.issubdtype(key.dtype, jax.dtypes.prng_key) and key.ndim == 0):
            key = jax.random.split(key, k)
        if opt_state is None:
            opt_state = self.init_opt_state(params, lr, alpha)
        max_epochs = c.epochs if epochs is None else int(epochs)
        inf = jnp.full((k,), jnp.inf, jnp.float32)
        state = TrainState(
            params=params, opt_state=opt_state, key=key,
            active=jnp.ones((k,), bool) if max_epochs > 0 else jnp.zeros((k,), bool),
            diverged=jnp.zeros((k,), bool),
            reason=jnp.full((k,), RUNNING if max_epochs > 0 else STOP_MAX_EPOCHS, jnp.int32),
            best=inf, bad=jnp.zeros((k,), jnp.int32), epochs=jnp.zeros((k,), jnp.int32),
            last_err=jnp.full((k,), jnp.nan, jnp.float32), last_gnorm=jnp.full((k,), jnp.nan, jnp.float32),
        )
        marks = sorted({int(e) for e in (record_at or []) if 0 <= int(e) <= max_epochs} | {max_epochs})
        if chunk_epochs is not None and chunk_epochs > 0:
            extra = range(chunk_epochs, max_epochs, chunk_epochs)
            stops = sorted(set(marks) | set(extra))
        else:
            stops = marks
        record_set = set(marks)
        records: list[dict] = []
        done = 0
        for stop in stops:
            n = stop - done
            if n > 0 and bool(jnp.any(state.active)):
                state = self._run(state, jnp.asarray(n, jnp.int32), jnp.asarray(max_epochs, jnp.int32), alpha, lr, ref)
            done = stop
            n_active = int(jnp.sum(state.active))
            if on_progress is not None:
                on_progress(done, max_epochs, n_active)
            if stop in record_set:
                rec = self.evaluate(state.params, alpha, ref)
                rec["epoch"] = np.asarray(state.epochs)
                rec["step"] = np.asarray(state.epochs) * self.steps_per_epoch
                rec["record_epoch"] = stop
                rec["diverged"] = np.asarray(state.diverged)
                rec["active"] = np.asarray(state.active)
                rec["reason"] = np.asarray(state.reason)
                rec["last_epoch_error"] = np.asarray(state.last_err)
                records.append(rec)
                if on_record is not None:
                    on_record(stop, rec)
            if n_active == 0 and stop < max_epochs:
                # every member stopped: still emit the final record once
                if max_epochs not in {r["record_epoch"] for r in records}:
                    rec = self.evaluate(state.params, alpha, ref)
                    rec.update(epoch=np.asarray(state.epochs), step=np.asarray(state.epochs) * self.steps_per_epoch,
                               record_epoch=max_epochs, diverged=np.asarray(state.diverged),
                               active=np.asarray(state.active), reason=np.asarray(state.reason),
                               last_epoch_error=np.asarray(state.last_err))
                    records.append(rec)
                    if on_record is not None:
                        on_record(max_epochs, rec)
                if on_progress is not None:
                    on_progress(max_epochs, max_epochs, 0)
                break
        return TrainResult(model=eqx.combine(state.params, static), state=state, records=records)


def log_epochs(total: int, n: int = 40, first: int = 1) -> list[int]:
    """About ``n`` log-spaced epoch counts in [first, total], always including total."""
    if total <= 0:
        return [0]
    pts = np.unique(np.round(np.geomspace(max(first, 1), total, n)).astype(int))
    return sorted(set(int(p) for p in pts) | {total})
