"""Learning-rate schedules and Adam's settings in the trainer, against Optax applied by hand.

Oracle: the same model, the same minibatches (the trainer's documented order,
``permutation(fold_in(key, epoch), n)``) and the same number of steps, trained by a plain Python
loop over an Optax optimiser built from Optax's own schedule functions with the member's peak
learning rate. Parameters must agree to 1e-6.
"""

from __future__ import annotations

from dataclasses import replace

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from phaseprobe.models import MLP, init_members
from phaseprobe.train import TrainConfig, TrainError, Trainer, make_schedule
from toy_data import blobs


def _blobs():
    return blobs(n=64, d=5)


DATA = _blobs()
KEYS = jax.random.split(jax.random.PRNGKey(0), 2)
SHUF = jax.random.split(jax.random.PRNGKey(1), 2)
MODEL = init_members(lambda k: MLP(5, 3, 1, 8, key=k), KEYS)
ALPHAS = jnp.array([1e-3, 3e-2])
LRS = jnp.array([2e-2, 5e-2])
BATCH, EPOCHS = 16, 3  # 4 steps an epoch, 12 in all


def _optax_schedule(cfg, lr):
    """The config's schedule written with Optax's own functions and the peak ``lr``."""
    if cfg.schedule == "warmup":
        return optax.linear_schedule(0.0, lr, cfg.warmup_steps)
    if cfg.schedule == "cosine":
        return optax.cosine_decay_schedule(lr, cfg.decay_steps, alpha=cfg.end_lr_factor)
    if cfg.schedule == "warmup_cosine":
        return optax.warmup_cosine_decay_schedule(0.0, lr, cfg.warmup_steps, cfg.decay_steps,
                                                  end_value=cfg.end_lr_factor * lr)
    return lr


def _optax_opt(cfg, lr):
    s = _optax_schedule(cfg, lr)
    if cfg.optimizer == "sgd":
        return optax.sgd(s)
    if cfg.optimizer == "momentum":
        return optax.sgd(s, momentum=cfg.momentum)
    if cfg.optimizer == "adamw":
        raise AssertionError("adamw is compared through adam with alpha = 0 below")
    return optax.adam(s, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)


def _by_hand(member, key, opt, alpha, epochs, batch):
    x, y = jnp.asarray(DATA.x_train), jnp.asarray(DATA.y_train)
    n = x.shape[0]
    assert n % batch == 0
    params, static = eqx.partition(member, eqx.is_inexact_array)

    def loss(p, xb, yb):
        out = jax.vmap(eqx.combine(p, static))(xb)
        err = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(out, yb))
        return err + alpha * sum(jnp.sum(jnp.square(a)) for a in jax.tree_util.tree_leaves(p))

    state = opt.init(params)
    for e in range(epochs):
        perm = jax.random.permutation(jax.random.fold_in(key, e), n)
        for s in range(n // batch):
            i = perm[s * batch:(s + 1) * batch]
            g = jax.grad(loss)(params, x[i], y[i])
            upd, state = opt.update(g, state, params)
            params = optax.apply_updates(params, upd)
    return [np.asarray(a) for a in jax.tree_util.tree_leaves(params)]


def _leaves(model, j):
    return [np.asarray(a[j]) for a in jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array))]


CASES = {
    "warmup-sgd": TrainConfig(optimizer="sgd", schedule="warmup", warmup_steps=5),
    "cosine-sgd": TrainConfig(optimizer="sgd", schedule="cosine", decay_steps=9, end_lr_factor=0.1),
    "warmup_cosine-sgd": TrainConfig(optimizer="sgd", schedule="warmup_cosine", warmup_steps=3, decay_steps=10,
                                     end_lr_factor=0.05),
    "warmup-momentum": TrainConfig(optimizer="momentum", momentum=0.8, schedule="warmup", warmup_steps=6),
    "warmup-adam": TrainConfig(optimizer="adam", schedule="warmup", warmup_steps=4, b1=0.8, b2=0.98, eps=1e-6),
    "cosine-adam": TrainConfig(optimizer="adam", schedule="cosine", decay_steps=20, b2=0.98),
    "warmup_cosine-adam": TrainConfig(optimizer="adam", schedule="warmup_cosine", warmup_steps=4, decay_steps=8,
                                      end_lr_factor=0.2, b1=0.85, b2=0.95, eps=1e-7),
    "constant-adam-betas": TrainConfig(optimizer="adam", b1=0.7, b2=0.9, eps=1e-5),
}


@pytest.mark.parametrize("name", list(CASES))
def test_schedule_equals_optax_by_hand(name):
    cfg = replace(CASES[name], batch_size=BATCH, epochs=EPOCHS)
    res = Trainer(MODEL, DATA, cfg).train(MODEL, ALPHAS, key=SHUF, lr=LRS)
    for j in range(2):  # per-member peak lr and alpha, one schedule shape
        member = jax.tree_util.tree_map(lambda a: a[j], MODEL)
        hand = _by_hand(member, SHUF[j], _optax_opt(cfg, float(LRS[j])), float(ALPHAS[j]), EPOCHS, BATCH)
        for got, want in zip(_leaves(res.model, j), hand):
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    # the schedule really acts: a constant learning rate ends elsewhere
    if cfg.schedule != "constant":
        const = Trainer(MODEL, DATA, replace(cfg, schedule="constant", warmup_steps=0, decay_steps=None))
        other = const.train(MODEL, ALPHAS, key=SHUF, lr=LRS)
        assert max(np.abs(a - b).max() for a, b in zip(_leaves(res.model, 0), _leaves(other.model, 0))) > 1e-3


def test_adamw_schedule_equals_optax_adamw_by_hand():
    cfg = TrainConfig(optimizer="adamw", schedule="warmup_cosine", warmup_steps=3, decay_steps=10, b2=0.98,
                      batch_size=BATCH, epochs=EPOCHS)
    res = Trainer(MODEL, DATA, cfg).train(MODEL, ALPHAS, key=SHUF, lr=LRS)
    for j in range(2):
        member = jax.tree_util.tree_map(lambda a: a[j], MODEL)
        lr = float(LRS[j])
        sched = optax.warmup_cosine_decay_schedule(0.0, lr, 3, 10, end_value=0.0)
        opt = optax.adamw(sched, b2=0.98, weight_decay=2 * float(ALPHAS[j]))
        hand = _by_hand(member, SHUF[j], opt, 0.0, EPOCHS, BATCH)  # the decay is not in the gradient
        for got, want in zip(_leaves(res.model, j), hand):
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_schedule_values_and_warm_start_continue_the_schedule():
    cfg = TrainConfig(optimizer="sgd", schedule="warmup_cosine", warmup_steps=4, decay_steps=12, end_lr_factor=0.25)
    sched = make_schedule(cfg, 0.2)
    steps = np.arange(16)
    got = np.array([float(sched(s)) for s in steps])
    np.testing.assert_allclose(got[:5], 0.2 * steps[:5] / 4, rtol=1e-6)  # linear warm-up from 0
    np.testing.assert_allclose(got[12:], 0.05, rtol=1e-6)  # end_lr_factor * lr after decay_steps
    assert np.all(np.diff(got[4:13]) < 0)  # cosine decay in between
    assert make_schedule(replace(cfg, schedule="constant", warmup_steps=0, decay_steps=None), 0.2) == 0.2
    # a warm start with the carried optimiser state continues the schedule: one long run
    cfg = replace(cfg, batch_size=BATCH, epochs=EPOCHS)
    tr = Trainer(MODEL, DATA, cfg)
    long = tr.train(MODEL, ALPHAS, key=SHUF, lr=LRS)
    first = tr.train(MODEL, ALPHAS, key=SHUF, lr=LRS, epochs=1)
    rest = tr.train(first.model, ALPHAS, key=SHUF, lr=LRS, epochs=EPOCHS - 1, opt_state=first.state.opt_state,
                    epoch_offset=first.state.total_epochs)
    for j in range(2):
        for a, b in zip(_leaves(rest.model, j), _leaves(long.model, j)):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(schedule="step"), "schedule"),
        (dict(schedule="warmup"), "warmup_steps"),
        (dict(schedule="cosine"), "decay_steps"),
        (dict(schedule="warmup_cosine", warmup_steps=10, decay_steps=10), "decay_steps"),
        (dict(schedule="constant", warmup_steps=5), "warmup_steps"),
        (dict(schedule="warmup", warmup_steps=5, decay_steps=10), "decay_steps"),
        (dict(schedule="cosine", decay_steps=0), "decay_steps"),
        (dict(schedule="cosine", decay_steps=10, end_lr_factor=1.5), "end_lr_factor"),
        (dict(warmup_steps=-1), "warmup_steps"),
        (dict(warmup_steps=2.5), "warmup_steps"),
    ],
)
def test_bad_schedule_raises_one_line_train_error(kwargs, field):
    with pytest.raises(TrainError) as err:
        TrainConfig(**kwargs).validate()
    msg = str(err.value)
    assert msg.startswith(field + ":") and "\n" not in msg
