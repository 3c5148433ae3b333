"""The one vectorised trainer of phaseprobe: the training loop.

An *ensemble* of K members -- same architecture, each with its own L2 strength ``alpha``
(canonical convention, see :mod:`phaseprobe.conventions`), learning rate, shuffling key, start
parameters, optional reference ``w_ref`` and (with Langevin noise) temperature -- is trained as
ONE jit-compiled program: ``vmap`` over members, ``lax.scan`` over the minibatch steps of an
epoch, a ``fori_loop`` over epochs with a *traced* count (so chunks of any length reuse one
compilation). The data live on the device once and are shared by every member; each member
gathers only its own minibatch.

The pieces live in their own modules: the settings and their validation in
:mod:`phaseprobe.train.config`, the state and result types in :mod:`phaseprobe.train.state`, the optimiser recipes, schedules and noise in
:mod:`phaseprobe.train.optimisers`, the loss pieces in :mod:`phaseprobe.train.losses`, the
full-pass metrics in :mod:`phaseprobe.train.evaluate`. The minibatch loss is a hook
(``Trainer(..., batch_loss=fn)``, see :meth:`Trainer.regularised_loss`); a caller can evaluate
it and its gradient outside the loop with :meth:`Trainer.minibatch` and :meth:`Trainer.batch_grad`.

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
from typing import Any, Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from phaseprobe.models import penalty_mask
from phaseprobe.train.config import LOSSES, NOISES, OPTIMIZERS, SCHEDULES, TrainConfig, TrainError
from phaseprobe.train.evaluate import Evaluator
from phaseprobe.train.losses import (
    Minibatch,
    all_finite,
    example_errors,
    penalty,
    regularised_grad,
    squared_norm,
    tree_where,
)
from phaseprobe.train.optimisers import build_optimizer, guard_inside, noise_key, penalty_in_gradient
from phaseprobe.train.state import (
    RUNNING,
    STOP_DIVERGED,
    STOP_GRAD,
    STOP_MAX_EPOCHS,
    STOP_NAMES,
    STOP_PATIENCE,
    TrainResult,
    TrainState,
)

__all__ = ["LOSSES", "NOISES", "OPTIMIZERS", "SCHEDULES", "STOP_NAMES", "Minibatch", "TrainConfig", "TrainError",
           "TrainResult", "TrainState", "Trainer", "log_epochs"]


def _per_member(name, value, k, dtype):
    """A scalar or a (K,) array of per-member values as a (K,) array, or a one-line TrainError."""
    a = jnp.asarray(value, dtype)
    if a.ndim > 1 or (a.ndim == 1 and a.shape[0] not in (1, k)):
        raise TrainError(f"{name}: give one value or one per member ({k}), got shape {tuple(a.shape)}")
    return jnp.broadcast_to(a, (k,))


class Trainer:
    """Compiled training and evaluation for one architecture, one dataset and one config.

    Build once, call :meth:`train` many times (different alphas, starts, refs, keys,
    temperatures): the per-member values are traced, so nothing recompiles while shapes stay
    the same.

    **Arguments:** ``model_like`` -- a model of the architecture (stacked or one member);
    ``data`` -- a :class:`~phaseprobe.data.base.Dataset`; ``config`` -- a :class:`TrainConfig`;
    ``batch_loss`` -- optional hook ``batch_loss(model, batch, alpha, ref) -> (loss, error)``, the
    scalar the optimiser minimises on one member's :class:`Minibatch` and the data error that
    early stopping watches (default :meth:`regularised_loss`). It is traced once per compilation;
    everything it needs per step comes in ``batch`` (``key``, ``epoch``, ``step``, ``index``).
    """

    # NaN/inf guard: "fused" decides each step from the loss and the gradient norm (plus a
    # parameter check once an epoch); "step" checks the new parameters every step (slower)
    _guard = "fused"

    def __init__(self, model_like, data, config: TrainConfig, *,
                 batch_loss: Callable[[Any, Minibatch, Any, Any], tuple[Any, Any]] | None = None):
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
        self.loss_fn = self.regularised_loss if batch_loss is None else batch_loss
        self.evaluator = Evaluator(static, self.mask, loss=config.loss, n_classes=self.n_classes,
                                   eval_batch=config.eval_batch,
                                   splits={"train": (self.x_train, self.y_train), "test": (self.x_test, self.y_test)})
        self._run = jax.jit(self._run_epochs)
        self._eval = self.evaluator.chunk

    def _check_model(self, model_like, data):
        """Fail before any compute when the model does not fit the data (shapes only)."""
        params = eqx.filter(model_like, eqx.is_inexact_array)
        x1 = jax.ShapeDtypeStruct((1,) + tuple(self.x_train.shape[1:]), self.x_train.dtype)

        def stacked(p, x):
            return jax.vmap(lambda pp: jax.vmap(self.combine(pp))(x))(p)[0]

        def single(p, x):
            return jax.vmap(self.combine(p))(x)

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

    # ---- losses: the per-minibatch hook and its pieces ------------------------------------------
    def combine(self, params):
        """The model (an Equinox module) of one member's (or the stacked) parameters."""
        return eqx.combine(params, self.static)

    def example_errors(self, model, x, y):
        """Per-example data error of ``model`` on ``x, y`` in this trainer's loss, and the outputs."""
        return example_errors(model, x, y, loss=self.config.loss, classification=self.classification)

    def penalty(self, params, ref):
        """``||w - w_ref||^2`` of one member over the penalised leaves (``ref=None``: 0)."""
        return penalty(params, ref, self.mask)

    def regularised_loss(self, model, batch: Minibatch, alpha, ref):
        """The default minibatch loss: ``(E_batch + alpha ||w - w_ref||^2, E_batch)``.

        ``E_batch`` is the weighted mean of :meth:`example_errors` over the batch (padding has
        weight 0). With ``optimizer="adamw"`` the penalty is left out (the decay is decoupled).
        Any ``batch_loss`` hook has this signature; it may call this method on another model.
        """
        err_i, _ = self.example_errors(model, batch.x, batch.y)
        err = jnp.sum(batch.weight * err_i) / jnp.sum(batch.weight)
        pen = alpha * self.penalty(eqx.filter(model, eqx.is_inexact_array), ref) if penalty_in_gradient(self.config) else 0.0
        return err + pen, err

    def batch_loss(self, params, batch: Minibatch, alpha, ref=None):
        """The loss the optimiser minimises on one member's minibatch: ``(loss, data error)``.

        **Arguments:** ``params`` -- one member's parameters; ``batch`` -- a :class:`Minibatch`
        (see :meth:`minibatch`); ``alpha`` -- the member's strength; ``ref`` -- the centre or None.
        """
        return self.loss_fn(self.combine(params), batch, alpha, ref)

    def batch_grad(self, params, batch: Minibatch, alpha, ref=None):
        """``((loss, data error), gradient)`` of :meth:`batch_loss`: what every training step computes."""
        return jax.value_and_grad(self.batch_loss, has_aux=True)(params, batch, alpha, ref)

    def minibatch(self, index, *, key=None, epoch=0, step=0, weight=None) -> Minibatch:
        """One member's :class:`Minibatch` of the training rows ``index`` (for calls outside the loop).

        **Arguments:** ``index`` -- (b,) rows of the training set; ``key`` -- the member's key
        (default ``PRNGKey(0)``); ``epoch``, ``step`` -- where in training; ``weight`` -- (b,)
        example weights (default 1).
        """
        index = jnp.asarray(index, jnp.int32)
        weight = jnp.ones(index.shape, jnp.float32) if weight is None else jnp.asarray(weight, jnp.float32)
        key = jax.random.PRNGKey(0) if key is None else jnp.asarray(key)
        return Minibatch(x=self.x_train[index], y=self.y_train[index], weight=weight, index=index, key=key,
                         epoch=jnp.asarray(epoch, jnp.int32), step=jnp.asarray(step, jnp.int32))

    # ---- optimiser (built inside the traced function: lr, alpha, T are data) -----------------
    def optimizer(self, lr, alpha, ref=None, temperature=None) -> optax.GradientTransformation:
        """One member's optimiser (:func:`phaseprobe.train.optimisers.build_optimizer`)."""
        return build_optimizer(self.config, lr, alpha, self.mask, ref, temperature)

    def init_opt_state(self, params, lr, alpha):
        """Fresh optimiser states of every member (stacked)."""
        def one(p, l, a):
            return self.optimizer(l, a).init(p)
        return jax.vmap(one)(params, lr, alpha)

    def _reg_grad(self, g, params, alpha, ref):
        """Gradient of E + alpha*||w - w_ref||^2 from the gradient of E alone (adamw's steps)."""
        return regularised_grad(g, params, alpha, ref, self.mask)

    # ---- one member, one epoch -------------------------------------------------------------
    def _batches(self, key, epoch):
        """Minibatch indices (steps, b) and weights of one epoch: permutation(fold_in(key, epoch))."""
        n, b, spe = self.n_train, self.batch, self.steps_per_epoch
        perm = jax.random.permutation(jax.random.fold_in(key, epoch), n)
        pad = spe * b - n
        idx = jnp.concatenate([perm, perm[:pad]]).reshape(spe, b)
        wts = jnp.concatenate([jnp.ones(n, jnp.float32), jnp.zeros(pad, jnp.float32)]).reshape(spe, b)
        return idx, wts

    def _member_epoch(self, params, opt_state, key, epoch, alpha, lr, ref, st, x_train, y_train, shared=None,
                      temperature=None):
        c = self.config
        opt = self.optimizer(lr, alpha, ref, temperature)
        langevin = c.noise == "langevin"
        guarded = guard_inside(c)
        n, spe = self.n_train, self.steps_per_epoch
        if self.full_batch:
            # the whole training set, shared by every member: no gather, no copy
            idx = jnp.zeros((1,), jnp.int32)
            wts = jnp.ones((1, n), jnp.float32)
        elif shared is not None:
            idx, wts = shared  # one order for the ensemble (not batched over members)
        else:
            idx, wts = self._batches(key, epoch)

        active0, diverged0 = st

        def step(carry, iws):
            p, o, active, diverged, err_sum, gsq = carry
            i, w, s = iws
            if self.full_batch:
                batch = Minibatch(x=x_train, y=y_train, weight=w, index=jnp.arange(n, dtype=jnp.int32), key=key,
                                  epoch=epoch, step=s)
            else:
                # each member gathers its own minibatch: (b, d) per member, never a copy of the data
                batch = Minibatch(x=x_train[i], y=y_train[i], weight=w, index=i, key=key, epoch=epoch, step=s)
            (loss, err), g = self.batch_grad(p, batch, alpha, ref)
            gsq_new = squared_norm(self._reg_grad(g, p, alpha, ref) if c.optimizer == "adamw" else g)
            if self._guard != "step":
                # decided from scalars known before the update, so the guard never needs an extra
                # pass over parameters and moments; a NaN/inf anywhere in the gradient makes its
                # squared norm NaN/inf (the data error, not the loss: the penalty's value is then
                # never computed, only its gradient; non-finite parameters are caught once an
                # epoch below)
                finite = jnp.isfinite(err) & jnp.isfinite(gsq_new)
            extra = {"noise_key": noise_key(key, epoch, s)} if langevin else {}
            if self._guard != "step" and guarded:
                # the optimiser applies the guard itself (Adam: moments guarded, then the update);
                # a refused step gets zero updates and its old state back, bit for bit
                ok = active & finite
                upd, o = opt.update(g, o, p, guard=ok, **extra)
                p = optax.apply_updates(p, upd)
            else:
                upd, o_new = opt.update(g, o, p, **extra)
                p_new = optax.apply_updates(p, upd)
                if self._guard == "step":
                    finite = jnp.isfinite(loss) & all_finite(p_new)
                ok = active & finite
                p = tree_where(ok, p_new, p)
                o = tree_where(ok, o_new, o)
            diverged = diverged | (active & ~finite)
            active = ok
            return (p, o, active, diverged, err_sum + err, gsq_new), None

        carry0 = (params, opt_state, active0, diverged0, jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32))
        steps = jnp.arange(idx.shape[0], dtype=jnp.int32)
        (p, o, active, diverged, err_sum, gsq), _ = jax.lax.scan(step, carry0, (idx, wts, steps), unroll=c.unroll)
        if self._guard != "step":
            # once an epoch: a step whose loss and gradient were finite can still overflow the
            # parameters (a learning rate near the float32 range); such a member goes back to its
            # parameters and optimiser state at the start of this epoch and is flagged diverged
            fin = all_finite(p)
            p = tree_where(fin, p, params)
            o = tree_where(fin, o, opt_state)
            diverged = diverged | (active0 & ~fin)
            active = active & fin
        return p, o, active, diverged, err_sum / spe, jnp.sqrt(gsq)

    def _run_epochs(self, state: TrainState, n_epochs, max_epochs, alpha, lr, ref, x_train, y_train, temperature=None):
        """``n_epochs`` epochs of every member. The data are arguments (one device buffer shared by
        all members and all calls), not constants folded into the compiled program."""
        c = self.config
        ref_axis = None if ref is None else 0
        t_axis = None if temperature is None else 0

        def epoch_body(_, s: TrainState):
            shared = None
            if c.shuffle == "shared" and not self.full_batch:
                shared = self._batches(s.key[0], jnp.max(s.epoch_offset + s.epochs))
            if c.member_chunk is None:
                p, o, active, diverged, err, gnorm = jax.vmap(
                    self._member_epoch, in_axes=(0, 0, 0, 0, 0, 0, ref_axis, 0, None, None, None, t_axis)
                )(s.params, s.opt_state, s.key, s.epoch_offset + s.epochs, alpha, lr, ref, (s.active, s.diverged),
                  x_train, y_train, shared, temperature)
            else:
                # members in chunks of member_chunk: vmap inside a chunk, one chunk after another
                # (bounded memory; on CPU small chunks keep each member's state in cache)
                def one(a):
                    pm, om, km, em, am, lm, rm, stm, tm = a
                    return self._member_epoch(pm, om, km, em, am, lm, rm, stm, x_train, y_train, shared, tm)

                p, o, active, diverged, err, gnorm = jax.lax.map(
                    one, (s.params, s.opt_state, s.key, s.epoch_offset + s.epochs, alpha, lr, ref,
                          (s.active, s.diverged), temperature), batch_size=c.member_chunk)
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

        # the loop ends as soon as no member is active: an epoch in which every member has stopped
        # (patience, grad_tol, divergence) changes nothing, so skipping it gives the same state
        def more(c):
            i, s = c
            return (i < n_epochs) & jnp.any(s.active)

        def one_epoch(c):
            i, s = c
            return i + 1, epoch_body(i, s)

        return jax.lax.while_loop(more, one_epoch, (jnp.zeros((), jnp.int32), state))[1]


    # ---- evaluation -------------------------------------------------------------------------
    def evaluate(self, params, alpha, ref=None, *, grad: bool = True) -> dict[str, np.ndarray]:
        """Full-pass metrics for every member (numpy arrays with a leading member axis).

        ``grad=False`` skips the full-batch gradient (no ``grad_norm``/``grad_norm_E`` keys).
        See :meth:`phaseprobe.train.evaluate.Evaluator.evaluate`.
        """
        return self.evaluator.evaluate(params, alpha, ref, grad=grad)

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

    def _temperature(self, temperature, k):
        """Per-member Langevin temperatures (K,), None without noise; a one-line TrainError if bad."""
        c = self.config
        if c.noise != "langevin":
            if temperature is not None and np.any(np.asarray(temperature) != 0):
                raise TrainError("temperature: only used with noise='langevin'; set noise='langevin' in the config")
            return None
        t = _per_member("temperature", c.temperature if temperature is None else temperature, k, jnp.float32)
        if not np.all(np.isfinite(np.asarray(t))) or np.any(np.asarray(t) < 0):
            raise TrainError("temperature: every Langevin temperature must be a finite number >= 0")
        return t

    def _prepare(self, model, alpha, *, key, lr=None, ref=None, opt_state=None, epoch_offset=0, epochs=None,
                 temperature=None):
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
        temperature = self._temperature(temperature, k)
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
        return state, static, alpha, lr, ref, max_epochs, temperature

    # ---- the public entry -------------------------------------------------------------------
    def train(
        self,
        model,
        alpha,
        *,
        key,
        lr=None,
        ref=None,
        temperature=None,
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
        default 0); ``temperature`` per member or the config's (``noise="langevin"`` only: the
        noise of step s of epoch e is keyed by ``fold_in(fold_in(fold_in(key, NOISE_SALT), e), s)``);
        ``opt_state`` carried optimiser state (default: fresh, which also restarts the
        learning-rate schedule). ``epoch_offset`` (int
        or (K,)) is the number of epochs already trained: epoch e of this call shuffles with
        ``fold_in(key, epoch_offset + e)``, so a warm start with the carried ``opt_state``, the
        same keys and ``epoch_offset=previous.state.total_epochs`` continues exactly where one
        longer run would be. ``record_at`` lists
        epoch counts at which to evaluate (the final state is always recorded); records are
        dicts of per-member arrays with ``epoch`` added. ``on_progress(done, total, n_active)``
        is called after every chunk.
        """
        state, static, alpha, lr, ref, max_epochs, temperature = self._prepare(
            model, alpha, key=key, lr=lr, ref=ref, opt_state=opt_state, epoch_offset=epoch_offset, epochs=epochs,
            temperature=temperature,
        )
        noise_args = () if temperature is None else (temperature,)
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
                                  self.x_train, self.y_train, *noise_args)
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

    def advance(self, model, epochs: int, *, lr, alpha=0.0, key=None, ref=None, opt_state=None, temperature=None):
        """Run ``epochs`` epochs of every member: no evaluation, no records, one compiled call.

        For callers that measure the model themselves between calls (an integrator choosing each
        member's learning rate from the state, say). The update is :meth:`train`'s (per-member
        ``lr``, ``alpha`` and ``temperature``, the config's stopping rules, NaN/inf members keep
        their last finite parameters); ``lr`` may be 0 for a member that should not move. Returns
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
        temperature = self._temperature(temperature, k)
        noise_args = () if temperature is None else (temperature,)
        if not hasattr(self, "_advance_jit"):
            self._advance_jit = jax.jit(self._advance_impl)
        p, o, div = self._advance_jit(params, opt_state, key, jnp.asarray(lr_np),
                                      _per_member("alpha", alpha, k, jnp.float32), ref,
                                      jnp.asarray(int(epochs), jnp.int32), self.x_train, self.y_train, *noise_args)
        return eqx.combine(p, static), o, np.asarray(div)

    def _advance_impl(self, params, opt_state, key, lr, alpha, ref, n, x_train, y_train, temperature=None):
        k = lr.shape[0]
        if opt_state is None:
            opt_state = jax.vmap(lambda p, l, a: self.optimizer(l, a, ref).init(p))(params, lr, alpha)
        inf = jnp.full((k,), jnp.inf, jnp.float32)
        state = TrainState(
            params=params, opt_state=opt_state, key=key, active=jnp.ones((k,), bool) & (n > 0),
            diverged=jnp.zeros((k,), bool), reason=jnp.full((k,), RUNNING, jnp.int32),
            best=inf, bad=jnp.zeros((k,), jnp.int32), epochs=jnp.zeros((k,), jnp.int32),
            last_err=jnp.full((k,), jnp.nan, jnp.float32), last_gnorm=jnp.full((k,), jnp.nan, jnp.float32),
            epoch_offset=jnp.zeros((k,), jnp.int32),
        )
        state = self._run_epochs(state, n, n, alpha, lr, ref, x_train, y_train, temperature)
        return state.params, state.opt_state, state.diverged


def log_epochs(total: int, n: int = 40, first: int = 1) -> list[int]:
    """About ``n`` log-spaced epoch counts in [first, total], always including total."""
    if total <= 0:
        return [0]
    pts = np.unique(np.round(np.geomspace(max(first, 1), total, n)).astype(int))
    return sorted(set(int(p) for p in pts) | {total})
