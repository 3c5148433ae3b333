"""Token models for sequence inputs of integer ids (the modular-arithmetic grokking task).

Both map ONE example -- an int array of ``n_tokens`` ids -- to ``out_dim`` logits, and are
registered with :func:`~phaseprobe.models.nets.register_model`, so a spec's ``model =
"embed-mlp"`` or ``model = "transformer"`` builds them (options go in ``model_options``):

* ``"embed-mlp"`` (:class:`EmbedMLP`): learned token embeddings (``embed_dim`` each),
  concatenated, then an MLP of ``depth`` hidden layers of ``width`` units.
* ``"transformer"`` (:class:`Transformer`): one layer (``n_layers``) of multi-head attention
  (``n_heads``) and an MLP block (``width`` hidden units), residual stream of ``embed_dim``,
  learned positional embeddings, no layer norm by default, logits read out at the last
  token. With ``equals_token=True`` (default) an extra ``=`` token (id ``vocab``) is appended
  and read out, as in Power et al. and Nanda et al.

``vocab`` (number of token ids) defaults to ``out_dim``: in the modular task tokens and labels
are both ``0..p-1``. Embeddings start ``N(0, embed_std^2)`` (``embed_std`` default 1, PyTorch's
``nn.Embedding``); every Linear layer follows the named ``init`` scheme; ``init_scale``
multiplies every parameter afterwards (the large-init knob of Omnigrok-style grokking).
"""

from __future__ import annotations

import math
from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp

from phaseprobe.models.nets import ACTIVATIONS, MLP, ModelError, _init_linear, _scale, register_model


def _check_pos_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ModelError(f"model_options.{name}: must be a positive integer, got {value!r}")
    return int(value)


def _check_tokens(in_shape) -> int:
    shape = tuple(int(s) for s in in_shape)
    if len(shape) != 1 or shape[0] < 1:
        raise ModelError(
            f"input: token models need integer sequences of shape (n_tokens,), got {shape}; use dataset 'modular' or model 'mlp'"
        )
    return shape[0]


class EmbedMLP(eqx.Module):
    """Learned token embeddings, concatenated, then the project's :class:`MLP` (linear output)."""

    embed: jax.Array
    mlp: MLP

    def __init__(self, n_tokens: int, out_dim: int, *, vocab: int, embed_dim: int = 32, depth: int = 1,
                 width: int = 256, activation: str = "relu", bias: bool = True, init: str = "torch",
                 sigma: float | None = None, embed_std: float = 1.0, init_scale: float = 1.0, key):
        ke, kl = jax.random.split(key)
        # the MLP checks depth, width, activation and init itself, before the embedding is drawn
        self.mlp = MLP(n_tokens * embed_dim, out_dim, depth, width, activation, bias, init, sigma, init_scale, key=kl)
        self.embed = init_scale * embed_std * jax.random.normal(ke, (vocab, embed_dim))

    def __call__(self, x):
        return self.mlp(jnp.ravel(self.embed[jnp.asarray(x, jnp.int32)]))


class _Block(eqx.Module):
    wq: eqx.nn.Linear
    wk: eqx.nn.Linear
    wv: eqx.nn.Linear
    wo: eqx.nn.Linear
    mlp_in: eqx.nn.Linear
    mlp_out: eqx.nn.Linear
    ln1: eqx.nn.LayerNorm | None
    ln2: eqx.nn.LayerNorm | None
    n_heads: int = eqx.field(static=True)
    activation: Callable = eqx.field(static=True)

    def __init__(self, d: int, n_heads: int, width: int, activation: str, bias: bool, init: str,
                 sigma: float | None, layer_norm: bool, *, key):
        keys = jax.random.split(key, 12)

        def lin(a, b, i, use_bias):
            return _init_linear(eqx.nn.Linear(a, b, use_bias=use_bias, key=keys[2 * i]), keys[2 * i + 1], init, sigma)

        self.wq, self.wk, self.wv, self.wo = (lin(d, d, i, False) for i in range(4))
        self.mlp_in = lin(d, width, 4, bias)
        self.mlp_out = lin(width, d, 5, bias)
        self.ln1 = eqx.nn.LayerNorm(d) if layer_norm else None
        self.ln2 = eqx.nn.LayerNorm(d) if layer_norm else None
        self.n_heads = n_heads
        self.activation = ACTIVATIONS[activation]

    def __call__(self, h):
        t, d = h.shape
        nh = self.n_heads
        dh = d // nh
        a = h if self.ln1 is None else jax.vmap(self.ln1)(h)
        q = jax.vmap(self.wq)(a).reshape(t, nh, dh)
        k = jax.vmap(self.wk)(a).reshape(t, nh, dh)
        v = jax.vmap(self.wv)(a).reshape(t, nh, dh)
        scores = jnp.einsum("qhd,khd->hqk", q, k) / math.sqrt(dh)
        causal = jnp.tril(jnp.ones((t, t), bool))
        scores = jnp.where(causal[None], scores, -1e30)
        att = jax.nn.softmax(scores, axis=-1)
        z = jnp.einsum("hqk,khd->qhd", att, v).reshape(t, d)
        h = h + jax.vmap(self.wo)(z)
        m = h if self.ln2 is None else jax.vmap(self.ln2)(h)
        h = h + jax.vmap(lambda r: self.mlp_out(self.activation(self.mlp_in(r))))(m)
        return h


class Transformer(eqx.Module):
    """A small decoder-only transformer (causal attention), logits at the last position."""

    embed: jax.Array
    pos: jax.Array
    blocks: tuple
    unembed: eqx.nn.Linear
    equals_id: int | None = eqx.field(static=True)

    def __init__(self, n_tokens: int, out_dim: int, *, vocab: int, embed_dim: int = 128, n_heads: int = 4,
                 n_layers: int = 1, width: int = 512, activation: str = "relu", bias: bool = True,
                 init: str = "torch", sigma: float | None = None, embed_std: float = 1.0,
                 equals_token: bool = True, layer_norm: bool = False, init_scale: float = 1.0, key):
        if embed_dim % n_heads != 0:
            raise ModelError(f"model_options.embed_dim: {embed_dim} is not divisible by n_heads={n_heads}; pick a multiple")
        if activation not in ACTIVATIONS:
            raise ModelError(f"activation: unknown '{activation}'; use one of {', '.join(ACTIVATIONS)}")
        if width <= 0:
            raise ModelError(f"width: must be a positive integer, got {width}")
        seq = n_tokens + (1 if equals_token else 0)
        n_ids = vocab + (1 if equals_token else 0)
        ke, kp, kb, ku, kui = jax.random.split(key, 5)
        self.embed = embed_std * jax.random.normal(ke, (n_ids, embed_dim))
        self.pos = embed_std * jax.random.normal(kp, (seq, embed_dim))
        self.blocks = tuple(
            _Block(embed_dim, n_heads, width, activation, bias, init, sigma, layer_norm, key=k)
            for k in jax.random.split(kb, n_layers)
        )
        self.unembed = _init_linear(eqx.nn.Linear(embed_dim, out_dim, use_bias=bias, key=ku), kui, init, sigma)
        self.equals_id = vocab if equals_token else None
        if init_scale != 1.0:
            self.embed = self.embed * init_scale
            self.pos = self.pos * init_scale
            self.blocks = _scale(self.blocks, init_scale)
            self.unembed = _scale(self.unembed, init_scale)

    def __call__(self, x):
        ids = jnp.asarray(x, jnp.int32).ravel()
        if self.equals_id is not None:
            ids = jnp.concatenate([ids, jnp.full((1,), self.equals_id, jnp.int32)])
        h = self.embed[ids] + self.pos
        for block in self.blocks:
            h = block(h)
        return self.unembed(h[-1])


def _vocab(options: dict, out_dim: int) -> int:
    return _check_pos_int("vocab", options.get("vocab", out_dim))


_EMBED_MLP_OPTIONS = ("vocab", "embed_dim", "embed_std")
_TRANSFORMER_OPTIONS = ("vocab", "embed_dim", "embed_std", "n_heads", "n_layers", "equals_token", "layer_norm")


def _check_options(model: str, options: dict, allowed: tuple[str, ...]) -> None:
    for k in options:
        if k not in allowed:
            raise ModelError(f"model_options.{k}: not an option of '{model}'; use {', '.join(allowed)}")


def build_embed_mlp(in_shape, out_dim, *, key, depth=1, width=256, activation="relu", bias=True, init="torch",
                    sigma=None, init_scale=1.0, gamma=None, channels=None, **options):
    """Builder for ``model = "embed-mlp"`` (see the module docstring for the options)."""
    _check_options("embed-mlp", options, _EMBED_MLP_OPTIONS)
    n_tokens = _check_tokens(in_shape)
    return EmbedMLP(
        n_tokens, out_dim, vocab=_vocab(options, out_dim), embed_dim=_check_pos_int("embed_dim", options.get("embed_dim", 32)),
        depth=depth, width=width, activation=activation, bias=bias, init=init, sigma=sigma,
        embed_std=float(options.get("embed_std", 1.0)), init_scale=init_scale, key=key,
    )


def build_transformer(in_shape, out_dim, *, key, depth=1, width=512, activation="relu", bias=True, init="torch",
                      sigma=None, init_scale=1.0, gamma=None, channels=None, **options):
    """Builder for ``model = "transformer"``; ``depth`` is ignored (use ``n_layers``)."""
    _check_options("transformer", options, _TRANSFORMER_OPTIONS)
    n_tokens = _check_tokens(in_shape)
    return Transformer(
        n_tokens, out_dim, vocab=_vocab(options, out_dim),
        embed_dim=_check_pos_int("embed_dim", options.get("embed_dim", 128)),
        n_heads=_check_pos_int("n_heads", options.get("n_heads", 4)),
        n_layers=_check_pos_int("n_layers", options.get("n_layers", 1)),
        width=width, activation=activation, bias=bias, init=init, sigma=sigma,
        embed_std=float(options.get("embed_std", 1.0)), equals_token=bool(options.get("equals_token", True)),
        layer_norm=bool(options.get("layer_norm", False)), init_scale=init_scale, key=key,
    )


register_model("embed-mlp", build_embed_mlp)
register_model("transformer", build_transformer)
