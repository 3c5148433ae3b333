"""The vectorised trainer against independent computations.

Oracles: the same member trained alone (K=1), the closed-form ridge solution, hand-written
Optax loops (adam on E + alpha||w||^2, adamw with weight_decay = 2 alpha), and one longer run
for warm starts. Everything is tiny so that the whole file runs in seconds on 2 CPU cores.
"""

from __future__ import annotations

from dataclasses import replace

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from phaseprobe.data.base import Dataset
from phaseprobe.models import MLP, DeepLinear, init_members
from phaseprobe.train import TrainConfig, TrainError, Trainer, TrainState
from toy_data import blobs

# ---- helpers ---------------------------------------------------------------------------------


_classification = blobs  # n=96, d=6, c=3 blobs


def _regression(n=64, d=5, k=2, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2 * n, d)).astype(np.float32)
    a = rng.normal(size=(k, d)).astype(np.float32)
    y = (x @ a.T + 0.5 + 0.3 * rng.normal(size=(2 * n, k))).astype(np.float32)
    return Dataset("lin", x[:n], y[:n], x[n:], y[n:], 0, task="regression")


def _params(model):
    return eqx.filter(model, eqx.is_inexact_array)


def _leaves(model):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(_params(model))]


def _member(model, j):
    return jax.tree_util.tree_map(lambda a: a[j : j + 1], model)


def _unstack(model, j):
    return jax.tree_util.tree_map(lambda a: a[j], model)


def _assert_close(a_leaves, b_leaves, rtol=2e-5, atol=2e-6):
    assert len(a_leaves) == len(b_leaves)
    for a, b in zip(a_leaves, b_leaves):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


def _mlp_members(keys, d, out, depth=1, width=8, bias=True):
    return init_members(lambda k: MLP(d, out, depth, width, bias=bias, key=k), keys)


KEYS4 = jax.random.split(jax.random.PRNGKey(0), 4)
SHUF4 = jax.random.split(jax.random.PRNGKey(1), 4)


# ---- ensemble == members alone -------------------------------------------------------------


@pytest.mark.parametrize(
    "cfg",
    [
        TrainConfig(loss="ce", optimizer="adam", batch_size=20, epochs=3),  # minibatch Adam, padded last batch
        TrainConfig(loss="mse", optimizer="gd", batch_size=None, epochs=4, lr=0.2),  # full-batch GD
    ],
    ids=["adam-minibatch", "gd-fullbatch"],
)
def test_member_in_ensemble_equals_member_alone(cfg):
    data = _classification()
    model = _mlp_members(KEYS4, 6, 3)
    alphas = jnp.array([0.0, 1e-3, 1e-2, 1e-1])
    lrs = jnp.array([1e-2, 2e-2, 5e-3, 1e-2]) if cfg.optimizer == "adam" else jnp.array([0.2, 0.1, 0.3, 0.05])
    tr = Trainer(model, data, cfg)
    ens = tr.train(model, alphas, key=SHUF4, lr=lrs)
    ens_leaves = _leaves(ens.model)
    for j in range(4):
        alone = tr.train(_member(model, j), alphas[j : j + 1], key=SHUF4[j : j + 1], lr=lrs[j : j + 1])
        _assert_close([l[j] for l in ens_leaves], [l[0] for l in _leaves(alone.model)])
        np.testing.assert_allclose(ens.records[-1]["train_error"][j], alone.records[-1]["train_error"][0], rtol=1e-5)
    # the members really differ (different alpha, lr, init, shuffle)
    assert not np.allclose(ens_leaves[0][0], ens_leaves[0][1])


def test_shared_shuffle_gives_every_member_member_zeros_order():
    data = _classification()
    model = _mlp_members(KEYS4[:3], 6, 3)
    alphas = jnp.array([0.0, 1e-2, 1e-1])
    tr = Trainer(model, data, TrainConfig(optimizer="adam", batch_size=20, epochs=2, lr=1e-2, shuffle="shared"))
    ens = tr.train(model, alphas, key=SHUF4[:3])
    own = Trainer(model, data, TrainConfig(optimizer="adam", batch_size=20, epochs=2, lr=1e-2))
    for j in range(3):
        # alone, with member 0's shuffle key, in the default per-member mode: the same trajectory
        alone = own.train(_member(model, j), alphas[j : j + 1], key=SHUF4[:1])
        _assert_close([l[j] for l in _leaves(ens.model)], [l[0] for l in _leaves(alone.model)])
    with pytest.raises(TrainError, match="^shuffle:"):
        TrainConfig(shuffle="global").validate()


def test_members_in_chunks_equal_all_members_at_once():
    data = _classification()
    model = _mlp_members(KEYS4[:3], 6, 3)
    alphas = jnp.array([0.0, 1e-2, 1e-1])
    cfg = TrainConfig(optimizer="adam", batch_size=20, epochs=2, lr=1e-2, patience=1, min_delta=0.05)
    full = Trainer(model, data, cfg).train(model, alphas, key=SHUF4[:3])
    for chunk in (1, 2):  # 2 leaves a remainder chunk of one member
        tr = Trainer(model, data, replace(cfg, member_chunk=chunk))
        res = tr.train(model, alphas, key=SHUF4[:3])
        _assert_close(_leaves(res.model), _leaves(full.model))
        assert res.stop_reasons() == full.stop_reasons()
        np.testing.assert_array_equal(np.asarray(res.state.epochs), np.asarray(full.state.epochs))


# ---- ridge regression: the closed form in this project's convention ------------------------


def _ridge(x, y, alpha, pen_diag):
    r"""Minimiser of L(W) = E(W) + alpha * sum_j pen_j ||W[:, j]||^2 with E = mean_i 1/2||W x_i - y_i||^2.

    Write X (n, d) with rows x_i, Y (n, k) with rows y_i, W (k, d). Then
    E(W) = (1 / 2n) ||X W^T - Y||_F^2, so  dE/dW = (1/n) (W X^T X - Y^T X),
    and d/dW [alpha ||W D^{1/2}||_F^2] = 2 alpha W D  (D = diag(pen), 1 = penalised column).
    Setting the sum to zero:  W (X^T X / n + 2 alpha D) = Y^T X / n, i.e.

        W* = Y^T X (X^T X + 2 n alpha D)^{-1},

    the usual ridge formula with lambda = 2 n alpha (the factor 2 from alpha||W||^2 against the
    1/2 in E, the n from E being a mean). A bias is the column of a constant-1 feature; with
    penalty_on="weights" its D entry is 0, with "all" it is 1.
    """
    n = x.shape[0]
    x = x.astype(np.float64)
    y = y.astype(np.float64)
    return np.linalg.solve((x.T @ x + 2 * n * alpha * np.diag(pen_diag)).T, (y.T @ x).T).T


@pytest.mark.parametrize("kind", ["deeplinear", "mlp-bias-all", "mlp-bias-weights", "mlp-nobias"])
def test_ridge_regression_converges_to_closed_form(kind):
    data = _regression()
    x, y = data.x_train.astype(np.float64), data.y_train.astype(np.float64)
    n, d = x.shape
    alphas = np.array([0.0, 0.05, 0.5, 100.0])
    keys = jax.random.split(jax.random.PRNGKey(2), 4)
    penalty_on = "weights" if kind == "mlp-bias-weights" else "all"
    if kind == "deeplinear":
        model = init_members(lambda k: DeepLinear(d, 2, depth=1, width=4, sigma=0.3, key=k), keys)
    else:
        model = _mlp_members(keys, d, 2, depth=0, bias=(kind != "mlp-nobias"))
    bias = kind.startswith("mlp-bias")
    xa = np.concatenate([x, np.ones((n, 1))], 1) if bias else x
    pen = np.ones(xa.shape[1])
    if kind == "mlp-bias-weights":
        pen[-1] = 0.0
    # GD step 1/L for each member, L >= the largest eigenvalue of the Hessian X^T X / n + 2 alpha D;
    # the slowest direction (an unpenalised bias at alpha = 100) contracts by 1 - 1/(L + 200) a step
    lmax = np.linalg.eigvalsh(xa.T @ xa / n).max()
    lrs = 1.0 / (lmax + 2 * alphas)
    tr = Trainer(model, data, TrainConfig(loss="mse", optimizer="gd", epochs=4000, penalty_on=penalty_on))
    res = tr.train(model, alphas, key=keys, lr=lrs)
    p = _params(res.model)
    for j, a in enumerate(alphas):
        want = _ridge(xa, y, a, pen)
        if kind == "deeplinear":
            got = np.asarray(p.weights[0][j])
        else:
            lay = p.layers[0]
            got = np.asarray(lay.weight[j])
            if bias:
                got = np.concatenate([got, np.asarray(lay.bias[j])[:, None]], 1)
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)
    # the record's loss is the ridge objective at the optimum, and the gradient vanishes
    rec = res.records[-1]
    assert np.all(rec["grad_norm"] < 1e-4)
    # alpha large: the penalised weights go to zero (|W| ~ |Y^T X / n| / (2 alpha))
    big = _ridge(xa, y, alphas[-1], pen)
    w_big = np.asarray(p.weights[0][-1] if kind == "deeplinear" else p.layers[0].weight[-1])
    w_free = np.abs(_ridge(xa, y, 0.0, pen)[:, :d]).max()
    assert w_free > 0.3
    assert np.abs(w_big).max() < 0.01 * w_free
    if kind == "mlp-bias-weights":
        # the unpenalised bias still fits the targets' mean offset (about 0.5) at alpha = 100
        np.testing.assert_allclose(np.asarray(p.layers[0].bias[-1]), big[:, -1], rtol=1e-4, atol=1e-5)
        assert np.abs(big[:, -1]).min() > 0.3
    if kind == "mlp-bias-all":
        assert np.abs(np.asarray(p.layers[0].bias[-1])).max() < 0.01


# ---- divergence --------------------------------------------------------------------------------


def test_diverging_member_is_flagged_and_isolated():
    data = _regression()
    keys = jax.random.split(jax.random.PRNGKey(3), 3)
    shuf = jax.random.split(jax.random.PRNGKey(4), 3)
    model = _mlp_members(keys, 5, 2, depth=1, width=8)
    alphas = jnp.array([1e-3, 1e-3, 1e-2])
    lrs = jnp.array([0.02, 1e6, 0.05])  # member 1 blows up (x 1e6 a step) within its first epoch
    cfg = TrainConfig(loss="mse", optimizer="sgd", batch_size=16, epochs=4)
    tr = Trainer(model, data, cfg)
    res = tr.train(model, alphas, key=shuf, lr=lrs, record_at=[2, 3])
    assert res.stop_reasons() == ["max_epochs", "diverged", "max_epochs"]
    assert list(np.asarray(res.state.diverged)) == [False, True, False]
    assert all(np.all(np.isfinite(l)) for l in _leaves(res.model))
    assert [list(r["diverged"]) for r in res.records] == [[False, True, False]] * 3
    assert list(res.records[-1]["epoch"]) == [4, 1, 4]
    keep = jnp.array([0, 2])
    pick = lambda t: jax.tree_util.tree_map(lambda a: a[keep], t)  # noqa: E731
    without = tr.train(pick(model), alphas[keep], key=shuf[keep], lr=lrs[keep])
    _assert_close([l[[0, 2]] for l in _leaves(res.model)], _leaves(without.model))
    for name in ("train_error", "test_error", "grad_norm"):
        np.testing.assert_allclose(res.records[-1][name][[0, 2]], without.records[-1][name], rtol=1e-5)


def test_parameter_overflow_with_finite_loss_and_gradient_is_caught():
    # lr near the float32 range: the first step's loss and gradient are finite but the new
    # parameters overflow to inf; the member is flagged and keeps finite (its start) parameters
    base = _regression()
    data = Dataset("big", base.x_train, 100 * base.y_train, base.x_test, 100 * base.y_test, 0, task="regression")
    keys = jax.random.split(jax.random.PRNGKey(8), 2)
    model = _mlp_members(keys, 5, 2, depth=0)
    tr = Trainer(model, data, TrainConfig(loss="mse", optimizer="sgd", batch_size=16, epochs=2))
    res = tr.train(model, 0.0, key=keys, lr=jnp.array([1e-3, 3e38]))
    assert res.stop_reasons() == ["max_epochs", "diverged"]
    assert all(np.all(np.isfinite(l)) for l in _leaves(res.model))
    _assert_close([l[1] for l in _leaves(res.model)], [l[1] for l in _leaves(model)], rtol=0, atol=0)
    assert not np.allclose(_leaves(res.model)[0][0], _leaves(model)[0][0])


# ---- early stopping and gradient tolerance -------------------------------------------------------


def test_patience_freezes_one_member_while_others_continue():
    data = _regression()
    keys = jax.random.split(jax.random.PRNGKey(5), 2)
    model = _mlp_members(keys, 5, 2, depth=0)
    # member 0 moves (lr 1e-4) but improves E by less than min_delta an epoch; member 1 more
    lrs = jnp.array([1e-4, 0.3])
    cfg = TrainConfig(loss="mse", optimizer="gd", epochs=12, patience=2, min_delta=1e-2)
    tr = Trainer(model, data, cfg)
    res = tr.train(model, 0.01, key=keys, lr=lrs)
    reasons = res.stop_reasons()
    epochs = np.asarray(res.state.epochs)
    assert reasons[0] == "patience" and epochs[0] == 3  # epoch 1 improves on inf, then 2 bad epochs
    assert epochs[1] > 3
    plain = Trainer(model, data, TrainConfig(loss="mse", optimizer="gd"))
    final0 = [l[0] for l in _leaves(res.model)]
    # member 0's parameters are those after exactly 3 epochs ...
    r3 = plain.train(_member(model, 0), 0.01, key=keys[:1], lr=lrs[:1], epochs=3)
    _assert_close(final0, [l[0] for l in _leaves(r3.model)])
    # ... although one more epoch would still have moved them
    r4 = plain.train(_member(model, 0), 0.01, key=keys[:1], lr=lrs[:1], epochs=4)
    assert np.abs(final0[0] - _leaves(r4.model)[0][0]).max() > 1e-5
    # member 1 went on past epoch 3 and was never frozen: it equals its own plain run
    r_b = plain.train(_member(model, 1), 0.01, key=keys[1:], lr=lrs[1:], epochs=int(epochs[1]))
    _assert_close([l[1] for l in _leaves(res.model)], [l[0] for l in _leaves(r_b.model)])


def test_grad_tol_stops_at_the_first_epoch_below_tolerance():
    data = _regression()
    keys = jax.random.split(jax.random.PRNGKey(6), 3)
    model = _mlp_members(keys, 5, 2, depth=0)
    lrs = jnp.array([0.05, 0.2, 0.4])
    tol = 1e-2
    cfg = TrainConfig(loss="mse", optimizer="gd", epochs=1000, grad_tol=tol)
    tr = Trainer(model, data, cfg)
    res = tr.train(model, 0.01, key=keys, lr=lrs)
    assert res.stop_reasons() == ["grad_tol"] * 3
    e = np.asarray(res.state.epochs)
    assert e[0] > e[1] > e[2] > 2  # faster lr, earlier stop
    assert np.all(np.asarray(res.state.last_gnorm) < tol)
    # the rule: epoch e's step starts at the parameters after e-1 epochs, whose full-batch
    # gradient is the first one below tol
    plain = Trainer(model, data, TrainConfig(loss="mse", optimizer="gd", epochs=1))
    for j in range(3):
        before = plain.train(_member(model, j), 0.01, key=keys[j : j + 1], lr=lrs[j : j + 1], epochs=int(e[j]) - 1)
        earlier = plain.train(_member(model, j), 0.01, key=keys[j : j + 1], lr=lrs[j : j + 1], epochs=int(e[j]) - 2)
        assert before.records[-1]["grad_norm"][0] < tol <= earlier.records[-1]["grad_norm"][0]


# ---- warm starts ---------------------------------------------------------------------------------


def test_warm_start_with_carried_state_continues_one_long_run():
    data = _classification()
    model = _mlp_members(KEYS4[:2], 6, 3)
    alphas = jnp.array([1e-3, 1e-2])
    tr = Trainer(model, data, TrainConfig(optimizer="adam", batch_size=32, epochs=5, lr=1e-2))
    long = tr.train(model, alphas, key=SHUF4[:2])
    first = tr.train(model, alphas, key=SHUF4[:2], epochs=2)
    carried = tr.train(first.model, alphas, key=SHUF4[:2], epochs=3, opt_state=first.state.opt_state,
                       epoch_offset=first.state.total_epochs)
    _assert_close(_leaves(carried.model), _leaves(long.model), rtol=1e-6, atol=1e-7)
    assert list(carried.records[-1]["total_epoch"]) == [5, 5]
    assert list(carried.records[-1]["epoch"]) == [3, 3]
    count = lambda st: np.asarray(st.opt_state[0].count)  # noqa: E731  (adam's step counter)
    assert list(count(carried.state)) == [5 * tr.steps_per_epoch] * 2
    # without the offset the shuffles of epochs 0-2 repeat: a different trajectory
    no_offset = tr.train(first.model, alphas, key=SHUF4[:2], epochs=3, opt_state=first.state.opt_state)
    assert not np.allclose(_leaves(no_offset.model)[0], _leaves(long.model)[0], atol=1e-5)
    # a fresh optimiser state restarts Adam's moments and step count
    fresh = tr.train(first.model, alphas, key=SHUF4[:2], epochs=3, epoch_offset=first.state.total_epochs)
    assert list(count(fresh.state)) == [3 * tr.steps_per_epoch] * 2
    assert not np.allclose(_leaves(fresh.model)[0], _leaves(long.model)[0], atol=1e-5)
    with pytest.raises(TrainError, match="epoch_offset"):
        tr.train(model, alphas, key=SHUF4[:2], epoch_offset=-1)


# ---- optimisers against hand-written Optax loops ----------------------------------------------------


def _hand_loop(member, data, key, opt, loss_fn, epochs, batch, ref=None):
    """Minibatches in the trainer's documented order: permutation(fold_in(key, epoch), n)."""
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    n = x.shape[0]
    assert n % batch == 0
    params, static = eqx.partition(member, eqx.is_inexact_array)
    v = params if ref is None else jax.tree_util.tree_map(jnp.subtract, params, ref)
    state = opt.init(v)
    for e in range(epochs):
        perm = jax.random.permutation(jax.random.fold_in(key, e), n)
        for s in range(n // batch):
            i = perm[s * batch : (s + 1) * batch]
            w = v if ref is None else jax.tree_util.tree_map(jnp.add, v, ref)
            g = jax.grad(lambda p: loss_fn(eqx.combine(p, static), x[i], y[i]))(w)
            upd, state = opt.update(g, state, v)
            v = optax.apply_updates(v, upd)
    return v if ref is None else jax.tree_util.tree_map(jnp.add, v, ref)


def _ce(model, x, y):
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(jax.vmap(model)(x), y))


def _sq(tree):
    return sum(jnp.sum(jnp.square(a)) for a in jax.tree_util.tree_leaves(tree))


def test_adam_with_alpha_equals_optax_adam_on_penalised_loss():
    data = _classification()
    model = _mlp_members(KEYS4[:2], 6, 3)
    alphas = jnp.array([1e-3, 3e-2])
    lr = 5e-3
    tr = Trainer(model, data, TrainConfig(optimizer="adam", batch_size=32, epochs=2, lr=lr))
    res = tr.train(model, alphas, key=SHUF4[:2])
    for j in range(2):
        a = float(alphas[j])
        hand = _hand_loop(_unstack(model, j), data, SHUF4[j], optax.adam(lr),
                          lambda m, x, y: _ce(m, x, y) + a * _sq(eqx.filter(m, eqx.is_inexact_array)), 2, 32)
        _assert_close([l[j] for l in _leaves(res.model)], [np.asarray(l) for l in jax.tree_util.tree_leaves(hand)],
                      rtol=1e-5, atol=1e-6)


def test_adamw_equals_optax_adamw_with_weight_decay_two_alpha():
    data = _classification()
    model = _mlp_members(KEYS4[:2], 6, 3)
    ref = _mlp_members(KEYS4[2:], 6, 3)
    ref = jax.tree_util.tree_map(lambda a: a.at[0].set(0.0), ref)  # member 0 decays to 0, member 1 to a model
    alphas = jnp.array([0.05, 0.2])
    lr = 5e-3
    tr = Trainer(model, data, TrainConfig(optimizer="adamw", batch_size=32, epochs=2, lr=lr))
    res = tr.train(model, alphas, key=SHUF4[:2], ref=ref)
    for j in range(2):
        opt = optax.adamw(lr, weight_decay=2 * float(alphas[j]))
        r = None if j == 0 else _params(_unstack(ref, j))
        hand = _hand_loop(_unstack(model, j), data, SHUF4[j], opt, _ce, 2, 32, ref=r)
        _assert_close([l[j] for l in _leaves(res.model)], [np.asarray(l) for l in jax.tree_util.tree_leaves(hand)],
                      rtol=1e-5, atol=1e-6)
    # the decay is not in the gradient: alpha = 0 and no ref is plain Adam on E
    res0 = tr.train(model, 0.0, key=SHUF4[:2])
    hand0 = _hand_loop(_unstack(model, 1), data, SHUF4[1], optax.adam(lr), _ce, 2, 32)
    _assert_close([l[1] for l in _leaves(res0.model)], [np.asarray(l) for l in jax.tree_util.tree_leaves(hand0)],
                  rtol=1e-5, atol=1e-6)


# ---- penalty_on ----------------------------------------------------------------------------------


def test_penalty_on_weights_leaves_biases_unpenalised():
    data = _regression()
    model = _mlp_members(KEYS4[:2], 5, 2, depth=1, width=4)
    alpha, lr = 0.7, 0.1
    p = _params(model)
    w_sq = [float(sum(jnp.sum(l.weight[j] ** 2) for l in p.layers)) for j in range(2)]
    all_sq = [float(_sq(_params(_unstack(model, j)))) for j in range(2)]
    results = {}
    for on in ("weights", "all"):
        tr = Trainer(model, data, TrainConfig(loss="mse", optimizer="sgd", batch_size=None, epochs=1, lr=lr, penalty_on=on))
        pen = np.asarray(jax.vmap(tr.penalty, in_axes=(0, None))(p, None))
        np.testing.assert_allclose(pen, w_sq if on == "weights" else all_sq, rtol=1e-6)
        rec = tr.evaluate(p, jnp.full((2,), alpha), grad=False)
        np.testing.assert_allclose(rec["penalty_sq"], pen, rtol=1e-6)
        np.testing.assert_allclose(rec["loss"], rec["train_error"] + alpha * pen, rtol=1e-6)
        results[on] = tr.train(model, alpha, key=KEYS4[:2])
    # one full-batch SGD step: w1 = w0 - lr (dE/dw + 2 alpha m w0), m = 0 on biases for "weights"
    for j in range(2):
        m0 = _unstack(model, j)
        g = jax.grad(lambda q: jnp.mean(0.5 * jnp.sum((jax.vmap(eqx.combine(q, eqx.filter(m0, eqx.is_inexact_array, inverse=True)))(jnp.asarray(data.x_train)) - data.y_train) ** 2, -1)))(_params(m0))
        for on in ("weights", "all"):
            got = _params(_unstack(results[on].model, j))
            for lay0, lay1, gl in zip(_params(m0).layers, got.layers, g.layers):
                np.testing.assert_allclose(lay1.weight, lay0.weight - lr * (gl.weight + 2 * alpha * lay0.weight), rtol=1e-5, atol=1e-6)
                mb = 0.0 if on == "weights" else 1.0
                np.testing.assert_allclose(lay1.bias, lay0.bias - lr * (gl.bias + 2 * alpha * mb * lay0.bias), rtol=1e-5, atol=1e-6)


# ---- efficiency: no recompiles, no per-member data copies ---------------------------------------------


def test_new_alphas_lrs_keys_and_lengths_do_not_recompile():
    data = _classification()
    model = _mlp_members(KEYS4, 6, 3)
    tr = Trainer(model, data, TrainConfig(optimizer="adam", batch_size=32, epochs=2))
    tr.train(model, jnp.full((4,), 1e-3), key=SHUF4)
    run0, ev0 = tr._run._cache_size(), tr._eval._cache_size()
    assert run0 == 1
    r = tr.train(model, jnp.array([0.0, 0.1, 0.2, 0.3]), key=KEYS4, lr=jnp.array([1e-3, 1e-2, 1e-1, 1.0]), epochs=3,
                 record_at=[1, 2])
    tr.train(r.model, 0.5, key=SHUF4, opt_state=r.state.opt_state, epoch_offset=r.state.total_epochs, epochs=1)
    assert tr._run._cache_size() == run0
    assert tr._eval._cache_size() == ev0


@pytest.mark.parametrize("cfg", [TrainConfig(optimizer="adam", batch_size=16, epochs=1),
                                 TrainConfig(optimizer="adam", batch_size=16, epochs=1, shuffle="shared"),
                                 TrainConfig(optimizer="gd", epochs=1)], ids=["minibatch", "shared", "fullbatch"])
def test_compiled_epoch_never_copies_the_data_per_member(cfg):
    # odd sizes so that a per-member copy of the training set, 3x97x7, is unmistakable
    data = _classification(n=97, d=7)
    keys = jax.random.split(jax.random.PRNGKey(7), 3)
    model = _mlp_members(keys, 7, 3, width=5)
    tr = Trainer(model, data, cfg)
    params = _params(model)
    k = 3
    alpha, lr = jnp.full((k,), 1e-3), jnp.full((k,), 1e-3)
    state = TrainState(
        params=params, opt_state=tr.init_opt_state(params, lr, alpha), key=keys, active=jnp.ones(k, bool),
        diverged=jnp.zeros(k, bool), reason=jnp.zeros(k, jnp.int32), best=jnp.full(k, jnp.inf),
        bad=jnp.zeros(k, jnp.int32), epochs=jnp.zeros(k, jnp.int32), last_err=jnp.zeros(k), last_gnorm=jnp.zeros(k),
        epoch_offset=jnp.zeros(k, jnp.int32),
    )
    one = jnp.asarray(1, jnp.int32)
    text = tr._run.lower(state, one, one, alpha, lr, None, tr.x_train, tr.y_train).as_text()
    main = next(line for line in text.splitlines() if "func.func public @main" in line)
    assert "tensor<97x7xf32>" in main  # the data are one argument of the program ...
    assert not any("constant" in line and "97x7xf32" in line for line in text.splitlines())  # ... not a constant
    assert "3x97x7xf32" not in text  # ... and never broadcast or copied per member
    data_gathers = [line for line in text.splitlines() if "gather" in line and "(tensor<97x7xf32>" in line]
    if cfg.shuffle == "shared":  # one (16, 7) minibatch for the whole ensemble
        assert data_gathers and all(line.endswith("-> tensor<16x7xf32>") for line in data_gathers)
    elif cfg.optimizer == "adam":  # each member gathers only its own (16, 7) minibatch
        assert data_gathers and all(line.endswith("-> tensor<3x16x7xf32>") for line in data_gathers)
    else:  # full batch: the members read the data in place
        assert data_gathers == []


# ---- bad requests ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(loss="hinge"), "loss"),
        (dict(optimizer="lbfgs"), "optimizer"),
        (dict(lr=0.0), "lr"),
        (dict(lr=float("nan")), "lr"),
        (dict(batch_size=0), "batch_size"),
        (dict(batch_size=32.5), "batch_size"),
        (dict(epochs=-1), "epochs"),
        (dict(penalty_on="biases"), "penalty_on"),
        (dict(patience=0), "patience"),
        (dict(momentum=1.0), "momentum"),
        (dict(b2=1.5), "b1, b2"),
        (dict(eps=0.0), "eps"),
        (dict(min_delta=-1.0), "min_delta"),
        (dict(grad_tol=0.0), "grad_tol"),
        (dict(eval_batch=0), "eval_batch"),
        (dict(member_chunk=0), "member_chunk"),
    ],
)
def test_bad_train_config_raises_one_line_train_error(kwargs, field):
    with pytest.raises(TrainError) as err:
        TrainConfig(**kwargs).validate()
    msg = str(err.value)
    assert msg.startswith(field + ":") and "\n" not in msg


def test_bad_train_requests_raise_train_error_before_compute():
    data = _classification()
    model = _mlp_members(KEYS4[:2], 6, 3)
    tr = Trainer(model, data, TrainConfig(batch_size=32, epochs=1))
    cases = [
        (dict(alpha=-1.0), "alpha"),
        (dict(alpha=jnp.ones(3)), "alpha"),
        (dict(lr=-1.0), "lr"),
        (dict(key=SHUF4[:3]), "key"),
        (dict(epochs=-2), "epochs"),
        (dict(ref=_mlp_members(KEYS4[:2], 6, 3, width=4)), "ref"),
    ]
    for kw, field in cases:
        args = dict(alpha=0.1, key=SHUF4[:2])
        args.update(kw)
        alpha = args.pop("alpha")
        with pytest.raises(TrainError, match=f"^{field}:"):
            tr.train(model, alpha, **args)
    with pytest.raises(TrainError, match="^model: outputs shape"):
        Trainer(_mlp_members(KEYS4[:2], 6, 4), data, TrainConfig())
    with pytest.raises(TrainError, match="^model: does not accept"):
        Trainer(_mlp_members(KEYS4[:2], 5, 3), data, TrainConfig())
    with pytest.raises(TrainError, match="^loss:"):
        Trainer(_mlp_members(KEYS4[:2], 5, 2), _regression(), TrainConfig(loss="ce"))


# ---- the per-minibatch hook ------------------------------------------------------------------------


def test_minibatch_hook_and_batch_grad():
    data = _classification()
    model = _mlp_members(KEYS4[:2], 6, 3)
    alphas = jnp.array([1e-3, 3e-2])
    cfg = TrainConfig(optimizer="sgd", batch_size=32, epochs=2, lr=0.05)
    tr = Trainer(model, data, cfg)
    # batch_grad on a minibatch built from row indices is the gradient of the penalised mean error
    member = _params(_unstack(model, 1))
    idx = jnp.array([3, 17, 5, 40])
    batch = tr.minibatch(idx)
    (loss, err), g = tr.batch_grad(member, batch, alphas[1])
    static = eqx.filter(_unstack(model, 1), eqx.is_inexact_array, inverse=True)
    x, y = jnp.asarray(data.x_train)[idx], jnp.asarray(data.y_train)[idx]
    want_err = _ce(eqx.combine(member, static), x, y)
    want_g = jax.grad(lambda p: _ce(eqx.combine(p, static), x, y) + alphas[1] * _sq(p))(member)
    np.testing.assert_allclose(err, want_err, rtol=1e-6)
    np.testing.assert_allclose(loss, want_err + alphas[1] * _sq(member), rtol=1e-6)
    _assert_close([np.asarray(l) for l in jax.tree_util.tree_leaves(g)],
                  [np.asarray(l) for l in jax.tree_util.tree_leaves(want_g)], rtol=1e-5, atol=1e-7)
    # a hook composed from the trainer's pieces: twice the loss with SGD is the default at twice the lr
    base = tr.train(model, alphas, key=SHUF4[:2], lr=0.1)
    seen = []

    def doubled(m, b, alpha, ref):
        seen.append(b)  # traced once per compilation; every per-step value comes in the batch
        loss, err = tr.regularised_loss(m, b, alpha, ref)
        return 2.0 * loss, err

    hooked = Trainer(model, data, cfg, batch_loss=doubled).train(model, alphas, key=SHUF4[:2], lr=0.05)
    _assert_close(_leaves(hooked.model), _leaves(base.model), rtol=1e-5, atol=1e-6)
    assert seen and seen[0].x.shape == (32, 6) and seen[0].index.shape == (32,)
