"""The trainer's loop layouts give the results of the plain layout.

``unroll`` (minibatch steps per iteration of the compiled epoch loop) changes how the program is
laid out, not what it computes: every member must end where the plain layout (``unroll=1``)
puts it, within float32 rounding. (``member_chunk`` and ``shuffle`` are tested in
test_trainer.py.) Tiny models, a few epochs.
"""

from __future__ import annotations

from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from phaseprobe.models import MLP, init_members
from phaseprobe.train import TrainConfig, TrainError, Trainer
from toy_data import array_leaves, blobs


def _blobs():
    return blobs(n=90, d=6)


_leaves = array_leaves


def _member(model, j):
    return jax.tree_util.tree_map(lambda a: a[j : j + 1], model)


K = 5
KEYS = jax.random.split(jax.random.PRNGKey(3), K)
SHUF = jax.random.split(jax.random.PRNGKey(4), K)
ALPHAS = jnp.array([0.0, 2.2e-4, 1e-3, 1e-2, 5e-2])
# the authors' recipe in small: sigmoid MLP, Adam with coupled decay, minibatches with a padded last
# one (90 = 4 x 20 + 10), patience early stopping
BASE = TrainConfig(loss="ce", optimizer="adam", lr=1.5e-2, batch_size=20, epochs=4, patience=1, min_delta=0.02)


def _model():
    return init_members(lambda k: MLP(6, 3, 2, 8, activation="sigmoid", key=k), KEYS)


def test_unrolled_epoch_loop_matches_the_plain_loop_within_float32_rounding():
    # unroll=2 runs the same operations on the same values, but the compiler fuses two steps at
    # once and may round a product-sum differently (measured: 1 ulp, 6e-8, after 4 epochs); the
    # stopping decisions, epochs and every parameter and moment agree within 1e-6
    data, model = _blobs(), _model()
    plain = Trainer(model, data, BASE).train(model, ALPHAS, key=SHUF)
    fast = Trainer(model, data, replace(BASE, unroll=2)).train(model, ALPHAS, key=SHUF)
    for a, b in zip(_leaves(plain.model), _leaves(fast.model)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves(plain.state.opt_state), jax.tree_util.tree_leaves(fast.state.opt_state)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6)
    assert fast.stop_reasons() == plain.stop_reasons()
    np.testing.assert_array_equal(np.asarray(fast.state.epochs), np.asarray(plain.state.epochs))
    np.testing.assert_allclose(fast.records[-1]["train_error"], plain.records[-1]["train_error"], rtol=0, atol=1e-6)
    # the members really differ and the stopping rule really acted on some of them
    assert not np.allclose(_leaves(fast.model)[0][0], _leaves(fast.model)[0][1])
    assert "patience" in fast.stop_reasons()


def test_bad_unroll_is_one_line_train_error():
    for bad in (0, -1, 1.5, True):
        with pytest.raises(TrainError, match="^unroll: "):
            TrainConfig(unroll=bad).validate()
