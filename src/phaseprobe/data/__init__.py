"""Datasets as arrays behind one small type, :class:`~phaseprobe.data.base.Dataset`."""

from phaseprobe.data.base import DataError, Dataset

__all__ = ["DataError", "Dataset"]
