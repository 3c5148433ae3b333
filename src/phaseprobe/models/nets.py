"""Equinox models and named init schemes (see the package docstring)."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from phaseprobe.errors import PhaseprobeError


class ModelError(PhaseprobeError):
    """A bad model request; the message names the field and the fix (one line)."""


ACTIVATIONS: dict[str, Callable] = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "gelu": jax.nn.gelu,
    "sigmoid": jax.nn.sigmoid,
    "identity": lambda x: x,
}
INIT_SCHEMES = ("torch", "lecun", "he", "gaussian")


def _check_dim(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ModelError(f"{name}: must be a positive integer, got {value!r}")


def _check_init(init: str, sigma, init_scale) -> None:
    """Init scheme, sigma and init_scale checked before any layer is built."""
    if init not in INIT_SCHEMES:
        raise ModelError(f"init: unknown scheme '{init}'; use one of {', '.join(INIT_SCHEMES)}")
    if sigma is not None and not (math.isfinite(float(sigma)) and float(sigma) > 0):
        raise ModelError(f"sigma: must be a positive number, got {sigma}")
    if init == "gaussian" and sigma is None:
        raise ModelError("sigma: the 'gaussian' init needs sigma > 0; pass sigma=...")
    if not (math.isfinite(float(init_scale)) and float(init_scale) > 0):
        raise ModelError(f"init_scale: must be a positive number, got {init_scale}")


def _init_linear(layer, key, scheme: str, sigma: float | None):
    """Re-initialise an eqx Linear or Conv layer's weight and bias by ``scheme``."""
    w = layer.weight
    fan_in = int(np.prod(w.shape[1:]))
    kw, kb = jax.random.split(key)
    if scheme == "torch":
        bound = 1.0 / math.sqrt(fan_in)
        new_w = jax.random.uniform(kw, w.shape, w.dtype, -bound, bound)
        new_b = None if layer.bias is None else jax.random.uniform(kb, layer.bias.shape, w.dtype, -bound, bound)
    else:
        if scheme == "lecun":
            std = 1.0 / math.sqrt(fan_in)
        elif scheme == "he":
            std = math.sqrt(2.0 / fan_in)
        elif scheme == "gaussian":
            if sigma is None:
                raise ModelError("sigma: the 'gaussian' init needs sigma > 0; pass sigma=...")
            std = float(sigma)
        else:
            raise ModelError(f"init: unknown scheme '{scheme}'; use one of {', '.join(INIT_SCHEMES)}")
        new_w = std * jax.random.normal(kw, w.shape, w.dtype)
        new_b = None if layer.bias is None else jnp.zeros_like(layer.bias)
    layer = eqx.tree_at(lambda l: l.weight, layer, new_w)
    if layer.bias is not None:
        layer = eqx.tree_at(lambda l: l.bias, layer, new_b)
    return layer


def _scale(module, factor: float):
    if factor == 1.0:
        return module
    params, static = eqx.partition(module, eqx.is_inexact_array)
    params = jax.tree_util.tree_map(lambda p: p * factor, params)
    return eqx.combine(params, static)


class MLP(eqx.Module):
    """Fully connected net: ``depth`` hidden layers of ``width`` units, linear output."""

    layers: tuple
    activation: Callable = eqx.field(static=True)

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        depth: int = 2,
        width: int = 128,
        activation: str = "relu",
        bias: bool = True,
        init: str = "torch",
        sigma: float | None = None,
        init_scale: float = 1.0,
        *,
        key,
    ):
        _check_dim("in_dim", in_dim)
        _check_dim("out_dim", out_dim)
        if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or depth < 0:
            raise ModelError(f"depth: must be an integer >= 0 (hidden layers), got {depth!r}")
        _check_dim("width", width)
        if activation not in ACTIVATIONS:
            raise ModelError(f"activation: unknown '{activation}'; use one of {', '.join(ACTIVATIONS)}")
        _check_init(init, sigma, init_scale)
        dims = [in_dim] + [width] * depth + [out_dim]
        keys = jax.random.split(key, 2 * len(dims))
        layers = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            lin = eqx.nn.Linear(a, b, use_bias=bias, key=keys[2 * i])
            layers.append(_init_linear(lin, keys[2 * i + 1], init, sigma))
        self.layers = tuple(layers)
        self.activation = ACTIVATIONS[activation]
        if init_scale != 1.0:
            self.layers = _scale(self.layers, init_scale)

    def __call__(self, x):
        x = jnp.ravel(x)
        for layer in self.layers[:-1]:
            x = self.activation(layer(x))
        return self.layers[-1](x)

    def hidden(self, x):
        """Last hidden representation (for analysis)."""
        x = jnp.ravel(x)
        for layer in self.layers[:-1]:
            x = self.activation(layer(x))
        return x


class DeepLinear(eqx.Module):
    """Deep linear network ``f(x) = W_L ... W_1 x`` (no biases).

    ``depth`` is the number of weight matrices L (L - 1 hidden layers of ``width``). Every entry
    is drawn i.i.d. ``N(0, sigma^2)`` with ``sigma^2 = width^-gamma`` unless ``sigma`` is given.
    ``weights[0]`` is ``W_1`` (shape ``(width, in_dim)``), ``weights[-1]`` is ``W_L``.
    """

    weights: tuple

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        depth: int = 3,
        width: int = 64,
        gamma: float | None = 1.5,
        sigma: float | None = None,
        *,
        key,
    ):
        _check_dim("in_dim", in_dim)
        _check_dim("out_dim", out_dim)
        if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or depth < 1:
            raise ModelError(f"depth: a deep linear net needs depth >= 1 weight matrices, got {depth!r}")
        _check_dim("width", width)
        if sigma is None:
            if gamma is None:
                raise ModelError("gamma: give gamma (sigma^2 = width^-gamma) or sigma")
            if not math.isfinite(float(gamma)):
                raise ModelError(f"gamma: must be a finite number, got {gamma}")
            sigma = float(width) ** (-float(gamma) / 2.0)
        elif not (math.isfinite(float(sigma)) and float(sigma) > 0):
            raise ModelError(f"sigma: must be a positive number, got {sigma}")
        dims = [in_dim] + [width] * (depth - 1) + [out_dim]
        keys = jax.random.split(key, depth)
        self.weights = tuple(
            sigma * jax.random.normal(k, (b, a)) for k, a, b in zip(keys, dims[:-1], dims[1:])
        )

    def __call__(self, x):
        x = jnp.ravel(x)
        for w in self.weights:
            x = w @ x
        return x

    def end_to_end(self):
        """The end-to-end matrix ``W_L ... W_1`` (out_dim x in_dim)."""
        m = self.weights[0]
        for w in self.weights[1:]:
            m = w @ m
        return m


class ConvNet(eqx.Module):
    """Small conv net: [conv3x3 -> act -> maxpool2] x n_blocks -> linear. Input (C, H, W)."""

    convs: tuple
    head: eqx.nn.Linear
    activation: Callable = eqx.field(static=True)

    def __init__(
        self,
        in_shape: Sequence[int],
        out_dim: int,
        channels: Sequence[int] = (16, 32),
        activation: str = "relu",
        bias: bool = True,
        init: str = "torch",
        sigma: float | None = None,
        init_scale: float = 1.0,
        *,
        key,
    ):
        if len(in_shape) == 2:
            in_shape = (1, *in_shape)
        if len(in_shape) != 3:
            raise ModelError(f"input: the conv net needs image inputs (C,H,W) or (H,W), got shape {tuple(in_shape)}; use --model mlp for flat data")
        if activation not in ACTIVATIONS:
            raise ModelError(f"activation: unknown '{activation}'; use one of {', '.join(ACTIVATIONS)}")
        _check_dim("out_dim", out_dim)
        if len(channels) == 0:
            raise ModelError("channels: give at least one conv block, e.g. channels=(16, 32)")
        for ch in channels:
            _check_dim("channels", ch)
        _check_init(init, sigma, init_scale)
        c, h, w = in_shape
        if min(h, w) < 2 ** len(channels):
            raise ModelError(f"channels: {len(channels)} conv blocks halve the {h}x{w} input to nothing; use at most {int(math.log2(max(min(h, w), 1)))} blocks")
        keys = jax.random.split(key, 2 * len(channels) + 2)
        convs = []
        for i, ch in enumerate(channels):
            conv = eqx.nn.Conv2d(c, ch, 3, padding=1, use_bias=bias, key=keys[2 * i])
            convs.append(_init_linear(conv, keys[2 * i + 1], init, sigma))
            c = ch
            h, w = h // 2, w // 2
        head = eqx.nn.Linear(c * h * w, out_dim, use_bias=bias, key=keys[-2])
        self.head = _init_linear(head, keys[-1], init, sigma)
        self.convs = tuple(convs)
        self.activation = ACTIVATIONS[activation]
        if init_scale != 1.0:
            self.convs = _scale(self.convs, init_scale)
            self.head = _scale(self.head, init_scale)

    def __call__(self, x):
        if x.ndim == 2:
            x = x[None]
        for conv in self.convs:
            x = self.activation(conv(x))
            c, h, w = x.shape
            x = x[:, : h // 2 * 2, : w // 2 * 2].reshape(c, h // 2, 2, w // 2, 2).max(axis=(2, 4))
        return self.head(jnp.ravel(x))


MODELS = ["mlp", "linear", "conv"]
# Further architectures register a builder here: name -> f(in_shape, out_dim, *, key, depth, width,
# activation, bias, init, sigma, init_scale, **options) (see models/tokens.py).
EXTRA_MODELS: dict[str, Callable] = {}


def register_model(name: str, builder: Callable) -> None:
    """Make ``build_model(name, ...)`` (and so every spec's ``model = name``) build ``builder``."""
    EXTRA_MODELS[name] = builder
    if name not in MODELS:
        MODELS.append(name)


def build_model(
    name: str,
    in_shape: Sequence[int],
    out_dim: int,
    *,
    key,
    depth: int = 2,
    width: int = 128,
    activation: str = "relu",
    bias: bool = True,
    init: str = "torch",
    sigma: float | None = None,
    gamma: float | None = None,
    init_scale: float = 1.0,
    channels: Sequence[int] = (16, 32),
    **options,
):
    """Build a model by name: ``mlp``, ``linear`` (deep linear, ``depth`` weight matrices), ``conv``."""
    in_dim = int(np.prod(in_shape))
    if name == "mlp":
        return MLP(in_dim, out_dim, depth, width, activation, bias, init, sigma, init_scale, key=key)
    if name == "linear":
        return DeepLinear(in_dim, out_dim, depth, width, gamma=1.0 if (gamma is None and sigma is None) else gamma, sigma=sigma, key=key)
    if name == "conv":
        return ConvNet(in_shape, out_dim, channels, activation, bias, init, sigma, init_scale, key=key)
    if name in EXTRA_MODELS:
        return EXTRA_MODELS[name](in_shape, out_dim, key=key, depth=depth, width=width, activation=activation,
                                  bias=bias, init=init, sigma=sigma, init_scale=init_scale, **options)
    raise ModelError(f"model: unknown '{name}'; use one of {', '.join(MODELS)}")


def init_members(make: Callable, keys):
    """Stack K models made by ``make(key)`` into one model whose array leaves have a leading K axis."""
    return eqx.filter_vmap(make)(keys)


def penalty_mask(model, on: str = "all"):
    """Pytree of floats (1 = penalised) over the model's inexact arrays.

    ``on="all"`` penalises every parameter (weights and biases, as the papers do);
    ``on="weights"`` leaves every leaf named ``bias`` out.
    """
    if on not in ("all", "weights"):
        raise ModelError(f"penalty_on: unknown '{on}'; use 'all' or 'weights'")
    params = eqx.filter(model, eqx.is_inexact_array)

    def leaf_mask(path, leaf):
        if leaf is None:
            return None
        is_bias = any(getattr(k, "name", None) == "bias" for k in path)
        return 0.0 if (on == "weights" and is_bias) else 1.0

    return jax.tree_util.tree_map_with_path(leaf_mask, params)


def count_params(model) -> int:
    """Number of scalar parameters (of one member if unstacked)."""
    return int(sum(np.prod(p.shape) for p in jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array))))
