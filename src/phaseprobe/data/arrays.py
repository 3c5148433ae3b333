"""A researcher's own arrays (``npz``) and CIFAR-10 from its python-pickle batches (``cifar10``).

``npz``: one ``.npz`` file (``np.savez``) with ``x_train, y_train, x_test, y_test`` and an
optional ``class_names``. Integer labels ``(n,)`` make a classification task (classes
``0..K-1``, ``K = len(class_names)`` when given, else the largest label + 1); float targets
``(n, k)`` a regression task. Everything is validated (keys, shapes, dtypes, label range,
NaN/inf) with one-line errors before any array is converted.

``cifar10``: the ``cifar-10-batches-py`` folder everyone has (``data_batch_1`` .. ``data_batch_5``,
``test_batch``, ``batches.meta``), read from a folder the user gives; nothing is downloaded.
Images are ``(3, 32, 32)`` uint8, flattened to 3072 features by default.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np

from phaseprobe.data import _options as opt
from phaseprobe.data.base import DataError, Dataset

NPZ_KEYS: tuple[str, ...] = ("x_train", "y_train", "x_test", "y_test")
NPZ_NORMALIZE_MODES: tuple[str, ...] = ("none", "unit", "standard", "global")
CIFAR10_FILES: tuple[str, ...] = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta")
CIFAR10_CLASS_NAMES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
CIFAR10_NORMALIZE_MODES: tuple[str, ...] = ("none", "unit", "standard", "global")
CIFAR_PIXEL_MAX = 255.0
_SAVE_FIX = "save it with np.savez(FILE, x_train=..., y_train=..., x_test=..., y_test=...)"


def file_sha256(path) -> str:
    """The content hash (sha256, 16 hex digits) of a data file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _read_npz(p: Path) -> dict[str, np.ndarray]:
    if not p.is_file():
        what = "is a folder, not a file" if p.is_dir() else "does not exist"
        raise DataError(f"data: {p} {what}; give an .npz file with {', '.join(NPZ_KEYS)} ({_SAVE_FIX})")
    if not zipfile.is_zipfile(p):
        raise DataError(f"data: {p} is not a readable .npz file (not a zip archive); {_SAVE_FIX}")
    try:
        with np.load(p, allow_pickle=False) as z:
            keys = list(z.files)
            missing = [k for k in NPZ_KEYS if k not in keys]
            if missing:
                raise DataError(f"data: {p} lacks {', '.join(missing)} (it has {', '.join(keys) or 'nothing'}); {_SAVE_FIX}")
            return {k: z[k] for k in (*NPZ_KEYS, "class_names") if k in keys}
    except DataError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise DataError(f"data: {p} holds Python objects (pickled arrays); save plain numeric arrays and "
                            "class_names as a string array (np.array([...], dtype=str))") from None
        raise DataError(f"data: {p} is not a readable .npz file ({str(exc).splitlines()[0]}); {_SAVE_FIX}") from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"data: {p} is not a readable .npz file ({type(exc).__name__}); {_SAVE_FIX}") from None


def _check_finite(p: Path, name: str, a: np.ndarray) -> None:
    bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
    if bad:
        raise DataError(f"data: {p} {name} has {bad} NaN or infinite values; remove or impute them before saving")


def check_npz_arrays(p: Path, arrays: dict[str, np.ndarray]) -> tuple[str, int, tuple[str, ...] | None]:
    """Validate the arrays of an ``.npz`` dataset; returns ``(task, n_classes or k, class_names)``.

    Every problem is a one-line DataError naming the file, the array and the fix.
    """
    x_tr, y_tr, x_te, y_te = (arrays[k] for k in NPZ_KEYS)
    for name, x in (("x_train", x_tr), ("x_test", x_te)):
        if x.dtype.kind not in "fiub":
            raise DataError(f"data: {p} {name} holds {x.dtype}, not numbers; save numeric (float or integer) inputs")
        if x.ndim < 2 or x.shape[0] == 0:
            raise DataError(f"data: {p} {name} has shape {x.shape}; give (n_examples, features...) with n_examples >= 1")
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise DataError(f"data: {p} x_train examples have shape {x_tr.shape[1:]} but x_test examples {x_te.shape[1:]}; "
                        "give both splits the same example shape")
    for name, y, x in (("y_train", y_tr, x_tr), ("y_test", y_te, x_te)):
        if y.shape[:1] != x.shape[:1]:
            raise DataError(f"data: {p} {name} has {y.shape[0] if y.ndim else 0} rows but x_{name[2:]} has {x.shape[0]}; "
                            "give one label per example")
    for name, a in (("x_train", x_tr), ("x_test", x_te)):
        if a.dtype.kind == "f":
            _check_finite(p, name, a)
    if y_tr.dtype.kind in "iub" and y_te.dtype.kind in "iub":
        if y_tr.ndim != 1 or y_te.ndim != 1:
            raise DataError(f"data: {p} integer labels must be 1-d (n,), got y_train {y_tr.shape}, y_test {y_te.shape}; "
                            "save one class id per example")
        names = None
        if "class_names" in arrays:
            cn = arrays["class_names"]
            if cn.dtype.kind not in "US" or cn.ndim != 1:
                raise DataError(f"data: {p} class_names is {cn.dtype} of shape {cn.shape}; save a 1-d string array")
            names = tuple(str(c) for c in cn.tolist())
        lo = int(min(y_tr.min(), y_te.min()))
        hi = int(max(y_tr.max(), y_te.max()))
        k = len(names) if names is not None else hi + 1
        if lo < 0 or hi >= k:
            bad = lo if lo < 0 else hi
            where = f"the {k} class_names" if names is not None else "0..K-1"
            raise DataError(f"data: {p} has label {bad}, outside {where}; labels must be class ids 0..{k - 1}")
        if len(np.unique(y_tr)) < 2:
            raise DataError(f"data: {p} y_train holds one class only; a classification task needs at least 2 classes")
        return "classification", k, names
    if y_tr.dtype.kind == "f" and y_te.dtype.kind == "f":
        if y_tr.ndim != 2 or y_te.ndim != 2 or y_tr.shape[1] != y_te.shape[1]:
            raise DataError(f"data: {p} float targets must be (n, k) with the same k in both splits, got y_train "
                            f"{y_tr.shape}, y_test {y_te.shape}; save integer class ids (n,) for classification")
        _check_finite(p, "y_train", y_tr)
        _check_finite(p, "y_test", y_te)
        return "regression", int(y_tr.shape[1]), None
    raise DataError(f"data: {p} labels are y_train {y_tr.dtype}, y_test {y_te.dtype}; save integer class ids (n,) "
                    "for classification or float targets (n, k) for regression, the same kind in both splits")


def load_npz(
    path=None,
    sha256: str | None = None,
    classes=None,
    n_train: int | None = None,
    n_test: int | None = None,
    normalize: str = "none",
    seed: int = 0,
) -> Dataset:
    """A researcher's own arrays from an ``.npz`` file (see the module docstring).

    **Arguments:**

    - ``path``: the ``.npz`` file (``x_train, y_train, x_test, y_test``, optional ``class_names``).
    - ``sha256``: the content hash a run recorded; a changed file is refused.
    - ``classes``, ``n_train``, ``n_test``, ``seed``: a class subset and seeded stratified
      subsets, as for the image datasets (classification only for ``classes``).
    - ``normalize``: ``none`` (the arrays as saved), ``unit``, ``standard`` or ``global``
      (statistics of the train split).

    **Returns:** a :class:`~phaseprobe.data.base.Dataset` named ``npz``.
    """
    if path is None:
        raise DataError(f"data: dataset 'npz' needs a file; pass --data FILE.npz (data_options.path) ({_SAVE_FIX})")
    opt.check_choice("normalize", normalize, NPZ_NORMALIZE_MODES)
    seed = opt.check_int("seed", seed, minimum=0)
    opt.check_int("n_train", n_train, minimum=1, allow_none=True)
    opt.check_int("n_test", n_test, minimum=1, allow_none=True)
    p = Path(os.path.expanduser(str(path)))
    if sha256 is not None and p.is_file() and file_sha256(p) != sha256:
        raise DataError(f"data: {p} changed since the run was made (content hash {sha256}, now {file_sha256(p)}); "
                        "restore that file, or start a new run folder with the new one")
    arrays = _read_npz(p)
    task, k, names = check_npz_arrays(p, arrays)
    x_tr, y_tr, x_te, y_te = (arrays[kk] for kk in NPZ_KEYS)
    meta = {"source": "npz", "path": str(p), "sha256": file_sha256(p), "seed": seed}
    if task == "classification":
        from phaseprobe.data.images import _select

        rows_tr, rows_te, ytr, yte, kept = _select("npz", y_tr.astype(np.int64), y_te.astype(np.int64), classes,
                                                    n_train, n_test, seed)
        if classes is None:  # every class of the file keeps its id (a class without examples included)
            kept = tuple(range(k))
            ytr, yte = y_tr[rows_tr].astype(np.int32), y_te[rows_te].astype(np.int32)
        names = names or tuple(str(c) for c in range(k))
        meta["class_names"] = [names[c] for c in kept]
        n_classes = len(kept)
    else:
        if classes is not None:
            raise DataError(f"classes: {p} holds regression targets, not classes; drop --classes")
        n_train = opt.check_n("n_train", n_train, len(y_tr), "train examples")
        n_test = opt.check_n("n_test", n_test, len(y_te), "test examples")
        g_tr, g_te = opt.split_seeds(seed, 2)
        rows_tr = np.sort(g_tr.permutation(len(y_tr))[:n_train]) if n_train else np.arange(len(y_tr))
        rows_te = np.sort(g_te.permutation(len(y_te))[:n_test]) if n_test else np.arange(len(y_te))
        ytr, yte = y_tr[rows_tr].astype(np.float32), y_te[rows_te].astype(np.float32)
        kept, n_classes = (), 0
    shape = x_tr.shape[1:]
    xtr, xte, info = opt.normalize(x_tr[rows_tr].reshape(len(rows_tr), -1), x_te[rows_te].reshape(len(rows_te), -1),
                                   normalize)
    meta["normalization"] = info
    return Dataset(
        name="npz", x_train=np.ascontiguousarray(xtr.reshape(-1, *shape)), y_train=ytr,
        x_test=np.ascontiguousarray(xte.reshape(-1, *shape)), y_test=yte, n_classes=n_classes, task=task,
        classes=tuple(int(c) for c in kept), meta=meta,
    )


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="bytes")
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign file
        raise DataError(f"data_dir: {path} is not a CIFAR-10 python batch ({type(exc).__name__}); "
                        "replace it with the file from cifar-10-python.tar.gz") from None


def _field(d: dict, name: str):
    return d.get(name.encode(), d.get(name))


def locate_cifar10(data_dir) -> Path:
    """The ``cifar-10-batches-py`` folder: ``data_dir`` itself or its child of that name."""
    if data_dir is None:
        raise DataError("data_dir: cifar10 needs the cifar-10-batches-py folder (nothing is downloaded); extract "
                        "cifar-10-python.tar.gz and pass --data-dir FOLDER")
    folder = Path(os.path.expanduser(str(data_dir)))
    if (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"
    missing = [f for f in CIFAR10_FILES if not (folder / f).is_file()]
    if missing:
        what = (f"lacks {', '.join(missing)}" if folder.is_dir()
                else ("is a file, not a folder" if folder.exists() else "does not exist"))
        raise DataError(f"data_dir: {folder} {what} (cifar10 needs {', '.join(CIFAR10_FILES)}; nothing is downloaded); "
                        "extract cifar-10-python.tar.gz and pass its cifar-10-batches-py folder")
    return folder


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    d = _unpickle(path)
    data, labels = _field(d, "data"), _field(d, "labels")
    if data is None or labels is None:
        raise DataError(f"data_dir: {path} has no data/labels entries; replace it with the file from cifar-10-python.tar.gz")
    data = np.asarray(data)
    labels = np.asarray(labels, dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.shape[0] != len(labels) or data.dtype != np.uint8:
        raise DataError(f"data_dir: {path} holds {data.dtype} images of shape {data.shape} for {len(labels)} labels, "
                        "not (n, 3072) uint8; replace it with the file from cifar-10-python.tar.gz")
    return data, labels


def load_cifar10(
    data_dir=None,
    classes=None,
    n_train: int | None = None,
    n_test: int | None = None,
    normalize: str = "unit",
    flatten: bool = True,
    seed: int = 0,
) -> Dataset:
    """CIFAR-10 (50 000 train / 10 000 test, 3x32x32, 10 classes) from ``cifar-10-batches-py``.

    **Arguments:**

    - ``data_dir``: the ``cifar-10-batches-py`` folder (or the folder holding it); required,
      nothing is downloaded.
    - ``classes``, ``n_train``, ``n_test``, ``seed``: as for the other image datasets.
    - ``normalize``: ``unit`` (pixels / 255, default), ``standard``, ``global`` or ``none``.
    - ``flatten``: ``True`` gives ``(n, 3072)``, ``False`` gives ``(n, 3, 32, 32)``.

    **Returns:** a :class:`~phaseprobe.data.base.Dataset` with the class names in ``meta``.
    """
    opt.check_choice("normalize", normalize, CIFAR10_NORMALIZE_MODES)
    opt.check_bool("flatten", flatten)
    seed = opt.check_int("seed", seed, minimum=0)
    opt.check_int("n_train", n_train, minimum=1, allow_none=True)
    opt.check_int("n_test", n_test, minimum=1, allow_none=True)
    folder = locate_cifar10(data_dir)
    meta_d = _unpickle(folder / "batches.meta")
    raw_names = _field(meta_d, "label_names")
    names = (tuple(n.decode() if isinstance(n, bytes) else str(n) for n in raw_names)
             if raw_names is not None else CIFAR10_CLASS_NAMES)
    train = [_cifar_batch(folder / f) for f in CIFAR10_FILES[:5]]
    x_tr = np.concatenate([b[0] for b in train])
    y_tr = np.concatenate([b[1] for b in train])
    x_te, y_te = _cifar_batch(folder / "test_batch")
    for name, y in (("train", y_tr), ("test", y_te)):
        if len(y) and (y.min() < 0 or y.max() >= len(names)):
            raise DataError(f"data_dir: {folder} {name} labels run {y.min()}..{y.max()}, outside the {len(names)} "
                            "classes of batches.meta; replace the batches with the files from cifar-10-python.tar.gz")
    from phaseprobe.data.images import _select

    rows_tr, rows_te, ytr, yte, kept = _select("cifar10", y_tr, y_te, classes, n_train, n_test, seed)
    xtr, xte, info = opt.normalize(x_tr[rows_tr], x_te[rows_te], normalize, CIFAR_PIXEL_MAX)
    if not flatten:
        xtr, xte = xtr.reshape(-1, 3, 32, 32), xte.reshape(-1, 3, 32, 32)
    meta = {"source": "cifar-10-batches-py", "data_dir": str(folder), "class_names": [names[c] for c in kept],
            "normalization": info, "image_shape": (3, 32, 32), "seed": seed}
    return Dataset(
        name="cifar10", x_train=np.ascontiguousarray(xtr), y_train=ytr, x_test=np.ascontiguousarray(xte), y_test=yte,
        n_classes=len(kept), task="classification", classes=tuple(int(c) for c in kept), meta=meta,
    )
