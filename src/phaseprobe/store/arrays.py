"""Pytrees <-> the flat arrays a run store keeps (``p000``, ``p001``, ... for a model's
parameters; ``o000``, ... for an optimiser state), one place for every experiment kind."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np


def tree_to_arrays(tree, prefix: str = "p") -> dict[str, np.ndarray]:
    """Every array leaf of ``tree`` as ``{prefix}000``, ``{prefix}001``, ... (flatten order).

    **Arguments:**

    - `tree`: any pytree of arrays (an optimiser state; for a model use :func:`model_to_arrays`).
    - `prefix`: the key prefix.

    **Returns:** a dict of NumPy arrays.
    """
    return {f"{prefix}{i:03d}": np.asarray(x) for i, x in enumerate(jax.tree_util.tree_leaves(tree))}


def arrays_to_tree(arrays: dict[str, np.ndarray], like, prefix: str = "p"):
    """The pytree shaped like ``like`` whose leaves are ``arrays[{prefix}000]``, ...

    **Returns:** the pytree, or ``None`` when ``arrays`` does not hold all its leaves.
    """
    leaves, treedef = jax.tree_util.tree_flatten(like)
    if any(f"{prefix}{i:03d}" not in arrays for i in range(len(leaves))):
        return None
    return jax.tree_util.tree_unflatten(treedef, [jnp.asarray(arrays[f"{prefix}{i:03d}"]) for i in range(len(leaves))])


def model_to_arrays(model, prefix: str = "p") -> dict[str, np.ndarray]:
    """A (stacked) Equinox model's inexact-array leaves as flat arrays."""
    return tree_to_arrays(eqx.filter(model, eqx.is_inexact_array), prefix)


def arrays_to_model(arrays: dict[str, np.ndarray], skeleton, prefix: str = "p"):
    """``skeleton`` (a model of the same architecture and member count) with the stored
    parameters; raises ``KeyError`` naming the first missing array."""
    params, static = eqx.partition(skeleton, eqx.is_inexact_array)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    new = [jnp.asarray(arrays[f"{prefix}{i:03d}"]) for i in range(len(leaves))]
    return eqx.combine(jax.tree_util.tree_unflatten(treedef, new), static)
