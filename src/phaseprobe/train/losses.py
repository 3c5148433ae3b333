"""The loss pieces the training loop and the evaluation share (convention: :mod:`phaseprobe.conventions`).

* :func:`example_errors` -- the per-example data error of a model (cross-entropy or 1/2-MSE);
* :class:`Minibatch` -- one member's minibatch at one step, what a loss hook receives;
* :func:`squared_norm`, :func:`penalty`, :func:`regularised_grad` -- the L2 penalty
  ``alpha * ||w - w_ref||^2`` on the masked leaves and its gradient.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


class Minibatch(NamedTuple):
    """One member's minibatch at one optimiser step (what a ``batch_loss`` hook receives).

    ``x``, ``y`` the examples (``(b, ...)``; the whole training set for full batch), ``weight``
    ``(b,)`` 1 for a real example and 0 for padding of the last minibatch, ``index`` ``(b,)`` their
    rows in the training set, ``key`` the member's shuffle key, ``epoch`` the member's epoch
    (``epoch_offset`` included: the value its shuffle of this epoch uses), ``step`` the step
    within the epoch.
    """

    x: jax.Array
    y: jax.Array
    weight: jax.Array
    index: jax.Array
    key: jax.Array
    epoch: jax.Array
    step: jax.Array


def example_errors(model, x, y, *, loss: str, classification: bool):
    """Per-example data error of ``model`` on ``x`` and its outputs.

    **Arguments:** ``model`` -- a callable on one example (an Equinox module); ``x``, ``y`` --
    a batch; ``loss`` -- ``"ce"`` (softmax cross-entropy, integer labels) or ``"mse"``
    (``1/2 ||f(x) - y||^2``, with one-hot targets for class labels); ``classification`` --
    whether ``y`` are class labels.

    **Returns:** ``(errors (b,), outputs (b, out))``.
    """
    out = jax.vmap(model)(x)
    if loss == "ce":
        return optax.softmax_cross_entropy_with_integer_labels(out, y), out
    target = jax.nn.one_hot(y, out.shape[-1]) if classification else y
    return 0.5 * jnp.sum(jnp.square(out - target), axis=-1), out


def squared_norm(tree, mask=None):
    """``sum_leaf mask_leaf * ||leaf||^2`` (every leaf when ``mask`` is None)."""
    leaves = jax.tree_util.tree_leaves(tree)
    if mask is None:
        return sum(jnp.sum(jnp.square(x)) for x in leaves)
    mleaves = jax.tree_util.tree_leaves(mask)
    return sum(m * jnp.sum(jnp.square(x)) for x, m in zip(leaves, mleaves))


def penalty(params, ref, mask):
    """``||w - w_ref||^2`` over the masked leaves (``ref=None``: the centre is 0)."""
    diff = params if ref is None else jax.tree_util.tree_map(jnp.subtract, params, ref)
    return squared_norm(diff, mask)


def regularised_grad(g, params, alpha, ref, mask):
    """Gradient of ``E + alpha * ||w - w_ref||^2`` from the gradient ``g`` of ``E`` alone."""
    diff = params if ref is None else jax.tree_util.tree_map(jnp.subtract, params, ref)
    return jax.tree_util.tree_map(lambda a, d, m: a + (2.0 * alpha * m) * d if m else a, g, diff, mask)


def tree_where(cond, new, old):
    """``new`` where ``cond`` else ``old``, leaf by leaf."""
    return jax.tree_util.tree_map(lambda a, b: jnp.where(cond, a, b), new, old)


def all_finite(tree):
    """Whether every entry of every leaf is finite (a scalar bool)."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]))
