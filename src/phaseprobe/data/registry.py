"""One entry point for every dataset: ``load_dataset(name, **options)``.

Names are case-insensitive and ``_`` may stand for ``-`` (``fashion_mnist``). Option names
are checked against the loader's named parameters before anything is loaded (a loader's
``**kwargs`` catch-all is not an option: an option the dataset does not use is an error,
never silently dropped); an option given as ``None`` takes the dataset's default. ``modular`` is imported only when asked for, so the
other datasets work without it.
"""

from __future__ import annotations

import inspect
from typing import Callable

from phaseprobe.data.base import DataError, Dataset

DATASETS: tuple[str, ...] = (
    "digits",
    "mnist",
    "fashion-mnist",
    "gaussian-mixture",
    "teacher",
    "lowrank-linear",
    "modular",
    "npz",
    "cifar10",
)


def _images(attr: str) -> Callable[..., Dataset]:
    from phaseprobe.data import images

    return getattr(images, attr)


def _synthetic(attr: str) -> Callable[..., Dataset]:
    from phaseprobe.data import synthetic

    return getattr(synthetic, attr)


def _arrays(attr: str) -> Callable[..., Dataset]:
    from phaseprobe.data import arrays

    return getattr(arrays, attr)


def _modular() -> Callable[..., Dataset]:
    try:
        from phaseprobe.data.modular import load_modular
    except ModuleNotFoundError as exc:
        if exc.name == "phaseprobe.data.modular":
            raise DataError(
                "dataset: 'modular' is not available in this installation "
                "(phaseprobe.data.modular is missing); pick another dataset or update phaseprobe"
            ) from None
        raise
    return load_modular


_LOADERS: dict[str, Callable[[], Callable[..., Dataset]]] = {
    "digits": lambda: _images("load_digits"),
    "mnist": lambda: _images("load_mnist"),
    "fashion-mnist": lambda: _images("load_fashion_mnist"),
    "gaussian-mixture": lambda: _synthetic("load_gaussian_mixture"),
    "teacher": lambda: _synthetic("load_teacher"),
    "lowrank-linear": lambda: _synthetic("load_lowrank_linear"),
    "modular": _modular,
    "npz": lambda: _arrays("load_npz"),
    "cifar10": lambda: _arrays("load_cifar10"),
}


def canonical_name(name) -> str:
    """The registered spelling of ``name``; a DataError listing the valid names otherwise."""
    key = name.strip().lower().replace("_", "-") if isinstance(name, str) else None
    if key not in _LOADERS:
        raise DataError(f"dataset: unknown {name!r}; use one of {', '.join(DATASETS)}")
    return key


def get_loader(name: str) -> Callable[..., Dataset]:
    """The loader function behind ``name`` (imports its module on first use)."""
    return _LOADERS[canonical_name(name)]()


def dataset_options(name: str) -> dict[str, object]:
    """Option names of dataset ``name`` and their defaults (for help texts and specs)."""
    sig = inspect.signature(get_loader(name))
    return {
        p.name: p.default
        for p in sig.parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def load_dataset(name: str, **options) -> Dataset:
    """Load dataset ``name`` with ``options``; unknown names or options raise a one-line DataError.

    See :data:`DATASETS` for the names and :func:`dataset_options` for each one's options.
    """
    key = canonical_name(name)
    loader = _LOADERS[key]()
    valid = list(dataset_options(key))
    for opt_name in options:
        if opt_name not in valid:
            raise DataError(
                f"{opt_name}: not an option of dataset '{key}'; valid options: {', '.join(valid)}"
            )
    return loader(**{k: v for k, v in options.items() if v is not None})
