"""phaseprobe: map how neural-network training changes phase.

Layers (each usable from Python without the CLI):
data -> models -> train -> sweep / geometry / paths / dynamics -> store -> plots.
The project-wide loss convention lives in :mod:`phaseprobe.conventions`.
"""

__version__ = "0.1.0"


def open_run(path):
    """Open any run folder: :func:`phaseprobe.runs.open_run` (``.kind``, ``.spec``, ``.records``,
    ``.tables``, ``.curvature``, ``.model(**key)``)."""
    from phaseprobe.runs import open_run as _open

    return _open(path)
