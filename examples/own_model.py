"""Your own model for phaseprobe: ``--model-file examples/own_model.py:FUNCTION``.

FUNCTION(key, in_dim, out_dim) returns an Equinox module (``mlp``) or an ``(init, apply)`` pair
(``pair``: a hand-written JAX model, the shape of a Flax ``init``/``apply``). The model maps ONE
example to ``out_dim`` outputs; phaseprobe batches it with vmap. For example:

    phaseprobe sweep --model-file examples/own_model.py:mlp --out runs/own-mlp
    phaseprobe sweep --model-file examples/own_model.py:pair --data my_arrays.npz --out runs/own-pair
    phaseprobe curvature runs/own-pair

``my_arrays.npz``: ``np.savez("my_arrays.npz", x_train=..., y_train=..., x_test=..., y_test=...,
class_names=np.array([...]))`` with integer class ids 0..K-1 as labels.
"""

import equinox as eqx
import jax
import jax.numpy as jnp


def mlp(key, in_dim, out_dim):
    """An Equinox MLP with one hidden layer of 32 tanh units."""
    return eqx.nn.MLP(in_dim, out_dim, width_size=32, depth=1, activation=jnp.tanh, key=key)


def pair(key, in_dim, out_dim):
    """The same network as an (init, apply) pair; the parameters are a dict of float arrays."""

    def init(k):
        k1, k2 = jax.random.split(k)
        return {
            "w1": jax.random.normal(k1, (in_dim, 32)) / jnp.sqrt(in_dim),
            "b1": jnp.zeros(32),
            "w2": jax.random.normal(k2, (32, out_dim)) / jnp.sqrt(32.0),
            "b2": jnp.zeros(out_dim),
        }

    def apply(params, x):
        h = jnp.tanh(x @ params["w1"] + params["b1"])
        return h @ params["w2"] + params["b2"]

    return init, apply
