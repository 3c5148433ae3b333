"""Synthetic datasets with known structure: Gaussian mixtures, teacher networks, low-rank linear maps.

All are numpy-only and seeded. The seed is split into independent streams (structure,
train inputs, test inputs, noise), so changing ``n_train`` does not change the class means,
the teacher or the test set.

* ``gaussian-mixture``: ``n_classes`` classes in ``dim`` dimensions; class means on random
  unit directions scaled by ``separation``, unit-variance isotropic noise. ``separation`` is
  the data-complexity knob (large = easy, 0 = labels independent of inputs).
* ``teacher``: Gaussian inputs; a random MLP (``depth`` hidden layers of width ``hidden``)
  gives labels (argmax of its logits) or regression targets.
* ``lowrank-linear``: ``Y = A X`` with ``A = U diag(s) V^T`` of prescribed singular values;
  ``whiten=True`` makes ``X^T X / n = I`` exactly on each split, so the MSE of a linear map
  ``W`` is ``1/2 ||A - W||_F^2`` (the deep-linear convention).
"""

from __future__ import annotations

import numbers

import numpy as np

from phaseprobe.data import _options as opt
from phaseprobe.data.base import DataError, Dataset

TEACHER_ACTIVATIONS: tuple[str, ...] = ("tanh", "relu", "linear")
TEACHER_TASKS: tuple[str, ...] = ("classification", "regression")
_CALIBRATION_SAMPLES = 4096


def _check_synthetic_normalize(normalize) -> str:
    if normalize == "mnist":
        raise DataError("normalize: 'mnist' is for pixel images; use standard, global, unit or none")
    return opt.check_choice("normalize", normalize, opt.SYNTHETIC_NORMALIZE_MODES)


def _balanced_labels(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    return rng.permutation(np.arange(n) % k).astype(np.int32)


def load_gaussian_mixture(
    n_classes: int = 10,
    dim: int = 20,
    separation: float = 2.0,
    n_train: int = 1000,
    n_test: int = 1000,
    normalize: str = "none",
    seed: int = 0,
) -> Dataset:
    """``n_classes`` isotropic Gaussian blobs in ``dim`` dimensions, balanced classes.

    Class ``c`` has mean ``separation * u_c`` with ``u_c`` a random unit vector and noise
    ``N(0, I)``. Labels are balanced (``n // n_classes`` each, the remainder spread).
    ``meta["means"]`` holds the class means.
    """
    n_classes = opt.check_int("n_classes", n_classes, minimum=2)
    dim = opt.check_int("dim", dim, minimum=1)
    separation = opt.check_float("separation", separation, 0.0, None)
    n_train = opt.check_int("n_train", n_train, minimum=1)
    n_test = opt.check_int("n_test", n_test, minimum=1)
    normalize = _check_synthetic_normalize(normalize)
    seed = opt.check_int("seed", seed, minimum=0)

    g_means, g_train, g_test = opt.split_seeds(seed, 3)
    dirs = g_means.standard_normal((n_classes, dim))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    means = separation * dirs

    def draw(n, g):
        y = _balanced_labels(n, n_classes, g)
        x = means[y] + g.standard_normal((n, dim))
        return x, y

    xtr, ytr = draw(n_train, g_train)
    xte, yte = draw(n_test, g_test)
    xtr, xte, info = opt.normalize(xtr, xte, normalize)
    return Dataset(
        name="gaussian-mixture",
        x_train=xtr,
        y_train=ytr,
        x_test=xte,
        y_test=yte,
        n_classes=n_classes,
        task="classification",
        classes=tuple(range(n_classes)),
        meta={
            "means": means.astype(np.float32),
            "separation": separation,
            "dim": dim,
            "noise_std": 1.0,
            "normalization": info,
            "seed": seed,
        },
    )


def _teacher_forward(x: np.ndarray, layers, activation: str) -> np.ndarray:
    h = x
    for i, (w, b) in enumerate(layers):
        h = h @ w.T + b
        if i < len(layers) - 1:
            if activation == "tanh":
                h = np.tanh(h)
            elif activation == "relu":
                h = np.maximum(h, 0.0)
    return h


def load_teacher(
    task: str = "classification",
    n_classes: int | None = None,
    out_dim: int | None = None,
    in_dim: int = 20,
    hidden: int = 64,
    depth: int = 2,
    activation: str = "tanh",
    noise: float = 0.0,
    n_train: int = 1000,
    n_test: int = 1000,
    normalize: str = "none",
    seed: int = 0,
) -> Dataset:
    """Inputs ``x ~ N(0, I_in_dim)``; outputs from a random teacher MLP.

    The teacher has ``depth`` hidden layers of width ``hidden`` (``depth=0``: linear), weights
    ``N(0, 1/fan_in)``, zero biases, and the given activation. For ``task="classification"``
    each teacher logit is standardised over a calibration sample (so classes are roughly
    balanced) and ``y = argmax(logits + noise * N(0, 1))`` over ``n_classes`` (default 10)
    logits. For ``task="regression"``, ``y = f(x) + noise * N(0, 1)`` with ``out_dim``
    (default 1) outputs, float32 ``(n, out_dim)``. The teacher's layers are in
    ``meta["teacher"]`` as ``(W, b)`` pairs.
    """
    task = opt.check_choice("task", task, TEACHER_TASKS)
    if task == "classification":
        if out_dim is not None:
            raise DataError("out_dim: only for task='regression'; use n_classes for classification")
        k = opt.check_int("n_classes", 10 if n_classes is None else n_classes, minimum=2)
    else:
        if n_classes is not None:
            raise DataError("n_classes: only for task='classification'; use out_dim for regression")
        k = opt.check_int("out_dim", 1 if out_dim is None else out_dim, minimum=1)
    in_dim = opt.check_int("in_dim", in_dim, minimum=1)
    hidden = opt.check_int("hidden", hidden, minimum=1)
    depth = opt.check_int("depth", depth, minimum=0)
    activation = opt.check_choice("activation", activation, TEACHER_ACTIVATIONS)
    noise = opt.check_float("noise", noise, 0.0, None)
    n_train = opt.check_int("n_train", n_train, minimum=1)
    n_test = opt.check_int("n_test", n_test, minimum=1)
    normalize = _check_synthetic_normalize(normalize)
    seed = opt.check_int("seed", seed, minimum=0)

    g_teacher, g_train, g_test, g_noise_tr, g_noise_te = opt.split_seeds(seed, 5)
    sizes = [in_dim] + [hidden] * depth + [k]
    layers = [
        (g_teacher.standard_normal((fo, fi)) / np.sqrt(fi), np.zeros(fo))
        for fi, fo in zip(sizes[:-1], sizes[1:])
    ]
    meta: dict = {
        "teacher": [(w.astype(np.float32), b.astype(np.float32)) for w, b in layers],
        "in_dim": in_dim,
        "hidden": hidden,
        "depth": depth,
        "activation": activation,
        "noise": noise,
        "seed": seed,
    }
    xtr = g_train.standard_normal((n_train, in_dim))
    xte = g_test.standard_normal((n_test, in_dim))
    ftr = _teacher_forward(xtr, layers, activation)
    fte = _teacher_forward(xte, layers, activation)
    if task == "classification":
        calib = _teacher_forward(g_teacher.standard_normal((_CALIBRATION_SAMPLES, in_dim)), layers, activation)
        mu, sd = calib.mean(axis=0), calib.std(axis=0)
        sd = np.where(sd > 0, sd, 1.0)
        ytr = np.argmax((ftr - mu) / sd + noise * g_noise_tr.standard_normal(ftr.shape), axis=1)
        yte = np.argmax((fte - mu) / sd + noise * g_noise_te.standard_normal(fte.shape), axis=1)
        ytr, yte = ytr.astype(np.int32), yte.astype(np.int32)
        meta["logit_mean"], meta["logit_std"] = mu.astype(np.float32), sd.astype(np.float32)
        meta["class_frequency_train"] = (np.bincount(ytr, minlength=k) / n_train).astype(np.float32)
        n_classes_out, classes = k, tuple(range(k))
    else:
        ytr = (ftr + noise * g_noise_tr.standard_normal(ftr.shape)).astype(np.float32)
        yte = (fte + noise * g_noise_te.standard_normal(fte.shape)).astype(np.float32)
        n_classes_out, classes = 0, ()
    xtr, xte, info = opt.normalize(xtr, xte, normalize)
    meta["normalization"] = info
    return Dataset(
        name="teacher",
        x_train=xtr,
        y_train=ytr,
        x_test=xte,
        y_test=yte,
        n_classes=n_classes_out,
        task=task,
        classes=classes,
        meta=meta,
    )


def _random_orthonormal(rows: int, cols: int, g: np.random.Generator) -> np.ndarray:
    """``rows x cols`` with orthonormal columns, Haar-distributed (QR with sign fix)."""
    q, r = np.linalg.qr(g.standard_normal((rows, cols)))
    return q * np.sign(np.where(np.diag(r) == 0, 1.0, np.diag(r)))


def _whiten(x: np.ndarray) -> np.ndarray:
    """Symmetric (ZCA) whitening: returns ``x @ C^{-1/2}`` with ``C = x^T x / n``."""
    c = x.T @ x / x.shape[0]
    lam, vec = np.linalg.eigh(c)
    return x @ (vec / np.sqrt(lam)) @ vec.T


def load_lowrank_linear(
    singular_values=(5.0, 4.0, 3.0, 2.0, 1.0),
    in_dim: int | None = None,
    out_dim: int | None = None,
    n_train: int = 1000,
    n_test: int = 1000,
    whiten: bool = True,
    rotate: bool = True,
    noise: float = 0.0,
    seed: int = 0,
) -> Dataset:
    """Regression targets ``y = A x (+ noise)`` from a matrix of prescribed singular values.

    ``A = U diag(s) V^T`` (``out_dim x in_dim``) with ``s = singular_values`` in the order
    given; ``U`` (``out_dim x r``) and ``V`` (``in_dim x r``) are random with orthonormal
    columns (``rotate=False``: the first ``r`` standard basis vectors, so ``A`` is ``diag(s)``
    padded). ``in_dim``/``out_dim`` default to ``r = len(s)``. Inputs are ``N(0, I)``; with
    ``whiten=True`` each split is whitened so ``X^T X / n = I`` exactly (needs
    ``n >= in_dim``), hence for noiseless targets
    ``mean_i 1/2 ||A x_i - W x_i||^2 = 1/2 ||A - W||_F^2``. ``meta`` holds ``A``, ``U``,
    ``V`` and ``singular_values``.
    """
    if isinstance(singular_values, (str, bytes)) or not hasattr(singular_values, "__len__"):
        raise DataError(
            f"singular_values: {singular_values!r} is not a list of numbers; give e.g. [5, 4, 3, 2, 1]"
        )
    s_list = []
    for v in singular_values:
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not np.isfinite(float(v)) or float(v) < 0:
            raise DataError(
                f"singular_values: {v!r} is not a finite non-negative number; give e.g. [5, 4, 3, 2, 1]"
            )
        s_list.append(float(v))
    if not s_list:
        raise DataError("singular_values: the list is empty; give at least one value, e.g. [5, 4, 3]")
    r = len(s_list)
    in_dim = opt.check_int("in_dim", r if in_dim is None else in_dim, minimum=1)
    out_dim = opt.check_int("out_dim", r if out_dim is None else out_dim, minimum=1)
    if r > min(in_dim, out_dim):
        raise DataError(
            f"singular_values: {r} values but A is {out_dim}x{in_dim} (rank at most "
            f"{min(in_dim, out_dim)}); give at most {min(in_dim, out_dim)} values or raise in_dim/out_dim"
        )
    n_train = opt.check_int("n_train", n_train, minimum=1)
    n_test = opt.check_int("n_test", n_test, minimum=1)
    whiten = opt.check_bool("whiten", whiten)
    rotate = opt.check_bool("rotate", rotate)
    noise = opt.check_float("noise", noise, 0.0, None)
    seed = opt.check_int("seed", seed, minimum=0)
    if whiten:
        for name, n in (("n_train", n_train), ("n_test", n_test)):
            if n < in_dim:
                raise DataError(
                    f"{name}: whitening needs at least in_dim={in_dim} examples, got {n}; "
                    f"give {name} >= {in_dim} or whiten=false"
                )

    g_map, g_train, g_test, g_noise_tr, g_noise_te = opt.split_seeds(seed, 5)
    s = np.asarray(s_list)
    if rotate:
        u = _random_orthonormal(out_dim, r, g_map)
        v = _random_orthonormal(in_dim, r, g_map)
    else:
        u, v = np.eye(out_dim, r), np.eye(in_dim, r)
    a = (u * s) @ v.T

    def draw(n, g, g_noise):
        x = g.standard_normal((n, in_dim))
        if whiten:
            x = _whiten(x)
        y = x @ a.T
        if noise > 0:
            y = y + noise * g_noise.standard_normal(y.shape)
        return x.astype(np.float32), y.astype(np.float32)

    xtr, ytr = draw(n_train, g_train, g_noise_tr)
    xte, yte = draw(n_test, g_test, g_noise_te)
    return Dataset(
        name="lowrank-linear",
        x_train=xtr,
        y_train=ytr,
        x_test=xte,
        y_test=yte,
        n_classes=0,
        task="regression",
        classes=(),
        meta={
            "A": a.astype(np.float32),
            "U": u.astype(np.float32),
            "V": v.astype(np.float32),
            "singular_values": s.astype(np.float32),
            "whiten": whiten,
            "rotate": rotate,
            "noise": noise,
            "seed": seed,
        },
    )
