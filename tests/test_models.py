"""Models: output shapes, init schemes' statistics, penalty masks, bad requests."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from phaseprobe.models import (
    MLP,
    ConvNet,
    DeepLinear,
    ModelError,
    build_model,
    count_params,
    init_members,
    penalty_mask,
)

KEY = jax.random.PRNGKey(0)


# ---- shapes ----------------------------------------------------------------------------------


def test_output_shapes_single_batched_and_stacked():
    x = jnp.ones((5, 12))
    mlp = MLP(12, 4, depth=2, width=7, key=KEY)
    assert mlp(x[0]).shape == (4,)
    assert jax.vmap(mlp)(x).shape == (5, 4)
    assert mlp.hidden(x[0]).shape == (7,)
    assert [l.weight.shape for l in mlp.layers] == [(7, 12), (7, 7), (4, 7)]
    assert MLP(12, 4, depth=0, key=KEY)(x[0]).shape == (4,)  # depth 0: one linear map
    assert count_params(mlp) == 12 * 7 + 7 + 7 * 7 + 7 + 7 * 4 + 4

    dl = DeepLinear(12, 3, depth=3, width=6, gamma=1.0, key=KEY)
    assert [w.shape for w in dl.weights] == [(6, 12), (6, 6), (3, 6)]
    assert dl(x[0]).shape == (3,)
    np.testing.assert_allclose(dl(x[0]), dl.end_to_end() @ x[0], rtol=1e-5, atol=1e-6)
    assert DeepLinear(12, 3, depth=1, width=6, key=KEY).end_to_end().shape == (3, 12)

    conv = ConvNet((1, 8, 8), 5, channels=(3, 4), key=KEY)
    img = jnp.ones((8, 8))
    assert conv(img).shape == (5,)
    assert conv(img[None]).shape == (5,)
    assert conv.head.weight.shape == (5, 4 * 2 * 2)

    keys = jax.random.split(KEY, 3)
    stacked = init_members(lambda k: MLP(12, 4, depth=1, width=7, key=k), keys)
    assert stacked.layers[0].weight.shape == (3, 7, 12)
    out = jax.vmap(lambda m: jax.vmap(m)(x))(stacked)
    assert out.shape == (3, 5, 4)
    assert not np.allclose(stacked.layers[0].weight[0], stacked.layers[0].weight[1])  # own keys

    assert build_model("mlp", (2, 6), 4, key=KEY, depth=1, width=7)(jnp.ones((2, 6))).shape == (4,)
    assert build_model("linear", (12,), 3, key=KEY, depth=2, width=6)(x[0]).shape == (3,)
    assert build_model("conv", (8, 8), 5, key=KEY, channels=(2,))(img).shape == (5,)


# ---- init statistics -----------------------------------------------------------------------------


def _var_close(a, var, rel):
    a = np.asarray(a, np.float64)
    assert abs(a.mean()) < 4 * math.sqrt(var / a.size)
    assert abs(a.var() / var - 1) < rel, (a.var(), var)


def test_torch_init_is_uniform_with_bound_one_over_sqrt_fan_in():
    mlp = MLP(400, 300, depth=1, width=600, init="torch", key=KEY)
    for lay, fan_in in zip(mlp.layers, (400, 600)):
        bound = 1 / math.sqrt(fan_in)
        for a in (lay.weight, lay.bias):
            a = np.asarray(a)
            assert np.abs(a).max() <= bound
            assert np.abs(a).max() > 0.98 * bound  # fills the interval
            # U(-b, b) has variance b^2 / 3; the bias has only 300-600 entries
            _var_close(a, bound**2 / 3, 0.03 if a.ndim == 2 else 0.2)
    conv = ConvNet((3, 16, 16), 10, channels=(64,), init="torch", key=KEY)
    w = np.asarray(conv.convs[0].weight)
    assert w.shape == (64, 3, 3, 3)
    bound = 1 / math.sqrt(3 * 3 * 3)  # fan-in = in_channels * kernel area
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.95 * bound
    _var_close(w, bound**2 / 3, 0.15)


@pytest.mark.parametrize("scheme, gain", [("lecun", 1.0), ("he", 2.0)])
def test_lecun_and_he_variances(scheme, gain):
    mlp = MLP(500, 10, depth=1, width=400, init=scheme, key=KEY)
    w0 = mlp.layers[0].weight
    _var_close(w0, gain / 500, 0.03)
    _var_close(mlp.layers[1].weight, gain / 400, 0.1)  # 4000 entries
    assert all(np.all(np.asarray(l.bias) == 0) for l in mlp.layers)
    # Gaussian, not uniform: kurtosis 3
    z = np.asarray(w0).ravel() / math.sqrt(gain / 500)
    assert abs(np.mean(z**4) - 3) < 0.1


def test_gaussian_init_and_init_scale():
    mlp = MLP(300, 10, depth=1, width=500, init="gaussian", sigma=0.2, key=KEY)
    _var_close(mlp.layers[0].weight, 0.04, 0.03)
    scaled = MLP(300, 10, depth=1, width=500, init="gaussian", sigma=0.2, init_scale=3.0, key=KEY)
    for a, b in zip(jax.tree_util.tree_leaves(mlp), jax.tree_util.tree_leaves(scaled)):
        np.testing.assert_allclose(np.asarray(b), 3.0 * np.asarray(a), rtol=1e-6)


@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0])
def test_deep_linear_variance_is_width_to_minus_gamma(gamma):
    width = 300
    dl = DeepLinear(200, 100, depth=3, width=width, gamma=gamma, key=KEY)
    var = width ** (-gamma)
    for w in dl.weights:
        _var_close(w, var, 0.03)
    # the layers are independent draws
    assert abs(np.corrcoef(np.asarray(dl.weights[1][:200, :200]).ravel(), np.asarray(dl.weights[0][:, :200]).ravel()[:40000])[0, 1]) < 0.02
    explicit = DeepLinear(200, 100, depth=2, width=width, sigma=0.1, key=KEY)
    _var_close(explicit.weights[0], 0.01, 0.03)


# ---- penalty masks -------------------------------------------------------------------------------


def test_penalty_mask_marks_biases_only_for_weights():
    mlp = MLP(4, 3, depth=1, width=5, key=KEY)
    all_mask = jax.tree_util.tree_leaves(penalty_mask(mlp, "all"))
    w_mask = penalty_mask(mlp, "weights")
    assert all_mask == [1.0] * 4
    assert [(l.weight, l.bias) for l in w_mask.layers] == [(1.0, 0.0), (1.0, 0.0)]
    conv = ConvNet((1, 4, 4), 2, channels=(2,), key=KEY)
    cm = penalty_mask(conv, "weights")
    assert (cm.convs[0].weight, cm.convs[0].bias, cm.head.weight, cm.head.bias) == (1.0, 0.0, 1.0, 0.0)
    assert jax.tree_util.tree_leaves(penalty_mask(DeepLinear(4, 3, depth=2, width=5, key=KEY), "weights")) == [1.0, 1.0]
    nobias = penalty_mask(MLP(4, 3, depth=1, width=5, bias=False, key=KEY), "weights")
    assert jax.tree_util.tree_leaves(nobias) == [1.0, 1.0]


# ---- bad requests --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, field",
    [
        (lambda: MLP(4, 3, depth=1, width=0, key=KEY), "width"),
        (lambda: MLP(4, 3, depth=-1, key=KEY), "depth"),
        (lambda: MLP(0, 3, key=KEY), "in_dim"),
        (lambda: MLP(4, 0, key=KEY), "out_dim"),
        (lambda: MLP(4, 3, activation="swish", key=KEY), "activation"),
        (lambda: MLP(4, 3, init="xavier", key=KEY), "init"),
        (lambda: MLP(4, 3, init="gaussian", key=KEY), "sigma"),
        (lambda: MLP(4, 3, init="gaussian", sigma=-1.0, key=KEY), "sigma"),
        (lambda: MLP(4, 3, init_scale=0.0, key=KEY), "init_scale"),
        (lambda: DeepLinear(4, 3, depth=0, key=KEY), "depth"),
        (lambda: DeepLinear(4, 3, depth=2, width=0, key=KEY), "width"),
        (lambda: DeepLinear(4, 3, gamma=None, key=KEY), "gamma"),
        (lambda: DeepLinear(4, 3, sigma=0.0, key=KEY), "sigma"),
        (lambda: ConvNet((1, 8, 8), 3, activation="swish", key=KEY), "activation"),
        (lambda: ConvNet((8,), 3, key=KEY), "input"),
        (lambda: ConvNet((1, 8, 8), 3, channels=(4, 0), key=KEY), "channels"),
        (lambda: ConvNet((1, 4, 4), 3, channels=(2, 2, 2), key=KEY), "channels"),
        (lambda: build_model("resnet", (4,), 3, key=KEY), "model"),
        (lambda: penalty_mask(MLP(4, 3, key=KEY), "biases"), "penalty_on"),
    ],
)
def test_bad_model_requests_raise_one_line_model_error(make, field):
    with pytest.raises(ModelError) as err:
        make()
    msg = str(err.value)
    assert msg.startswith(field + ":") and "\n" not in msg


def test_models_are_pytrees_with_only_float_leaves():
    for m in (MLP(4, 3, key=KEY), DeepLinear(4, 3, key=KEY), ConvNet((1, 4, 4), 2, channels=(2,), key=KEY)):
        leaves = jax.tree_util.tree_leaves(eqx.filter(m, eqx.is_array))
        assert leaves and all(l.dtype == jnp.float32 for l in leaves)
