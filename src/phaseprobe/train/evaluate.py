"""Full-pass evaluation of an ensemble: the metrics every record carries.

Train/test data error (mean over samples), regularised loss ``E + alpha ||w - w_ref||^2``,
accuracy, per-class recall and precision, ``||w||^2``, the penalty, and the full-batch gradient
norms of ``E`` and of the regularised loss. The data are read in equal chunks of at most
``eval_batch`` rows (one compilation per chunk shape); every member is evaluated by one ``vmap``.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from phaseprobe.train.losses import example_errors, penalty, regularised_grad, squared_norm


class Evaluator:
    """Compiled full-pass metrics for one architecture (``static``), one dataset and one loss.

    **Arguments:** ``static`` -- the model's non-array part (``eqx.partition``); ``mask`` -- the
    penalty mask; ``loss`` -- ``"ce"`` or ``"mse"``; ``n_classes`` -- 0 for regression;
    ``eval_batch`` -- rows per compiled chunk; ``splits`` -- ``{"train": (x, y), "test": (x, y)}``.
    """

    def __init__(self, static, mask, *, loss: str, n_classes: int, eval_batch: int, splits: dict):
        self.static = static
        self.mask = mask
        self.loss = loss
        self.n_classes = int(n_classes)
        self.classification = self.n_classes > 0
        self.eval_batch = int(eval_batch)
        self.splits = splits
        self.chunk = jax.jit(self._chunk_sums, static_argnames=("with_grad",))

    def _chunk_sums(self, params, alpha, ref, x, y, w, with_grad=True):
        """Sums over one data chunk for every member: error, correct, per-class, grad of E.

        ``with_grad=False`` (the test split) skips the backward pass and returns ``g=None``.
        """

        def one(p, a, r):
            def err_sum(p):
                e, out = example_errors(eqx.combine(p, self.static), x, y, loss=self.loss, classification=self.classification)
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

    def penalty(self, params, ref):
        """``||w - w_ref||^2`` of one member over the masked leaves."""
        return penalty(params, ref, self.mask)

    def evaluate(self, params, alpha, ref=None, *, grad: bool = True) -> dict[str, np.ndarray]:
        """Full-pass metrics for every member (numpy arrays with a leading member axis).

        **Arguments:** ``params`` -- stacked parameters (or model); ``alpha`` -- (K,) canonical
        strengths; ``ref`` -- the penalty's centre (stacked) or None; ``grad=False`` skips the
        full-batch gradient (no ``grad_norm``/``grad_norm_E`` keys).

        **Returns:** ``{name: (K, ...) array}``.
        """
        out = {}
        alpha = jnp.asarray(alpha, jnp.float32)
        params = eqx.filter(params, eqx.is_inexact_array)
        ref = None if ref is None else eqx.filter(ref, eqx.is_inexact_array)
        for split, (x, y) in self.splits.items():
            n = int(x.shape[0])
            if n == 0:
                continue
            with_grad = grad and split == "train"
            # equal chunks of at most eval_batch rows: the padding is under one row per chunk
            n_chunks = -(-n // self.eval_batch)
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
                e, c_, p_, n_, g = self.chunk(params, alpha, ref, xs, ys, w, with_grad=with_grad)
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
                out["w_sq"] = np.asarray(jax.vmap(squared_norm)(params))
                out["loss"] = err + np.asarray(alpha) * np.asarray(pen)
            if with_grad:
                ge = jax.tree_util.tree_map(lambda t: t / n, gsum)
                out["grad_norm_E"] = np.asarray(jax.vmap(squared_norm)(ge)) ** 0.5
                # gradient of the regularised loss E + alpha*||w - w_ref||^2 (for adamw too: its
                # records report alpha = beta/2, the loss a coupled decay of the same beta minimises)
                gl = jax.vmap(lambda g_, p_, a_, r_: regularised_grad(g_, p_, a_, r_, self.mask),
                              in_axes=(0, 0, 0, None if ref is None else 0))(ge, params, alpha, ref)
                out["grad_norm"] = np.asarray(jax.vmap(squared_norm)(gl)) ** 0.5
        return out
