"""Datasets as arrays behind one small type, :class:`~phaseprobe.data.base.Dataset`.

``load_dataset(name, **options)`` is the entry point; :data:`DATASETS` lists the names
(digits, mnist, fashion-mnist, gaussian-mixture, teacher, lowrank-linear, modular, npz -- a
researcher's own arrays --, cifar10) and
:func:`dataset_options` each one's options with defaults. ``read_idx``/``write_idx`` handle
the IDX format of MNIST-style files. Nothing is downloaded.
"""

from phaseprobe.data.base import DataError, Dataset
from phaseprobe.data.idx import read_idx, write_idx
from phaseprobe.data.registry import DATASETS, dataset_options, load_dataset

__all__ = ["DATASETS", "DataError", "Dataset", "dataset_options", "load_dataset", "read_idx", "write_idx"]
