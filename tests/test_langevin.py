r"""Langevin noise in the trainer: ``w <- w - lr * grad L + sqrt(2 lr T) xi``, T per member.

The stationary-variance oracle. A linear model ``f(x) = w . x`` (three weights, no bias) on
whitened inputs (``X^T X / n = I``) with zero targets has the data error
``E(w) = mean_i 1/2 (w . x_i)^2 = 1/2 |w|^2`` (the project's MSE convention), so
``L = E + alpha |w|^2`` is an exactly quadratic well with curvature ``k = 1 + 2 alpha`` in every
direction. One full-batch Langevin step on one coordinate is the AR(1) chain

    w' = (1 - lr k) w + sqrt(2 lr T) xi,      xi ~ N(0, 1),

whose stationary law (for 0 < lr k < 2) is Gaussian with mean 0 and variance

    s^2 = 2 lr T / (1 - (1 - lr k)^2) = T / (k (1 - lr k / 2)),

the continuous-time value T / k times the discretisation factor 1 / (1 - lr k / 2). Started at
w = 0 the variance after t steps is s^2 (1 - (1 - lr k)^(2t)): after 60 steps with
|1 - lr k| <= 0.75 the deficit is below 1e-7. Samples taken 50 steps apart have correlation
(1 - lr k)^50 < 1e-6, so R replicas x S sampling times x 3 coordinates give N nearly
independent N(0, s^2) draws, and ``sum w^2 / s^2`` is chi-square with N degrees of freedom: the
test accepts the estimate inside the two-sided 1e-6 chi-square interval (about +-5 standard
deviations, +-8 % at N = 7680), and requires the continuous-time value T / k to fall outside
it where the discretisation factor is large (it is 1.33 and 4 below).
"""

from __future__ import annotations

from dataclasses import replace

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from phaseprobe.data.base import Dataset
from phaseprobe.models import MLP, init_members
from phaseprobe.train import TrainConfig, TrainError, Trainer
from toy_data import array_leaves, blobs


def _well():
    x = (np.sqrt(3.0) * np.eye(3)).astype(np.float32)  # X^T X / n = I
    y = np.zeros((3, 1), np.float32)
    return Dataset("well", x, y, x, y, 0, task="regression")


def _linear_members(k, zero=True):
    model = init_members(lambda key: MLP(3, 1, depth=0, bias=False, key=key), jax.random.split(jax.random.PRNGKey(0), k))
    if zero:
        model = jax.tree_util.tree_map(lambda a: jnp.zeros_like(a) if eqx.is_inexact_array(a) else a, model)
    return model


# (temperature, alpha, lr): lr k = 0.25, 0.5 and 1.5 (discretisation factors 1.14, 1.33 and 4)
GROUPS = [(0.1, 0.0, 0.25), (1.0, 0.25, 1.0 / 3.0), (0.01, 0.0, 1.5)]
R, BURN, GAP, S = 128, 60, 50, 20


def test_stationary_variance_on_a_quadratic_well():
    data = _well()
    temps = np.repeat([g[0] for g in GROUPS], R).astype(np.float32)
    alphas = np.repeat([g[1] for g in GROUPS], R).astype(np.float32)
    lrs = np.repeat([g[2] for g in GROUPS], R).astype(np.float32)
    model = _linear_members(len(temps))
    cfg = TrainConfig(loss="mse", optimizer="gd", noise="langevin", epochs=BURN + GAP * (S - 1))
    tr = Trainer(model, data, cfg)
    marks = [BURN + GAP * s for s in range(S)]
    res = tr.train(model, alphas, key=jax.random.PRNGKey(3), lr=lrs, temperature=temps, record_at=marks)
    recs = [r for r in res.records if r["record_epoch"] in marks]
    assert len(recs) == S
    w_sq = np.stack([r["w_sq"] for r in recs])  # (S, K): sum of the 3 squared weights
    n = R * S * 3
    lo, hi = stats.chi2.ppf(0.5e-6, n) / n, stats.chi2.ppf(1 - 0.5e-6, n) / n
    for g, (t, a, lr) in enumerate(GROUPS):
        k = 1.0 + 2.0 * a
        exact = t / (k * (1.0 - lr * k / 2.0))
        est = w_sq[:, g * R:(g + 1) * R].sum() / n
        assert lo < est / exact < hi, (g, est, exact)
        if lr * k >= 0.5:  # the continuous-time value is rejected: the correction is measured
            assert not lo < est / (t / k) < hi
    # the mean is 0 within its sampling error (final parameters, one draw per replica and weight)
    w = np.asarray(res.model.layers[0].weight).reshape(len(temps), 3)
    for g, (t, a, lr) in enumerate(GROUPS):
        k = 1.0 + 2.0 * a
        sd = np.sqrt(t / (k * (1.0 - lr * k / 2.0)) / (R * 3))
        assert abs(w[g * R:(g + 1) * R].mean()) < 5 * sd


def _blobs():
    return blobs(n=48, d=4)


_leaves = array_leaves


def test_langevin_is_reproducible_per_member_and_continues_across_warm_starts():
    data = _blobs()
    keys = jax.random.split(jax.random.PRNGKey(1), 3)
    shuf = jax.random.split(jax.random.PRNGKey(2), 3)
    model = init_members(lambda k: MLP(4, 3, 1, 6, key=k), keys)
    temps = jnp.array([0.0, 1e-3, 1e-2])
    cfg = TrainConfig(optimizer="sgd", lr=0.05, batch_size=16, epochs=3, noise="langevin")
    tr = Trainer(model, data, cfg)
    ens = tr.train(model, 1e-3, key=shuf, temperature=temps)
    # temperature 0 is plain SGD (to float32 rounding: the compiled step fuses differently)
    plain = Trainer(model, data, replace(cfg, noise="none")).train(model, 1e-3, key=shuf)
    for a, b in zip(_leaves(ens.model), _leaves(plain.model)):
        np.testing.assert_allclose(a[0], b[0], rtol=1e-6, atol=1e-7)
        assert not np.allclose(a[2], b[2], atol=1e-4)  # the noise moves the hot member
    # a member's noise comes from its own key: alone it follows the same trajectory
    for j in (1, 2):
        one = jax.tree_util.tree_map(lambda a: a[j:j + 1], model)
        alone = tr.train(one, 1e-3, key=shuf[j:j + 1], temperature=temps[j:j + 1])
        for a, b in zip(_leaves(ens.model), _leaves(alone.model)):
            np.testing.assert_allclose(a[j], b[0], rtol=1e-6, atol=1e-7)
    # the noise is keyed by (key, epoch, step): a warm start continues one long run
    first = tr.train(model, 1e-3, key=shuf, temperature=temps, epochs=1)
    rest = tr.train(first.model, 1e-3, key=shuf, temperature=temps, epochs=2, opt_state=first.state.opt_state,
                    epoch_offset=first.state.total_epochs)
    for a, b in zip(_leaves(rest.model), _leaves(ens.model)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    # advance() takes the temperature too
    adv, _, _ = tr.advance(model, 3, lr=jnp.full(3, 0.05), alpha=1e-3, key=shuf, temperature=temps)
    for a, b in zip(_leaves(adv), _leaves(ens.model)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(noise="thermal"), "noise"),
        (dict(noise="langevin", optimizer="adam"), "noise"),
        (dict(noise="langevin", optimizer="sgd", temperature=-1.0), "temperature"),
        (dict(noise="langevin", optimizer="sgd", temperature=float("inf")), "temperature"),
        (dict(temperature=0.1), "temperature"),
    ],
)
def test_bad_noise_settings_raise_one_line_train_error(kwargs, field):
    with pytest.raises(TrainError) as err:
        TrainConfig(**kwargs).validate()
    msg = str(err.value)
    assert msg.startswith(field + ":") and "\n" not in msg


def test_bad_temperatures_raise_before_compute():
    data = _blobs()
    model = init_members(lambda k: MLP(4, 3, 1, 6, key=k), jax.random.split(jax.random.PRNGKey(1), 2))
    tr = Trainer(model, data, TrainConfig(optimizer="sgd", noise="langevin", epochs=1))
    for t in (jnp.array([0.1, -0.1]), jnp.ones(3), jnp.array([0.1, jnp.nan])):
        with pytest.raises(TrainError, match="^temperature:"):
            tr.train(model, 0.0, key=jax.random.PRNGKey(0), temperature=t)
    quiet = Trainer(model, data, TrainConfig(optimizer="sgd", epochs=1))
    with pytest.raises(TrainError, match="^temperature:"):
        quiet.train(model, 0.0, key=jax.random.PRNGKey(0), temperature=0.5)
