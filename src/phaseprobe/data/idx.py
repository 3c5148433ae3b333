"""The IDX file format (MNIST, Fashion-MNIST), read and written with numpy alone.

An IDX file is a 4-byte magic number -- two zero bytes, a type code, the number of
dimensions -- then one big-endian uint32 per dimension, then the values, big-endian, in C
order. Files may be gzipped; :func:`read_idx` recognises gzip by its own magic bytes, not by
the name, and accepts either ``name`` or ``name.gz`` for a file stored the other way.
Every malformed file (bad magic, unknown type code, truncated, trailing bytes, broken gzip)
raises :class:`~phaseprobe.data.base.DataError` naming the file.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from phaseprobe.data.base import DataError

# type code -> big-endian numpy dtype
IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODE_OF_KIND = {
    ("u", 1): 0x08,
    ("i", 1): 0x09,
    ("i", 2): 0x0B,
    ("i", 4): 0x0C,
    ("f", 4): 0x0D,
    ("f", 8): 0x0E,
}
_GZIP_MAGIC = b"\x1f\x8b"


def resolve_idx_path(path: str | os.PathLike) -> Path | None:
    """The existing file for ``path``: itself, else ``path + '.gz'``, else ``path`` minus ``.gz``."""
    p = Path(path)
    if p.is_file():
        return p
    if p.suffix == ".gz":
        alt = p.with_suffix("")
    else:
        alt = p.with_name(p.name + ".gz")
    if alt.is_file():
        return alt
    return None


def _decompress(raw: bytes, p: Path) -> bytes:
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(
            f"data file: {p} is not a readable gzip file ({exc}); replace it with an intact copy"
        ) from None


def parse_idx(raw: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode the (already decompressed) bytes of an IDX file into a native-endian array."""
    if len(raw) < 4:
        raise DataError(
            f"data file: {source} is truncated ({len(raw)} bytes, no IDX header); "
            "replace it with an intact copy"
        )
    if raw[0] != 0 or raw[1] != 0:
        raise DataError(
            f"data file: {source} is not an IDX file (magic {raw[:4].hex()}, expected 0000tt nn); "
            "point to the IDX files (e.g. train-images-idx3-ubyte.gz)"
        )
    code, ndim = raw[2], raw[3]
    if code not in IDX_TYPES:
        raise DataError(
            f"data file: {source} has unknown IDX type code 0x{code:02x}; "
            "replace it with an intact copy"
        )
    if ndim == 0:
        raise DataError(f"data file: {source} declares 0 dimensions; replace it with an intact copy")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(
            f"data file: {source} is truncated inside its header ({len(raw)} of {header} bytes); "
            "replace it with an intact copy"
        )
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_TYPES[code]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) < expected:
        raise DataError(
            f"data file: {source} is truncated ({len(raw)} of {expected} bytes for shape {shape}); "
            "replace it with an intact copy"
        )
    if len(raw) > expected:
        raise DataError(
            f"data file: {source} has {len(raw) - expected} bytes beyond shape {shape}; "
            "replace it with an intact copy"
        )
    arr = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (raw or gzipped) into a native-endian numpy array.

    ``path`` may name the file with or without ``.gz``; whichever exists is read. Gzip is
    detected from the content. Raises :class:`DataError` naming the file when it is missing
    or malformed.
    """
    p = resolve_idx_path(path)
    if p is None:
        raise DataError(f"data file: {path} (or {path}.gz) does not exist; check the path")
    raw = p.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        raw = _decompress(raw, p)
    return parse_idx(raw, str(p))


def write_idx(path: str | os.PathLike, array) -> Path:
    """Write ``array`` as an IDX file; gzipped when ``path`` ends in ``.gz``. Returns the path.

    Supported dtypes: uint8, int8, int16, int32, float32, float64 (bool is written as uint8).
    """
    a = np.asarray(array)
    if a.dtype == np.bool_:
        a = a.astype(np.uint8)
    key = (a.dtype.kind, a.dtype.itemsize)
    if key not in _CODE_OF_KIND:
        raise DataError(
            f"array: dtype {a.dtype} has no IDX type; cast to uint8, int8, int16, int32, "
            "float32 or float64"
        )
    if a.ndim == 0 or a.ndim > 255:
        raise DataError(f"array: IDX needs 1 to 255 dimensions, got {a.ndim}; reshape it")
    code = _CODE_OF_KIND[key]
    header = bytes([0, 0, code, a.ndim]) + np.asarray(a.shape, dtype=">u4").tobytes()
    body = np.ascontiguousarray(a, dtype=IDX_TYPES[code]).tobytes()
    p = Path(path)
    data = header + body
    if p.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    p.write_bytes(data)
    return p
