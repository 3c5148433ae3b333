"""phaseprobe: map how neural-network training changes phase.

Layers (each usable from Python without the CLI):
data -> models -> train -> sweep / geometry / paths / dynamics -> store -> plots.
The project-wide loss convention lives in :mod:`phaseprobe.conventions`.
"""

__version__ = "0.1.0"
