"""Models from other frameworks in and out of phaseprobe.

:mod:`~phaseprobe.interop.torch_models`: :func:`from_torch` converts a PyTorch ``nn.Module``
into an Equinox module with the same outputs; :func:`to_torch` writes an Equinox model's
parameters back into a torch module's ``state_dict``. torch is imported only when one of them
is called (``pip install 'phaseprobe[torch]'``).
"""

from phaseprobe.interop.torch_models import TorchModelError, from_torch, to_torch

__all__ = ["TorchModelError", "from_torch", "to_torch"]
