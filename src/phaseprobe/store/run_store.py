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


import atexit
import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from phaseprobe import __version__
from phaseprobe.errors import PhaseprobeError


class StoreError(PhaseprobeError):
    """A run folder that cannot be used as asked."""


def _atomic_write_bytes(path: Path, write) -> None:
    """Write ``path`` through ``write(tmp_name)`` on a temporary name, then rename (atomic)."""
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

    # ---- spec ----------------------------------------------------------------------------
    def check_writable(self) -> None:
        """One-line errors for a folder that cannot hold a run (a file, read-only, garbage)."""
        r = self.root
        if r.exists() and not r.is_dir():
            raise StoreError(f"out: '{r}' is a file, not a folder; give a folder path for --out")
        parent = r if r.exists() else next((p for p in r.parents if p.exists()), Path("."))
        if not parent.is_dir():
            raise StoreError(f"out: '{parent}' is a file, not a folder; give a folder path for --out")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise StoreError(f"out: cannot write in '{parent}' (permission denied); choose a writable --out folder")
        meta = r / "spec.json"
        if meta.exists():
            self._read_meta(meta)

    def _read_meta(self, path: Path) -> dict:
        try:
            meta = json.loads(path.read_text())
            if not isinstance(meta, dict) or "spec_hash" not in meta:
                raise ValueError
            return meta
        except (ValueError, UnicodeDecodeError, OSError):
            raise StoreError(
                f"out: '{path}' is not a phaseprobe spec.json (unreadable or damaged); delete that folder or choose another --out"
            ) from None

    @staticmethod
    def run_hash(spec_hash: str, kind: str) -> str:
        """The identity of a run: the spec's hash, its kind and the package version."""
        blob = json.dumps({"spec": spec_hash, "kind": kind, "version": __version__}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def init(self, spec: dict, spec_hash: str, kind: str = "sweep") -> None:
        """Create the folder, or check that it holds the same run (then the run resumes).

        The same run = the same kind, spec hash and package version (:meth:`run_hash`).
        """
        self.check_writable()
        self.check_lock()  # a live writer first: whatever spec it runs, the folder is busy
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"out: cannot create '{self.root}' ({(e.strerror or type(e).__name__).lower()}); "
                             "choose a writable --out folder") from None
        meta_path = self.root / "spec.json"
        rh = self.run_hash(spec_hash, kind)
        if meta_path.exists():
            old = self._read_meta(meta_path)
            old_rh = old.get("run_hash") or self.run_hash(old.get("spec_hash", ""), old.get("kind", "sweep"))
            if old_rh != rh:
                what = (f"a {old.get('kind')} run" if old.get("kind") != kind else
                        f"phaseprobe {old.get('version')}'s run" if old.get("spec_hash") == spec_hash else "a different spec")
                raise StoreError(
                    f"out: '{self.root}' holds {what} (hash {old.get('spec_hash')}, now {spec_hash}); "
                    "choose a new --out folder or delete the old one"
                )
            return
        meta = {"kind": kind, "spec_hash": spec_hash, "run_hash": rh, "version": __version__, "spec": spec}
        _atomic_write_bytes(meta_path, lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2, default=str)))

    def meta(self) -> dict:
        p = self.root / "spec.json"
        if not p.exists():
            raise StoreError(f"run: '{self.root}' is not a phaseprobe run folder (no spec.json); give a folder made by a phaseprobe command")
        return self._read_meta(p)

    # ---- writer lock -------------------------------------------------------------------------
    @property
    def lock_path(self) -> Path:
        return self.root / ".lock"

    def check_lock(self) -> None:
        """One line when another live process holds the folder's writer lock."""
        holder = _lock_holder(self.lock_path)
        if holder is not None and holder != os.getpid() and _alive(holder):
            raise StoreError(
                f"out: '{self.root}' is being written by process {holder}; wait for it to finish "
                f"(or stop it) or choose another --out folder"
            )

    def lock(self) -> None:
        """Take the folder's writer lock (``.lock`` holds the PID); a live holder is one line.

        A lock whose process is gone (killed) is taken over. Released by :meth:`unlock` and at
        interpreter exit.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        me = os.getpid()
        for _ in range(3):
            try:
                fd = os.open(self.lock_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = _lock_holder(self.lock_path)
                if holder == me:
                    return
                if holder is not None and _alive(holder):
                    raise StoreError(
                        f"out: '{self.root}' is being written by process {holder}; wait for it to finish "
                        f"(or stop it) or choose another --out folder"
                    )
                try:  # stale: its process is gone
                    os.unlink(self.lock_path)
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w") as f:
                f.write(f"{me}\n")
            atexit.register(self.unlock)
            return
        raise StoreError(f"out: cannot take the lock '{self.lock_path}'; delete it if no phaseprobe process writes there")

    def unlock(self) -> None:
        if _lock_holder(self.lock_path) == os.getpid():
            try:
                os.unlink(self.lock_path)
            except FileNotFoundError:
                pass

    def resume_summary(self, job) -> str:
        """One line: a new run, or what an existing folder already holds and what remains."""
        parts_done, parts_total = 0, 0
        for ph in job.phases:
            t, d = job.counts(ph)
            parts_total += t
            parts_done += d
        if parts_done == 0:
            return f"new run in {self.root} ({parts_total} trainings planned)" if parts_total else f"new run in {self.root}"
        remain = parts_total - parts_done
        return (f"resuming: {parts_done}/{parts_total} trainings already in the store of {self.root}, {remain} to run"
                if remain else f"resuming: {parts_done}/{parts_total} trainings already in the store of {self.root}; "
                "nothing to run, analysing it again")

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

    def load_piece_records(self, piece: str) -> pd.DataFrame:
        """The records of one finished piece."""
        return pd.read_parquet(self._rec_path(piece))

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


def _lock_holder(path: Path) -> int | None:
    try:
        return int(path.read_text().strip().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (killed, not yet reaped) holds nothing
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write a text file atomically (temporary name, then rename)."""
    path = Path(path)
    _atomic_write_bytes(path, lambda tmp: Path(tmp).write_text(text))
    return path


def save_figure(fig, path: str | Path, **kwargs) -> Path:
    """``fig.savefig`` to a temporary name, then rename: a kill never leaves a 0-byte figure."""
    path = Path(path)
    fmt = kwargs.pop("format", None) or path.suffix.lstrip(".") or "png"
    _atomic_write_bytes(path, lambda tmp: fig.savefig(tmp, format=fmt, **kwargs))
    return path


def save_frame_parquet(df: pd.DataFrame, path: str | Path) -> Path:
    """``df.to_parquet`` atomically (without the index)."""
    path = Path(path)
    _atomic_write_bytes(path, lambda tmp: df.to_parquet(tmp, index=False))
    return path


def save_frame_csv(df: pd.DataFrame, path: str | Path, **kwargs) -> Path:
    """``df.to_csv`` atomically."""
    path = Path(path)
    kwargs.setdefault("index", False)
    _atomic_write_bytes(path, lambda tmp: df.to_csv(tmp, **kwargs))
    return path
