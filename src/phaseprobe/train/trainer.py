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
* NaN/inf detection: a step whose data error or gradient is NaN/inf is not applied, the member
  keeps its last finite parameters and is flagged diverged; parameters that overflow although
  the step's gradient was finite (a learning rate near the float32 range) are caught at the end
  of the epoch, and the member goes back to its parameters at the epoch's start.

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
    ``shuffle="member"`` gives every member its own minibatch order (from its own key);
    ``shuffle="shared"`` gives all members one order (member 0's key, the ensemble's epoch count):
    the minibatch is then gathered once per step and the members' first-layer products become one
    large matrix product (about 1.25x the throughput on CPU), at the price of a common data order.
    ``member_chunk=None`` trains all members at once (one vmap: what a GPU wants); an integer c
    trains them c at a time (``lax.map(..., batch_size=c)``: bounded memory, and on CPU a small
    chunk keeps each member's parameters and optimiser moments in cache -- c = 4 was 1.2x faster
    than all 16 at once for 784-128-128-10 MLPs on 2 cores). Results do not depend on either.
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
    shuffle: str = "member"
    member_chunk: int | None = None

    def validate(self) -> "TrainConfig":
        for name in ("batch_size", "epochs", "patience", "eval_batch", "member_chunk"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer))):
                raise TrainError(f"{name}: must be an integer, got {v!r}")
        for name in ("lr", "momentum", "b1", "b2", "eps", "min_delta", "grad_tol"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating))):
                raise TrainError(f"{name}: must be a number, got {v!r}")
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
        if self.member_chunk is not None and self.member_chunk <= 0:
            raise TrainError(f"member_chunk: must be a positive integer (or None for all members at once), got {self.member_chunk}")
        if self.shuffle not in ("member", "shared"):
            raise TrainError(f"shuffle: unknown '{self.shuffle}'; use 'member' or 'shared'")
        if self.penalty_on not in ("all", "weights"):
            raise TrainError(f"penalty_on: unknown '{self.penalty_on}'; use 'all' or 'weights'")
        if self.patience is not None and self.patience < 1:
            raise TrainError(f"patience: must be >= 1 epoch (or None to disable), got {self.patience}")
        if not (0.0 <= self.momentum < 1.0):
            raise TrainError(f"momentum: must be in [0, 1), got {self.momentum}")
        if not (0.0 <= self.b1 < 1.0) or not (0.0 <= self.b2 < 1.0):
            raise TrainError(f"b1, b2: Adam's decay rates must be in [0, 1), got b1={self.b1}, b2={self.b2}")
        if not (self.eps > 0 and math.isfinite(self.eps)):
            raise TrainError(f"eps: must be a positive number, got {self.eps}")
        if not (self.min_delta >= 0 and math.isfinite(self.min_delta)):
            raise TrainError(f"min_delta: must be a finite number >= 0, got {self.min_delta}")
        if self.grad_tol is not None and not (self.grad_tol > 0 and math.isfinite(self.grad_tol)):
            raise TrainError(f"grad_tol: must be a positive number (or None to disable), got {self.grad_tol}")
        if self.eval_batch <= 0:
            raise TrainError(f"eval_batch: must be a positive integer, got {self.eval_batch}")
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
    epoch_offset: jax.Array = None  # epochs trained before this call (shuffle keys continue from it)

    @property
    def total_epochs(self):
        """Epochs trained in all, this call's plus the ``epoch_offset`` it continued from."""
        return self.epochs + self.epoch_offset


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


def _per_member(name, value, k, dtype):
    """A scalar or a (K,) array of per-member values as a (K,) array, or a one-line TrainError."""
    a = jnp.asarray(value, dtype)
    if a.ndim > 1 or (a.ndim == 1 and a.shape[0] not in (1, k)):
        raise TrainError(f"{name}: give one value or one per member ({k}), got shape {tuple(a.shape)}")
    return jnp.broadcast_to(a, (k,))


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

    # NaN/inf guard: "fused" decides each step from the loss and the gradient norm (plus a
    # parameter check once an epoch); "step" checks the new parameters every step (slower)
    _guard = "fused"

    def __init__(self, model_like, data, config: TrainConfig):
        self.config = config.validate()
        # the mask is one float per leaf: it does not depend on a member axis
        _, static = eqx.partition(model_like, eqx.is_inexact_array)
        self.static = static
        self.mask = penalty_mask(model_like, config.penalty_on)
        self.data = data
        self.classification = data.task == "classification"
        if not self.classification and config.loss == "ce":
            raise TrainError(f"loss: 'ce' needs class labels but dataset '{data.name}' is a regression task; use loss='mse'")
        self.n_classes = int(data.n_classes) if self.classification else 0
        self.x_train = jnp.asarray(data.x_train)
        self.y_train = jnp.asarray(data.y_train)
        self.x_test = jnp.asarray(data.x_test)
        self.y_test = jnp.asarray(data.y_test)
        n = int(self.x_train.shape[0])
        if n == 0:
            raise TrainError("data: the training set is empty; check the dataset options (classes, n_train)")
        self._check_model(model_like, data)
        full = config.batch_size is None or config.optimizer == "gd" or config.batch_size >= n
        self.batch = n if full else int(config.batch_size)
        self.steps_per_epoch = 1 if full else int(math.ceil(n / self.batch))
        self.full_batch = full
        self.n_train = n
        self._run = jax.jit(self._run_epochs)
        self._eval = jax.jit(self._eval_chunk, static_argnames=("with_grad",))

    def _check_model(self, model_like, data):
        """Fail before any compute when the model does not fit the data (shapes only)."""
        params = eqx.filter(model_like, eqx.is_inexact_array)
        x1 = jax.ShapeDtypeStruct((1,) + tuple(self.x_train.shape[1:]), self.x_train.dtype)

        def stacked(p, x):
            return jax.vmap(lambda pp: jax.vmap(self._model(pp))(x))(p)[0]

        def single(p, x):
            return jax.vmap(self._model(p))(x)

        want = (1, data.output_dim)
        shapes = []
        for f in (stacked, single):  # a stacked ensemble, or one member
            try:
                shapes.append(tuple(jax.eval_shape(f, params, x1).shape))
            except Exception:  # noqa: BLE001 -- shape errors come in many types; reported below
                continue
        if want in shapes:
            return
        if not shapes:
            raise TrainError(f"model: does not accept the dataset's inputs of shape {tuple(self.x_train.shape[1:])}; build it with that input shape")
        raise TrainError(f"model: outputs shape {shapes[0][1:]} per example but dataset '{data.name}' needs ({want[1]},); build it with out_dim={want[1]}")

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
    def _optimizer(self, lr, alpha, ref=None):
        c = self.config
        if c.optimizer in ("sgd", "gd"):
            return optax.sgd(lr)
        if c.optimizer == "momentum":
            return optax.sgd(lr, momentum=c.momentum)
        if c.optimizer == "adam":
            return optax.adam(lr, b1=c.b1, b2=c.b2, eps=c.eps)
        # adamw: decoupled decay beta = 2 alpha on the penalised leaves, toward ref (default 0):
        # optax.adamw's chain with add_decayed_weights generalised to a centre w_ref
        return optax.chain(
            optax.scale_by_adam(b1=c.b1, b2=c.b2, eps=c.eps),
            self._decay_toward(2.0 * alpha, ref),
            optax.scale_by_learning_rate(lr),
        )

    def _decay_toward(self, rate, ref):
        """``u <- u + rate * mask * (w - w_ref)``: optax.add_decayed_weights with a centre."""
        mask = self.mask

        def init(params):
            return optax.EmptyState()

        def update(updates, state, params):
            diff = params if ref is None else jax.tree_util.tree_map(jnp.subtract, params, ref)
            new = jax.tree_util.tree_map(lambda u, d, m: u + (rate * m) * d if m else u, updates, diff, mask)
            return new, state

        return optax.GradientTransformation(init, update)

    def init_opt_state(self, params, lr, alpha):
        def one(p, l, a):
            return self._optimizer(l, a).init(p)
        return jax.vmap(one)(params, lr, alpha)

    def _reg_grad(self, g, params, alpha, ref):
        """Gradient of E + alpha*||w - w_ref||^2 from the gradient of E alone (adamw's steps)."""
        diff = params if ref is None else jax.tree_util.tree_map(jnp.subtract, params, ref)
        return jax.tree_util.tree_map(lambda a, d, m: a + (2.0 * alpha * m) * d if m else a, g, diff, self.mask)

    # ---- one member, one epoch -------------------------------------------------------------
    def _batches(self, key, epoch):
        """Minibatch indices (steps, b) and weights of one epoch: permutation(fold_in(key, epoch))."""
        n, b, spe = self.n_train, self.batch, self.steps_per_epoch
        perm = jax.random.permutation(jax.random.fold_in(key, epoch), n)
        pad = spe * b - n
        idx = jnp.concatenate([perm, perm[:pad]]).reshape(spe, b)
        wts = jnp.concatenate([jnp.ones(n, jnp.float32), jnp.zeros(pad, jnp.float32)]).reshape(spe, b)
        return idx, wts

    def _member_epoch(self, params, opt_state, key, epoch, alpha, lr, ref, st, x_train, y_train, shared=None):
        c = self.config
        opt = self._optimizer(lr, alpha, ref)
        n, b, spe = self.n_train, self.batch, self.steps_per_epoch
        if self.full_batch:
            # the whole training set, shared by every member: no gather, no copy
            idx = jnp.zeros((1,), jnp.int32)
            wts = jnp.ones((1, n), jnp.float32)
        elif shared is not None:
            idx, wts = shared  # one order for the ensemble (not batched over members)
        else:
            idx, wts = self._batches(key, epoch)

        active0, diverged0 = st
        grad_fn = jax.value_and_grad(self._batch_loss, has_aux=True)

        def step(carry, iw):
            p, o, active, diverged, err_sum, gsq = carry
            i, w = iw
            if self.full_batch:
                xb, yb = x_train, y_train
            else:
                # each member gathers its own minibatch: (b, d) per member, never a copy of the data
                xb = x_train[i]
                yb = y_train[i]
            (loss, err), g = grad_fn(p, xb, yb, w, alpha, ref)
            gsq_new = _sqnorm(self._reg_grad(g, p, alpha, ref) if c.optimizer == "adamw" else g)
            upd, o_new = opt.update(g, o, p)
            p_new = optax.apply_updates(p, upd)
            if self._guard == "step":
                finite = jnp.isfinite(loss) & _all_finite(p_new)
            else:
                # decided from scalars known before the update, so the selects below fuse into the
                # optimiser's one elementwise pass (no extra pass over params and moments per step);
                # a NaN/inf anywhere in the gradient makes its squared norm NaN/inf
                # (the data error, not the loss: the penalty's value is then never computed, only its
                # gradient; non-finite parameters are caught once an epoch below)
                finite = jnp.isfinite(err) & jnp.isfinite(gsq_new)
            ok = active & finite
            p = _tree_where(ok, p_new, p)
            o = _tree_where(ok, o_new, o)
            diverged = diverged | (active & ~finite)
            active = ok
            return (p, o, active, diverged, err_sum + err, gsq_new), None

        carry0 = (params, opt_state, active0, diverged0, jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32))
        (p, o, active, diverged, err_sum, gsq), _ = jax.lax.scan(step, carry0, (idx, wts))
        if self._guard != "step":
            # once an epoch: a step whose loss and gradient were finite can still overflow the
            # parameters (a learning rate near the float32 range); such a member goes back to its
            # parameters and optimiser state at the start of this epoch and is flagged diverged
            fin = _all_finite(p)
            p = _tree_where(fin, p, params)
            o = _tree_where(fin, o, opt_state)
            diverged = diverged | (active0 & ~fin)
            active = active & fin
        return p, o, active, diverged, err_sum / spe, jnp.sqrt(gsq)

    def _run_epochs(self, state: TrainState, n_epochs, max_epochs, alpha, lr, ref, x_train, y_train):
        """``n_epochs`` epochs of every member. The data are arguments (one device buffer shared by
        all members and all calls), not constants folded into the compiled program."""
        c = self.config
        ref_axis = None if ref is None else 0

        def epoch_body(_, s: TrainState):
            shared = None
            if c.shuffle == "shared" and not self.full_batch:
                shared = self._batches(s.key[0], jnp.max(s.epoch_offset + s.epochs))
            if c.member_chunk is None:
                p, o, active, diverged, err, gnorm = jax.vmap(
                    self._member_epoch, in_axes=(0, 0, 0, 0, 0, 0, ref_axis, 0, None, None, None)
                )(s.params, s.opt_state, s.key, s.epoch_offset + s.epochs, alpha, lr, ref, (s.active, s.diverged),
                  x_train, y_train, shared)
            else:
                # members in chunks of member_chunk: vmap inside a chunk, one chunk after another
                # (bounded memory; on CPU small chunks keep each member's state in cache)
                def one(a):
                    pm, om, km, em, am, lm, rm, stm = a
                    return self._member_epoch(pm, om, km, em, am, lm, rm, stm, x_train, y_train, shared)

                p, o, active, diverged, err, gnorm = jax.lax.map(
                    one, (s.params, s.opt_state, s.key, s.epoch_offset + s.epochs, alpha, lr, ref,
                          (s.active, s.diverged)), batch_size=c.member_chunk)
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
                epoch_offset=s.epoch_offset,
            )

        return jax.lax.fori_loop(0, n_epochs, epoch_body, state)

    # ---- evaluation ------------------------------------------------------------------------
    def _eval_chunk(self, params, alpha, ref, x, y, w, with_grad=True):
        """Sums over one data chunk for every member: error, correct, per-class, grad of E.

        ``with_grad=False`` (the test split) skips the backward pass and returns ``g=None``.
        """

        def one(p, a, r):
            def err_sum(p):
                e, out = self._per_example_error(p, x, y)
                return jnp.sum(w * e), out
            if with_grad:
                (es, out), g = jax.value_and_grad(err_sum, has_aux=True)(p)
            else:
                (es, out), g = err_sum(p), None
            if self.classification:
                correct = (jnp.argmax(out, -1) == y).astype(jnp.float32) * w
                onehot = jax.nn.one_hot(y, self.n_classes) * w[:, None]
                per_class = onehot.T @ correct
                predicted = jnp.sum(jax.nn.one_hot(jnp.argmax(out, -1), self.n_classes) * w[:, None], 0)
                counts = jnp.stack([jnp.sum(onehot, 0), predicted])  # (2, C): true, predicted
            else:
                correct = jnp.zeros_like(w)
                per_class = jnp.zeros((1,))
                counts = jnp.zeros((2, 1))
            return es, jnp.sum(correct), per_class, counts, g

        ref_axis = None if ref is None else 0
        return jax.vmap(one, in_axes=(0, 0, ref_axis))(params, alpha, ref)

    def evaluate(self, params, alpha, ref=None, *, grad: bool = True) -> dict[str, np.ndarray]:
        """Full-pass metrics for every member (numpy arrays with a leading member axis).

        ``grad=False`` skips the full-batch gradient (no ``grad_norm``/``grad_norm_E`` keys).
        """
        out = {}
        alpha = jnp.asarray(alpha, jnp.float32)
        params = eqx.filter(params, eqx.is_inexact_array)
        ref = None if ref is None else eqx.filter(ref, eqx.is_inexact_array)
        for split, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            n = int(x.shape[0])
            if n == 0:
                continue
            with_grad = grad and split == "train"
            # equal chunks of at most eval_batch rows: the padding is under one row per chunk
            n_chunks = -(-n // self.config.eval_batch)
            cb = -(-n // n_chunks)
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
                e, c_, p_, n_, g = self._eval(params, alpha, ref, xs, ys, w, with_grad=with_grad)
                es = es + e
                cor = cor + c_
                pc = p_ if pc is None else pc + p_
                cnt = n_ if cnt is None else cnt + n_
                if with_grad:
                    gsum = g if gsum is None else jax.tree_util.tree_map(jnp.add, gsum, g)
            err = np.asarray(es) / n
            out[f"{split}_error"] = err
            if self.classification:
                out[f"{split}_acc"] = np.asarray(cor) / n
                cnt_np = np.asarray(cnt)
                out[f"{split}_class_acc"] = np.asarray(pc) / np.maximum(cnt_np[:, 0], 1)  # recall per class
                out[f"{split}_class_prec"] = np.asarray(pc) / np.maximum(cnt_np[:, 1], 1)  # precision per class
            if split == "train":
                pen = jax.vmap(self.penalty, in_axes=(0, None if ref is None else 0))(params, ref)
                out["penalty_sq"] = np.asarray(pen)
                out["w_sq"] = np.asarray(jax.vmap(_sqnorm)(params))
                out["loss"] = err + np.asarray(alpha) * np.asarray(pen)
            if with_grad:
                ge = jax.tree_util.tree_map(lambda t: t / n, gsum)
                out["grad_norm_E"] = np.asarray(jax.vmap(_sqnorm)(ge)) ** 0.5
                # gradient of the regularised loss E + alpha*||w - w_ref||^2 (for adamw too: its
                # records report alpha = beta/2, the loss a coupled decay of the same beta minimises)
                gl = jax.vmap(self._reg_grad, in_axes=(0, 0, 0, None if ref is None else 0))(ge, params, alpha, ref)
                out["grad_norm"] = np.asarray(jax.vmap(_sqnorm)(gl)) ** 0.5
        return out

    def _record(self, state: TrainState, alpha, ref, stop: int) -> dict:
        rec = self.evaluate(state.params, alpha, ref)
        epochs = np.asarray(state.epochs)
        rec["epoch"] = epochs
        rec["total_epoch"] = epochs + np.asarray(state.epoch_offset)
        rec["step"] = epochs * self.steps_per_epoch
        rec["record_epoch"] = stop
        rec["diverged"] = np.asarray(state.diverged)
        rec["active"] = np.asarray(state.active)
        rec["reason"] = np.asarray(state.reason)
        rec["last_epoch_error"] = np.asarray(state.last_err)
        return rec

    def _prepare(self, model, alpha, *, key, lr=None, ref=None, opt_state=None, epoch_offset=0, epochs=None):
        """Check a request (one-line TrainError before any compute) and build the start state."""
        c = self.config
        params, static = eqx.partition(model, eqx.is_inexact_array)
        k = int(jax.tree_util.tree_leaves(params)[0].shape[0])
        alpha = _per_member("alpha", alpha, k, jnp.float32)
        if np.any(np.asarray(alpha) < 0) or not np.all(np.isfinite(np.asarray(alpha))):
            raise TrainError("alpha: every L2 strength must be finite and >= 0")
        lr = _per_member("lr", c.lr if lr is None else lr, k, jnp.float32)
        if not np.all(np.asarray(lr) > 0) or not np.all(np.isfinite(np.asarray(lr))):
            raise TrainError("lr: every learning rate must be a positive finite number")
        epoch_offset = _per_member("epoch_offset", epoch_offset, k, jnp.int32)
        if np.any(np.asarray(epoch_offset) < 0):
            raise TrainError("epoch_offset: must be >= 0 (the epochs already trained)")
        key = jnp.asarray(key)
        if key.ndim == 1 or (jnp.issubdtype(key.dtype, jax.dtypes.prng_key) and key.ndim == 0):
            key = jax.random.split(key, k)
        if key.shape[0] != k:
            raise TrainError(f"key: give one key or one per member ({k}), got {key.shape[0]}")
        if ref is not None:
            ref = eqx.filter(ref, eqx.is_inexact_array)
            if jax.tree_util.tree_structure(ref) != jax.tree_util.tree_structure(params) or any(
                a.shape != b.shape for a, b in zip(jax.tree_util.tree_leaves(ref), jax.tree_util.tree_leaves(params))
            ):
                raise TrainError("ref: must be a stacked model (or its parameters) of the same architecture and member count")
        max_epochs = c.epochs if epochs is None else int(epochs)
        if max_epochs < 0:
            raise TrainError(f"epochs: must be >= 0, got {max_epochs}")
        if opt_state is None:
            opt_state = self.init_opt_state(params, lr, alpha)
        inf = jnp.full((k,), jnp.inf, jnp.float32)
        state = TrainState(
            params=params, opt_state=opt_state, key=key,
            active=jnp.ones((k,), bool) if max_epochs > 0 else jnp.zeros((k,), bool),
            diverged=jnp.zeros((k,), bool),
            reason=jnp.full((k,), RUNNING if max_epochs > 0 else STOP_MAX_EPOCHS, jnp.int32),
            best=inf, bad=jnp.zeros((k,), jnp.int32), epochs=jnp.zeros((k,), jnp.int32),
            last_err=jnp.full((k,), jnp.nan, jnp.float32), last_gnorm=jnp.full((k,), jnp.nan, jnp.float32),
            epoch_offset=epoch_offset,
        )
        return state, static, alpha, lr, ref, max_epochs

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
        epoch_offset=0,
        epochs: int | None = None,
        record_at: Sequence[int] | None = None,
        chunk_epochs: int | None = None,
        on_record: Callable[[int, dict], None] | None = None,
        on_progress: Callable[[int, int, int], None] | None = None,
    ) -> TrainResult:
        """Train every member of the stacked ``model``.

        ``alpha`` (K,) canonical L2 strengths; ``key`` (K, 2) or one key split into K; ``lr``
        per member or the config's; ``ref`` a stacked parameter pytree (the penalty's centre,
        default 0); ``opt_state`` carried optimiser state (default: fresh). ``epoch_offset`` (int
        or (K,)) is the number of epochs already trained: epoch e of this call shuffles with
        ``fold_in(key, epoch_offset + e)``, so a warm start with the carried ``opt_state``, the
        same keys and ``epoch_offset=previous.state.total_epochs`` continues exactly where one
        longer run would be. ``record_at`` lists
        epoch counts at which to evaluate (the final state is always recorded); records are
        dicts of per-member arrays with ``epoch`` added. ``on_progress(done, total, n_active)``
        is called after every chunk.
        """
        state, static, alpha, lr, ref, max_epochs = self._prepare(
            model, alpha, key=key, lr=lr, ref=ref, opt_state=opt_state, epoch_offset=epoch_offset, epochs=epochs
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
                state = self._run(state, jnp.asarray(n, jnp.int32), jnp.asarray(max_epochs, jnp.int32), alpha, lr, ref,
                                  self.x_train, self.y_train)
            done = stop
            n_active = int(jnp.sum(state.active))
            if on_progress is not None:
                on_progress(done, max_epochs, n_active)
            if stop in record_set:
                rec = self._record(state, alpha, ref, stop)
                records.append(rec)
                if on_record is not None:
                    on_record(stop, rec)
            if n_active == 0 and stop < max_epochs:
                # every member stopped: still emit the final record once
                if max_epochs not in {r["record_epoch"] for r in records}:
                    rec = self._record(state, alpha, ref, max_epochs)
                    records.append(rec)
                    if on_record is not None:
                        on_record(max_epochs, rec)
                if on_progress is not None:
                    on_progress(max_epochs, max_epochs, 0)
                break
        return TrainResult(model=eqx.combine(state.params, static), state=state, records=records)

    def advance(self, model, epochs: int, *, lr, alpha=0.0, key=None, ref=None, opt_state=None):
        """Run ``epochs`` epochs of every member: no evaluation, no records, one compiled call.

        For callers that measure the model themselves between calls (an integrator choosing each
        member's learning rate from the state, say). The update is :meth:`train`'s (per-member
        ``lr`` and ``alpha``, the config's stopping rules, NaN/inf members keep their last finite
        parameters); ``lr`` may be 0 for a member that should not move. Returns
        ``(model, opt_state, diverged)`` with ``diverged`` a (K,) numpy bool array.
        """
        params, static = eqx.partition(model, eqx.is_inexact_array)
        k = int(jax.tree_util.tree_leaves(params)[0].shape[0])
        lr_np = np.broadcast_to(np.asarray(lr, np.float32), (k,))
        if not np.all(np.isfinite(lr_np)) or np.any(lr_np < 0):
            raise TrainError("lr: every learning rate must be a finite number >= 0")
        if key is None:
            key = jax.random.PRNGKey(0)
        key = jnp.asarray(key)
        if key.ndim == 1:
            key = jax.random.split(key, k)
        if not hasattr(self, "_advance_jit"):
            self._advance_jit = jax.jit(self._advance_impl)
        p, o, div = self._advance_jit(params, opt_state, key, jnp.asarray(lr_np),
                                      _per_member("alpha", alpha, k, jnp.float32), ref,
                                      jnp.asarray(int(epochs), jnp.int32), self.x_train, self.y_train)
        return eqx.combine(p, static), o, np.asarray(div)

    def _advance_impl(self, params, opt_state, key, lr, alpha, ref, n, x_train, y_train):
        k = lr.shape[0]
        if opt_state is None:
            opt_state = jax.vmap(lambda p, l, a: self._optimizer(l, a, ref).init(p))(params, lr, alpha)
        inf = jnp.full((k,), jnp.inf, jnp.float32)
        state = TrainState(
            params=params, opt_state=opt_state, key=key, active=jnp.ones((k,), bool) & (n > 0),
            diverged=jnp.zeros((k,), bool), reason=jnp.full((k,), RUNNING, jnp.int32),
            best=inf, bad=jnp.zeros((k,), jnp.int32), epochs=jnp.zeros((k,), jnp.int32),
            last_err=jnp.full((k,), jnp.nan, jnp.float32), last_gnorm=jnp.full((k,), jnp.nan, jnp.float32),
            epoch_offset=jnp.zeros((k,), jnp.int32),
        )
        state = self._run_epochs(state, n, n, alpha, lr, ref, x_train, y_train)
        return state.params, state.opt_state, state.diverged


def log_epochs(total: int, n: int = 40, first: int = 1) -> list[int]:
    """About ``n`` log-spaced epoch counts in [first, total], always including total."""
    if total <= 0:
        return [0]
    pts = np.unique(np.round(np.geomspace(max(first, 1), total, n)).astype(int))
    return sorted(set(int(p) for p in pts) | {total})
