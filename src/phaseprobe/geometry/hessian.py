"""Hessian-vector products and the exact (dense) Hessian of a scalar loss ``loss_fn(params)``.

HVPs are forward-over-reverse, ``jax.jvp`` of ``jax.grad``: one gradient's cost (about two to
three forward passes), exact to rounding, and vmappable::

    jax.vmap(lambda v: hvp(loss_fn, params, v))(probes)               # over probe vectors
    jax.vmap(lambda p, v: hvp(loss_fn, p, v))(stacked_params, vs)     # over ensemble members

The dense Hessian is built column by column from HVPs on the flattened parameters
(``jax.flatten_util.ravel_pytree`` order), in batches of columns so memory stays bounded, and
refuses models above ``max_params`` (default 5000): use the stochastic tools (Lanczos,
Hutchinson) there.

For ``L_alpha = E + alpha * sum m (w - ref)^2`` the Hessian is ``H_E + diag(2 alpha m)``;
:func:`hessian_terms` returns both terms, and :func:`penalised_hvp` applies them without
differentiating the penalty.
"""

from __future__ import annotations

from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from phaseprobe.geometry.base import GeometryError, check_exact_size, num_params, probe_batch_size
from phaseprobe.geometry.losses import PenalisedLoss


def hvp(loss_fn: Callable, params, v):
    """Hessian of ``loss_fn`` at ``params`` times ``v``, by forward-over-reverse autodiff.

    **Arguments:**

    - `loss_fn`: a scalar function of the parameter pytree, ``loss_fn(params) -> ()``.
    - `params`: the point, a pytree of float arrays (``n`` numbers in all).
    - `v`: the direction, a pytree shaped like ``params``.

    **Returns:** ``H v``, a pytree shaped like ``params``.
    """
    return jax.jvp(jax.grad(loss_fn), (params,), (v,))[1]


def grad_and_hvp(loss_fn: Callable, params, v):
    """``(grad, H v)`` from one forward-over-reverse pass."""
    return jax.jvp(jax.grad(loss_fn), (params,), (v,))


def flat_hvp(loss_fn: Callable, params) -> tuple[Callable, jax.Array, Callable]:
    """``(matvec, flat_params, unravel)``: ``matvec(u)`` is ``H u`` on flat vectors (traceable)."""
    flat, unravel = ravel_pytree(params)

    def matvec(u):
        return ravel_pytree(hvp(loss_fn, params, unravel(u.astype(flat.dtype))))[0]

    return matvec, flat, unravel


def hvp_many(loss_fn: Callable, params, vs, *, batch_size: int | None = None):
    """``H v`` for a stack of directions ``vs`` (leading axis), ``batch_size`` at a time."""
    f = lambda v: hvp(loss_fn, params, v)  # noqa: E731
    if batch_size is None:
        return jax.vmap(f)(vs)
    return jax.lax.map(f, vs, batch_size=int(batch_size))


def penalised_hvp(loss: PenalisedLoss, params, v):
    """``H_L v = H_E v + 2 alpha m v`` (the data term by autodiff, the penalty term exactly)."""
    hv = hvp(loss.error, params, v)
    return jax.tree_util.tree_map(lambda h, x, m: h + 2.0 * loss.alpha * m * x, hv, v, loss.mask)


@eqx.filter_jit
def _dense_hessian(loss_fn, params, batch_size: int):
    matvec, flat, _ = flat_hvp(loss_fn, params)
    n = flat.shape[0]

    def column(i):
        return matvec(jax.nn.one_hot(i, n, dtype=flat.dtype))

    cols = jax.lax.map(column, jnp.arange(n), batch_size=batch_size)
    return cols  # row i = H e_i = column i (H symmetric)


def exact_hessian(loss_fn: Callable, params, *, max_params: int | None = None, batch_size: int | None = None) -> np.ndarray:
    """Dense Hessian of ``loss_fn`` at ``params``, symmetrised, in ``ravel_pytree`` order.

    Raises :class:`~phaseprobe.geometry.base.HessianTooLargeError` before any compute when the
    model has more than ``max_params`` parameters.

    **Arguments:**

    - `loss_fn`: a scalar function of the parameter pytree.
    - `params`: the point, a pytree of float arrays (``n`` numbers in all).
    - `max_params`: the largest ``n`` allowed (default 5000).
    - `batch_size`: Hessian columns computed at once (default: one on CPU, memory-bounded
      batches on accelerators).

    **Returns:** a numpy array of shape ``(n, n)``.
    """
    n = num_params(params)
    check_exact_size(n, max_params)
    if batch_size is None:
        batch_size = probe_batch_size(n)
    if batch_size < 1:
        raise GeometryError(f"batch_size: must be a positive integer, got {batch_size}")
    h = np.asarray(_dense_hessian(loss_fn, params, int(min(batch_size, n))))
    return 0.5 * (h + h.T)


def hessian_terms(loss: PenalisedLoss, params, *, max_params: int | None = None, batch_size: int | None = None):
    """``(H_E, d)`` with ``H_L = H_E + diag(d)``, ``d = 2 alpha m`` (flat, ``ravel_pytree`` order)."""
    if not isinstance(loss, PenalisedLoss):
        raise GeometryError("loss: hessian_terms needs a PenalisedLoss (make_loss_fn or penalised); use exact_hessian for a plain loss")
    h_e = exact_hessian(loss.error, params, max_params=max_params, batch_size=batch_size)
    d = np.asarray(loss.penalty_diagonal(params))
    return h_e, d


@eqx.filter_jit
def _grad_flat(loss_fn, params):
    v, g = jax.value_and_grad(loss_fn)(params)
    return v, ravel_pytree(g)[0]


def value_and_flat_grad(loss_fn: Callable, params):
    """``(loss, flat gradient)`` (compiled once per loss and shape)."""
    return _grad_flat(loss_fn, params)


@eqx.filter_jit
def _hvp_flat_jit(loss_fn, params, u):
    matvec, _, _ = flat_hvp(loss_fn, params)
    return matvec(u)


def hvp_flat(loss_fn: Callable, params, u) -> jax.Array:
    """``H u`` for a flat vector ``u`` (compiled once per loss and shape)."""
    return _hvp_flat_jit(loss_fn, params, jnp.asarray(u))
