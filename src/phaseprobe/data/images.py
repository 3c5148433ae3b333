"""Image datasets: scikit-learn's bundled 8x8 digits, Fashion-MNIST and MNIST from IDX files.

Nothing is fetched from the network. ``digits`` ships with scikit-learn; ``fashion-mnist``
is read from the Debian package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``)
or a folder the user gives; ``mnist`` is read only from a folder the user gives.

Common options (all validated before any image is decoded):

* ``classes``: ``None`` (all), an int ``k`` (the first k classes) or a list of original class
  ids; labels are re-indexed to ``0..k-1`` in the order given, ``Dataset.classes`` keeps
  the original ids;
* ``n_train`` / ``n_test``: a class-stratified, seeded random subset (``None`` = all);
* ``normalize``: ``"none"`` (raw pixel values), ``"unit"`` (pixels / max pixel, in [0, 1]),
  ``"standard"`` (per-pixel mean/std of the train split), ``"global"`` (one mean/std of the
  train split), ``"mnist"`` (``(x/max - 0.1307) / 0.3081``, the authors' MNIST protocol);
* ``flatten``: ``True`` gives ``(n, h*w)``, ``False`` gives ``(n, 1, h, w)``;
* ``seed``: seeds the subsets.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from phaseprobe.data import _options as opt
from phaseprobe.data.base import DataError, Dataset
from phaseprobe.data.idx import read_idx, resolve_idx_path

IDX_FILES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_CLASS_NAMES: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
MNIST_CLASS_NAMES: tuple[str, ...] = tuple(str(i) for i in range(10))
DIGITS_PIXEL_MAX = 16.0
MNIST_PIXEL_MAX = 255.0

_EXPECTED = ", ".join(f"{f}[.gz]" for f in IDX_FILES.values())


def _check_common(normalize, flatten, seed, n_train, n_test):
    opt.check_choice("normalize", normalize, opt.NORMALIZE_MODES)
    opt.check_bool("flatten", flatten)
    seed = opt.check_int("seed", seed, minimum=0)
    opt.check_int("n_train", n_train, minimum=1, allow_none=True)
    opt.check_int("n_test", n_test, minimum=1, allow_none=True)
    return seed


def locate_idx_files(data_dir, dataset: str, fix: str) -> dict[str, Path]:
    """The four IDX files of an MNIST-format folder; a DataError naming all four when any is missing."""
    folder = Path(os.path.expanduser(str(data_dir)))
    found: dict[str, Path] = {}
    missing: list[str] = []
    for key, stem in IDX_FILES.items():
        p = resolve_idx_path(folder / stem) if folder.is_dir() else None
        if p is None:
            missing.append(stem)
        else:
            found[key] = p
    if missing:
        if folder.is_dir():
            what = f"lacks {', '.join(missing)}"
        elif folder.exists():
            what = "is a file, not a folder"
        else:
            what = "does not exist"
        raise DataError(
            f"data_dir: {folder} {what} ({dataset} needs {_EXPECTED}); {fix}"
        )
    return found


@functools.lru_cache(maxsize=8)
def _read_cached(path: str, mtime_ns: int, size: int) -> np.ndarray:
    arr = read_idx(path)
    arr.setflags(write=False)
    return arr


def _read(path: Path) -> np.ndarray:
    st = path.stat()
    return _read_cached(str(path), st.st_mtime_ns, st.st_size)


def _select(dataset: str, y_train, y_test, classes, n_train, n_test, seed):
    """Row indices for train/test and re-indexed labels, from the labels alone."""
    available = np.unique(np.concatenate([np.unique(y_train), np.unique(y_test)]))
    kept = opt.parse_classes(classes, available, dataset)
    if kept is None:
        kept = tuple(int(c) for c in available)
    mask_tr, lut = opt.class_mask_and_map(y_train, kept)
    mask_te, _ = opt.class_mask_and_map(y_test, kept)
    rows_tr, rows_te = np.flatnonzero(mask_tr), np.flatnonzero(mask_te)
    subset = "" if classes is None else f" in classes {list(kept)}"
    n_train = opt.check_n("n_train", n_train, len(rows_tr), f"train examples of {dataset}{subset}")
    n_test = opt.check_n("n_test", n_test, len(rows_te), f"test examples of {dataset}{subset}")
    g_tr, g_te = opt.split_seeds(seed, 2)
    rows_tr = rows_tr[opt.stratified_indices(y_train[rows_tr], n_train, g_tr)]
    rows_te = rows_te[opt.stratified_indices(y_test[rows_te], n_test, g_te)]
    ytr = lut[y_train[rows_tr]].astype(np.int32)
    yte = lut[y_test[rows_te]].astype(np.int32)
    return rows_tr, rows_te, ytr, yte, kept


def _finish(name, img_tr, img_te, ytr, yte, kept, normalize, flatten, pixel_max, meta) -> Dataset:
    h, w = img_tr.shape[1:]
    xtr, xte, info = opt.normalize(
        img_tr.reshape(len(img_tr), h * w), img_te.reshape(len(img_te), h * w), normalize, pixel_max
    )
    if not flatten:
        xtr, xte = xtr.reshape(-1, 1, h, w), xte.reshape(-1, 1, h, w)
    meta = dict(meta, normalization=info, image_shape=(1, h, w))
    return Dataset(
        name=name,
        x_train=np.ascontiguousarray(xtr),
        y_train=ytr,
        x_test=np.ascontiguousarray(xte),
        y_test=yte,
        n_classes=len(kept),
        task="classification",
        classes=tuple(int(c) for c in kept),
        meta=meta,
    )


def load_digits(
    classes=None,
    n_train: int | None = None,
    n_test: int | None = None,
    normalize: str = "unit",
    flatten: bool = True,
    seed: int = 0,
    train_frac: float = 0.75,
    split_seed: int = 0,
) -> Dataset:
    """scikit-learn's bundled 8x8 handwritten digits (1797 images, pixels 0..16, 10 classes).

    The train/test split is fixed: stratified, ``train_frac`` of the images for training,
    ``random_state=split_seed``; it does not depend on ``classes`` or ``seed``, so the same
    image is always on the same side. ``n_train``/``n_test`` then draw seeded subsets.
    """
    seed = _check_common(normalize, flatten, seed, n_train, n_test)
    train_frac = opt.check_float("train_frac", train_frac, 0.0, 1.0, low_open=True, high_open=True)
    split_seed = opt.check_int("split_seed", split_seed, minimum=0)

    from sklearn.datasets import load_digits as _sk_load_digits
    from sklearn.model_selection import train_test_split

    bunch = _sk_load_digits()
    images = bunch.images.astype(np.float32)
    y = bunch.target.astype(np.int64)
    n = len(y)
    n_tr = int(np.floor(train_frac * n))
    n_cls = len(np.unique(y))
    if n_tr < n_cls or n - n_tr < n_cls:
        raise DataError(
            f"train_frac: {train_frac} leaves {n_tr} train / {n - n_tr} test images, fewer than "
            f"the {n_cls} classes; give a value between {n_cls / n:.3f} and {1 - n_cls / n:.3f}"
        )
    idx_tr, idx_te = train_test_split(
        np.arange(n), train_size=n_tr, test_size=n - n_tr, stratify=y, random_state=split_seed
    )
    rows_tr, rows_te, ytr, yte, kept = _select(
        "digits", y[idx_tr], y[idx_te], classes, n_train, n_test, seed
    )
    meta = {
        "source": "sklearn.datasets.load_digits",
        "class_names": [str(c) for c in kept],
        "train_frac": train_frac,
        "split_seed": split_seed,
        "seed": seed,
    }
    return _finish(
        "digits", images[idx_tr][rows_tr], images[idx_te][rows_te], ytr, yte, kept,
        normalize, flatten, DIGITS_PIXEL_MAX, meta,
    )


def load_idx_folder(
    name: str,
    data_dir,
    fix: str,
    classes=None,
    n_train: int | None = None,
    n_test: int | None = None,
    normalize: str = "mnist",
    flatten: bool = True,
    seed: int = 0,
    class_names: tuple[str, ...] | None = None,
) -> Dataset:
    """Any MNIST-format folder (the four IDX files, raw or gzipped) as a :class:`Dataset`.

    Labels are read and every option is checked before the image files are decoded.
    """
    seed = _check_common(normalize, flatten, seed, n_train, n_test)
    files = locate_idx_files(data_dir, name, fix)
    y_train = _read(files["train_labels"])
    y_test = _read(files["test_labels"])
    for key, yv in (("train_labels", y_train), ("test_labels", y_test)):
        if yv.ndim != 1 or yv.dtype.kind not in "ui":
            raise DataError(
                f"data file: {files[key]} holds {yv.dtype} of shape {yv.shape}, not 1-d integer "
                "labels; replace it with the right IDX file"
            )
    rows_tr, rows_te, ytr, yte, kept = _select(
        name, y_train.astype(np.int64), y_test.astype(np.int64), classes, n_train, n_test, seed
    )
    img_tr = _read(files["train_images"])
    img_te = _read(files["test_images"])
    for key, img, yv in (("train_images", img_tr, y_train), ("test_images", img_te, y_test)):
        if img.ndim != 3:
            raise DataError(
                f"data file: {files[key]} has shape {img.shape}, not (n, h, w) images; "
                "replace it with the right IDX file"
            )
        if img.shape[0] != len(yv):
            raise DataError(
                f"data file: {files[key]} has {img.shape[0]} images but its labels file has "
                f"{len(yv)}; use matching IDX files"
            )
    if img_tr.shape[1:] != img_te.shape[1:]:
        raise DataError(
            f"data file: {files['test_images']} images are {img_te.shape[1:]}, train images "
            f"{img_tr.shape[1:]}; use matching IDX files"
        )
    pixel_max = MNIST_PIXEL_MAX if img_tr.dtype == np.uint8 else None
    if pixel_max is None and normalize in ("mnist",):
        raise DataError(
            f"normalize: 'mnist' needs uint8 pixels but {files['train_images']} holds "
            f"{img_tr.dtype}; use standard, global, unit or none"
        )
    names = class_names or tuple(str(c) for c in range(int(max(kept)) + 1))
    meta = {
        "source": "idx",
        "data_dir": str(Path(files["train_images"]).parent),
        "files": {k: str(v) for k, v in files.items()},
        "class_names": [names[c] if c < len(names) else str(c) for c in kept],
        "seed": seed,
    }
    return _finish(
        name, img_tr[rows_tr], img_te[rows_te], ytr, yte, kept, normalize, flatten, pixel_max, meta
    )


def load_fashion_mnist(
    data_dir=None,
    classes=None,
    n_train: int | None = None,
    n_test: int | None = None,
    normalize: str = "mnist",
    flatten: bool = True,
    seed: int = 0,
) -> Dataset:
    """Fashion-MNIST (60 000 train / 10 000 test, 28x28, 10 classes) from IDX files.

    ``data_dir`` defaults to ``/usr/share/datasets/fashion-mnist`` (Debian package
    ``dataset-fashion-mnist``). ``normalize`` defaults to the authors' ``"mnist"`` protocol.
    """
    if data_dir is None:
        folder = FASHION_MNIST_DIR
        fix = "run `apt-get install dataset-fashion-mnist` or put the four files in a folder and pass --data-dir"
    else:
        folder = data_dir
        fix = "put the four files in that folder or pass --data-dir"
    return load_idx_folder(
        "fashion-mnist", folder, fix, classes, n_train, n_test, normalize, flatten, seed,
        FASHION_CLASS_NAMES,
    )


def load_mnist(
    data_dir=None,
    classes=None,
    n_train: int | None = None,
    n_test: int | None = None,
    normalize: str = "mnist",
    flatten: bool = True,
    seed: int = 0,
) -> Dataset:
    """MNIST (60 000 train / 10 000 test, 28x28, 10 classes) from IDX files in ``data_dir``.

    There is no default folder and nothing is downloaded: put the four IDX files (raw or
    gzipped) in a folder and pass it. ``normalize`` defaults to ``(x/255 - 0.1307)/0.3081``.
    """
    fix = "put the four files in that folder or pass --data-dir"
    if data_dir is None:
        raise DataError(
            f"data_dir: mnist needs a folder with {_EXPECTED} (nothing is downloaded); "
            "put the four files in a folder and pass --data-dir (data_dir=...)"
        )
    return load_idx_folder(
        "mnist", data_dir, fix, classes, n_train, n_test, normalize, flatten, seed,
        MNIST_CLASS_NAMES,
    )
