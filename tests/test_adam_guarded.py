"""Adam with the step guard inside (``scale_by_adam_guarded``) is Adam, and the guard freezes exactly.

The trainer's Adam hands its step guard (loss and gradient finite, member still training) to the
optimiser instead of selecting old parameters and state after the update; the compiled step is
then faster (benchmarks/bench_authors.py). These tests hold it to what it replaces:
``optax.scale_by_adam`` where the guard holds, the old state and zero updates where it does not
(NaN gradients included), and the trainer's results equal to the generic path's (the guard applied
outside with ``jnp.where``) with a diverging member and members stopped by patience.
"""

from __future__ import annotations

from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import phaseprobe.train.trainer as trainer_module
from phaseprobe.models import MLP, init_members
from phaseprobe.train import TrainConfig, Trainer
from phaseprobe.train.optimisers import guard_inside, scale_by_adam_guarded
from toy_data import array_leaves, blobs


def _grads(key, n_steps):
    shapes = {"w": (7, 5), "b": (5,)}
    keys = jax.random.split(key, n_steps)
    return [{k: jax.random.normal(jax.random.fold_in(kk, i), s) * (i + 1.0)
             for i, (k, s) in enumerate(shapes.items())} for kk in keys]


def _params():
    return {"w": jnp.ones((7, 5)) * 0.3, "b": jnp.zeros((5,))}


@pytest.mark.parametrize("guard", [None, True])
def test_guarded_adam_equals_optax_scale_by_adam_where_the_guard_holds(guard):
    b1, b2, eps = 0.8, 0.99, 1e-6
    ref, new = optax.scale_by_adam(b1=b1, b2=b2, eps=eps), scale_by_adam_guarded(b1=b1, b2=b2, eps=eps)
    kw = {} if guard is None else {"guard": jnp.asarray(guard)}
    s_ref, s_new = ref.init(_params()), new.init(_params())
    assert jax.tree_util.tree_structure(s_ref) == jax.tree_util.tree_structure(s_new)
    up_ref = jax.jit(ref.update)
    up_new = jax.jit(lambda g, s: new.update(g, s, **kw))
    for g in _grads(jax.random.PRNGKey(0), 6):
        u_ref, s_ref = up_ref(g, s_ref)
        u_new, s_new = up_new(g, s_new)
        for a, b in zip(jax.tree_util.tree_leaves((u_ref, s_ref)), jax.tree_util.tree_leaves((u_new, s_new))):
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-6, atol=0)
    assert int(s_new.count) == 6


def test_a_refused_step_returns_the_old_state_and_zero_updates_even_for_nan_gradients():
    opt = scale_by_adam_guarded()
    state = opt.init(_params())
    g0 = _grads(jax.random.PRNGKey(1), 1)[0]
    _, state = opt.update(g0, state)  # one accepted step: non-zero moments, count 1
    bad = jax.tree_util.tree_map(lambda a: a.at[0].set(jnp.nan), g0)
    for g in (g0, bad):
        upd, new = jax.jit(lambda g, s: opt.update(g, s, guard=jnp.asarray(False)))(g, state)
        for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(new)):
            np.testing.assert_array_equal(np.asarray(b), np.asarray(a))
        for u in jax.tree_util.tree_leaves(upd):
            assert np.all(np.asarray(u) == 0.0)
    # through the whole recipe (learning rate included) the parameters do not move at all
    chain = optax.chain(opt, optax.scale_by_learning_rate(1e-2))
    cstate = chain.init(_params())
    upd, _ = chain.update(bad, cstate, _params(), guard=jnp.asarray(False))
    moved = optax.apply_updates(_params(), upd)
    for a, b in zip(jax.tree_util.tree_leaves(_params()), jax.tree_util.tree_leaves(moved)):
        np.testing.assert_array_equal(np.asarray(b), np.asarray(a))


def test_only_constant_rate_noiseless_adam_takes_the_guard_inside():
    assert guard_inside(TrainConfig(optimizer="adam"))
    assert not guard_inside(TrainConfig(optimizer="adam", schedule="warmup", warmup_steps=3))
    assert not guard_inside(TrainConfig(optimizer="adamw"))
    assert not guard_inside(TrainConfig(optimizer="sgd"))
    assert not guard_inside(TrainConfig(optimizer="momentum"))


K = 4
KEYS = jax.random.split(jax.random.PRNGKey(11), K)
SHUF = jax.random.split(jax.random.PRNGKey(12), K)
ALPHAS = jnp.array([0.0, 1e-3, 1e-2, 5e-2])
# member 2 diverges (lr 1e30: its parameters reach ~1e30 at once and its loss overflows); patience 1 stops the others at different epochs
LRS = jnp.array([1.5e-2, 3e-2, 1e30, 1e-2])
CFG = TrainConfig(loss="ce", optimizer="adam", batch_size=20, epochs=6, patience=1, min_delta=0.01)


def _train(monkeypatch, inside: bool, cfg=CFG, keep=None):
    monkeypatch.setattr(trainer_module, "guard_inside", lambda c: inside and guard_inside(c))
    data = blobs(n=90, d=6)
    model = init_members(lambda k: MLP(6, 3, 2, 8, activation="sigmoid", key=k), KEYS)
    alphas, lrs, shuf = ALPHAS, LRS, SHUF
    if keep is not None:
        pick = lambda t: jax.tree_util.tree_map(lambda a: a[keep], t)  # noqa: E731
        model, alphas, lrs, shuf = pick(model), alphas[keep], lrs[keep], shuf[keep]
    return Trainer(model, data, cfg).train(model, alphas, key=shuf, lr=lrs)


def test_trainer_with_the_guard_inside_equals_the_guard_outside(monkeypatch):
    fast = _train(monkeypatch, True)
    plain = _train(monkeypatch, False)
    assert fast.stop_reasons() == plain.stop_reasons()
    assert "diverged" in fast.stop_reasons() and "patience" in fast.stop_reasons()
    np.testing.assert_array_equal(np.asarray(fast.state.epochs), np.asarray(plain.state.epochs))
    for a, b in zip(array_leaves(fast.model), array_leaves(plain.model)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves(fast.state.opt_state), jax.tree_util.tree_leaves(plain.state.opt_state)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6)
    # the diverged member kept finite parameters, and the others train as if it were not there
    assert all(np.all(np.isfinite(l)) for l in array_leaves(fast.model))
    keep = jnp.array([0, 1, 3])
    alone = _train(monkeypatch, True, keep=keep)
    for a, b in zip(array_leaves(fast.model), array_leaves(alone.model)):
        np.testing.assert_allclose(a[np.asarray(keep)], b, rtol=0, atol=1e-6)


def test_members_stopped_early_are_frozen_while_the_others_train(monkeypatch):
    # members stop at different epochs (patience, divergence); every one of them ends where it
    # ends when trained alone, where nothing runs after it stops
    full = _train(monkeypatch, True)
    epochs = np.asarray(full.state.epochs)
    assert len(set(epochs.tolist())) > 1, epochs
    for j in range(K):
        alone = _train(monkeypatch, True, keep=jnp.array([j]))
        assert int(alone.state.epochs[0]) == int(epochs[j])
        for a, b in zip(array_leaves(full.model), array_leaves(alone.model)):
            np.testing.assert_allclose(a[j], b[0], rtol=1e-6, atol=1e-6)
        for a, b in zip(jax.tree_util.tree_leaves(full.state.opt_state), jax.tree_util.tree_leaves(alone.state.opt_state)):
            np.testing.assert_allclose(np.asarray(a)[j], np.asarray(b)[0], rtol=1e-6, atol=1e-6)
