"""An append-only, crash-safe run store (Parquet records + compressed parameters).

Layout of a run folder::

    RUN/
      spec.json                 the spec, its hash, the package version
      records/<piece>.parquet   one file per finished piece of work (rows: alpha x seed x step)
      params/<piece>.npz        final parameters of that piece, stacked over its members
      report.html, *.png        written by the analysis

A *piece* is the smallest unit that is written: a chunk of a cold sweep, or one alpha step of a
continuation chain. Every file is written to a temporary name and renamed (atomic on POSIX),
the parameters before the records, so a piece counts as done only when its records file exists
and reads back. A file that does not read back (corrupt, truncated) is moved aside to
``*.corrupt`` and its piece is redone. Running the same spec again therefore resumes: finished
pieces are skipped, nothing is written twice.

Load everything with :func:`load_records` (one pandas call underneath).
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from phaseprobe import __version__
from phaseprobe.errors import PhaseprobeError


class StoreError(PhaseprobeError):
    """A run folder that cannot be used as asked."""


def _atomic_write_bytes(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class RunStore:
    """One run folder. ``kind`` names what wrote it (sweep, dln, grok, ...)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.records_dir = self.root / "records"
        self.params_dir = self.root / "params"

    # ---- spec -----------------------------------------------------------------------------
    def init(self, spec: dict, spec_hash: str, kind: str = "sweep") -> None:
        """Create the folder, or check that it holds the same spec (then the run resumes)."""
        self.root.mkdir(parents=True, exist_ok=True)
        meta_path = self.root / "spec.json"
        if meta_path.exists():
            old = json.loads(meta_path.read_text())
            if old.get("spec_hash") != spec_hash:
                raise StoreError(
                    f"out: '{self.root}' holds a different spec (hash {old.get('spec_hash')}, now {spec_hash}); "
                    "choose a new --out folder or delete the old one"
                )
            return
        meta = {"kind": kind, "spec_hash": spec_hash, "version": __version__, "spec": spec}
        _atomic_write_bytes(meta_path, lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2, default=str)))

    def meta(self) -> dict:
        p = self.root / "spec.json"
        if not p.exists():
            raise StoreError(f"run: '{self.root}' is not a phaseprobe run folder (no spec.json); run `phaseprobe sweep --out {self.root}` first")
        return json.loads(p.read_text())

    # ---- pieces ----------------------------------------------------------------------------
    def _rec_path(self, piece: str) -> Path:
        return self.records_dir / f"{piece}.parquet"

    def _par_path(self, piece: str) -> Path:
        return self.params_dir / f"{piece}.npz"

    def write_piece(self, piece: str, records: pd.DataFrame, params: dict[str, np.ndarray] | None) -> None:
        """Write one finished piece: parameters first, then records (the commit mark)."""
        if params is not None:
            _atomic_write_bytes(self._par_path(piece), lambda tmp: np.savez_compressed(tmp, **params))
        _atomic_write_bytes(self._rec_path(piece), lambda tmp: records.to_parquet(tmp, index=False))

    def _quarantine(self, path: Path) -> None:
        if path.exists():
            os.replace(path, path.with_suffix(path.suffix + ".corrupt"))

    def piece_ok(self, piece: str, need_params: bool = True) -> bool:
        """True when the piece's records (and parameters) read back; bad files are moved aside."""
        rp, pp = self._rec_path(piece), self._par_path(piece)
        if not rp.exists():
            return False
        try:
            pd.read_parquet(rp)
        except Exception:
            self._quarantine(rp)
            return False
        if need_params:
            try:
                with np.load(pp) as z:
                    for k in z.files:
                        z[k]
            except Exception:
                self._quarantine(rp)
                self._quarantine(pp)
                return False
        return True

    def done_pieces(self, need_params: bool = True) -> set[str]:
        if not self.records_dir.exists():
            return set()
        names = [p.stem for p in self.records_dir.glob("*.parquet") if not p.name.startswith(".tmp-")]
        return {n for n in names if self.piece_ok(n, need_params)}

    def load_params(self, piece: str) -> dict[str, np.ndarray]:
        p = self._par_path(piece)
        if not p.exists():
            raise StoreError(f"params: '{p}' is missing; rerun the command that made this run folder to recompute it")
        with np.load(p) as z:
            return {k: z[k] for k in z.files}

    def has_params(self) -> bool:
        return self.params_dir.exists() and any(self.params_dir.glob("*.npz"))

    def load_records(self) -> pd.DataFrame:
        files = sorted(p for p in self.records_dir.glob("*.parquet") if not p.name.startswith(".tmp-")) if self.records_dir.exists() else []
        if not files:
            return pd.DataFrame()
        frames = []
        for f in files:
            try:
                frames.append(pd.read_parquet(f))
            except Exception:
                # never read a damaged piece; the command that made the folder redoes it on a rerun
                raise StoreError(
                    f"records: '{f}' does not read back (corrupt or cut short); rerun the command that made "
                    f"'{self.root}' (same spec, same --out) to redo that piece"
                ) from None
        return pd.concat(frames, ignore_index=True)


def load_records(run_dir: str | Path) -> pd.DataFrame:
    """All records of a run folder as one DataFrame."""
    return RunStore(run_dir).load_records()
