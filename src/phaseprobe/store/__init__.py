"""Results: an append-only, resumable, crash-safe run store (Parquet + compressed params)."""

from phaseprobe.store.run_store import RunStore, StoreError, load_records

__all__ = ["RunStore", "StoreError", "load_records"]
