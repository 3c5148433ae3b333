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


def from_torch(module):
    """Convert a PyTorch ``nn.Module`` (Sequential of Linear, Conv2d, Flatten, pooling,
    activations; eval mode) into an Equinox module with the same outputs.

    **Arguments:**

    - `module`: the ``torch.nn.Module`` (see :func:`phaseprobe.interop.torch_models.from_torch`).

    **Returns:** an Equinox module called on ONE example (no batch axis).
    """
    from phaseprobe.interop.torch_models import from_torch as _from_torch

    return _from_torch(module)


def to_torch(model, module):
    """Write an Equinox model's parameters into a matching torch module.

    **Arguments:**

    - `model`: one Equinox model (from :func:`from_torch` or ``open_run(DIR).model(...)``).
    - `module`: a ``torch.nn.Module`` with the same parameter shapes, in the same order
      (see :func:`phaseprobe.interop.torch_models.to_torch`).

    **Returns:** the module's new ``state_dict`` (also loaded into ``module``).
    """
    from phaseprobe.interop.torch_models import to_torch as _to_torch

    return _to_torch(model, module)
