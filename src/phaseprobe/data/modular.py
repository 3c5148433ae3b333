"""Modular arithmetic: the grokking task ``y = (a op b) mod p``.

Every pair ``(a, b)`` with ``a, b`` in ``0..p-1`` is one example (``b != 0`` for division),
the input is the token pair as int32 ``(n, 2)``, the label is ``(a op b) mod p`` (int32,
``n_classes = p``). Operations:

* ``"+"``: ``a + b``;  ``"-"``: ``a - b``;  ``"*"``: ``a * b``;
* ``"/"``: ``a * b^(-1)`` with the modular inverse of ``b`` (``p`` must be prime, ``b != 0``).

The train split is a seeded random ``train_frac`` of all pairs (at least one example in each
split); the rest is the test set. Models read the tokens through an embedding
(:mod:`phaseprobe.models.tokens`), so the inputs stay integer.
"""

from __future__ import annotations

import numbers

import numpy as np

from phaseprobe.data.base import DataError, Dataset

OPS: tuple[str, ...] = ("+", "-", "*", "/")
_OP_ALIASES = {"add": "+", "plus": "+", "sub": "-", "minus": "-", "mul": "*", "times": "*", "div": "/"}


def is_prime(n: int) -> bool:
    """True when ``n`` is a prime number (trial division; ``n`` is a vocabulary size)."""
    if n < 2:
        return False
    if n < 4:
        return True
    if n % 2 == 0:
        return False
    f = 3
    while f * f <= n:
        if n % f == 0:
            return False
        f += 2
    return True


def check_op(op) -> str:
    """The canonical symbol of ``op`` ("+", "-", "*", "/"; names add/sub/mul/div accepted)."""
    if isinstance(op, str):
        key = op.strip().lower()
        key = _OP_ALIASES.get(key, key)
        if key in OPS:
            return key
    raise DataError(f"op: unknown operation {op!r}; use one of {', '.join(repr(o) for o in OPS)} (or add, sub, mul, div)")


def modular_table(p: int, op: str) -> tuple[np.ndarray, np.ndarray]:
    """All valid pairs ``(a, b)`` (int32, ``(n, 2)``) and labels ``(a op b) mod p`` (int32)."""
    a, b = np.meshgrid(np.arange(p, dtype=np.int64), np.arange(p, dtype=np.int64), indexing="ij")
    a, b = a.ravel(), b.ravel()
    if op == "/":
        keep = b != 0
        a, b = a[keep], b[keep]
        inv = np.array([0] + [pow(int(v), -1, p) for v in range(1, p)], dtype=np.int64)
        y = (a * inv[b]) % p
    elif op == "+":
        y = (a + b) % p
    elif op == "-":
        y = (a - b) % p
    else:
        y = (a * b) % p
    x = np.stack([a, b], axis=1).astype(np.int32)
    return x, y.astype(np.int32)


def load_modular(p: int = 97, op: str = "+", train_frac: float = 0.3, seed: int = 0, **ignored) -> Dataset:
    """The modular-arithmetic dataset ``(a op b) mod p`` with a seeded ``train_frac`` split.

    ``meta`` records ``p``, ``op``, ``train_frac``, ``seed`` and the number of pairs.
    Options other than these (shared sweep options such as ``normalize``) are ignored.
    """
    if isinstance(p, bool) or not isinstance(p, numbers.Integral):
        if isinstance(p, numbers.Real) and float(p).is_integer():
            p = int(p)
        else:
            raise DataError(f"p: {p!r} is not an integer; give a modulus p >= 2 (97 is the standard task)")
    p = int(p)
    if p < 2:
        raise DataError(f"p: {p} is too small; give a modulus p >= 2 (97 is the standard task)")
    op = check_op(op)
    if op == "/" and not is_prime(p):
        raise DataError(f"p: {p} is not prime, so '/' (multiplication by the modular inverse) is undefined; use a prime p such as 97")
    if isinstance(train_frac, bool) or not isinstance(train_frac, numbers.Real) or not np.isfinite(float(train_frac)) \
            or not 0.0 < float(train_frac) < 1.0:
        raise DataError(f"train_frac: {train_frac!r} is outside (0, 1); give the training fraction, e.g. 0.3")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise DataError(f"seed: {seed!r} is not an integer; give a whole number")
    train_frac = float(train_frac)
    x, y = modular_table(p, op)
    n = len(y)
    if n < 2:
        raise DataError(f"p: {p} gives only {n} example(s) for '{op}'; give a larger modulus so both splits are non-empty")
    n_train = int(round(train_frac * n))
    n_train = min(max(n_train, 1), n - 1)
    perm = np.random.default_rng(int(seed)).permutation(n)
    tr, te = np.sort(perm[:n_train]), np.sort(perm[n_train:])
    return Dataset(
        name=f"modular(p={p}, op='{op}')",
        x_train=x[tr], y_train=y[tr], x_test=x[te], y_test=y[te],
        n_classes=p, task="classification", classes=tuple(range(p)),
        meta={"p": p, "op": op, "train_frac": train_frac, "seed": int(seed), "n_pairs": n,
              "vocab": p, "tokens": 2},
    )
