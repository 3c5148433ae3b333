"""PyTorch models in and out: :func:`from_torch` (an ``nn.Module`` -> an Equinox module) and
:func:`to_torch` (an Equinox model's parameters -> a torch module's ``state_dict``).

The converted model is an Equinox module called on ONE example ``x`` (the dataset's input
shape, without the batch axis), like every phaseprobe model; the caller vmaps it. It computes
what the torch module computes on a batch ``x[None]`` in **eval mode**: ``Dropout`` layers are
the identity (the geometry analyses a deterministic loss), so ``from_torch(m)(x)`` equals
``m.eval()(x[None])[0]``.

Supported layers (anything else is refused with one line naming the layer and its path):

* containers: ``nn.Sequential`` (nested to any depth; a subclass with its own ``forward`` is
  refused, since its forward cannot be read);
* ``nn.Linear`` (on the last axis, like torch); ``nn.Conv2d`` (NCHW / OIHW layout, any
  ``stride``, ``padding`` (numbers, ``'same'``, ``'valid'``), ``dilation``, ``groups`` and
  ``padding_mode``); ``nn.Flatten`` (``start_dim >= 1``: the batch axis is never flattened);
* pooling: ``nn.MaxPool2d``, ``nn.AvgPool2d`` (``ceil_mode=False``), ``nn.AdaptiveAvgPool2d``
  with output size 1 (global average);
* activations: ``ReLU``, ``Tanh``, ``Sigmoid``, ``GELU`` (both ``approximate`` settings),
  ``LeakyReLU``, ``SiLU``, ``ELU``, ``Softplus``;
* ``nn.Identity`` and the dropout layers (identity, as in eval mode);
* a custom module whose ``forward`` applies such layers and the functions ``relu``, ``tanh``,
  ``sigmoid``, ``gelu``, ``silu``, ``leaky_relu``, ``dropout``, ``torch.flatten(x, 1)`` and
  ``x.view(x.size(0), -1)`` one after another (the PyTorch tutorials' ``Net``): its forward is
  read with ``torch.fx``. Branches (residual additions, concatenations), parameters used
  directly in ``forward`` and a layer with parameters called twice are refused.

Heads must end in logits: ``Softmax``/``LogSoftmax`` are refused, since phaseprobe's losses
apply the softmax themselves. Normalisation layers (``BatchNorm``, ``LayerNorm``), attention
and custom modules are refused; the message says what to do.

The converted layers are named by their torch paths (:class:`Sequential` keeps the child
names), so :func:`to_torch` matches a converted model's parameters to a module's by name.
Parameters keep the torch tensors' values and dtype (float64 stays float64 only with JAX's x64
enabled). Parameter leaves are named ``weight`` and ``bias`` as in torch, so
:func:`phaseprobe.models.penalty_mask` (``penalty_on="weights"``) treats them like the
project's own models.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from phaseprobe.errors import PhaseprobeError

ROOT = "<module>"
SUPPORTED = ("Sequential", "Linear", "Conv2d", "Flatten", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "ReLU",
             "Tanh", "Sigmoid", "GELU", "LeakyReLU", "SiLU", "ELU", "Softplus", "Identity", "Dropout")


class TorchModelError(PhaseprobeError):
    """A torch module that cannot be converted, or a state_dict that does not match (one line)."""


def _torch():
    try:
        import torch
    except ImportError:
        raise TorchModelError("torch: PyTorch is not installed; pip install 'phaseprobe[torch]' (torch==2.13.0)") from None
    return torch


# ---------------------------------------------------------------------------------------------
# Equinox layers mirroring torch's (one example in, one example out)
# ---------------------------------------------------------------------------------------------
class Linear(eqx.Module):
    """``x @ weight.T + bias`` on the last axis, as ``torch.nn.Linear`` (weight (out, in))."""

    weight: jax.Array
    bias: jax.Array | None

    def __call__(self, x):
        y = jnp.matmul(x, self.weight.T)
        return y if self.bias is None else y + self.bias


_PAD_MODES = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


class Conv2d(eqx.Module):
    """``torch.nn.Conv2d`` on one (C, H, W) example: weight (out, in/groups, kh, kw), bias (out,).

    ``padding`` holds ((top, bottom), (left, right)); ``padding_mode`` is torch's name.
    """

    weight: jax.Array
    bias: jax.Array | None
    stride: tuple[int, int] = eqx.field(static=True)
    padding: tuple[tuple[int, int], tuple[int, int]] = eqx.field(static=True)
    dilation: tuple[int, int] = eqx.field(static=True)
    groups: int = eqx.field(static=True)
    padding_mode: str = eqx.field(static=True)

    def __call__(self, x):
        pad = self.padding
        if self.padding_mode != "zeros":
            x = jnp.pad(x, ((0, 0),) + pad, mode=_PAD_MODES[self.padding_mode])
            pad = ((0, 0), (0, 0))
        dt = jnp.result_type(x, self.weight)
        y = jax.lax.conv_general_dilated(
            x[None].astype(dt), self.weight.astype(dt),
            window_strides=self.stride, padding=pad, rhs_dilation=self.dilation,
            feature_group_count=self.groups, dimension_numbers=("NCHW", "OIHW", "NCHW"),
        )[0]
        return y if self.bias is None else y + self.bias[:, None, None]


class Flatten(eqx.Module):
    """``torch.nn.Flatten(start_dim, end_dim)``; the dims count the batch axis, as in torch."""

    start_dim: int = eqx.field(static=True)
    end_dim: int = eqx.field(static=True)

    def __call__(self, x):
        b = x.ndim + 1  # torch sees a batch axis in front
        s = self.start_dim + b if self.start_dim < 0 else self.start_dim
        e = self.end_dim + b if self.end_dim < 0 else self.end_dim
        if s < 1:
            raise TorchModelError(f"model: Flatten(start_dim={self.start_dim}) would flatten the batch axis of a {b}-d batch; use start_dim >= 1")
        s, e = s - 1, e - 1
        if e < s:
            return x
        return x.reshape(x.shape[:s] + (-1,) + x.shape[e + 1:])


class Pool2d(eqx.Module):
    """``nn.MaxPool2d`` / ``nn.AvgPool2d`` (``ceil_mode=False``) on the last two axes."""

    kind: str = eqx.field(static=True)  # "max" or "avg"
    kernel: tuple[int, int] = eqx.field(static=True)
    stride: tuple[int, int] = eqx.field(static=True)
    padding: tuple[int, int] = eqx.field(static=True)
    dilation: tuple[int, int] = eqx.field(static=True)
    count_include_pad: bool = eqx.field(static=True)
    divisor: int | None = eqx.field(static=True)

    def __call__(self, x):
        lead = (1,) * (x.ndim - 2)
        window, strides, dil = lead + self.kernel, lead + self.stride, lead + self.dilation
        pad = ((0, 0),) * (x.ndim - 2) + tuple((p, p) for p in self.padding)
        if self.kind == "max":
            return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, window, strides, pad, window_dilation=dil)
        total = jax.lax.reduce_window(x, 0.0, jax.lax.add, window, strides, pad, window_dilation=dil)
        if self.divisor is not None:
            return total / self.divisor
        if self.count_include_pad:
            return total / (self.kernel[0] * self.kernel[1])
        count = jax.lax.reduce_window(jnp.ones_like(x), 0.0, jax.lax.add, window, strides, pad, window_dilation=dil)
        return total / count


class GlobalAvgPool2d(eqx.Module):
    """``nn.AdaptiveAvgPool2d(1)``: the mean over the last two axes, kept as size-1 axes."""

    def __call__(self, x):
        return jnp.mean(x, axis=(-2, -1), keepdims=True)


def _softplus(x, beta, threshold):
    z = beta * x
    return jnp.where(z > threshold, x, jnp.logaddexp(z, 0.0) / beta)


class Activation(eqx.Module):
    """An elementwise torch activation by name (``relu``, ``tanh``, ``sigmoid``, ``gelu``,
    ``gelu_tanh``, ``leaky_relu``, ``silu``, ``elu``, ``softplus``) and its float options."""

    name: str = eqx.field(static=True)
    options: tuple[float, ...] = eqx.field(static=True, default=())

    def __call__(self, x):
        n, o = self.name, self.options
        if n == "relu":
            return jax.nn.relu(x)
        if n == "tanh":
            return jnp.tanh(x)
        if n == "sigmoid":
            return jax.nn.sigmoid(x)
        if n == "gelu":
            return jax.nn.gelu(x, approximate=False)
        if n == "gelu_tanh":
            return jax.nn.gelu(x, approximate=True)
        if n == "leaky_relu":
            return jax.nn.leaky_relu(x, o[0])
        if n == "silu":
            return jax.nn.silu(x)
        if n == "elu":
            return jax.nn.elu(x, o[0])
        if n == "softplus":
            return _softplus(x, o[0], o[1])
        raise TorchModelError(f"activation: unknown '{n}'")


class Identity(eqx.Module):
    """``nn.Identity``, and every dropout layer (eval mode)."""

    def __call__(self, x):
        return x


class Sequential(eqx.Module):
    """``nn.Sequential``: ``layers`` applied in order; ``names`` are torch's child names."""

    layers: tuple
    names: tuple[str, ...] = eqx.field(static=True)

    def __call__(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


# ---------------------------------------------------------------------------------------------
# torch -> Equinox
# ---------------------------------------------------------------------------------------------
def _refuse(path: str, m, why: str) -> TorchModelError:
    return TorchModelError(f"model: layer '{path or ROOT}' ({type(m).__name__}) {why}")


def _array(path: str, m, name: str, t):
    torch = _torch()
    if t is None:
        return None
    if t.dtype not in (torch.float32, torch.float64):
        raise _refuse(path, m, f"has {name} of dtype {str(t.dtype).replace('torch.', '')}; convert the module with module.float() first")
    return jnp.asarray(t.detach().cpu().numpy())


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, (int, np.integer)) else (int(v[0]), int(v[1]))


def _conv_padding(path, m) -> tuple[tuple[int, int], tuple[int, int]]:
    k, d = _pair(m.kernel_size), _pair(m.dilation)
    if m.padding == "valid":
        return ((0, 0), (0, 0))
    if m.padding == "same":  # torch: total d*(k-1), the odd one extra on the bottom/right
        tot = [di * (ki - 1) for ki, di in zip(k, d)]
        return tuple((t // 2, t - t // 2) for t in tot)
    p = _pair(m.padding)
    return ((p[0], p[0]), (p[1], p[1]))


def _convert(m, path: str):
    nn = _torch().nn
    t = type(m)
    if getattr(m, "_forward_hooks", None) or getattr(m, "_forward_pre_hooks", None):
        raise _refuse(path, m, "has forward hooks, which change its outputs; remove them before converting")
    child = (lambda name: f"{path}.{name}" if path else name)
    if t is nn.Sequential:
        names = tuple(name for name, _ in m.named_children())
        return Sequential(layers=tuple(_convert(c, child(n)) for n, c in m.named_children()), names=names)
    if t is nn.Linear:
        return Linear(weight=_array(path, m, "weight", m.weight), bias=_array(path, m, "bias", m.bias))
    if t is nn.Conv2d:
        if m.padding_mode not in ("zeros", *_PAD_MODES):
            raise _refuse(path, m, f"has padding_mode='{m.padding_mode}', which is not supported; use 'zeros', 'reflect', 'replicate' or 'circular'")
        return Conv2d(weight=_array(path, m, "weight", m.weight), bias=_array(path, m, "bias", m.bias),
                      stride=_pair(m.stride), padding=_conv_padding(path, m), dilation=_pair(m.dilation),
                      groups=int(m.groups), padding_mode=str(m.padding_mode))
    if t is nn.Flatten:
        if m.start_dim == 0:
            raise _refuse(path, m, "has start_dim=0, which flattens the batch axis; use start_dim=1")
        return Flatten(start_dim=int(m.start_dim), end_dim=int(m.end_dim))
    if t in (nn.MaxPool2d, nn.AvgPool2d):
        if m.ceil_mode:
            raise _refuse(path, m, "has ceil_mode=True, which is not supported; use ceil_mode=False")
        if t is nn.MaxPool2d:
            if m.return_indices:
                raise _refuse(path, m, "has return_indices=True; a layer inside a model must return one tensor")
            return Pool2d("max", _pair(m.kernel_size), _pair(m.stride), _pair(m.padding), _pair(m.dilation), True, None)
        div = None if m.divisor_override is None else int(m.divisor_override)
        return Pool2d("avg", _pair(m.kernel_size), _pair(m.stride), _pair(m.padding), (1, 1), bool(m.count_include_pad), div)
    if t is nn.AdaptiveAvgPool2d:
        if _pair(m.output_size) != (1, 1):
            raise _refuse(path, m, f"has output_size={m.output_size}; only output_size=1 (global average) is supported")
        return GlobalAvgPool2d()
    simple = {nn.ReLU: "relu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid", nn.SiLU: "silu"}
    if t in simple:
        return Activation(simple[t])
    if t is nn.GELU:
        return Activation("gelu_tanh" if m.approximate == "tanh" else "gelu")
    if t is nn.LeakyReLU:
        return Activation("leaky_relu", (float(m.negative_slope),))
    if t is nn.ELU:
        return Activation("elu", (float(m.alpha),))
    if t is nn.Softplus:
        return Activation("softplus", (float(m.beta), float(m.threshold)))
    if t in (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout):
        return Identity()
    if t in (nn.Softmax, nn.LogSoftmax, nn.Softmax2d):
        raise _refuse(path, m, "is not supported; phaseprobe's losses take logits, so end the head with its last Linear/Conv2d")
    if "Norm" in t.__name__:
        raise _refuse(path, m, "is not supported; fold it into the neighbouring layer's weights or remove it")
    if isinstance(m, nn.Sequential):
        raise _refuse(path, m, "is not supported (a Sequential subclass whose forward cannot be read); rebuild it as nn.Sequential")
    if type(m).__module__.startswith("torch.nn"):
        raise _refuse(path, m, f"is not supported; use {', '.join(SUPPORTED)}")
    return _trace(m, path)


def _functions():
    """Functions and tensor methods a traced forward may apply: name -> layer builder."""
    torch = _torch()
    F = torch.nn.functional

    def act(name):
        return lambda args, kwargs: Activation(name)

    def gelu(args, kwargs):
        return Activation("gelu_tanh" if kwargs.get("approximate", args[1] if len(args) > 1 else "none") == "tanh" else "gelu")

    def leaky(args, kwargs):
        return Activation("leaky_relu", (float(kwargs.get("negative_slope", args[1] if len(args) > 1 else 0.01)),))

    def flatten(args, kwargs):
        start = int(kwargs.get("start_dim", args[1] if len(args) > 1 else 0))
        end = int(kwargs.get("end_dim", args[2] if len(args) > 2 else -1))
        if start == 0:
            return None  # flattens the batch axis
        return Flatten(start_dim=start, end_dim=end)

    funcs = {torch.relu: act("relu"), F.relu: act("relu"), torch.tanh: act("tanh"), F.tanh: act("tanh"),
             torch.sigmoid: act("sigmoid"), F.sigmoid: act("sigmoid"), F.silu: act("silu"), F.gelu: gelu,
             F.leaky_relu: leaky, torch.flatten: flatten, F.dropout: lambda a, k: Identity()}
    methods = {"relu": act("relu"), "tanh": act("tanh"), "sigmoid": act("sigmoid"), "flatten": flatten}
    return funcs, methods


def _trace(m, path: str):
    """A custom module whose forward applies supported layers and functions one after another
    (``x = self.pool(F.relu(self.conv(x))); x = torch.flatten(x, 1); return self.fc(x)``),
    read with ``torch.fx``, as a :class:`Sequential` named by the submodules' paths."""
    import torch.fx

    where = (lambda name: f"{path}.{name}" if path else name)
    try:
        graph = torch.fx.symbolic_trace(m).graph
    except Exception as e:  # noqa: BLE001 -- tracing fails in many ways; one line names it
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise _refuse(path, m, f"is a custom module whose forward cannot be traced ({first[:120]}); pass an nn.Sequential of {', '.join(SUPPORTED)}") from None
    funcs, methods = _functions()
    nodes = list(graph.nodes)
    inputs = [n for n in nodes if n.op == "placeholder"]
    if len(inputs) != 1:
        raise _refuse(path, m, f"has a forward with {len(inputs)} inputs; from_torch reads forwards of one tensor")
    layers, names, used = [], [], set()
    cur = inputs[0]

    def not_chain(node, what):
        return _refuse(path, m, f"computes '{node.name}' ({what}), which from_torch cannot read; its forward must apply supported layers and functions one after another")

    for node in nodes:
        if node.op in ("placeholder",):
            continue
        if node.op == "output":
            if node.args[0] is not cur:
                raise not_chain(node, "an output that is not the last layer's")
            break
        if node.op == "call_method" and node.target == "size" and node.args[0] is cur:
            continue  # x.size(0) feeding a view/reshape below
        if not node.args or node.args[0] is not cur:
            raise not_chain(node, str(getattr(node.target, "__name__", node.target)))
        others = [a for a in list(node.args[1:]) + list(node.kwargs.values()) if isinstance(a, torch.fx.Node)]
        if node.op == "call_module":
            sub = m.get_submodule(node.target)
            if others:
                raise not_chain(node, f"{type(sub).__name__} called with more than one tensor")
            if any(True for _ in sub.parameters()):
                if node.target in used:
                    raise _refuse(where(node.target), sub, "is called twice (shared weights); from_torch converts each layer once")
                used.add(node.target)
            layers.append(_convert(sub, where(node.target)))
            names.append(str(node.target))
        elif node.op == "call_method" and node.target in ("view", "reshape") and len(node.args) == 3 \
                and isinstance(node.args[1], torch.fx.Node) and node.args[1].target == "size" \
                and node.args[1].args[0] is cur and tuple(node.args[1].args[1:]) == (0,) and node.args[2] == -1:
            layers.append(Flatten(start_dim=1, end_dim=-1))  # x.view(x.size(0), -1)
            names.append(f"<{node.name}>")
        else:
            table = funcs if node.op == "call_function" else (methods if node.op == "call_method" else {})
            make = table.get(node.target)
            layer = None if (make is None or others) else make(node.args, node.kwargs)
            if layer is None:
                raise not_chain(node, str(getattr(node.target, "__name__", node.target)))
            layers.append(layer)
            names.append(f"<{node.name}>")
        cur = node
    return Sequential(layers=tuple(layers), names=tuple(names))


def from_torch(module) -> eqx.Module:
    """Convert a PyTorch ``nn.Module`` (with its trained weights) into an Equinox module.

    The result maps ONE example (the dataset's input shape, e.g. (C, H, W) for images, no batch
    axis) to its outputs, like every phaseprobe model, so the geometry functions
    (:func:`phaseprobe.geometry.make_error_fn`, :func:`phaseprobe.geometry.lanczos`,
    :func:`phaseprobe.geometry.scalar_curvature`, ...) and the trainer take it as it is. It
    computes the torch module's **eval-mode** function (dropout is the identity). The torch
    module is only read, never changed. See the module docstring for the supported layers.

    **Arguments:**

    - `module`: a ``torch.nn.Module`` built from ``nn.Sequential`` (nested), ``Linear``,
      ``Conv2d``, ``Flatten``, pooling, elementwise activations, ``Identity`` and dropout (or a
      custom module whose forward applies them one after another), with float32 or float64
      parameters, ending in logits (no softmax).

    **Returns:** an Equinox module: a :class:`Sequential` of :class:`Linear`, :class:`Conv2d`,
    ... layers (or that one layer, for a bare layer) holding the module's parameters as JAX
    arrays in torch's layout (weight (out, in), conv weight OIHW).

    **Raises:** :class:`TorchModelError` (a ``PhaseprobeError``), one line naming the first
    layer that cannot be converted and its path, e.g. ``model: layer 'features.3'
    (BatchNorm2d) is not supported; ...``; nothing is converted then.
    """
    torch = _torch()
    if not isinstance(module, torch.nn.Module):
        raise TorchModelError(f"module: expected a torch.nn.Module, got {type(module).__name__}; pass the network itself")
    return _convert(module, "")


# ---------------------------------------------------------------------------------------------
# Equinox -> torch
# ---------------------------------------------------------------------------------------------
def _leaf_name(path) -> str:
    return jax.tree_util.keystr(path) or "<leaf>"


def _fits(arr_shape: tuple, t_shape: tuple) -> bool:
    """Equal shapes, or an Equinox conv bias (C, 1, 1) for torch's (C,)."""
    if arr_shape == t_shape:
        return True
    return len(t_shape) == 1 and arr_shape[:1] == t_shape and all(s == 1 for s in arr_shape[1:])


def _named_leaves(model, prefix: str = ""):
    """(torch parameter name, array) of a model made by :func:`from_torch`, in its layer order."""
    if isinstance(model, Sequential):
        for name, layer in zip(model.names, model.layers):
            yield from _named_leaves(layer, f"{prefix}{name}.")
    elif isinstance(model, (Linear, Conv2d)):
        for field in ("weight", "bias"):
            if getattr(model, field) is not None:
                yield prefix + field, getattr(model, field)


def _pairs(model, named: list):
    """Model arrays paired with the torch module's ``named`` parameters: by name for a model made
    by :func:`from_torch`, by order otherwise. Returns [(model's leaf name, array, torch name, tensor)]."""
    if isinstance(model, (Sequential, Linear, Conv2d, Flatten, Pool2d, GlobalAvgPool2d, Activation, Identity)):
        ours = dict(_named_leaves(model))
        theirs = dict(named)
        for name in theirs:
            if name not in ours:
                raise TorchModelError(f"module: parameter '{name}' has no counterpart in the model (which has {', '.join(ours) or 'none'}); "
                                      f"build the torch module with the model's layers")
        for name in ours:
            if name not in theirs:
                raise TorchModelError(f"module: has no parameter '{name}', which the model has; build the torch module with the model's layers")
        return [(name, ours[name], name, t) for name, t in named]
    leaves = jax.tree_util.tree_flatten_with_path(eqx.filter(model, eqx.is_inexact_array))[0]
    if len(leaves) != len(named):
        raise TorchModelError(
            f"module: has {len(named)} parameter tensors but the model has {len(leaves)}; "
            f"build the torch module with the model's layers (weights and biases) in the same order")
    return [(_leaf_name(path), arr, name, t) for (path, arr), (name, t) in zip(leaves, named)]


def to_torch(model, module) -> dict:
    """Write an Equinox model's parameters into a matching torch module and return its state_dict.

    A model made by :func:`from_torch` is matched by parameter name (``'features.0.weight'``).
    Any other model is matched in order: its floating array leaves (Equinox field order)
    against ``module.named_parameters()`` (torch registration order). For the project's own models (``MLP``: ``nn.Sequential`` of
    ``Linear`` and activations; ``ConvNet``: its ``Conv2d`` layers then the ``Linear`` head;
    ``DeepLinear``: bias-free ``Linear`` layers) built with the same sizes, that order is the
    same. Every shape must agree (an Equinox conv bias (C, 1, 1) fills torch's (C,)); values are
    cast to each torch tensor's dtype. Buffers are left as they are.

    **Arguments:**

    - `model`: one Equinox model (one member, not a stacked ensemble), e.g. from
      :func:`from_torch` or ``phaseprobe.open_run(DIR).model(...)``.
    - `module`: a ``torch.nn.Module`` with the same parameter shapes, in the same order.

    **Returns:** the module's new ``state_dict`` (also loaded into ``module``).

    **Raises:** :class:`TorchModelError`, one line, before anything is written, when the
    parameter names (or, matched in order, their number) or a shape differ.
    """
    torch = _torch()
    if not isinstance(module, torch.nn.Module):
        raise TorchModelError(f"module: expected a torch.nn.Module, got {type(module).__name__}; pass the network to fill")
    values = {}
    for leaf, arr, name, t in _pairs(model, list(module.named_parameters())):
        a, ts = tuple(np.shape(arr)), tuple(t.shape)
        if not _fits(a, ts):
            hint = " (a stacked ensemble? pass one member)" if a[1:] == ts else ""
            raise TorchModelError(
                f"module: parameter '{name}' has shape {ts} but the model's {leaf} has {a}{hint}; "
                f"build the torch module with the model's sizes")
        values[name] = torch.from_numpy(np.array(arr, copy=True).reshape(ts)).to(t.dtype)
    state = module.state_dict()
    state.update(values)
    module.load_state_dict(state)
    return module.state_dict()
