"""phaseprobe: map how neural-network training changes phase.

Layers (each usable from Python without the CLI):
data -> models -> train -> sweep / geometry / paths / dynamics -> store -> plots.
The project-wide loss convention lives in :mod:`phaseprobe.conventions`.

What a researcher calls, one name per concept (loaded on first use, so ``import phaseprobe``
does not start JAX):

* running the commands that train, with a model file and arrays: :func:`spec_for`,
  :func:`alpha_sweep`, :func:`connect_minima`, :func:`basin_hierarchy`,
  :func:`sweep_curvature` (progress on by default in a terminal or a notebook);
* reading results: :func:`open_run` / :class:`Run`, :func:`find_transitions`, :func:`summarize`;
* geometry of any model and loss: :func:`make_error_fn`, :func:`make_loss_fn`, :func:`hvp`,
  :func:`exact_hessian`, :func:`lanczos`, :func:`slq_density`, :func:`hutchinson`,
  :func:`scalar_curvature`, :func:`saddle_index`;
* PyTorch models: :func:`from_torch`, :func:`to_torch`;
* :class:`SweepSpec`, :class:`ProgressReporter`, :class:`PhaseprobeError`.
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    # running (the commands that train, from Python)
    "spec_for": "phaseprobe.api",
    "alpha_sweep": "phaseprobe.api",
    "connect_minima": "phaseprobe.api",
    "basin_hierarchy": "phaseprobe.api",
    "sweep_curvature": "phaseprobe.api",
    "SweepSpec": "phaseprobe.sweep.spec",
    "ProgressReporter": "phaseprobe.progress",
    "PhaseprobeError": "phaseprobe.errors",
    # results
    "Run": "phaseprobe.runs",
    "find_transitions": "phaseprobe.sweep.analysis",
    "summarize": "phaseprobe.sweep.summary",
    # geometry
    "make_error_fn": "phaseprobe.geometry.losses",
    "make_loss_fn": "phaseprobe.geometry.losses",
    "hvp": "phaseprobe.geometry.hessian",
    "exact_hessian": "phaseprobe.geometry.hessian",
    "lanczos": "phaseprobe.geometry.lanczos",
    "slq_density": "phaseprobe.geometry.stochastic",
    "hutchinson": "phaseprobe.geometry.stochastic",
    "scalar_curvature": "phaseprobe.geometry.curvature",
    "saddle_index": "phaseprobe.geometry.saddle",
}

__all__ = sorted([*_EXPORTS, "open_run", "from_torch", "to_torch"])


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'phaseprobe' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))


def open_run(path):
    """Open any run folder: :func:`phaseprobe.runs.open_run`.

    **Arguments:**

    - `path`: a folder made by ``phaseprobe sweep``, ``connect``, ``basins``, ``grok``, ``dln``
      (any of them with ``--grid``), or by :func:`alpha_sweep` and its siblings.

    **Returns:** a :class:`Run` with ``.kind``, ``.spec``, ``.records``, ``.tables``,
    ``.curvature`` and ``.model(**key)``.
    """
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
