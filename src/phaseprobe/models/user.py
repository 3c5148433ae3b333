"""A researcher's own model from a Python file: ``--model-file FILE.py:FUNCTION``.

``FUNCTION(key, in_dim, out_dim)`` returns either

* an Equinox module mapping ONE example to ``out_dim`` outputs (held as an :class:`OwnModule`:
  its arrays trainable, everything else static; ``.module`` gives it back), or
* a pair ``(init, apply)``: ``init(key) -> params`` (a pytree of float arrays) and
  ``apply(params, x) -> outputs`` on one example (the shape of a Flax ``init``/``apply`` or a
  hand-written JAX model); the pair is wrapped in a :class:`FunctionalModel`.

``in_dim`` is the number of input features of one example (``prod`` of its shape); the model is
called on one example as the dataset stores it (a flat vector for flat data). Every model built
from the file has the same structure as the first one, so stacked ensembles (``init_members``),
the stored parameter files and ``open_run(...).model(...)`` work for both forms. A bad file
(missing, syntax error, wrong signature, wrong output shape, non-float parameters) raises a
one-line :class:`~phaseprobe.models.nets.ModelError` naming the file and the fix, before any
training.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from phaseprobe.models.nets import ModelError

FIX_FORM = "return an Equinox module or an (init(key) -> params, apply(params, x) -> outputs) pair"


class FunctionalModel(eqx.Module):
    """An ``(init, apply)`` model as an Equinox module: ``model(x) = apply(params, x)`` on one example.

    ``params`` is the pytree ``init(key)`` returned (the trainable leaves); ``apply`` is static.
    """

    params: Any
    apply: Callable = eqx.field(static=True)

    def __call__(self, x):
        return self.apply(self.params, x)


class OwnModule(eqx.Module):
    """A user's Equinox module with every non-array part static: ``params`` holds its arrays (the
    trainable leaves, in the module's own tree), ``static`` the rest. ``model(x)`` calls the module;
    ``model.module`` gives the user's module back."""

    params: Any
    static: Any = eqx.field(static=True)

    @property
    def module(self):
        return eqx.combine(self.params, self.static)

    def __call__(self, x):
        return eqx.combine(self.params, self.static)(x)


def split_model_file(text: str) -> tuple[str, str]:
    """``"FILE.py:FUNCTION"`` as ``(FILE.py, FUNCTION)``; a ModelError when either part is missing.

    **Arguments:**

    - ``text``: the ``--model-file`` value.

    **Returns:** the path (as given) and the function's name.
    """
    if not isinstance(text, str) or ":" not in text or text.rsplit(":", 1)[1].strip() == "":
        raise ModelError(f"model_file: {text!r} names no function; give FILE.py:FUNCTION, e.g. my_net.py:make_model")
    path, fn = text.rsplit(":", 1)
    if not path.strip():
        raise ModelError(f"model_file: {text!r} names no file; give FILE.py:FUNCTION, e.g. my_net.py:make_model")
    if not fn.strip().isidentifier():
        raise ModelError(f"model_file: {fn!r} in {text!r} is not a Python function name; give FILE.py:FUNCTION")
    return path.strip(), fn.strip()


def resolve_model_file(text: str) -> str:
    """``FILE.py:FUNCTION`` with FILE made absolute (so a later command finds it from any folder)."""
    path, fn = split_model_file(text)
    return f"{Path(path).expanduser().resolve()}:{fn}"


def model_file_hash(text: str) -> str:
    """The content hash (sha256, 16 hex digits) of the file named by ``FILE.py:FUNCTION``.

    **Arguments:**

    - ``text``: ``FILE.py:FUNCTION``.

    **Returns:** the hash; a one-line ModelError when the file cannot be read.
    """
    path, _ = split_model_file(text)
    p = Path(path).expanduser()
    if not p.is_file():
        what = "is a folder, not a file" if p.is_dir() else "does not exist"
        raise ModelError(f"model_file: {p} {what}; give the path of a Python file, FILE.py:FUNCTION")
    return hashlib.sha256(p.read_bytes()).hexdigest()[:16]


def _load_function(text: str, expected_hash: str | None) -> Callable:
    path, fn = split_model_file(text)
    p = Path(path).expanduser()
    digest = model_file_hash(text)
    if expected_hash is not None and digest != expected_hash:
        raise ModelError(f"model_file: {p} changed since the run was made (content hash {expected_hash}, now {digest}); "
                         "restore that file, or start a new run folder with the new one")
    name = f"phaseprobe_user_model_{digest}"
    spec = importlib.util.spec_from_file_location(name, p)
    if spec is None or spec.loader is None:
        raise ModelError(f"model_file: {p} is not a Python source file; give a .py file, FILE.py:FUNCTION")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(name, None)
        raise ModelError(f"model_file: {p} line {exc.lineno}: syntax error ({exc.msg}); fix the file") from None
    except Exception as exc:  # noqa: BLE001 - any failure while importing the user's file
        sys.modules.pop(name, None)
        raise ModelError(f"model_file: importing {p} failed ({_short(exc)}); fix the file") from None
    f = getattr(module, fn, None)
    if f is None or not callable(f):
        have = sorted(k for k, v in vars(module).items() if inspect.isfunction(v) and not k.startswith("_")
                      and v.__module__ == name)
        raise ModelError(f"model_file: {p} defines no function '{fn}' (functions: {', '.join(have) or 'none'}); "
                         "give FILE.py:FUNCTION with one of them")
    try:
        inspect.signature(f).bind(None, 1, 1)
    except TypeError:
        raise ModelError(f"model_file: {p}:{fn} must take (key, in_dim, out_dim), not {fn}{inspect.signature(f)}; "
                         "change its signature") from None
    except ValueError:  # no signature (a builtin): let the call decide
        pass
    return f


def _short(exc: BaseException) -> str:
    """An exception as one short line (its type and the first line of its message)."""
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first[:160]}" if first else type(exc).__name__


def _is_param_leaf(x) -> bool:
    return isinstance(x, (jax.Array, np.ndarray, jax.ShapeDtypeStruct, np.generic))


class _UserModelBuilder:
    """``key -> model`` for one model file, data shape and output size (checked once, then cached)."""

    def __init__(self, text: str, in_shape: Sequence[int], out_dim: int, expected_hash: str | None):
        self.where = text
        self.in_shape = tuple(int(d) for d in in_shape)
        self.in_dim = int(np.prod(self.in_shape))
        self.out_dim = int(out_dim)
        self.fn = _load_function(text, expected_hash)
        path, fname = split_model_file(text)
        self.label = f"{Path(path).expanduser()}:{fname}"
        self.pair: tuple[Callable, Callable] | None = None
        with jax.ensure_compile_time_eval():
            first = self._call(jax.random.PRNGKey(0))
        if isinstance(first, eqx.Module):
            ref = eqx.filter_eval_shape(self._call, jax.random.PRNGKey(0))
        elif isinstance(first, tuple) and len(first) == 2 and all(callable(g) for g in first):
            self.pair = first
            ref = eqx.filter_eval_shape(self._from_pair, jax.random.PRNGKey(0))
        else:
            raise ModelError(f"model_file: {self.label} returned {type(first).__name__}; {FIX_FORM}")
        self._check_params(ref)
        self.ref_params, self.ref_static = eqx.partition(ref, _is_param_leaf)
        self.ref_def = jax.tree_util.tree_structure(self.ref_params)
        self._check_output(ref)

    def _call(self, key):
        try:
            return self.fn(key, self.in_dim, self.out_dim)
        except ModelError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise ModelError(f"model_file: {self.label}(key, {self.in_dim}, {self.out_dim}) failed "
                             f"({_short(exc)}); fix the function") from None

    def _from_pair(self, key):
        init, apply = self.pair
        try:
            params = init(key)
        except Exception as exc:  # noqa: BLE001
            raise ModelError(f"model_file: init(key) of {self.label} failed ({_short(exc)}); "
                             "init must take one PRNG key and return the parameters") from None
        return FunctionalModel(params, apply)

    def _check_params(self, ref) -> None:
        leaves = jax.tree_util.tree_leaves(eqx.filter(ref, _is_param_leaf))
        if not leaves:
            raise ModelError(f"model_file: {self.label} builds a model without parameters; {FIX_FORM} with float arrays")
        for leaf in leaves:
            if not jnp.issubdtype(leaf.dtype, jnp.floating):
                raise ModelError(f"model_file: {self.label} has a {leaf.dtype} parameter of shape {tuple(leaf.shape)}; "
                                 "parameters must be float arrays (keep integer constants out of the model or make them static)")
        if self.pair is not None:
            for leaf in jax.tree_util.tree_leaves(ref.params):
                if not _is_param_leaf(leaf):
                    raise ModelError(f"model_file: init(key) of {self.label} returned a {type(leaf).__name__} leaf; "
                                     "the parameters must be a pytree of float arrays")

    def _check_output(self, ref) -> None:
        x = jax.ShapeDtypeStruct(self.in_shape, jnp.float32)
        try:
            out = eqx.filter_eval_shape(lambda m, v: m(v), ref, x)
        except Exception as exc:  # noqa: BLE001
            raise ModelError(f"model_file: calling the model of {self.label} on one example of shape {self.in_shape} "
                             f"failed ({_short(exc)}); it must map one example to {self.out_dim} outputs") from None
        shape = getattr(out, "shape", None)
        if shape != (self.out_dim,) or not jnp.issubdtype(out.dtype, jnp.floating):
            got = f"shape {shape} ({getattr(out, 'dtype', type(out).__name__)})" if shape is not None else type(out).__name__
            raise ModelError(f"model_file: the model of {self.label} maps one example of shape {self.in_shape} to "
                             f"{got}; it must return float outputs of shape ({self.out_dim},)")

    def __call__(self, key):
        model = self._from_pair(key) if self.pair is not None else self._call(key)
        params = eqx.filter(model, _is_param_leaf)
        leaves, treedef = jax.tree_util.tree_flatten(params)
        if treedef.num_leaves != self.ref_def.num_leaves:
            raise ModelError(f"model_file: {self.label} builds models of different structure for different keys; "
                             "build the same layers for every key")
        params = jax.tree_util.tree_unflatten(self.ref_def, leaves)
        if self.pair is not None:
            return eqx.combine(params, self.ref_static)
        return OwnModule(params, self.ref_static)


_BUILDERS: dict[tuple, _UserModelBuilder] = {}


def user_model_builder(text: str, in_shape: Sequence[int], out_dim: int, expected_hash: str | None = None):
    """The checked ``key -> model`` builder of a model file (one per file content, shape and size).

    **Arguments:**

    - ``text``: ``FILE.py:FUNCTION``.
    - ``in_shape``: the shape of one example; ``in_dim = prod(in_shape)`` is passed to FUNCTION.
    - ``out_dim``: the number of outputs (classes, or regression targets).
    - ``expected_hash``: the content hash a run recorded; a changed file is refused.

    **Returns:** ``key -> model``; every model it builds has the structure of the first.
    """
    digest = model_file_hash(text)
    if expected_hash is not None and digest != expected_hash:
        _load_function(text, expected_hash)  # raises the one-line "changed" error
    cache_key = (resolve_model_file(text), digest, tuple(int(d) for d in in_shape), int(out_dim))
    if cache_key not in _BUILDERS:
        _BUILDERS[cache_key] = _UserModelBuilder(text, in_shape, out_dim, expected_hash)
    return _BUILDERS[cache_key]


def build_user_model(text: str, in_shape: Sequence[int], out_dim: int, *, key, expected_hash: str | None = None):
    """One model from a model file (see the module docstring).

    **Arguments:**

    - ``text``: ``FILE.py:FUNCTION``.
    - ``in_shape``: the shape of one example.
    - ``out_dim``: the number of outputs.
    - ``key``: the PRNG key of the initialisation.
    - ``expected_hash``: the content hash a run recorded (a changed file is refused).

    **Returns:** an Equinox module (the user's own, or a :class:`FunctionalModel`).
    """
    return user_model_builder(text, in_shape, out_dim, expected_hash)(key)
