"""Scalar losses built from (model, dataset) in phaseprobe's one convention.

``E(w)`` is the **mean over the whole training set** of the per-example error
(cross-entropy with the natural log, or ``1/2 ||f(x) - y||^2`` for MSE; see
:mod:`phaseprobe.conventions`). It is accumulated over fixed-size chunks of the data with
``lax.scan`` (the last chunk padded with zero weights), so memory stays bounded however large
the training set is, and one compiled program serves every parameter value.

``L_alpha(w) = E(w) + alpha * sum_j m_j (w_j - w_ref_j)^2`` with a penalty mask ``m`` (1 on the
penalised leaves). Its Hessian is ``H_E + diag(2 alpha m)``: a multiple of the identity only
when the mask covers every parameter, so both terms are kept separately
(:meth:`PenalisedLoss.penalty_diagonal`).

Both losses are Equinox modules: callables ``loss(params) -> scalar`` whose data, alpha and
reference are array leaves. Passed through ``eqx.filter_jit`` they are traced, not baked in, so
one compilation serves every alpha, reference and member of the same architecture.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from phaseprobe.geometry.base import GeometryError, params_of, tree_dtype

LOSS_KINDS = ("ce", "mse")


def _split_data(data):
    """(x, y, classification, n_out) from a Dataset or an (x, y) pair."""
    if hasattr(data, "x_train") and hasattr(data, "y_train"):
        x, y = np.asarray(data.x_train), np.asarray(data.y_train)
        classification = getattr(data, "task", "classification") == "classification"
        n_out = int(data.n_classes) if classification else int(y.shape[1])
        return x, y, classification, n_out
    try:
        x, y = data
    except (TypeError, ValueError):
        raise GeometryError("data: pass a phaseprobe Dataset or an (x, y) pair of arrays") from None
    x, y = np.asarray(x), np.asarray(y)
    classification = np.issubdtype(y.dtype, np.integer)
    n_out = int(y.max()) + 1 if classification and y.size else (int(y.shape[1]) if y.ndim == 2 else 1)
    return x, y, classification, n_out


class ErrorFn(eqx.Module):
    """``E(params)``: mean per-example error over the training set, chunked (see module doc)."""

    x: jax.Array
    y: jax.Array
    wts: jax.Array
    static: Any = eqx.field(static=True)
    n: int = eqx.field(static=True)
    kind: str = eqx.field(static=True)
    classification: bool = eqx.field(static=True)
    n_out: int = eqx.field(static=True)

    def per_example(self, params, x, y):
        """Per-example errors on one chunk (in the parameters' precision)."""
        dtype = tree_dtype(params)
        model = eqx.combine(params, self.static)
        out = jax.vmap(model)(x.astype(dtype))
        if self.kind == "ce":
            return optax.softmax_cross_entropy_with_integer_labels(out, y)
        target = jax.nn.one_hot(y, out.shape[-1], dtype=dtype) if self.classification else y.astype(dtype)
        return 0.5 * jnp.sum(jnp.square(out - target), axis=-1)

    def __call__(self, params):
        dtype = tree_dtype(params)
        if self.x.shape[0] == 1:
            return jnp.sum(self.wts[0].astype(dtype) * self.per_example(params, self.x[0], self.y[0])) / self.n

        def body(acc, chunk):
            x, y, w = chunk
            return acc + jnp.sum(w.astype(dtype) * self.per_example(params, x, y)), None

        total, _ = jax.lax.scan(body, jnp.zeros((), dtype), (self.x, self.y, self.wts))
        return total / self.n


class PenalisedLoss(eqx.Module):
    """``L_alpha(params) = error(params) + alpha * sum m (params - ref)^2`` (canonical alpha)."""

    error: Any
    alpha: jax.Array
    mask: Any
    ref: Any

    def penalty(self, params):
        """``sum_j m_j (w_j - ref_j)^2``."""
        diff = params if self.ref is None else jax.tree_util.tree_map(jnp.subtract, params, self.ref)
        leaves = jax.tree_util.tree_leaves(diff)
        masks = jax.tree_util.tree_leaves(self.mask)
        return sum(jnp.asarray(m, x.dtype) * jnp.sum(jnp.square(x)) for x, m in zip(leaves, masks))

    def __call__(self, params):
        return self.error(params) + jnp.asarray(self.alpha, tree_dtype(params)) * self.penalty(params)

    def penalty_gradient(self, params):
        """``2 alpha m (w - ref)`` as a pytree."""
        diff = params if self.ref is None else jax.tree_util.tree_map(jnp.subtract, params, self.ref)
        return jax.tree_util.tree_map(lambda d, m: 2.0 * self.alpha * m * d, diff, self.mask)

    def penalty_diagonal(self, params):
        """Flat diagonal of the penalty's Hessian, ``2 alpha m`` (H_L = H_E + diag of this)."""
        diag = jax.tree_util.tree_map(lambda p, m: jnp.full(jnp.shape(p), 2.0 * self.alpha * m, jnp.result_type(p)), params, self.mask)
        return ravel_pytree(diag)[0]


def _chunk(arr, chunk: int, n_chunks: int):
    pad = n_chunks * chunk - arr.shape[0]
    if pad:
        arr = np.concatenate([arr, np.zeros((pad,) + arr.shape[1:], arr.dtype)])
    return jnp.asarray(arr.reshape((n_chunks, chunk) + arr.shape[1:]))


def make_error_fn(model, data, loss: str = "ce", *, chunk_size: int = 4096) -> ErrorFn:
    """The data error ``E(params)`` of ``model``'s architecture on ``data``'s training set.

    ``E`` is the mean per-example error (phaseprobe's convention), summed chunk by chunk so
    memory stays bounded.

    **Arguments:**

    - `model`: one Equinox model, called on ONE example; its parameters only fix the
      architecture (call the result with any parameter pytree of that shape, e.g.
      ``eqx.filter(model, eqx.is_inexact_array)``).
    - `data`: a phaseprobe Dataset (its training split) or a pair ``(x (n, ...), y)``: integer
      ``y (n,)`` are class labels, float ``y (n, k)`` regression targets.
    - `loss`: ``"ce"`` (cross-entropy, natural log) or ``"mse"`` (``1/2 |f(x) - y|^2``; one-hot
      targets for class labels).
    - `chunk_size`: the most examples per chunk; the chunks are made equal (``ceil(n / chunks)``
      each), so fewer rows are padding than there are chunks.

    **Returns:** an :class:`ErrorFn`, a callable ``E(params) -> ()`` (a jittable Equinox module).
    """
    if loss not in LOSS_KINDS:
        raise GeometryError(f"loss: unknown '{loss}'; use one of {', '.join(LOSS_KINDS)}")
    if not (isinstance(chunk_size, (int, np.integer)) and chunk_size > 0):
        raise GeometryError(f"chunk_size: must be a positive integer, got {chunk_size!r}")
    x, y, classification, n_out = _split_data(data)
    n = int(x.shape[0])
    if n == 0:
        raise GeometryError("data: the training set is empty; check the dataset options")
    if y.shape[0] != n:
        raise GeometryError(f"data: x has {n} rows but y has {y.shape[0]}; pass matching arrays")
    if loss == "ce" and not classification:
        raise GeometryError("loss: cross-entropy needs integer class labels; use loss='mse' for regression targets")
    _, static = eqx.partition(model, eqx.is_inexact_array)
    # as few chunks as chunk_size allows, all of one size: fewer padded rows than chunks (with
    # chunks of exactly chunk_size, 10,000 examples would be computed as 3 x 4,096 = 12,288)
    n_chunks = int(math.ceil(n / min(chunk_size, n)))
    chunk = int(math.ceil(n / n_chunks))
    x = x.astype(np.float32) if not np.issubdtype(x.dtype, np.floating) else x
    y = y.astype(np.int32) if classification else y.astype(x.dtype)
    if not classification and y.ndim == 1:
        y = y[:, None]  # one regression output per example
    w = np.zeros(n_chunks * chunk, np.float32)
    w[:n] = 1.0
    return ErrorFn(
        x=_chunk(x, chunk, n_chunks), y=_chunk(y, chunk, n_chunks), wts=jnp.asarray(w.reshape(n_chunks, chunk)),
        static=static, n=n, kind=loss, classification=classification, n_out=n_out,
    )


def _float_mask(mask, params):
    if mask is None:
        return jax.tree_util.tree_map(lambda _: jnp.asarray(1.0, dtype=float), params)
    ps = jax.tree_util.tree_structure(params)
    ms = jax.tree_util.tree_structure(mask)
    if ps != ms:
        raise GeometryError("mask: its tree structure differs from the parameters'; build it with phaseprobe.models.penalty_mask(model, ...)")
    return jax.tree_util.tree_map(lambda m: jnp.asarray(m, dtype=float), mask)


def penalised(error_fn: Callable, params, alpha, *, ref=None, mask=None) -> PenalisedLoss:
    """Wrap any error ``E(params)`` into ``L_alpha = E + alpha * sum m (w - ref)^2``.

    ``params`` gives the tree structure (the mask and ref must match it). ``mask=None``
    penalises every parameter.
    """
    a = float(alpha) if np.ndim(alpha) == 0 else None
    if a is not None and not (math.isfinite(a) and a >= 0):
        raise GeometryError(f"alpha: the L2 strength must be finite and >= 0, got {alpha}")
    if ref is not None and jax.tree_util.tree_structure(ref) != jax.tree_util.tree_structure(params):
        raise GeometryError("ref: its tree structure differs from the parameters'; pass a parameter pytree of the same model")
    return PenalisedLoss(error=error_fn, alpha=jnp.asarray(alpha, dtype=float), mask=_float_mask(mask, params), ref=ref)


def make_loss_fn(
    model,
    data,
    loss: str = "ce",
    alpha: float = 0.0,
    *,
    ref=None,
    mask=None,
    penalty_on: str = "all",
    chunk_size: int = 4096,
) -> PenalisedLoss:
    """``L_alpha(params) = E + alpha * ||w - ref||^2`` for ``model`` on ``data`` (the "l2" convention).

    **Arguments:**

    - `model`, `data`, `loss`, `chunk_size`: as in :func:`make_error_fn`.
    - `alpha`: the canonical L2 strength (``beta = 2 alpha`` in the weight-decay convention).
    - `ref`: the penalty's centre, a parameter pytree (default 0; a probe anchors it at a model).
    - `mask`: which leaves are penalised (from :func:`phaseprobe.models.penalty_mask`); it wins
      over ``penalty_on``.
    - `penalty_on`: ``"all"`` (biases included) or ``"weights"``.

    **Returns:** a :class:`PenalisedLoss`, a callable ``L(params) -> ()`` whose ``.error`` is ``E``.
    """
    from phaseprobe.models import penalty_mask

    error = make_error_fn(model, data, loss, chunk_size=chunk_size)
    params = params_of(model)
    if mask is None:
        mask = penalty_mask(model, penalty_on)  # raises ModelError (one line) on a bad penalty_on
    return penalised(error, params, alpha, ref=ref, mask=mask)
