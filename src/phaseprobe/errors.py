"""One error type for bad input: its message is one line naming the field and the fix.

Every layer raises a subclass (DataError, ModelError, TrainError, SpecError, ...) *before any
compute*; the CLI prints ``error: <message>`` and exits with status 2.
"""


class PhaseprobeError(ValueError):
    """Bad input. ``str(err)`` is one line: ``field: what is wrong; the fix``.

    **Arguments:**

    - `message`: that line (``ValueError``'s argument).
    """


class SpecError(PhaseprobeError):
    """A bad experiment spec (TOML or flags)."""
