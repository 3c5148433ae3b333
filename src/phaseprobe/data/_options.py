"""Shared option checks and transforms for the dataset loaders.

Every check raises :class:`~phaseprobe.data.base.DataError` with a one-line message
``option: what is wrong; the fix`` and runs before any large array is touched.
"""

from __future__ import annotations

import numbers

import numpy as np

from phaseprobe.data.base import DataError

NORMALIZE_MODES: tuple[str, ...] = ("none", "unit", "standard", "global", "mnist")
SYNTHETIC_NORMALIZE_MODES: tuple[str, ...] = ("none", "unit", "standard", "global")

# The authors' MNIST protocol: ToTensor (x/255) then Normalize((0.1307,), (0.3081,)).
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081


def check_int(name: str, value, minimum: int | None = None, allow_none: bool = False):
    """``value`` as a Python int (``None`` passes when allowed); below ``minimum`` is an error."""
    if value is None:
        if allow_none:
            return None
        raise DataError(f"{name}: is required; give an integer")
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, numbers.Real) and float(value).is_integer() and not isinstance(value, bool):
            value = int(value)
        else:
            raise DataError(f"{name}: {value!r} is not an integer; give a whole number")
    value = int(value)
    if minimum is not None and value < minimum:
        raise DataError(f"{name}: {value} is too small; give an integer >= {minimum}")
    return value


def check_float(
    name: str,
    value,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a finite float inside the given (open or closed) bounds."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise DataError(f"{name}: {value!r} is not a number; give a real number")
    v = float(value)
    lo_s = "(" if low_open else "["
    hi_s = ")" if high_open else "]"
    rng = f"{lo_s}{'-inf' if low is None else low}, {'inf' if high is None else high}{hi_s}"
    bad = not np.isfinite(v)
    if low is not None and (v < low or (low_open and v == low)):
        bad = True
    if high is not None and (v > high or (high_open and v == high)):
        bad = True
    if bad:
        raise DataError(f"{name}: {v} is outside {rng}; give a value in {rng}")
    return v


def check_choice(name: str, value, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise DataError(f"{name}: unknown {value!r}; use one of {', '.join(choices)}")
    return value


def check_bool(name: str, value) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise DataError(f"{name}: {value!r} is not a boolean; give true or false")


def parse_classes(value, available, dataset: str) -> tuple[int, ...] | None:
    """Resolve the ``classes`` option against the class ids ``available`` (sorted).

    ``None`` keeps all classes. An int ``k`` keeps the first ``k`` classes; a list (or a
    comma-separated string such as ``"0,1,2"``) keeps those ids in that order. At least two
    classes, no duplicates, every id must exist.
    """
    if value is None:
        return None
    available = [int(a) for a in available]
    n_avail = len(available)
    if isinstance(value, str):
        parts = [s.strip() for s in value.split(",") if s.strip()]
        try:
            ints = [int(s) for s in parts]
        except ValueError:
            raise DataError(
                f"classes: {value!r} is not a class count or a list of class ids; "
                "give an int k or ids like 0,1,2"
            ) from None
        value = ints[0] if len(ints) == 1 and "," not in value else ints
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        k = int(value)
        if k < 2:
            raise DataError(f"classes: {k} is too few; keep at least 2 classes")
        if k > n_avail:
            raise DataError(
                f"classes: asked for {k} classes but {dataset} has {n_avail}; give at most {n_avail}"
            )
        return tuple(available[:k])
    try:
        ids = list(value)
    except TypeError:
        raise DataError(
            f"classes: {value!r} is not a class count or a list of class ids; "
            "give an int k or a list like [0, 1, 2]"
        ) from None
    out = []
    for c in ids:
        if isinstance(c, bool) or not isinstance(c, numbers.Integral):
            raise DataError(f"classes: {c!r} is not an integer class id; give ids like [0, 1, 2]")
        out.append(int(c))
    if len(out) > n_avail:
        raise DataError(
            f"classes: asked for {len(out)} classes but {dataset} has {n_avail}; give at most {n_avail}"
        )
    if len(out) < 2:
        raise DataError(f"classes: {out} is too few; keep at least 2 classes")
    if len(set(out)) != len(out):
        raise DataError(f"classes: {out} repeats an id; list each class once")
    missing = [c for c in out if c not in set(available)]
    if missing:
        raise DataError(
            f"classes: {missing[0]} is not a class of {dataset} (ids {available[0]}..{available[-1]}); "
            "pick ids that exist"
        )
    return tuple(out)


def class_mask_and_map(y: np.ndarray, classes: tuple[int, ...]):
    """Boolean mask of rows whose label is in ``classes`` and a lookup re-indexing them to 0..k-1."""
    lut = np.full(int(max(int(y.max()), max(classes))) + 1, -1, dtype=np.int64)
    for new, old in enumerate(classes):
        lut[old] = new
    mask = np.isin(y, np.asarray(classes))
    return mask, lut


def check_n(name: str, n, available: int, what: str) -> int | None:
    """Validate a requested sample count ``n`` (None = all) against ``available`` ``what``."""
    n = check_int(name, n, minimum=1, allow_none=True)
    if n is not None and n > available:
        raise DataError(f"{name}: {n} is more than the {available} {what}; give at most {available}")
    return n


def stratified_indices(y: np.ndarray, n: int | None, rng: np.random.Generator) -> np.ndarray:
    """Indices of a class-stratified random subset of size ``n`` (all when ``None``), sorted.

    Each class gets its share by largest remainder; within a class the draw is the prefix of
    a seeded permutation, so a smaller ``n`` with the same seed gives (nearly) a subset of a
    larger one.
    """
    total = len(y)
    if n is None or n >= total:
        return np.arange(total)
    labels, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    exact = n * counts / total
    take = np.floor(exact).astype(np.int64)
    short = n - int(take.sum())
    if short > 0:
        order = np.argsort(-(exact - take), kind="stable")
        take[order[:short]] += 1
    chosen = []
    for j in range(len(labels)):
        idx = np.flatnonzero(inverse == j)
        perm = rng.permutation(len(idx))
        chosen.append(idx[perm[: take[j]]])
    return np.sort(np.concatenate(chosen))


def normalize(x_train: np.ndarray, x_test: np.ndarray, mode: str, pixel_max: float | None = None):
    """Normalise both splits with statistics of the TRAIN split; returns (x_train, x_test, info).

    * ``"none"``: unchanged (cast to float32);
    * ``"unit"``: images divided by ``pixel_max`` (values in [0, 1]); other data min-max scaled
      per feature with the train split's min and max (test values may fall outside [0, 1]);
    * ``"standard"``: per-feature ``(x - mean) / std`` (a feature with std 0 is only centred);
    * ``"global"``: one mean and one std over all train values;
    * ``"mnist"``: ``(x / pixel_max - 0.1307) / 0.3081``, the authors' MNIST protocol.
    """
    xtr = np.asarray(x_train, dtype=np.float32)
    xte = np.asarray(x_test, dtype=np.float32)
    f64 = np.float64
    info: dict = {"normalize": mode}
    if mode == "none":
        pass
    elif mode == "unit":
        if pixel_max is not None:
            xtr, xte = xtr / np.float32(pixel_max), xte / np.float32(pixel_max)
            info["scale"] = float(pixel_max)
        else:
            lo, hi = xtr.min(axis=0), xtr.max(axis=0)
            span = np.where(hi > lo, hi - lo, np.float32(1.0))
            xtr, xte = (xtr - lo) / span, (xte - lo) / span
            info["min"], info["span"] = lo, span
    elif mode == "standard":
        mu = xtr.mean(axis=0, dtype=f64).astype(np.float32)
        sd = xtr.std(axis=0, dtype=f64).astype(np.float32)
        sd = np.where(sd > 0, sd, np.float32(1.0))
        xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
        info["mean"], info["std"] = mu, sd
    elif mode == "global":
        mu, sd = float(xtr.mean(dtype=f64)), float(xtr.std(dtype=f64))
        sd = sd if sd > 0 else 1.0
        xtr = (xtr - np.float32(mu)) / np.float32(sd)
        xte = (xte - np.float32(mu)) / np.float32(sd)
        info["mean"], info["std"] = mu, sd
    elif mode == "mnist":
        if pixel_max is None:
            raise DataError(
                "normalize: 'mnist' is for pixel images; use standard, global, unit or none"
            )
        a = np.float32(1.0 / (pixel_max * MNIST_STD))
        b = np.float32(MNIST_MEAN / MNIST_STD)
        xtr, xte = xtr * a - b, xte * a - b
        info.update(scale=float(pixel_max), mean=MNIST_MEAN, std=MNIST_STD)
    else:  # pragma: no cover - callers validate the mode first
        raise DataError(f"normalize: unknown {mode!r}; use one of {', '.join(NORMALIZE_MODES)}")
    return xtr.astype(np.float32), xte.astype(np.float32), info


def split_seeds(seed: int, n: int) -> list[np.random.Generator]:
    """``n`` independent generators derived from ``seed`` (one per purpose: means, train, test...)."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(n)]
