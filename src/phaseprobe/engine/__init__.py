"""Where the units of a sweep run: in this process (default) or on a Ray cluster."""

from phaseprobe.engine.local import LocalEngine, get_engine

__all__ = ["LocalEngine", "get_engine"]
