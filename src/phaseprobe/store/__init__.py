"""Results: an append-only, resumable, crash-safe run store (Parquet + compressed params)."""

from phaseprobe.store.run_store import (
    RunStore,
    StoreError,
    atomic_write_text,
    load_records,
    save_figure,
    save_frame_csv,
    save_frame_parquet,
)

__all__ = ["RunStore", "StoreError", "atomic_write_text", "load_records", "save_figure", "save_frame_csv", "save_frame_parquet"]
